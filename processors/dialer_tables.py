"""Pure row builders of the tables a dialer view keeps for other software.

* Kamailio's ``location`` table (usrloc ``db_mode=3`` reads every lookup from
  it): the values Kamailio 5.6's registrar would store for the same binding,
  checked against a real Kamailio in tests/integration/test_kamailio_location.py.
* Asterisk's realtime ``ps_contacts`` (sorcery ``contact`` objects): the columns
  of Asterisk's alembic migrations, ``endpoint`` = the extension.

Times come in as ms since the epoch (the bindings' event times); the rows hold
whole seconds, rounded down so a table never keeps a contact alive past the
view's own expiry (R6: active while ``expires_at > now``). How a DATETIME is
spelled is the database driver's business (streams/dialer/store.py).
No clock reads, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

KAMAILIO_LOCATION_VERSION = 9
"""``version.table_version`` of ``location`` in Kamailio 5.6 (its usrloc refuses others)."""

# Columns the view writes (``id`` is left to the database, as Kamailio does).
LOCATION_COLUMNS: tuple[str, ...] = (
    "ruid", "username", "domain", "contact", "received", "path", "expires", "q", "callid",
    "cseq", "last_modified", "flags", "cflags", "user_agent", "socket", "methods", "instance",
    "reg_id", "server_id", "connection_id", "keepalive", "partition",
)  # fmt: skip
LOCATION_EXPIRES = LOCATION_COLUMNS.index("expires")
LOCATION_LAST_MODIFIED = LOCATION_COLUMNS.index("last_modified")

PS_CONTACTS_COLUMNS: tuple[str, ...] = (
    "id", "uri", "expiration_time", "qualify_frequency", "outbound_proxy", "path",
    "user_agent", "qualify_timeout", "reg_server", "authenticate_qualify", "via_addr",
    "via_port", "call_id", "endpoint", "prune_on_boot", "qualify_2xx_only",
)  # fmt: skip

_NO_Q = -1.0
"""usrloc's Q_UNSPECIFIED as its db layer stores it (a Contact without ``q``)."""
_NO_USER_AGENT = "n/a"
"""What Kamailio's registrar stores for a REGISTER without User-Agent."""
_NO_CONNECTION = -1
"""``connection_id`` of a contact with no TCP connection to this Kamailio (always ours:
the phone's connection, if any, is to a regstate front-end)."""


class ContactFacts(NamedTuple):
    """What the tables need of one binding (a contact of the public AorState JSON)."""

    key: str
    uri: str
    expires_at: int
    refreshed_at: int
    call_id: str
    cseq: int
    q: float | None
    instance: str | None
    reg_id: int | None
    source: tuple[str, int, str] | None
    """(ip, port, transport) the REGISTER came from, after rport/received."""
    user_agent: str | None
    path: Sequence[str]


def split_aor(aor: str) -> tuple[str, str | None]:
    """``sip:1001@pbx.example`` -> ``("1001", "pbx.example")``; ``tel:+155`` -> ``("+155", None)``.

    Kamailio's usrloc keys a record by username and (with ``use_domain``) domain.
    """
    _, _, rest = aor.partition(":")
    user, at, host = rest.rpartition("@")
    if not at:
        return rest, None
    return user, host


def ruid_of(aor: str, key: str) -> str:
    """A record-unique id that is the same on every view and after every replay.

    Kamailio makes ``uloc-<time>-<pid>-<n>``; any unique text up to 64 chars works
    (it only looks rows up by it). The prefix tells an admin where a row came from.
    """
    digest = hashlib.blake2b(f"{aor}\0{key}".encode(), digest_size=16).hexdigest()
    return f"regstate-{digest}"


def source_uri(source: tuple[str, int, str]) -> str:
    """A source address as Kamailio's ``received`` spells it: ``sip:ip:port[;transport=tcp]``."""
    ip, port, transport = source
    host = f"[{ip}]" if ":" in ip else ip
    t = transport.lower()
    return f"sip:{host}:{port}" + ("" if t == "udp" else f";transport={t}")


