"""Properties of the SIP parser: generated requests round-trip; no input makes it crash.

Crash means: raising anything other than SipParseError (or returning garbage
for a well-formed request). The mutational fuzzer starts from the torture
corpus of tests/sip_torture/ and from generated REGISTERs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.sip.message import (
    COMPACT_FORMS,
    MAX_MESSAGE_BYTES,
    NameAddr,
    SipParseError,
    SipRequest,
    frame_stream,
    parse_request,
    quote,
    render_request,
)
from tests.unit.sip_corpus import corpus

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
LONG_TO_COMPACT = {long: short for short, long in COMPACT_FORMS.items()}

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=10)
labels = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
hostnames = st.lists(labels, min_size=1, max_size=3).map(".".join)
hosts = st.one_of(
    hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
users = st.text(
    alphabet=string.ascii_letters + string.digits + "_.!~*'()&=+$,-", min_size=1, max_size=12
)
ports = st.none() | st.integers(1, 65535)
uri_params = st.lists(
    st.sampled_from([";transport=udp", ";transport=tcp", ";lr", ";ob", ";x-y=z9"]),
    max_size=2,
    unique=True,
).map("".join)


@st.composite
def sip_uris(draw: st.DrawFn, with_user: bool = True) -> str:
    user = draw(users) + "@" if with_user else ""
    port = draw(ports)
    return f"sip:{user}{draw(hosts)}{'' if port is None else f':{port}'}{draw(uri_params)}"


displays = st.none() | st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=16,
)
header_params = st.lists(
    st.tuples(
        tokens.map(str.lower).filter(
            lambda n: n not in {"expires", "q", "reg-id", "+sip.instance"}
        ),
        st.none() | tokens | st.text(alphabet=string.printable[:94], max_size=8).map(quote),
    ),
    max_size=3,
    unique_by=lambda p: p[0],
).map(tuple)


@st.composite
def name_addrs(draw: st.DrawFn, params: Any = header_params) -> NameAddr:
    return NameAddr(draw(sip_uris()), draw(displays), draw(params), True)


@st.composite
def contacts(draw: st.DrawFn) -> dict[str, Any]:
    c: dict[str, Any] = {
        "addr": draw(name_addrs(st.just(()))),
        "expires": draw(st.none() | st.integers(0, 2**32 - 1)),
        "q": draw(st.none() | st.sampled_from(["0", "0.5", "1.0", "0.123", "1"])),
        "instance": draw(st.none() | st.uuids().map(lambda u: f"<urn:uuid:{u}>")),
        "reg_id": draw(st.none() | st.integers(1, 2**31 - 1)),
    }
    return c


def contact_text(c: dict[str, Any]) -> str:
    text: str = c["addr"].render()
    if c["expires"] is not None:
        text += f";expires={c['expires']}"
    if c["q"] is not None:
        text += f";q={c['q']}"
    if c["instance"] is not None:
        text += f';+sip.instance="{c["instance"]}"'
    if c["reg_id"] is not None:
        text += f";reg-id={c['reg_id']}"
    return text


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(["REGISTER", "OPTIONS"]))
    vias = draw(
        st.lists(
            st.tuples(st.sampled_from(["UDP", "TCP", "TLS"]), hosts, ports, tokens, st.booleans()),
            min_size=1,
            max_size=3,
        )
    )
    wildcard = method == "REGISTER" and draw(st.booleans()) and draw(st.booleans())
    return {
        "method": method,
        "uri": draw(sip_uris(with_user=False)),
        "vias": vias,
        "from": draw(name_addrs()),
        "to": draw(name_addrs()),
        "call_id": draw(tokens) + draw(st.sampled_from(["", "@host", "@10.0.0.1"])),
        "cseq": draw(st.integers(0, 2**31 - 1)),
        "contacts": [] if wildcard else draw(st.lists(contacts(), max_size=4)),
        "wildcard": wildcard,
        "expires": 0 if wildcard else draw(st.none() | st.integers(0, 2**32 - 1)),
        "path": draw(st.lists(sip_uris(with_user=False), max_size=2)),
        "supported": draw(st.lists(tokens, max_size=3)),
        "user_agent": draw(
            st.none()
            | st.text(alphabet=string.ascii_letters + " /.,;()-_", min_size=1, max_size=20)
            .map(str.strip)
            .filter(bool)
        ),
        "body": draw(st.binary(max_size=40)),
        # rendering choices
        "names": draw(st.sampled_from(["long", "compact", "upper", "lower"])),
        "colon": draw(st.sampled_from([": ", ":", " : ", ":\t"])),
        "split_contacts": draw(st.booleans()),
        "fold": draw(st.booleans()),
    }


def render(m: dict[str, Any]) -> bytes:
    def name(long: str) -> str:
        style = m["names"]
        if style == "compact" and long.lower() in LONG_TO_COMPACT:
            return LONG_TO_COMPACT[long.lower()]
        return {"upper": long.upper(), "lower": long.lower()}.get(style, long)

    sep = ",\r\n " if m["fold"] else ", "
    headers: list[tuple[str, str]] = []
    for transport, host, port, branch, rport in m["vias"]:
        sent_by = host if port is None else f"{host}:{port}"
        value = f"SIP/2.0/{transport} {sent_by};branch=z9hG4bK{branch}" + (
            ";rport" if rport else ""
        )
        headers.append((name("Via"), value))
    headers += [
        (name("From"), m["from"].render()),
        (name("To"), m["to"].render()),
        (name("Call-ID"), m["call_id"]),
        (name("CSeq"), f"{m['cseq']} {m['method']}"),
    ]
    if m["wildcard"]:
        headers.append((name("Contact"), "*"))
    elif m["contacts"]:
        texts = [contact_text(c) for c in m["contacts"]]
        if m["split_contacts"]:
            headers += [(name("Contact"), t) for t in texts]
        else:
            headers.append((name("Contact"), sep.join(texts)))
    if m["expires"] is not None:
        headers.append((name("Expires"), str(m["expires"])))
    if m["path"]:
        headers.append((name("Path"), sep.join(f"<{p}>" for p in m["path"])))
    if m["supported"]:
        headers.append((name("Supported"), sep.join(m["supported"])))
    if m["user_agent"] is not None:
        headers.append((name("User-Agent"), m["user_agent"]))
    headers.append((name("Content-Length"), str(len(m["body"]))))
    data = render_request(m["method"], m["uri"], headers, m["body"])
    if m["colon"] != ": ":
        head, _, body = data.partition(b"\r\n\r\n")
        # Only the separator after each header name: a quoted display name such as
        # ": " must keep its own colon and space.
        lines = head.split(b"\r\n")
        lines[1:] = [
            line if line[:1] in (b" ", b"\t") else line.replace(b": ", m["colon"].encode(), 1)
            for line in lines[1:]
        ]
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    return data


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_generated_requests_round_trip(m: dict[str, Any]) -> None:
    data = render(m)
    if len(data) > MAX_MESSAGE_BYTES:
        return
    r = parse_request(data, stream=True)
    assert r.method == m["method"] and r.uri == m["uri"]
    assert [(v.transport, v.host, v.port, v.branch, v.wants_rport) for v in r.vias] == [
        (t, h, p, f"z9hG4bK{b}", rp) for t, h, p, b, rp in m["vias"]
    ]
    assert r.from_ == m["from"] and r.to == m["to"]
    assert r.call_id == m["call_id"] and r.cseq == m["cseq"]
    assert r.wildcard == m["wildcard"]
    got = [(c.addr.uri, c.addr.display, c.expires, c.q, c.instance, c.reg_id) for c in r.contacts]
    want = [
        (
            c["addr"].uri,
            c["addr"].display,
            c["expires"],
            None if c["q"] is None else float(c["q"]),
            c["instance"],
            c["reg_id"],
        )
        for c in m["contacts"]
    ]
    assert got == want
    assert r.expires == m["expires"]
    assert [p.uri for p in r.path] == m["path"]
    assert list(r.supported) == m["supported"]
    assert r.user_agent == m["user_agent"]
    assert r.body == m["body"]
    assert frame_stream(data + b"REGISTER") == len(data)
    # And the parsed headers render back to an equal request.
    again = parse_request(render_request(r.method, r.uri, r.headers, r.body), stream=True)
    assert dataclasses.replace(again, raw_lines=(), start_line="") == dataclasses.replace(
        r, raw_lines=(), start_line=""
    )


def _parse_or_error(data: bytes) -> SipRequest | None:
    try:
        return parse_request(data)
    except SipParseError:
        return None


@settings(max_examples=500)
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_only_raise_parse_error(data: bytes) -> None:
    _parse_or_error(data)
    with contextlib.suppress(SipParseError):
        frame_stream(data)


FRAGMENTS = [
    b"REGISTER sip:a SIP/2.0\r\n",
    b"Via: SIP/2.0/UDP h;branch=z9hG4bK1",
    b";rport",
    b";received=",
    b"From: ",
    b"To: ",
    b"m: ",
    b"i: x",
    b"CSeq: 1 REGISTER",
    b"l: 0",
    b"\r\n",
    b"\r\n\r\n",
    b"<sip:u@h>",
    b'"q\\"',
    b'"',
    b"<",
    b">",
    b",",
    b";",
    b"=",
    b"*",
    b"%",
    b"%4",
    b"\t",
    b" ",
    b";expires=",
    b";q=",
    b';+sip.instance="<urn:x>"',
    b";reg-id=",
    b"99999999999",
    b"\x00",
    b"\xff",
    b"[::1]",
    b":65536",
    b"Expires: ",
    b"Content-Length: 5",
    b"Path: ",
    b"k: a, b",
]


@settings(max_examples=500)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join))
def test_sip_like_fragments_only_raise_parse_error(data: bytes) -> None:
    _parse_or_error(data)


SEEDS = list(corpus().values())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus message with a few byte-level mutations (flip, insert, delete, splice, dup)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "splice", "dup", "token"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(pos, len(data) - 1)
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(0, len(other)))
            data[pos:] = other[start:]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 200))]
        else:
            data[pos:pos] = draw(st.sampled_from(FRAGMENTS))
    return bytes(data)


@settings(
    max_examples=800, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(mutated())
def test_mutational_fuzz_of_torture_corpus(data: bytes) -> None:
    _parse_or_error(data)
    with contextlib.suppress(SipParseError):
        frame_stream(data)
