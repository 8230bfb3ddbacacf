"""A tight parser and renderer of SIP requests (RFC 3261 sections 7, 20 and 25; RFC 3581).

What :func:`parse_request` guarantees:

* It refuses, before looking at any content, a message longer than
  ``max_bytes`` (default :data:`MAX_MESSAGE_BYTES`) or whose header section has
  more than :data:`MAX_HEADER_LINES` lines; both checks are a length test and
  one ``bytes.count``, so a 46 KiB flood datagram costs microseconds.
* Every failure raises :class:`SipParseError` (a ``ValueError``) whose message
  names the part that is wrong; nothing else escapes, whatever the bytes.
  The caller answers 400 (or drops the datagram when it is not even a request).
* A returned :class:`SipRequest` has the headers a registrar needs already
  checked: at least one Via, exactly one From, To, Call-ID and CSeq (number
  below 2**31, method equal to the request's), and well-formed Contact, Expires,
  Path, Supported, Max-Forwards and Content-Length when present.

Compact header forms are expanded, folded lines are joined, Contact/Via/Path
lists split on commas outside quoted strings and ``<...>``. The module does no
I/O; the transport frames TCP streams with :func:`frame_stream`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

MAX_MESSAGE_BYTES: Final = 8 * 1024
"""Largest request accepted, UDP or TCP. A REGISTER with ten Contacts, a Path and
credentials is about 2-3 KiB; docs/design.md section 4 keeps at most 8 KiB of ``raw``.
Anything bigger is refused unread: a registrar has no use for it and a parser
must not spend time on it."""
MAX_HEADER_LINES: Final = 64
# Length caps on what becomes a key, a cache entry or an event field (D86): an AOR
# taken from To is canonicalized (percent-encoding may triple it) and must stay
# within the codec's 1,024 characters; a Call-ID keys the transaction cache.
MAX_TO_CHARS: Final = 1024
"""The whole To value (display name and parameters included)."""
MAX_TO_URI_CHARS: Final = 512
"""The To URI, which becomes the AOR."""
MAX_CALL_ID_CHARS: Final = 256
MAX_VIA_CHARS: Final = 512
MAX_VIAS: Final = 16
MAX_PATH_ENTRIES: Final = 16
"""Most lines (folded continuation lines included) the header section may have."""
MAX_CSEQ: Final = 2**31 - 1
"""RFC 3261 section 8.1.1.5: the CSeq number MUST be less than 2**31."""
MAX_DELTA_SECONDS: Final = 2**32 - 1
"""RFC 3261 section 20.19: larger Expires values are taken as 2**32-1."""
_MAX_DIGITS: Final = 10
"""Numbers are parsed only up to this many digits (int() of thousands of digits is slow)."""

COMPACT_FORMS: Final[dict[str, str]] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}
"""RFC 3261 section 7.3.3 and the later RFCs' one-letter header names."""

CANONICAL_NAMES: Final[dict[str, str]] = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Expires",
        "Min-Expires",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "User-Agent",
        "Server",
        "Path",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Authorization",
        "Proxy-Authorization",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Route",
        "Record-Route",
        "Allow",
        "Accept",
        "Date",
        "Subject",
        "Event",
        "Allow-Events",
        "Retry-After",
        "Timestamp",
    )
}

