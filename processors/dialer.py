"""Pure logic of the dialer view: extensions, VICIdial phones, expected-server check.

No I/O beyond parsing text handed in; no Kafka, no SQLite. The dialer view
(streams/dialer/view.py) and ``regstate where`` share these functions, so the
HTTP output and the command line say the same thing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from processors.sipuri import is_trunk
from schemas.events import front_end_of


class PhonesError(ValueError):
    """A phones CSV or node map that cannot be used (the message names the line)."""


def extension_of(aor: str) -> str:
    """The user part of a canonical AOR: ``sip:1001@pbx`` -> ``1001``, ``tel:+155`` -> ``+155``.

    An AOR without a user part (``sip:pbx.example.com``) has the empty extension.
    The user part is kept exactly as in the AOR (R1 keeps it as sent). A trunk
    (``trunk:sip:acct@carrier``, D50) is no phone: it has no extension and is
    looked up by its AOR.
    """
    if is_trunk(aor):
        return ""
    _, colon, rest = aor.partition(":")
    if not colon:
        return ""
    user, at, _host = rest.rpartition("@")
    if not at:
        # tel: URIs have no host; sip: without a user part has none.
        return rest if aor[:4].lower() == "tel:" else ""
    return user


def is_aor(text: str) -> bool:
    """Whether a lookup argument names an AOR (has a scheme) rather than an extension."""
    head = text.split(":", 1)[0].lower()
    return ":" in text and head in ("sip", "sips", "tel", "trunk")


SIP_PROTOCOLS = frozenset({"SIP", "PJSIP"})
"""VICIdial ``phones.protocol`` values of phones that REGISTER over SIP (IAX2, Zap, DAHDI and
EXTERNAL phones never reach a SIP registrar)."""


def expected_phones(
    rows: Iterable[tuple[str, str, str | None, str | None]],
) -> dict[str, tuple[str, ...]]:
    """``(extension, server_ip, active, protocol)`` rows -> ``{extension: (server_ip, ...)}``.

    Keeps active (``Y``) SIP phones; ``None`` for ``active``/``protocol`` means the
    source has no such column (a two-column CSV) and keeps the row. Servers sorted, unique.
    """
    out: dict[str, set[str]] = {}
    for ext, ip, active, protocol in rows:
        if active is not None and active.strip().upper() != "Y":
            continue
        if protocol is not None and protocol.strip().upper() not in SIP_PROTOCOLS:
            continue
        out.setdefault(ext, set()).add(ip)
    return {ext: tuple(sorted(ips)) for ext, ips in out.items()}


def parse_phones_csv(text: str) -> dict[str, tuple[str, ...]]:
    """VICIdial ``phones`` export -> ``{extension: (server_ip, ...)}``, servers sorted, unique.

    Comma-separated, or tab-separated as ``mysql --batch`` prints a query (told apart
    by the header line). The header must name ``extension`` and ``server_ip``; with
    ``active``/``protocol`` columns only active SIP phones count (other columns are
    ignored, so a full export works). An extension on several rows (a phone code
    override, or the same extension on two servers) expects every server named.
    Raises PhonesError naming the line of a row without either value.
    """
    first = text.split("\n", 1)[0]
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if "\t" in first else ",")
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "extension" not in header or "server_ip" not in header:
        raise PhonesError("phones CSV needs a header with 'extension' and 'server_ip'")
    reader.fieldnames = header
    rows: list[tuple[str, str, str | None, str | None]] = []
    for line_no, row in enumerate(reader, start=2):
        ext = (row.get("extension") or "").strip()
        ip = (row.get("server_ip") or "").strip()
        if not ext and not ip:
            continue  # blank line
        if not ext or not ip:
            raise PhonesError(f"phones CSV line {line_no}: needs both extension and server_ip")
        rows.append((ext, ip, row.get("active"), row.get("protocol")))
    return expected_phones(rows)


def parse_node_map(spec: str) -> dict[str, str]:
    """``fe1=10.0.0.1,fe2=10.0.0.2`` -> ``{node: server_ip}``; PhonesError on a bad entry."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        node, eq, ip = part.partition("=")
        if not eq or not node.strip() or not ip.strip():
            raise PhonesError(f"node map entry {part!r}: use NODE=SERVER_IP")
        out[node.strip()] = ip.strip()
    return out


def parse_node_map_csv(text: str) -> dict[str, str]:
    """A node map CSV with header ``node,server_ip`` -> ``{node: server_ip}``."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "node" not in header or "server_ip" not in header:
        raise PhonesError("node map CSV needs a header with 'node' and 'server_ip'")
    reader.fieldnames = header
    out: dict[str, str] = {}
    for line_no, row in enumerate(reader, start=2):
        node = (row.get("node") or "").strip()
        ip = (row.get("server_ip") or "").strip()
        if not node and not ip:
            continue
        if not node or not ip:
            raise PhonesError(f"node map CSV line {line_no}: needs both node and server_ip")
        out[node] = ip
    return out


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the phones table says about one binding.

    ``expected_servers``: every server_ip the phones table lists for the
    extension (empty when the extension is not in it). ``node_server``: the
    server_ip of the node that accepted the registration (None when the node is
    not in the node map). ``mismatch``: True when both are known and the node's
    server is not one of the expected ones; None when either is unknown (no
    claim is made either way); False otherwise.
    """

    expected_servers: tuple[str, ...]
    node_server: str | None
    mismatch: bool | None

    @property
    def expected_server(self) -> str | None:
        """The expected server_ip, several joined with ``,``; None when the phone is unknown."""
        return ",".join(self.expected_servers) if self.expected_servers else None


@dataclass(frozen=True, slots=True)
class ServerMap:
    """The phones table and the node map, as loaded at start."""

    phones: Mapping[str, tuple[str, ...]]
    nodes: Mapping[str, str]

    def check(self, extension: str, node: str) -> Expectation:
        """The expectation for a binding of ``extension`` accepted by ``node``."""
        expected = tuple(self.phones.get(extension, ()))
        node_server = self.nodes.get(front_end_of(node))
        if not expected or node_server is None:
            return Expectation(expected, node_server, None)
        return Expectation(expected, node_server, node_server not in expected)


EMPTY_SERVER_MAP = ServerMap({}, {})
