"""The fold behind ``regstate replay``, with the optional timeline, for any event source.

A file (``--input``) and Kafka (regstate.registrations) feed the same
:class:`ReplayRun`, event by event in log order, so both sources give the same
states and the same timeline for the same log. Memory holds one AorState per
AOR, never the events.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, TextIO

import orjson

from processors.explain import explain, iso_ms
from processors.fold import Folded, fold_event
from processors.outcomes import Outcome
from processors.policy import DEFAULT_POLICY, FoldPolicy
from processors.replay import snapshot_at
from schemas import AorState, RegistrationEvent, state_to_dict

_DIGITS = re.compile(r"-?\d+")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(text: str) -> int:
    """ms since the epoch from ``1767254400000`` or an ISO 8601 time with a timezone.

    ``2026-01-01T08:00:00Z``, ``2026-01-01T09:00:00+01:00`` and
    ``2026-01-01 08:00:00.250+00:00`` are accepted; a time without a timezone
    is refused (ValueError): on a cluster spread over time zones a local time
    would silently mean different instants to different analysts.
    """
    text = text.strip()
    if _DIGITS.fullmatch(text):
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither ms since the epoch nor an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone; add Z or +HH:MM")
    return (dt - _EPOCH) // timedelta(milliseconds=1)


Where = Mapping[str, int]
"""Where an event was: ``{"partition": p, "offset": o}`` or ``{"line": n}``."""
NOWHERE: Final[Where] = MappingProxyType({})
"""The position of events whose position nobody will show."""


def event_summary(event: RegistrationEvent) -> dict[str, Any]:
    """The fields of an event a timeline reader needs, by kind (no ``raw``, no ``source``)."""
    d: dict[str, Any] = {
        "ts": event.ts,
        "time": iso_ms(event.ts),
        "aor": event.aor,
        "id": event.id,
        "node": event.node,
        "kind": event.kind,
        "call_id": event.call_id,
        "cseq": event.cseq,
    }
    if event.kind == "register":
        d["contacts"] = [{"uri": c.uri, "expires": c.expires} for c in event.contacts]
        if event.wildcard:
            d["wildcard"] = True
        if event.expires is not None:
            d["expires"] = event.expires
    elif event.kind == "reject":
        d["status"] = event.status
        d["reason"] = event.reason
    else:
        d["contact"] = event.contact
        if event.reason is not None:
            d["reason"] = event.reason
    return d


def timeline_entry(
    where: Where,
    before: AorState | None,
    event: RegistrationEvent,
    folded: Folded,
    policy: FoldPolicy = DEFAULT_POLICY,
) -> dict[str, Any]:
    """One timeline line: where the event was, the event, its outcome, effects and why.

    ``effects`` are the binding events the fold emitted (``event``, ``key``,
    ``uri``, ``expires_at``, ``version``), in order; ``version`` and ``bindings``
    are the AOR's version and binding count after the event.
    """
    return {
        **where,
        **event_summary(event),
        "outcome": folded.outcome.value,
        "effects": [
            {
                "event": be.event,
                "key": be.key,
                "uri": be.uri,
                "expires_at": be.expires_at,
                "version": be.version,
            }
            for be in folded.events
        ],
        "version": folded.state.version,
        "bindings": len(folded.state.contacts),
        "why": explain(before, event, folded, policy),
    }


@dataclass
class ReplayRun:
    """Folds events in log order: states per AOR, outcome counts and (optionally) a timeline.

    Guarantees: an event is folded iff its AOR is selected (``aors`` None selects
    all) and ``until_ms`` is None or its ``ts <= until_ms``, exactly as
    :func:`processors.replay.replay` does; a timeline entry is emitted for a
    folded event iff ``since_ms`` is None or its ``ts >= since_ms``.
    ``max_ts`` is the largest ``ts`` folded (the default snapshot time).
    """

    policy: FoldPolicy = DEFAULT_POLICY
    until_ms: int | None = None
    since_ms: int | None = None
    aors: frozenset[str] | None = None
    on_entry: Callable[[dict[str, Any]], None] | None = None
    states: dict[str, AorState] = field(default_factory=dict)
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    max_ts: int | None = None
    after_until: int = 0
    not_selected: int = 0

    def feed(self, where: Where, event: RegistrationEvent) -> None:
        """Fold one event (see the class guarantees)."""
        if self.aors is not None and event.aor not in self.aors:
            self.not_selected += 1
            return
        ts = event.ts
        if self.until_ms is not None and ts > self.until_ms:
            self.after_until += 1
            return
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        before = self.states.get(event.aor)
        folded = fold_event(before, event, self.policy)
        self.states[event.aor] = folded.state
        self.outcomes[folded.outcome] += 1
        if self.on_entry is not None and (self.since_ms is None or ts >= self.since_ms):
            self.on_entry(timeline_entry(where, before, event, folded, self.policy))

    def snapshot_time(self) -> int | None:
        """``until_ms`` if set, else the largest ``ts`` folded (None: nothing folded)."""
        return self.until_ms if self.until_ms is not None else self.max_ts


# --------------------------------------------------------------------------- output

TABLE_HEADER: Final = (
    f"{'TIME (UTC)':<24}  {'AT':<12}  {'AOR':<28}  {'KIND':<10}  {'ID':<24}  "
    f"{'CSEQ':>6}  {'OUTCOME':<17}  {'VER':>4}  EFFECTS / WHY"
)


def _position(entry: Mapping[str, Any]) -> str:
    if "partition" in entry:
        return f"p{entry['partition']}@{entry['offset']}"
    return f"line {entry.get('line', '?')}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def table_line(entry: Mapping[str, Any]) -> str:
    """A timeline entry as one line (long ids cut with ``~``; AORs in full, a longer
    one shifting the rest of its line: a cut AOR cannot be pasted into --aor)."""
    return (
        f"{entry['time']:<24}  {_position(entry):<12}  {entry['aor']:<28}  "
        f"{entry['kind']:<10}  {_cut(entry['id'], 24):<24}  {entry['cseq']:>6}  "
        f"{entry['outcome']:<17}  {entry['version']:>4}  {entry['why']}"
    )


class TimelineWriter:
    """Writes timeline entries as JSON Lines (``jsonl``), a readable table (``table``)
    or one JSON array (``json``, written by :meth:`close`)."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        if fmt not in ("jsonl", "table", "json"):
            raise ValueError(f"unknown timeline format {fmt!r}")
        self.out = out
        self.fmt = fmt
        self.count = 0
        self._entries: list[dict[str, Any]] = []

    def close(self) -> None:
        """Finish the output (the ``json`` array; nothing to do for the others)."""
        if self.fmt == "json":
            self.out.write(orjson.dumps(self._entries, option=orjson.OPT_INDENT_2).decode())
            self.out.write("\n")

    def __call__(self, entry: dict[str, Any]) -> None:
        if self.fmt == "json":
            self._entries.append(entry)
        elif self.fmt == "jsonl":
            self.out.write(orjson.dumps(entry).decode())
            self.out.write("\n")
        else:
            if self.count == 0:
                self.out.write(TABLE_HEADER + "\n")
            self.out.write(table_line(entry) + "\n")
        self.count += 1


def render_snapshot(
    states: Mapping[str, AorState], at_ms: int, *, include_empty: bool = False
) -> dict[str, dict[str, Any]]:
    """``{aor: AorState public map}`` at ``at_ms``, sorted by AOR, as ``replay`` prints it.

    Only contacts active at ``at_ms`` are kept (R6); AORs left with none are
    dropped unless ``include_empty``. Dedup marks (``seen``) are internal and
    never shown.
    """
    snap = snapshot_at(dict(states), at_ms, include_empty=include_empty)
    return {aor: state_to_dict(state) for aor, state in snap.items()}


def dumps_snapshot(snapshot: Mapping[str, Any], *, compact: bool = False) -> bytes:
    """The bytes ``replay`` writes: orjson, indented unless ``compact``, newline-terminated."""
    option = orjson.OPT_APPEND_NEWLINE | (0 if compact else orjson.OPT_INDENT_2)
    return orjson.dumps(snapshot, option=option)
