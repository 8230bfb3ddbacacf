"""SIP URI canonical forms and comparison (RFC 3261 sections 10.3 and 19.1.4).

Two uses: the AOR that keys every topic (rule R1), and the binding key of a
Contact (rule R2). Parsing is lenient (a Contact we cannot parse still gets a
stable key: its lower-cased text) because the front-end already answered the
request; the fold must not fail on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# RFC 3261 section 19.1.4: a user, ttl, method or maddr parameter present in only
# one URI makes them differ; any other parameter present in only one is ignored.
# transport joins them: the section's own examples list sip:bob@biloxi.com and
# sip:bob@biloxi.com;transport=udp as different ("can resolve to different
# transports"), and a phone reached over TCP is not reached over UDP.
_MUST_MATCH_PARAMS = frozenset({"user", "ttl", "method", "maddr", "transport"})
_RESERVED = frozenset(";/?:@&=+$,")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")


def _unescape_unreserved(text: str) -> str:
    """Decode %HH of characters outside the reserved set; upper-case the hex of the rest."""
    if "%" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        if ch in _RESERVED or not (0x21 <= ord(ch) < 0x7F):
            return "%" + m.group(1).upper()
        return ch

    return _PCT.sub(repl, text)


@dataclass(frozen=True, slots=True)
class SipUri:
    """The comparable parts of a SIP or SIPS URI."""

    scheme: str
    userinfo: str | None
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]
    headers: tuple[tuple[str, str], ...]

    def canonical(self) -> str:
        """A string equal for URIs whose every component is equal."""
        out = [self.scheme, ":"]
        if self.userinfo is not None:
            out += [self.userinfo, "@"]
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        for name, value in self.params:
            out += [";", name] if value is None else [";", name, "=", value]
        if self.headers:
            out += ["?", "&".join(f"{n}={v}" for n, v in self.headers)]
        return "".join(out)


def _strip_brackets(text: str) -> str:
    """The URI of a name-addr (``"Name" <uri>``), or the text itself for a bare URI."""
    text = text.strip()
    start = 0
    if text.startswith('"'):
        # A quoted display name may itself hold '<' (RFC 3261 quoted-string).
        i = 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                break
            i += 1
        start = i + 1
    lt = text.find("<", start)
    if lt != -1:
        gt = text.find(">", lt)
        if gt != -1:
            return text[lt + 1 : gt].strip()
    return text


@lru_cache(maxsize=65536)
def parse_sip_uri(text: str) -> SipUri | None:
    """Parse a sip:/sips: URI (name-addr brackets allowed); None for other schemes or junk."""
    text = _strip_brackets(text)
    colon = text.find(":")
    if colon <= 0:
        return None
    scheme = text[:colon].lower()
    if scheme not in ("sip", "sips"):
        return None
    rest = text[colon + 1 :]
    headers_text = ""
    q = rest.find("?")
    if q != -1:
        rest, headers_text = rest[:q], rest[q + 1 :]
    userinfo: str | None = None
    at = rest.rfind("@")
    if at != -1:
        userinfo = _unescape_unreserved(rest[:at])
        rest = rest[at + 1 :]
    hostport, _, params_text = rest.partition(";")
    hostport = hostport.strip()
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            return None
        host, port_text = hostport[: end + 1], hostport[end + 1 :]
        if port_text:
            if not port_text.startswith(":"):
                return None
            port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if port_text:
        if not port_text.isdigit():
            return None
        port = int(port_text)
    if not host:
        return None
    params: dict[str, str | None] = {}
    if params_text:
        for part in params_text.split(";"):
            if not part:
                continue
            name, eq, value = part.partition("=")
            params[_unescape_unreserved(name.strip()).lower()] = (
                _unescape_unreserved(value.strip()).lower() if eq else None
            )
    headers: list[tuple[str, str]] = []
    if headers_text:
        for part in headers_text.split("&"):
            name, _, value = part.partition("=")
            headers.append((_unescape_unreserved(name).lower(), _unescape_unreserved(value)))
    return SipUri(
        scheme=scheme,
        userinfo=userinfo,
        host=host.lower(),
        port=port,
        params=tuple(sorted(params.items())),
        headers=tuple(sorted(headers)),
    )


def uri_equal(a: str, b: str) -> bool:
    """RFC 3261 section 19.1.4 comparison of two URIs (non-SIP URIs: case-insensitive text)."""
    if a == b:
        return True
    pa, pb = parse_sip_uri(a), parse_sip_uri(b)
    if pa is None or pb is None:
        if pa is None and pb is None:
            return _strip_brackets(a).lower() == _strip_brackets(b).lower()
        return False
    if (pa.scheme, pa.userinfo, pa.host, pa.port, pa.headers) != (
        pb.scheme,
        pb.userinfo,
        pb.host,
        pb.port,
        pb.headers,
    ):
        return False
    da, db = dict(pa.params), dict(pb.params)
    for name in da.keys() | db.keys():
        in_a, in_b = name in da, name in db
        if in_a and in_b:
            if da[name] != db[name]:
                return False
        elif name in _MUST_MATCH_PARAMS:
            return False
    return True


@lru_cache(maxsize=65536)
def contact_key(uri: str) -> str:
    """The binding key of a Contact URI without instance/reg-id (rule R2)."""
    parsed = parse_sip_uri(uri)
    if parsed is None:
        return _strip_brackets(uri).lower()
    return parsed.canonical()


def normalize_instance(instance: str) -> str:
    """``+sip.instance`` as compared: quotes and angle brackets removed, lower-case (URNs)."""
    return instance.strip().strip('"').strip().lstrip("<").rstrip(">").lower()


def flow_key(instance: str, reg_id: int) -> str:
    """The binding key of an RFC 5626 flow: the device instance and its reg-id."""
    return f"{normalize_instance(instance)};reg-id={reg_id}"


class AorError(ValueError):
    """The text cannot be made into an address-of-record."""


TRUNK_PREFIX = "trunk:"
"""D50: the AOR of a registration a monitored server sends to a carrier is
``trunk:`` + the canonical AOR, so trunks are kept apart from phones everywhere."""


def trunk_aor(aor: str) -> str:
    """The trunk AOR of a canonical AOR (idempotent)."""
    return aor if aor.startswith(TRUNK_PREFIX) else TRUNK_PREFIX + aor


def is_trunk(aor: str) -> bool:
    """Whether an AOR names a trunk registration (D50)."""
    return aor.startswith(TRUNK_PREFIX)


@lru_cache(maxsize=65536)
def canonical_aor(text: str) -> str:
    """R1: the To URI with every parameter removed, scheme and host lower-case, user as sent.

    Accepts a bare URI or a name-addr (``"Agent" <sip:1001@pbx.example;transport=udp>``),
    and ``trunk:`` before a SIP URI (a trunk, D50).
    Raises AorError when the text is no SIP URI with a host.
    """
    if text[:6].lower() == TRUNK_PREFIX:
        inner_aor = canonical_aor(text[6:])
        if inner_aor.startswith(TRUNK_PREFIX):
            raise AorError(f"AOR {text!r}: trunk of a trunk")
        return TRUNK_PREFIX + inner_aor
    inner = _strip_brackets(text)
    colon = inner.find(":")
    if colon <= 0:
        raise AorError(f"AOR {text!r} is not a URI")
    scheme = inner[:colon].lower()
    rest = inner[colon + 1 :]
    if scheme not in ("sip", "sips"):
        if scheme == "tel" and rest:
            return f"tel:{rest.split(';', 1)[0]}"
        raise AorError(f"AOR {text!r}: scheme {scheme!r} is not sip, sips or tel")
    rest = rest.split("?", 1)[0]
    at = rest.rfind("@")
    user = rest[: at + 1] if at != -1 else ""
    hostport = rest[at + 1 :].split(";", 1)[0].strip()
    if not hostport or hostport.startswith(":"):
        raise AorError(f"AOR {text!r} has no host")
    return f"{scheme}:{user}{hostport.lower()}"
