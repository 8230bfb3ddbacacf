"""HEPv3 decoding: golden packets laid out as Asterisk res_hep sends them, and properties."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.hep.decode import (
    AF_INET,
    AF_INET6,
    HepError,
    HepPacket,
    decode,
    encode,
    packet_length,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "hep"
NAMES = sorted(p.stem for p in GOLDEN.glob("*.hex"))


def golden(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / f"{name}.hex").read_text().strip())


def test_there_are_golden_packets() -> None:
    assert len(NAMES) == 3


@pytest.mark.parametrize("name", NAMES)
def test_golden_packets_decode_to_what_res_hep_put_in(name: str) -> None:
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    p = decode(golden(name))
    assert (p.src_ip, p.src_port) == tuple(expected["src"])
    assert (p.dst_ip, p.dst_port) == tuple(expected["dst"])
    assert (p.ts_sec, p.ts_usec) == (expected["sec"], expected["usec"])
    assert p.agent_id == expected["capture_id"]
    assert p.correlation_id == expected["uuid"]
    assert p.auth_key == (expected["password"].encode() if "password" in expected else None)
    assert p.agent_name == expected.get("name")
    assert p.family == (AF_INET6 if ":" in p.src_ip else AF_INET)
    assert p.transport == "udp" and p.proto_type == 1
    assert hashlib.sha256(p.payload).hexdigest() == expected["payload_sha"]
    assert p.capture_us == expected["sec"] * 1_000_000 + expected["usec"]


@pytest.mark.parametrize("name", NAMES)
def test_encode_writes_res_hep_chunk_order_byte_for_byte(name: str) -> None:
    data = golden(name)
    assert encode(decode(data)) == data


addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(str)
text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20)


@st.composite
def packets(draw: st.DrawFn) -> HepPacket:
    v6 = draw(st.booleans())
    addr = addresses6 if v6 else addresses4
    return HepPacket(
        family=AF_INET6 if v6 else AF_INET,
        ip_proto=draw(st.sampled_from([6, 17, 132])),
        src_ip=draw(addr),
        src_port=draw(st.integers(0, 65535)),
        dst_ip=draw(addr),
        dst_port=draw(st.integers(0, 65535)),
        ts_sec=draw(st.integers(0, 2**32 - 1)),
        ts_usec=draw(st.integers(0, 999_999)),
        proto_type=draw(st.integers(0, 255)),
        agent_id=draw(st.integers(0, 2**32 - 1)),
        payload=draw(st.binary(max_size=300)),
        auth_key=draw(st.none() | text.map(str.encode)),
        correlation_id=draw(st.none() | text),
        agent_name=draw(st.none() | text),
    )


@given(packets())
def test_decode_inverts_encode(p: HepPacket) -> None:
    assert decode(encode(p)) == p


@given(packets(), st.data())
def test_a_truncated_packet_is_refused_with_a_reason(p: HepPacket, data: st.DataObject) -> None:
    raw = encode(p)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(HepError) as err:
        decode(raw[:cut])
    assert err.value.reason in ("bad_length", "not_hep3", "hep2")


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_fail_with_hep_error(raw: bytes) -> None:
    try:
        decode(raw)
    except HepError as exc:
        assert exc.reason


@given(packets(), st.binary(min_size=4, max_size=60))
def test_garbage_after_the_header_is_a_hep_error(p: HepPacket, junk: bytes) -> None:
    raw = encode(p)
    bad = raw[:6] + junk
    bad = bad[:4] + struct.pack("!H", len(bad)) + bad[6:]
    try:
        decode(bad)
    except HepError as exc:
        assert exc.reason in ("truncated", "bad_chunk", "missing_chunk", "bad_payload")


def test_hep2_and_other_protocols_are_named() -> None:
    # HEPv2: version 2, header length 31, family, protocol, ports, addresses, time, agent.
    hep2 = bytes([2, 31, 2, 17]) + bytes(27) + b"REGISTER sip:x SIP/2.0\r\n\r\n"
    with pytest.raises(HepError) as err:
        decode(hep2)
    assert err.value.reason == "hep2"
    with pytest.raises(HepError) as err:
        decode(b"REGISTER sip:x SIP/2.0\r\n\r\n")
    assert err.value.reason == "not_hep3"


def test_vendor_chunks_are_skipped_and_zipped_payloads_inflate() -> None:
    p = decode(golden("asterisk_register_ipv4"))
    raw = encode(p._replace(payload=b"x"))
    vendor = struct.pack("!HHH", 4, 99, 9) + b"abc"
    zipped = zlib.compress(p.payload)
    zchunk = struct.pack("!HHH", 0, 16, 6 + len(zipped)) + zipped
    # Replace the payload chunk (last, 7 bytes) by a vendor chunk and a zipped payload.
    body = raw[6:-7] + vendor + zchunk
    packet = b"HEP3" + struct.pack("!H", 6 + len(body)) + body
    assert decode(packet) == p


def test_a_zip_bomb_is_refused() -> None:
    p = decode(golden("asterisk_register_ipv4"))
    raw = encode(p._replace(payload=b"x"))
    zipped = zlib.compress(bytes(10_000_000))
    body = raw[6:-7] + struct.pack("!HHH", 0, 16, 6 + len(zipped)) + zipped
    with pytest.raises(HepError) as err:
        decode(b"HEP3" + struct.pack("!H", 6 + len(body)) + body)
    assert err.value.reason == "bad_payload"


def test_missing_chunks_are_named() -> None:
    raw = golden("asterisk_register_ipv4")
    body = raw[6:]
    # Drop the source port chunk (third chunk: after two 7-byte u8 chunks).
    body = body[:14] + body[22:]
    with pytest.raises(HepError, match="source port") as err:
        decode(b"HEP3" + struct.pack("!H", 6 + len(body)) + body)
    assert err.value.reason == "missing_chunk"


@given(st.lists(packets(), min_size=1, max_size=5), st.lists(st.integers(1, 50), max_size=20))
def test_a_tcp_stream_frames_into_the_packets(ps: list[HepPacket], cuts: list[int]) -> None:
    stream = b"".join(encode(p) for p in ps)
    buffer = bytearray()
    out: list[HepPacket] = []
    pos = 0
    for size in [*cuts, len(stream)]:
        buffer += stream[pos : pos + size]
        pos += size
        while (n := packet_length(buffer)) > 0:
            out.append(decode(bytes(buffer[:n])))
            del buffer[:n]
    assert out == ps and not buffer


def test_a_stream_out_of_step_is_refused() -> None:
    with pytest.raises(HepError):
        packet_length(bytearray(b"GET / HTTP/1.1\r\n"))
    assert packet_length(bytearray(b"HE")) == 0
