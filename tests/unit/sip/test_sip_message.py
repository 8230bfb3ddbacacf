"""The SIP request parser (streams/sip/message.py): torture corpus and examples."""

from __future__ import annotations

import time

import pytest

from streams.sip.message import (
    MAX_DELTA_SECONDS,
    FramingError,
    MessageTooLarge,
    MissingHeader,
    NotARequest,
    SipParseError,
    TooManyHeaders,
    frame_stream,
    parse_name_addr,
    parse_request,
    parse_via,
    render_request,
    split_list,
)
from tests.unit.sip_corpus import corpus

VALID = corpus("valid_")
INVALID = corpus("invalid_")
RESPONSES = corpus("response_")


def register(*extra: str, first: str = "REGISTER sip:pbx.example SIP/2.0") -> bytes:
    """A minimal REGISTER with ``extra`` header lines appended."""
    lines = [
        first,
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776;rport",
        'From: "Agent 1001" <sip:1001@pbx.example>;tag=a1',
        "To: <sip:1001@pbx.example>",
        "Call-ID: abc@10.0.0.5",
        "CSeq: 2 REGISTER",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_corpus_is_there() -> None:
    assert len(VALID) >= 15 and len(INVALID) >= 20 and len(RESPONSES) == 2


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_torture_messages_parse(name: str) -> None:
    request = parse_request(VALID[name])
    assert request.vias and request.call_id


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_torture_messages_raise_parse_error(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_request(INVALID[name])
    assert not isinstance(info.value, NotARequest)
    assert str(info.value)


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_responses_are_not_requests(name: str) -> None:
    with pytest.raises(NotARequest):
        parse_request(RESPONSES[name])


def test_wsinv_folding_whitespace_and_compact_forms() -> None:
    r = parse_request(VALID["valid_wsinv.sip"])
    assert r.method == "INVITE"
    assert r.cseq == 9
    assert r.max_forwards == 68
    assert r.to.uri == "sip:vivekg@chair-dnrc.example.com"
    assert r.to.param("tag") == "1918181833n"
    assert r.from_.display == 'J Rosenberg \\"'
    assert [v.transport for v in r.vias] == ["UDP", "TCP", "UDP"]
    assert r.vias[2].host == "192.168.255.111" and r.vias[2].branch == "z9hG4bK30239"
    (contact,) = r.contacts
    assert contact.addr.display == 'Quoted string ""'
    assert contact.q == 0.33 and contact.addr.param("newparam") == "newvalue"
    assert r.body == b"v=0\r\no=x 1 2\r\n"


def test_outbound_register_fields() -> None:
    r = parse_request(VALID["valid_outbound.sip"])
    first, second = r.contacts
    assert first.uri == "sip:1001@[2001:db8::9]:5060;transport=tcp;ob"
    assert first.instance == "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"
    assert first.reg_id == 1 and first.expires == 600
    assert second.addr.display == "second, desk" and second.expires == 0 and second.q == 0.5
    assert [p.uri for p in r.path] == ["sip:edge1.example.com;lr", "sip:edge2.example.com;lr;ob"]
    assert r.supported == ("path", "outbound", "gruu")
    assert r.user_agent == "Polycom/6.4.0 (a; b, c)"
    assert r.expires == 3600
    assert r.top_via.host == "[2001:db8::9]" and r.top_via.wants_rport


def test_wildcard() -> None:
    r = parse_request(VALID["valid_wildcard.sip"])
    assert r.wildcard and not r.contacts and r.expires == 0


def test_unbracketed_contact_params_belong_to_the_header() -> None:
    (c,) = parse_request(VALID["valid_cparam01.sip"]).contacts
    assert c.uri == "sip:+19725552222@gw1.example.net"
    assert c.addr.has_param("unknownparam")
    (c,) = parse_request(VALID["valid_cparam02.sip"]).contacts
    assert c.uri == "sip:+19725552222@gw1.example.net;unknownparam" and not c.addr.params


def test_several_contact_headers_and_lists_keep_order() -> None:
    r = parse_request(
        register(
            'Contact: <sip:a@h1>, "x, <y>" <sip:b@h2>;expires=10',
            "m: sip:c@h3;q=1.0",
        )
    )
    assert [c.uri for c in r.contacts] == ["sip:a@h1", "sip:b@h2", "sip:c@h3"]
    assert r.contacts[1].addr.display == "x, <y>"
    assert r.contacts[2].q == 1.0


def test_expires_is_clamped_to_2_32_minus_1() -> None:
    r = parse_request(register("Expires: 9999999999", "Contact: <sip:a@h>;expires=9999999999"))
    assert r.expires == MAX_DELTA_SECONDS and r.contacts[0].expires == MAX_DELTA_SECONDS


@pytest.mark.parametrize(
    ("line", "header"),
    [
        ("Expires: soon", "Expires"),
        ("Expires: 1", "Expires"),  # with the one below: twice
        ("Contact: <sip:a@h>;expires", "Contact"),
        ("Contact: <sip:a@h>;+sip.instance=<urn:x>", "Contact"),
        ("Contact: <sip:a@h", "Contact"),
        ("Contact: sip:a@h;x=1;x=2", "Contact"),
        ("Max-Forwards: 256", "Max-Forwards"),
        ("Supported: path, <x>", "Supported"),
        ("Via: SIP/2.0/UDP", "Via"),
        ("Via: SIP/2.0/UDP h;branch", "Via"),
        ("Via: SIP/2.0/UDP h;rport=70000", "Via"),
    ],
)
def test_bad_header_is_named(line: str, header: str) -> None:
    extra = [line, "Expires: 2"] if line == "Expires: 1" else [line]
    with pytest.raises(SipParseError) as info:
        parse_request(register(*extra))
    assert info.value.header == header
    assert str(info.value).startswith(header + ":")


def test_missing_call_id_is_missing_header() -> None:
    data = register().replace(b"Call-ID: abc@10.0.0.5\r\n", b"")
    with pytest.raises(MissingHeader, match="Call-ID"):
        parse_request(data)


def test_cseq_must_be_below_2_31() -> None:
    with pytest.raises(SipParseError, match="CSeq"):
        parse_request(register().replace(b"CSeq: 2 ", b"CSeq: 2147483648 "))


def test_size_and_header_count_caps_are_checked_first() -> None:
    big = b"REGISTER sip:x SIP/2.0\r\n" + b"X-A: b\r\n" * 5900 + b"\r\n"
    assert len(big) > 46 * 1024
    with pytest.raises(MessageTooLarge):
        parse_request(big)
    many = register(*[f"X-{i}: v" for i in range(70)])
    with pytest.raises(TooManyHeaders):
        parse_request(many)
    # Refused in microseconds: generous bound, the machine may be loaded.
    start = time.perf_counter()
    for _ in range(1000):
        with pytest.raises(MessageTooLarge):
            parse_request(big)
    assert (time.perf_counter() - start) / 1000 < 200e-6


def test_raw_without_credentials() -> None:
    r = parse_request(
        register(
            'Authorization: Digest username="1001",',
            '  response="0123456789abcdef0123456789abcdef"',
            'Proxy-Authorization: Digest username="1001"',
            "Content-Length: 0",
        )
    )
    raw = r.raw_without_credentials()
    assert "response" not in raw and "uthorization" not in raw
    assert raw.startswith("REGISTER sip:pbx.example SIP/2.0\r\nVia: ")
    assert "Content-Length: 0\r\n" in raw


def test_via_received_and_rport() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport")
    assert via.with_source("203.0.113.7", 40000).render() == (
        "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=40000;received=203.0.113.7"
    )
    plain = parse_via("SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK1")
    assert plain.with_source("203.0.113.7", 5060) == plain  # same host: nothing added
    moved = parse_via("SIP/2.0/TCP phone.lan;branch=z9hG4bK1")
    assert moved.with_source("203.0.113.7", 5060).params[-1] == ("received", "203.0.113.7")


def test_split_list_respects_quotes_and_angles() -> None:
    assert split_list('"a, \\"b" <sip:x@y;p=a,b>, <sip:z@w>') == [
        '"a, \\"b" <sip:x@y;p=a,b>',
        "<sip:z@w>",
    ]
    with pytest.raises(SipParseError):
        split_list('"open, <sip:x@y>')


def test_name_addr_roundtrip() -> None:
    for text in ['"A \\"B\\"" <sip:a@b;lr>;tag=x', "sip:a@b;tag=1", "<tel:+1234>"]:
        addr = parse_name_addr(text, "To")
        assert parse_name_addr(addr.render(), "To") == addr


def test_stream_requires_exact_content_length() -> None:
    with pytest.raises(MissingHeader, match="Content-Length"):
        parse_request(register(), stream=True)
    assert parse_request(register("Content-Length: 0"), stream=True).body == b""


def test_frame_stream() -> None:
    one = register("Content-Length: 4").replace(b"\r\n\r\n", b"\r\n\r\nbody", 1)
    buffer = b"\r\n\r\n" + one + one[:30]
    n = frame_stream(buffer)
    assert n == 4 + len(one)
    assert parse_request(buffer[:n], stream=True).body == b"body"
    assert frame_stream(buffer[n:]) == 0  # incomplete
    with pytest.raises(FramingError):
        frame_stream(register())  # no Content-Length
    with pytest.raises(FramingError):
        frame_stream(b"REGISTER sip:x SIP/2.0\r\n" + b"X: y\r\n" * 2000)


def test_render_then_parse() -> None:
    data = render_request(
        "OPTIONS",
        "sip:pbx.example",
        [
            ("v", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx"),
            ("f", "<sip:a@pbx.example>;tag=1"),
            ("t", "<sip:a@pbx.example>"),
            ("i", "c1"),
            ("CSeq", "1 OPTIONS"),
        ],
    )
    r = parse_request(data, stream=True)
    assert r.method == "OPTIONS" and r.header("content-length") == "0"


def test_non_utf8_and_bare_cr_are_refused() -> None:
    with pytest.raises(SipParseError, match="UTF-8"):
        parse_request(register("X-A: v").replace(b"X-A: v", b"X-A: \xff"))
    with pytest.raises(SipParseError, match="control"):
        parse_request(register("X-A: a\rb"))


@pytest.mark.parametrize(
    ("header", "replace", "by"),
    [
        ("To", "To: <sip:1001@pbx.example>", "To: <sip:" + "u" * 600 + "@pbx.example>"),
        ("To", "To: <sip:1001@pbx.example>", 'To: "' + "d" * 1100 + '" <sip:1001@pbx.example>'),
        ("Call-ID", "Call-ID: abc@10.0.0.5", "Call-ID: " + "c" * 300),
        ("Via", "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776;rport",
         "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776;x=" + "v" * 600),
        ("Via", "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776;rport",
         "Via: " + ", ".join(["SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1"] * 17)),
    ],
)  # fmt: skip
def test_length_caps_on_keys_and_event_fields(header: str, replace: str, by: str) -> None:
    """D86: To, Call-ID and Via are capped before they key a cache or enter an event."""
    data = register().decode().replace(replace, by).encode()
    with pytest.raises(SipParseError) as err:
        parse_request(data)
    assert str(err.value).startswith(header)
