"""What a dialer asks: where does this phone ring now, since when, and if not, why not.

No Kafka imports: :class:`DialerView` opens a dialer view's SQLite file read-only
and answers from it, so other programs (a dialer's own scripts) can use it
while the dialer view runs, or after it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from processors.dialer import EMPTY_SERVER_MAP, Expectation, ServerMap, extension_of, is_aor
from processors.why import not_registered_line
from schemas.codec import state_from_dict
from streams.cliutil import table_time
from streams.clock import Clock, now_ms
from streams.dialer.store import (
    AorInfo,
    BindingRow,
    BindingStore,
    SqliteBindingStore,
)


@dataclass(frozen=True, slots=True)
class Placement:
    """One active contact of an AOR, with the expected-server check (stage D)."""

    row: BindingRow
    expectation: Expectation
    now_ms: int

    @property
    def expires_in_s(self) -> int:
        """Whole seconds left until the contact expires (at least 0)."""
        return max(0, (self.row.expires_at - self.now_ms) // 1000)

    def as_dict(self) -> dict[str, Any]:
        """The row's columns plus ``expires_in_s``, ``expected_server(s)``, ``node_server``
        and ``mismatch``."""
        d = self.row.as_dict()
        d["expires_in_s"] = self.expires_in_s
        d["expected_server"] = self.expectation.expected_server
        d["expected_servers"] = list(self.expectation.expected_servers)
        d["node_server"] = self.expectation.node_server
        d["mismatch"] = self.expectation.mismatch
        return d


@dataclass(frozen=True, slots=True)
class AorReport:
    """Everything known about one AOR: active contacts, lapsed ones, last-known facts."""

    aor: str
    extension: str
    active: tuple[Placement, ...]
    lapsed: tuple[BindingRow, ...]
    info: AorInfo | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; ``contacts`` holds only the active contacts."""
        info = self.info
        return {
            "aor": self.aor,
            "extension": self.extension,
            "version": None if info is None else info.version,
            "updated_at": None if info is None else info.updated_at,
            "health": None if info is None else info.health,
            "removed_at": None if info is None else info.removed_at,
            "contacts": [p.as_dict() for p in self.active],
        }


def placements(rows: list[BindingRow], server_map: ServerMap, now_ms: int) -> list[Placement]:
    """Attach the expected-server check to each row."""
    return [Placement(r, server_map.check(r.extension, r.node), now_ms) for r in rows]


def build_reports(
    store: BindingStore, key: str, server_map: ServerMap, now_ms: int
) -> list[AorReport]:
    """A report per AOR known for ``key`` (an AOR, or an extension), by AOR.

    An AOR is known when the store holds a contact row or a last-known row for
    it; an AOR never seen gives no report (the caller says "no binding").
    """
    all_rows = store.contacts_any_time(key)
    infos = {i.aor: i for i in store.aor_info(key)}
    aors = sorted({r.aor for r in all_rows} | set(infos))
    out = []
    for aor in aors:
        rows = [r for r in all_rows if r.aor == aor]
        active = [r for r in rows if r.expires_at > now_ms]
        lapsed = tuple(r for r in rows if r.expires_at <= now_ms)
        out.append(
            AorReport(
                aor=aor,
                extension=extension_of(aor),
                active=tuple(placements(active, server_map, now_ms)),
                lapsed=lapsed,
                info=infos.get(aor),
            )
        )
    return out


def fmt_ms(ms: int | None) -> str:
    """An epoch-ms time in the one table format of the CLI, ``?`` when unknown."""
    return "?" if ms is None else table_time(ms)


def _check_text(e: Expectation) -> str:
    if e.mismatch is None:
        if not e.expected_servers:
            return ""
        return f"; expected server {e.expected_server} (node not in the node map)"
    if e.mismatch:
        return f"; MISMATCH: rings on {e.expected_server}, registered on {e.node_server}"
    return f"; expected server {e.expected_server}: ok"


def render_text(key: str, reports: list[AorReport]) -> tuple[str, int]:
    """Human text for ``regstate where``, and the exit code: 0 when some contact is active."""
    if not reports:
        what = "AOR" if is_aor(key) else "extension"
        return f"{key}: no binding (no record of this {what} on regstate.bindings)\n", 1
    lines: list[str] = []
    ringing = False
    for rep in reports:
        health = rep.info.health if rep.info is not None else None
        health_part = ""
        if health is not None:
            health_part = f"health {health.get('state')} since {fmt_ms(health.get('since'))}"
        health_text = f"; {health_part}" if health_part else ""
        if rep.active:
            ringing = True
            lines.append(f"{rep.aor}: rings at {len(rep.active)} contact(s){health_text}")
            for p in rep.active:
                r = p.row
                src = (
                    f"{r.source_transport} {r.source_ip}:{r.source_port}"
                    if r.source_ip is not None
                    else "unknown source"
                )
                node = r.node + (
                    f" ({p.expectation.node_server})" if p.expectation.node_server else ""
                )
                lines.append(
                    f"  {r.contact_uri} from {src} via node {node}, "
                    f"since {fmt_ms(r.registered_at)}, expires in {p.expires_in_s} s"
                    f"{_check_text(p.expectation)}"
                )
            continue
        if rep.lapsed:
            last = max(r.expires_at for r in rep.lapsed)
            lines.append(
                f"{rep.aor}: does not ring: binding expired at {fmt_ms(last)} "
                f"(not yet removed by the sweeper){health_text}"
            )
        elif rep.info is not None and rep.info.removed_at is not None:
            last_exp = rep.info.last_expires_at
            exp_text = (
                "" if last_exp is None else f", last contact was to expire at {fmt_ms(last_exp)}"
            )
            lines.append(
                f"{rep.aor}: does not ring: unregistered/expired since "
                f"{fmt_ms(rep.info.removed_at)}{exp_text}; "
                f"last known {health_part or 'health unknown'}"
            )
        else:
            lines.append(f"{rep.aor}: does not ring: no binding{health_text}")
        if health is not None:
            # The same line as the worker's 404 and ./dev run (processors.why).
            h = state_from_dict({"aor": rep.aor, "health": health}).health
            lines.append(f"  {not_registered_line(h)}")
    return "\n".join(lines) + "\n", 0 if ringing else 1


class DialerView:
    """Read-only Python API over a dialer view's SQLite file; never touches Kafka.

    ``where`` and ``report`` read the file as it is at the call: a running dialer
    view commits whole batches, so a call never sees half of one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        server_map: ServerMap = EMPTY_SERVER_MAP,
        clock: Clock = now_ms,
    ) -> None:
        if not Path(path).exists():
            raise FileNotFoundError(f"no dialer view database at {path}")
        self.store = SqliteBindingStore(path, read_only=True, clock=clock)
        self.server_map = server_map
        self.clock = clock

    def where(self, ext_or_aor: str, now_ms: int | None = None) -> list[Placement]:
        """Active contacts of an extension (every AOR with that user part) or of one AOR."""
        now = self.clock() if now_ms is None else now_ms
        return placements(self.store.lookup(ext_or_aor, now), self.server_map, now)

    def report(self, ext_or_aor: str, now_ms: int | None = None) -> list[AorReport]:
        """Everything known per AOR, for explaining why a phone does not ring."""
        now = self.clock() if now_ms is None else now_ms
        return build_reports(self.store, ext_or_aor, self.server_map, now)

    def close(self) -> None:
        """Close the file."""
        self.store.close()

    def __enter__(self) -> DialerView:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