_SINGLE: Final = frozenset(
    {"from", "to", "call-id", "cseq", "max-forwards", "expires", "content-length"}
)
"""Headers that must appear at most once (RFC 3261 section 7.3: not comma lists)."""
CREDENTIAL_HEADERS: Final = frozenset({"authorization", "proxy-authorization"})

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 - the RFC 3261 token, no secret
_TOKEN_RE: Final = re.compile(_TOKEN)
_TOKEN_FULL: Final = re.compile(_TOKEN + r"\Z")
_DISPLAY_TOKENS: Final = re.compile(_TOKEN + r"(?:[ \t]+" + _TOKEN + r")*\Z")
_CTL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CTL_HEAD: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WS: Final = " \t"
# gen-value = token / host / quoted-string; host may be an IPv6 reference.
_PARAM_VALUE_RE: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.!%*_+`'~:]+)")
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?\.?)"
_HOST_RE: Final = re.compile(_HOST + r"\Z")
_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_SIP_URI_RE: Final = re.compile(
    r"(?P<scheme>[sS][iI][pP][sS]?):"
    r"(?:(?P<userinfo>[A-Za-z0-9\-_.!~*'()%&=+$,;?/:]+)@)?"
    r"(?P<host>" + _HOST + r")"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<params>(?:;[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]*)?)*)"
    r"(?:\?(?P<headers>[A-Za-z0-9\-_.!~*'()%\[\]/?:+$]+=[A-Za-z0-9\-_.!~*'()%\[\]/?:+$]*"
    r"(?:&[A-Za-z0-9\-_.!~*'()%\[\]/?:+$]+=[A-Za-z0-9\-_.!~*'()%\[\]/?:+$]*)*))?\Z"
)
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URI_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f<>\"]")
_VIA_RE: Final = re.compile(
    r"[ \t]*(?P<name>" + _TOKEN + r")[ \t]*/[ \t]*(?P<version>" + _TOKEN + r")"
    r"[ \t]*/[ \t]*(?P<transport>" + _TOKEN + r")[ \t]+"
    r"(?P<host>" + _HOST + r")(?:[ \t]*:[ \t]*(?P<port>[0-9]{1,5}))?[ \t]*"
)
_QVALUE_RE: Final = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")
_DIGITS_RE: Final = re.compile(r"[0-9]{1,10}\Z")


class SipParseError(ValueError):
    """The bytes are not a request this node accepts; the message names what is wrong.

    ``header`` names the offending header (canonical spelling) when there is
    one. A front-end answers 400 with the message as reason detail.
    """

    def __init__(self, detail: str, header: str | None = None) -> None:
        self.detail = detail
        self.header = header
        super().__init__(f"{header}: {detail}" if header else detail)


class MessageTooLarge(SipParseError):
    """More bytes than the limit; refused before any parsing."""


class TooManyHeaders(SipParseError):
    """More header lines than the limit; refused before any parsing."""


class NotARequest(SipParseError):
    """A SIP response (or keep-alive) where a request was expected; never answered."""


class MissingHeader(SipParseError):
    """A header RFC 3261 section 8.1.1 makes mandatory is absent."""


def _num(text: str, what: str, header: str | None, limit: int | None = None) -> int:
    text = text.strip(_WS)
    if not _DIGITS_RE.match(text):
        raise SipParseError(f"{what} {text[:40]!r} is not a number", header)
    value = int(text)
    if limit is not None and value > limit:
        raise SipParseError(f"{what} {value} is above {limit}", header)
    return value


def _quoted_end(text: str, start: int, header: str | None) -> int:
    """Index just past the quoted-string that opens at ``start`` (``text[start] == '"'``)."""
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise SipParseError("unterminated quoted string", header)


def unquote(value: str) -> str:
    """The content of a quoted-string (escapes resolved); other text unchanged."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
    return value


def quote(text: str) -> str:
    """``text`` as a quoted-string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value: str, header: str | None = None) -> list[str]:
    """Split a comma list, not at commas inside quoted strings or ``<...>``; no empty items."""
    if "," not in value:
        stripped = value.strip(_WS)
        if not stripped:
            raise SipParseError("empty value", header)
        return [stripped]
    items: list[str] = []
    start = i = 0
    n = len(value)
    in_angle = False
    while i < n:
        ch = value[i]
        if ch == '"' and not in_angle:
            i = _quoted_end(value, i, header)
            continue
        if ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            items.append(value[start:i].strip(_WS))
            start = i + 1
        i += 1
    items.append(value[start:].strip(_WS))
    if any(not item for item in items):
        raise SipParseError("empty list element", header)
    return items


Params = tuple[tuple[str, str | None], ...]


def parse_params(text: str, header: str | None) -> Params:
    """``;name[=value]`` parameters; names lower-cased, values as sent (quotes kept).

    A name repeated in one header is an error (RFC 3261 section 7.3.1 allows each once).
    """
    params: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WS:
            i += 1
        if i == n:
            break
        if text[i] != ";":
            raise SipParseError(f"unexpected {text[i : i + 20]!r} where ';' was expected", header)
        i += 1
        while i < n and text[i] in _WS:
            i += 1
        m = _TOKEN_RE.match(text, i)
        if m is None:
            raise SipParseError(f"bad parameter name at {text[i : i + 20]!r}", header)
        name = m.group().lower()
        i = m.end()
        while i < n and text[i] in _WS:
            i += 1
        value: str | None = None
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in _WS:
                i += 1
            if i < n and text[i] == '"':
                end = _quoted_end(text, i, header)
                value, i = text[i:end], end
            else:
                vm = _PARAM_VALUE_RE.match(text, i)
                if vm is None:
                    raise SipParseError(f"parameter {name} has no value", header)
                value, i = vm.group(), vm.end()
        if name in seen:
            raise SipParseError(f"parameter {name} repeated", header)
        seen.add(name)
        params.append((name, value))
    return tuple(params)


def render_params(params: Params) -> str:
    """The inverse of :func:`parse_params`."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def check_uri(uri: str, header: str | None) -> None:
    """Raise SipParseError unless ``uri`` is a well-formed SIP/SIPS URI or another absolute URI."""
    if not uri:
        raise SipParseError("empty URI", header)
    if _URI_FORBIDDEN.search(uri):
        raise SipParseError(f'URI {uri[:60]!r} holds a space, control character or <>"', header)
    if not _SCHEME_RE.match(uri):
        raise SipParseError(f"URI {uri[:60]!r} has no scheme", header)
    if _BAD_ESCAPE.search(uri):
        raise SipParseError(f"URI {uri[:60]!r} has a bad %-escape", header)
    scheme = uri[: uri.index(":")].lower()
    if scheme in ("sip", "sips"):
        m = _SIP_URI_RE.match(uri)
        if m is None:
            raise SipParseError(f"malformed {scheme} URI {uri[:60]!r}", header)
        if m.group("port") is not None and int(m.group("port")) > 65535:
            raise SipParseError(f"port of {uri[:60]!r} is above 65535", header)
    elif len(uri) == len(scheme) + 1:
        raise SipParseError(f"URI {uri!r} is only a scheme", header)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From, To, Contact, Path or Route value: ``["display"] <uri>;params`` or ``uri;params``."""

    uri: str
    display: str | None = None
    """The display name, unquoted; None when absent."""
    params: Params = ()
    """Header parameters (not the URI's), names lower-case, values as sent."""
    bracketed: bool = True

    def param(self, name: str) -> str | None:
        """A parameter's value as sent (quoted values keep their quotes); None if absent."""
        for n, v in self.params:
            if n == name:
                return v
        return None

    def has_param(self, name: str) -> bool:
        """Whether the parameter is present (with or without a value)."""
        return any(n == name for n, _ in self.params)

    def render(self) -> str:
        """The header value; ``parse_name_addr(x.render())`` equals ``x``."""
        if not self.bracketed and self.display is None:
            return self.uri + render_params(self.params)
        shown = "" if self.display is None else quote(self.display) + " "
        return f"{shown}<{self.uri}>{render_params(self.params)}"


def parse_name_addr(text: str, header: str | None) -> NameAddr:
    """One name-addr or addr-spec with its header parameters (RFC 3261 section 20.10)."""
    s = text.strip(_WS)
    if not s:
        raise SipParseError("empty address", header)
    display: str | None = None
    if s[0] == '"':
        end = _quoted_end(s, 0, header)
        display = unquote(s[:end])
        rest = s[end:].lstrip(_WS)
        if not rest.startswith("<"):
            raise SipParseError("display name not followed by <URI>", header)
        s = rest
    lt = s.find("<")
    if lt != -1:
        if display is None and lt > 0:
            shown = s[:lt].strip(_WS)
            if not _DISPLAY_TOKENS.match(shown):
                raise SipParseError(f"display name {shown[:40]!r} must be quoted", header)
            display = shown
        gt = s.find(">", lt)
        if gt == -1:
            raise SipParseError("'<' without '>'", header)
        uri, params_text, bracketed = s[lt + 1 : gt], s[gt + 1 :], True
    else:
        # addr-spec: RFC 3261 section 20 puts every ';' parameter of an unbracketed
        # URI on the header, and forbids ',', '?' and ';' in the URI itself.
        uri, sep, params_text = s.partition(";")
        params_text = sep + params_text
        uri = uri.rstrip(_WS)
        bracketed = False
        if "?" in uri:
            raise SipParseError("URI with headers must be in <>", header)
    check_uri(uri, header)
    return NameAddr(uri, display, parse_params(params_text, header), bracketed)


@dataclass(frozen=True, slots=True)
class Contact:
    """One Contact of a REGISTER, its RFC 3261/5626 parameters checked."""

    addr: NameAddr
    expires: int | None = None
    """The ``expires`` parameter, clamped to 2**32-1; None when absent."""
    q: float | None = None
    instance: str | None = None
    """``+sip.instance`` unquoted (``<urn:uuid:...>``); None when absent."""
    reg_id: int | None = None

    @property
    def uri(self) -> str:
        """The Contact URI as sent."""
        return self.addr.uri


def _contact(text: str) -> Contact:
    h = "Contact"
    addr = parse_name_addr(text, h)
    expires: int | None = None
    q: float | None = None
    instance: str | None = None
    reg_id: int | None = None
    for name, value in addr.params:
        if name == "expires":
            if value is None:
                raise SipParseError("expires parameter without value", h)
            expires = min(_num(value, "expires", h), MAX_DELTA_SECONDS)
        elif name == "q":
            if value is None or not _QVALUE_RE.match(value):
                raise SipParseError(f"q={value!r} is not a qvalue (0 to 1)", h)
            q = float(value)
        elif name == "+sip.instance":
            if value is None or not value.startswith('"'):
                raise SipParseError("+sip.instance must be a quoted string", h)
            instance = unquote(value)
        elif name == "reg-id":
            if value is None:
                raise SipParseError("reg-id without value", h)
            reg_id = _num(value, "reg-id", h, MAX_CSEQ)
            if reg_id == 0:
                raise SipParseError("reg-id must be at least 1 (RFC 5626)", h)
    return Contact(addr, expires, q, instance, reg_id)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...;rport``."""

    transport: str
    """Upper-case transport (UDP, TCP, TLS, WS, ...)."""
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        """The branch parameter; RFC 3261 branches start with ``z9hG4bK``."""
        for n, v in self.params:
            if n == "branch":
                return v
        return None

    @property
    def wants_rport(self) -> bool:
        """The client asked for symmetric response routing (RFC 3581)."""
        return any(n == "rport" for n, _ in self.params)

    def render(self) -> str:
        """The header value; ``parse_via(v.render())`` equals ``v``."""
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{render_params(self.params)}"

    def with_source(self, ip: str, port: int) -> Via:
        """This Via as a server returns it (RFC 3261 section 18.2.1, RFC 3581 section 4).

        ``received`` is set when the sent-by host differs from the packet's
        source address, and always when the client asked for ``rport``; an
        empty ``rport`` gets the source port.
        """
        params = list(self.params)
        names = [n for n, _ in params]
        if self.wants_rport:
            params[names.index("rport")] = ("rport", str(port))
        if self.wants_rport or self.host.strip("[]").lower() != ip.lower():
            if "received" in names:
                params[names.index("received")] = ("received", ip)
            else:
                params.append(("received", ip))
        return replace(self, params=tuple(params))


def parse_via(text: str) -> Via:
    """One via-parm (RFC 3261 section 20.42)."""
    h = "Via"
    m = _VIA_RE.match(text)
    if m is None:
        raise SipParseError(f"malformed Via {text[:60]!r}", h)
    if m.group("name").upper() != "SIP" or m.group("version") != "2.0":
        raise SipParseError(f"unsupported protocol {m.group('name')}/{m.group('version')}", h)
    port = None
    if m.group("port") is not None:
        port = int(m.group("port"))
        if port > 65535:
            raise SipParseError(f"port {port} is above 65535", h)
    params = parse_params(text[m.end() :], h)
    for name, value in params:
        if name == "rport" and value is not None:
            _num(value, "rport", h, 65535)
        elif name in ("branch", "received") and value is None:
            raise SipParseError(f"{name} parameter without value", h)
    return Via(m.group("transport").upper(), m.group("host"), port, params)


class _Message:
    """What requests and responses answer alike, from their ``headers`` and ``vias``."""

    __slots__ = ()
    headers: tuple[tuple[str, str], ...]
    vias: tuple[Via, ...]

    def header(self, name: str) -> str | None:
        """The first value of a header (long name, any case); None if absent."""
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, in order (each header line once, lists not split)."""
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    @property
    def top_via(self) -> Via:
        """The top Via: the hop that sent the request, the one a response goes back to
        (its branch names the transaction)."""
        return self.vias[0]


@dataclass(frozen=True, slots=True)
class SipRequest(_Message):
    """A parsed request. Header values are as sent (unfolded), in order of arrival."""

    method: str
    uri: str
    headers: tuple[tuple[str, str], ...]
    """(lower-case long header name, value) pairs; compact names expanded."""
    body: bytes
    vias: tuple[Via, ...]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: int
    contacts: tuple[Contact, ...] = ()
    wildcard: bool = False
    """``Contact: *`` (alone, as RFC 3261 section 10.2.2 requires)."""
    expires: int | None = None
    path: tuple[NameAddr, ...] = ()
    supported: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    user_agent: str | None = None
    max_forwards: int | None = None
    raw_lines: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(lower-case name, the header's lines as received) for each header, for ``raw``."""
    start_line: str = ""

    def raw_without_credentials(self) -> str:
        """Start line and headers as received, Authorization and Proxy-Authorization removed."""
        lines = [self.start_line]
        lines += [text for name, text in self.raw_lines if name not in CREDENTIAL_HEADERS]
        return "\r\n".join(lines) + "\r\n"


def _long_name(name: str) -> str:
    lower = name.lower()
    return COMPACT_FORMS.get(lower, lower)


def display_name(lname: str) -> str:
    """The conventional spelling of a (long, lower-case) header name."""
    return CANONICAL_NAMES.get(lname) or "-".join(p.capitalize() for p in lname.split("-"))


def _head_end(data: bytes) -> tuple[int, int]:
    """(end of the header section, start of the body); raises if there is no blank line."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf == -1 and lf == -1:
        raise SipParseError("no empty line after the headers")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return crlf, crlf + 4
    return lf, lf + 2


def _split(
    data: bytes, max_bytes: int, max_header_lines: int
) -> tuple[bytes, str, list[tuple[str, str]], list[tuple[str, str]], int]:
    """(data without leading CRLFs, start line, headers, raw header lines, body start).

    The part of parsing that requests and responses share: size and line caps,
    UTF-8, control characters, folding, header names.
    """
    if len(data) > max_bytes:
        raise MessageTooLarge(f"message of {len(data)} bytes is above the {max_bytes} byte limit")
    # Leading CRLFs are allowed before a message (RFC 3261 section 7.5).
    data = data.lstrip(b"\r\n")
    if not data:
        raise NotARequest("keep-alive or empty message")
    end, body_start = _head_end(data)
    if data.count(b"\n", 0, end) >= max_header_lines:
        raise TooManyHeaders(f"more than {max_header_lines} header lines")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header section is not UTF-8 (byte {exc.start})") from None
    lines = head.split("\n")
    # One scan of the whole head; the per-line search runs only to name the line.
    if _CTL_HEAD.search(head) or "\r" in head.replace("\r\n", ""):
        for idx, line in enumerate(lines):
            if _CTL.search(line.removesuffix("\r")):
                raise SipParseError(f"control character in line {idx + 1}")
    lines = [line.removesuffix("\r") for line in lines]
    headers: list[tuple[str, str]] = []
    raw_lines: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError("continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip(_WS)}".strip(_WS))
            raw_lines[-1] = (name, raw_lines[-1][1] + "\r\n" + line)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError(f"header line {line[:60]!r} has no name and ':'")
        raw_name = line[:colon].rstrip(_WS)
        if not _TOKEN_FULL.match(raw_name):
            raise SipParseError(f"header name {raw_name[:40]!r} is not a token")
        name = _long_name(raw_name)
        headers.append((name, line[colon + 1 :].strip(_WS)))
        raw_lines.append((name, line))
    return data, lines[0], headers, raw_lines, body_start


def parse_request(
    data: bytes,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    max_header_lines: int = MAX_HEADER_LINES,
    stream: bool = False,
) -> SipRequest:
    """Parse one SIP request; raise :class:`SipParseError` (a ValueError) on anything else.

    ``stream``: the message came over TCP/TLS, so Content-Length is mandatory
    (RFC 3261 section 18.3) and must match the body exactly. Over UDP a missing
    Content-Length means the body runs to the end of the datagram, and bytes
    beyond Content-Length are ignored.
    """
    data, start_line, headers, raw_lines, body_start = _split(data, max_bytes, max_header_lines)
    if start_line.startswith("SIP/"):
        raise NotARequest("a response, not a request")
    parts = start_line.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"request line {start_line[:80]!r} is not 'METHOD URI SIP/2.0'")
    method, uri, version = parts
    if not _TOKEN_FULL.match(method):
        raise SipParseError(f"method {method[:30]!r} is not a token")
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"version {version[:30]!r} is not SIP/2.0")
    check_uri(uri, "Request-URI")
    m = _SIP_URI_RE.match(uri)
    if m is not None and m.group("headers") is not None:
        # RFC 3261 section 19.1.5: headers are not allowed in a Request-URI.
        raise SipParseError("URI headers ('?') are not allowed here", "Request-URI")
    return _build(method, uri, headers, raw_lines, start_line, data, body_start, stream)


class NotAResponse(SipParseError):
    """The message is a request (or empty), not a response."""


@dataclass(frozen=True, slots=True)
class SipResponse(_Message):
    """A parsed response, with the headers a registrar's answer is read for.

    Contacts are parsed as in a request (a registrar's 200 lists every binding
    with its granted ``expires``); header values are as sent, in order.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    """(lower-case long header name, value) pairs; compact names expanded."""
    vias: tuple[Via, ...]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: int
    method: str
    """The method of the CSeq header: the request this answers."""
    contacts: tuple[Contact, ...] = ()
    expires: int | None = None
    body: bytes = b""
    start_line: str = ""


def _status_line(line: str) -> tuple[int, str]:
    if not line.startswith("SIP/"):
        raise NotAResponse("a request, not a response")
    parts = line.split(" ", 2)
    parts += [""] * (3 - len(parts))
    version, status_text, reason = parts
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"version {version[:30]!r} is not SIP/2.0")
    if len(status_text) != 3 or not status_text.isdigit() or status_text[0] not in "123456":
        raise SipParseError(f"status {status_text[:30]!r} is not a 3-digit code 100-699")
    return int(status_text), reason


def response_status(data: bytes) -> int:
    """The status code of a response's status line only (raises SipParseError otherwise).

    For a response whose headers may not parse: a 400 echoes the request's
    headers as received (RFC 3261 section 8.2.6), malformed ones included.
    """
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0].removesuffix(b"\r")
    return _status_line(first.decode("utf-8", "replace"))[0]


def parse_response(
    data: bytes,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    max_header_lines: int = MAX_HEADER_LINES,
    stream: bool = False,
) -> SipResponse:
    """Parse one SIP response; raise :class:`SipParseError` (a ValueError) on anything else.

    The same caps and header rules as :func:`parse_request`; Via, From, To,
    Call-ID and CSeq are required (RFC 3261 section 8.2.6.2 copies them from the
    request).
    """
    data, start_line, headers, _raw, body_start = _split(data, max_bytes, max_header_lines)
    status, reason = _status_line(start_line)
    common = _common(headers)
    return SipResponse(
        status=status,
        reason=reason,
        headers=tuple(headers),
        vias=common.vias,
        from_=common.from_,
        to=common.to,
        call_id=common.call_id,
        cseq=common.cseq,
        method=common.method,
        contacts=common.contacts,
        expires=common.expires,
        body=_body(headers, data, body_start, stream),
        start_line=start_line,
    )


def _one(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    values = [v for n, v in headers if n == name]
    if len(values) > 1:
        raise SipParseError("appears more than once", display_name(name))
    return values[0] if values else None


def _required(headers: Sequence[tuple[str, str]], name: str) -> str:
    value = _one(headers, name)
    if value is None or not value:
        raise MissingHeader("missing", display_name(name))
    return value


def _list(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    out: list[str] = []
    for n, v in headers:
        if n == name:
            out += split_list(v, display_name(name))
    return out


class _Common(NamedTuple):
    vias: tuple[Via, ...]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: int
    method: str
    contacts: tuple[Contact, ...]
    wildcard: bool
    expires: int | None


def _common(headers: list[tuple[str, str]], method: str | None = None) -> _Common:
    """The headers every request and response carries, and Contact/Expires.

    ``method``: a request's method, which its CSeq must repeat."""
    seen: set[str] = set()
    for name, _ in headers:
        if name in _SINGLE:
            if name in seen:
                raise SipParseError("appears more than once", display_name(name))
            seen.add(name)
    via_values = _list(headers, "via")
    if len(via_values) > MAX_VIAS:
        raise SipParseError(f"{len(via_values)} values (limit {MAX_VIAS})", "Via")
    if any(len(v) > MAX_VIA_CHARS for v in via_values):
        raise SipParseError(f"a value is longer than {MAX_VIA_CHARS} characters", "Via")
    vias = tuple(parse_via(v) for v in via_values)
    if not vias:
        raise MissingHeader("missing", "Via")
    from_ = parse_name_addr(_required(headers, "from"), "From")
    to_text = _required(headers, "to")
    if len(to_text) > MAX_TO_CHARS:
        raise SipParseError(f"longer than {MAX_TO_CHARS} characters", "To")
    to = parse_name_addr(to_text, "To")
    if len(to.uri) > MAX_TO_URI_CHARS:
        raise SipParseError(f"URI longer than {MAX_TO_URI_CHARS} characters", "To")
    call_id = _required(headers, "call-id")
    if len(call_id) > MAX_CALL_ID_CHARS:
        raise SipParseError(f"longer than {MAX_CALL_ID_CHARS} characters", "Call-ID")
    if any(ch in _WS for ch in call_id):
        raise SipParseError("holds whitespace", "Call-ID")
    cseq_text = _required(headers, "cseq")
    number, _, cseq_method = cseq_text.partition(" ")
    cseq = _num(number, "number", "CSeq", MAX_CSEQ)
    if method is not None and cseq_method.strip(_WS) != method:
        raise SipParseError(f"method {cseq_method.strip(_WS)[:30]!r} is not {method}", "CSeq")
    contacts: list[Contact] = []
    wildcard = False
    for item in _list(headers, "contact"):
        if item == "*":
            wildcard = True
        else:
            contacts.append(_contact(item))
    if wildcard and contacts:
        raise SipParseError("'*' mixed with other contacts", "Contact")
    expires_text = _one(headers, "expires")
    expires = (
        None
        if expires_text is None
        else min(_num(expires_text, "value", "Expires"), MAX_DELTA_SECONDS)
    )
    return _Common(
        vias, from_, to, call_id, cseq, cseq_method.strip(_WS), tuple(contacts), wildcard, expires
    )


def _body(headers: list[tuple[str, str]], data: bytes, body_start: int, stream: bool) -> bytes:
    cl_text = _one(headers, "content-length")
    rest = data[body_start:]
    if cl_text is None:
        if stream:
            raise MissingHeader("missing (mandatory over TCP)", "Content-Length")
        return rest
    length = _num(cl_text, "value", "Content-Length")
    if length > len(rest):
        raise SipParseError(f"{length} but only {len(rest)} body bytes", "Content-Length")
    if stream and length != len(rest):
        raise SipParseError(f"{length} but {len(rest)} body bytes", "Content-Length")
    return rest[:length]


def _build(
    method: str,
    uri: str,
    headers: list[tuple[str, str]],
    raw_lines: list[tuple[str, str]],
    start_line: str,
    data: bytes,
    body_start: int,
    stream: bool,
) -> SipRequest:
    common = _common(headers, method)
    path_values = _list(headers, "path")
    if len(path_values) > MAX_PATH_ENTRIES:
        raise SipParseError(f"{len(path_values)} entries (limit {MAX_PATH_ENTRIES})", "Path")
    path = tuple(parse_name_addr(p, "Path") for p in path_values)
    supported = tuple(_tokens(_list(headers, "supported"), "Supported"))
    require = tuple(_tokens(_list(headers, "require"), "Require"))
    mf_text = _one(headers, "max-forwards")
    max_forwards = None if mf_text is None else _num(mf_text, "value", "Max-Forwards", 255)
    body = _body(headers, data, body_start, stream)
    return SipRequest(
        method=method,
        uri=uri,
        headers=tuple(headers),
        body=body,
        vias=common.vias,
        from_=common.from_,
        to=common.to,
        call_id=common.call_id,
        cseq=common.cseq,
        contacts=common.contacts,
        wildcard=common.wildcard,
        expires=common.expires,
        path=path,
        supported=supported,
        require=require,
        user_agent=_one_any(headers, "user-agent"),
        max_forwards=max_forwards,
        raw_lines=tuple(raw_lines),
        start_line=start_line,
    )


def _one_any(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def _tokens(items: Iterable[str], header: str) -> list[str]:
    for item in items:
        if not _TOKEN_FULL.match(item):
            raise SipParseError(f"{item[:30]!r} is not an option tag", header)
    return list(items)


def render_request(
    method: str, uri: str, headers: Sequence[tuple[str, str]], body: bytes = b""
) -> bytes:
    """A request as bytes: start line, ``Name: value`` lines, Content-Length (added if
    absent) and the body. Header names are written as given."""
    lines = [f"{method} {uri} SIP/2.0"]
    has_length = False
    for name, value in headers:
        if _long_name(name) == "content-length":
            has_length = True
        lines.append(f"{name}: {value}")
    if not has_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


class FramingError(SipParseError):
    """A TCP stream cannot be framed into messages; the connection must be closed."""


def frame_stream(buffer: bytes | bytearray, max_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """Length of the first complete message in a TCP stream buffer; 0 if more bytes are needed.

    Leading CRLFs (RFC 5626 keep-alives) are part of the returned length and
    :func:`parse_request` skips them. Raises FramingError when the header
    section or the announced message exceeds ``max_bytes`` (the stream cannot
    be resynchronized then) or Content-Length is missing or not a number.
    """
    view = bytes(buffer[: max_bytes + 4])
    skip = len(view) - len(view.lstrip(b"\r\n"))
    try:
        end, body_start = _head_end(view[skip:])
    except SipParseError:
        if len(buffer) - skip > max_bytes:
            raise FramingError(f"no end of headers within {max_bytes} bytes") from None
        return 0
    head = view[skip : skip + end]
    m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,10})[ \t]*\r?$", head)
    if m is None:
        raise FramingError("Content-Length missing or malformed (mandatory over TCP)")
    total = skip + body_start + int(m.group(1))
    if total - skip > max_bytes:
        raise FramingError(f"message of {total - skip} bytes is above the {max_bytes} byte limit")
    return total if len(buffer) >= total else 0