def received_of(uri: str, source: tuple[str, int, str] | None) -> str | None:
    """``received`` when the REGISTER came from elsewhere than the Contact says (NAT), else None.

    With it Kamailio sends requests to the source address (as after
    ``fix_nated_register``); without it, to the Contact.
    """
    if source is None:
        return None
    ip, port, _ = source
    if contact_address(uri) == (ip.lower(), port):
        return None
    return source_uri(source)


def contact_address(uri: str) -> tuple[str, int] | None:
    """(host, port) a SIP URI sends to, port defaulted (5060, sips 5061); None if not SIP.

    String slicing rather than :func:`processors.sipuri.parse_sip_uri`: this runs once
    per contact of a bootstrap (a million times), and only host and port matter here.
    """
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips"):
        return None
    hostport = rest.split("?", 1)[0].rpartition("@")[2].split(";", 1)[0]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    if port_text and not port_text.isdigit():
        return None
    default = 5061 if scheme == "sips" else 5060
    return host.lower(), int(port_text) if port_text else default


def instance_as_stored(instance: str | None) -> str | None:
    """``+sip.instance`` without its quotes, in angle brackets, as Kamailio stores it."""
    if instance is None:
        return None
    text = instance.strip().strip('"').strip()
    if not text.startswith("<"):
        text = f"<{text}>"
    return text


def location_row(aor: str, c: ContactFacts) -> tuple[Any, ...]:
    """One ``location`` row in :data:`LOCATION_COLUMNS` order; ``expires`` and
    ``last_modified`` as epoch seconds (the store spells them as its driver does)."""
    username, domain = split_aor(aor)
    return (
        ruid_of(aor, c.key),
        username,
        domain,
        c.uri,
        received_of(c.uri, c.source),
        ",".join(c.path) if c.path else None,
        c.expires_at // 1000,
        _NO_Q if c.q is None else float(c.q),
        c.call_id,
        c.cseq,
        c.refreshed_at // 1000,
        0,  # flags: no branch flags set by a regstate front-end
        0,  # cflags
        _NO_USER_AGENT if c.user_agent is None else c.user_agent,
        None,  # socket: the phone did not register on this Kamailio; it picks its own
        None,  # methods: not learnt from Allow (registrar stores NULL too)
        instance_as_stored(c.instance),
        0 if c.reg_id is None else c.reg_id,
        0,  # server_id
        _NO_CONNECTION,
        0,  # keepalive
        0,  # partition
    )


def ps_contact_id(endpoint: str, uri: str) -> str:
    """The sorcery id Asterisk gives a contact: ``<aor>;@<md5 of the URI>``."""
    return f"{endpoint};@{hashlib.md5(uri.encode(), usedforsecurity=False).hexdigest()}"


def ps_contact_row(extension: str, c: ContactFacts) -> tuple[Any, ...]:
    """One ``ps_contacts`` row in :data:`PS_CONTACTS_COLUMNS` order (Asterisk's defaults
    for what regstate does not know: no qualify, 3.0 s qualify timeout, 'no' flags)."""
    via_addr, via_port = (c.source[0], c.source[1]) if c.source is not None else ("", 0)
    return (
        ps_contact_id(extension, c.uri),
        c.uri,
        c.expires_at // 1000,
        0,
        "",
        ",".join(c.path),
        c.user_agent or "",
        3.0,
        "",  # reg_server: empty, so every Asterisk of the cluster treats it as its own
        "no",
        via_addr,
        via_port,
        c.call_id,
        extension,
        "no",
        "no",
    )


def julian_day(t_s: int) -> float:
    """Epoch seconds as Kamailio's db_sqlite stores a DATETIME: a REAL Julian day.

    Bit for bit what Kamailio 5.6 writes (the +0.5 s centres the second), checked
    against a row its registrar saved.
    """
    return (t_s + 0.5) / 86400.0 + 2440587.5
