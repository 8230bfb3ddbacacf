"""HEPv3 (HEP/EEP version 3) packets: decode, encode, frame a TCP stream. Pure.

A HEPv3 packet is ``"HEP3"``, a 16-bit total length, then chunks of
``vendor id (16) | type id (16) | length (16, header included) | data``, all
in network byte order. Generic (vendor 0) chunk types read here:

====  ===========================  ====  ==============================
1     IP protocol family (u8)      9     capture time, seconds (u32)
2     IP protocol id (u8)          10    capture time, microseconds (u32)
3/4   IPv4 source / destination    11    protocol type (u8; 1 = SIP)
5/6   IPv6 source / destination    12    capture agent id (u32)
7/8   source / destination port    14    auth key (string)
15    payload                      16    payload, zlib-compressed
17    correlation id (string)      19    capture agent name (string)
====  ===========================  ====  ==============================

Other chunks (vendor-specific ones included) are skipped, as HEP asks. A
packet is refused (:class:`HepError`, with a machine ``reason``) when it is
not HEPv3, is truncated, or lacks an address, a port, the capture time or
the payload.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import zlib
from typing import Final, NamedTuple

MAGIC: Final = b"HEP3"
HEADER: Final = struct.Struct("!4sH")
CHUNK: Final = struct.Struct("!HHH")
MAX_PACKET: Final = 65535
"""The 16-bit length field bounds a packet."""
MAX_INFLATED: Final = 64 * 1024
"""A compressed payload may inflate to at most this (a zip bomb is refused)."""

AF_INET: Final = 2
AF_INET6: Final = 10
"""Linux's AF_INET6, which every capture agent on Linux writes."""
PROTO_UDP: Final = 17
PROTO_TCP: Final = 6
PROTO_SCTP: Final = 132
PROTOCOL_SIP: Final = 1

T_FAMILY: Final = 1
T_IP_PROTO: Final = 2
T_IPV4_SRC: Final = 3
T_IPV4_DST: Final = 4
T_IPV6_SRC: Final = 5
T_IPV6_DST: Final = 6
T_SRC_PORT: Final = 7
T_DST_PORT: Final = 8
T_TIME_SEC: Final = 9
T_TIME_USEC: Final = 10
T_PROTO_TYPE: Final = 11
T_AGENT_ID: Final = 12
T_KEEPALIVE: Final = 13
T_AUTH_KEY: Final = 14
T_PAYLOAD: Final = 15
T_PAYLOAD_ZIP: Final = 16
T_CORRELATION: Final = 17
T_AGENT_NAME: Final = 19


class HepError(ValueError):
    """A packet that cannot be used; ``reason`` is a short machine word for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class HepPacket(NamedTuple):
    """One decoded capture: what was sent, from where to where, when, seen by whom."""

    family: int
    ip_proto: int
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    ts_sec: int
    ts_usec: int
    proto_type: int
    agent_id: int
    payload: bytes
    auth_key: bytes | None = None
    correlation_id: str | None = None
    agent_name: str | None = None

    @property
    def capture_us(self) -> int:
        """Capture time in microseconds since the Unix epoch."""
        return self.ts_sec * 1_000_000 + self.ts_usec

    @property
    def transport(self) -> str:
        """``udp``, ``tcp``, ``sctp`` or ``ip<n>``: the transport the SIP message used."""
        return {PROTO_UDP: "udp", PROTO_TCP: "tcp", PROTO_SCTP: "sctp"}.get(
            self.ip_proto, f"ip{self.ip_proto}"
        )


def packet_length(buffer: bytes | bytearray) -> int:
    """Length of the first HEPv3 packet of a TCP stream buffer; 0 if more bytes are needed.

    Raises HepError when the stream does not start with a HEPv3 header (it
    cannot be resynchronized: the connection must be closed).
    """
    if len(buffer) < HEADER.size:
        if not MAGIC.startswith(bytes(buffer[: len(MAGIC)])):
            raise HepError("not_hep3", "stream does not start with HEP3")
        return 0
    magic, length = HEADER.unpack_from(buffer)
    if magic != MAGIC:
        raise HepError("not_hep3", f"stream starts with {bytes(magic)!r}, not HEP3")
    if length < HEADER.size:
        raise HepError("bad_length", f"packet length {length} is below the header size")
    return length if len(buffer) >= length else 0


def _ip(data: bytes, size: int, what: str) -> str:
    if len(data) != size:
        raise HepError("bad_chunk", f"{what} of {len(data)} bytes, not {size}")
    return str(ipaddress.ip_address(data))


def _uint(data: bytes, size: int, what: str) -> int:
    if len(data) != size:
        raise HepError("bad_chunk", f"{what} of {len(data)} bytes, not {size}")
    return int.from_bytes(data, "big")


def decode(data: bytes) -> HepPacket:
    """Decode one HEPv3 packet (exactly one: trailing bytes are refused). Raises HepError.

    ``reason`` is ``hep2`` for HEP version 1 or 2 packets, ``not_hep3`` for
    anything else that is not HEPv3.
    """
    if len(data) < HEADER.size or data[:4] != MAGIC:
        if data[:1] in (b"\x01", b"\x02") and len(data) >= 2 and data[1] <= len(data):
            raise HepError("hep2", "HEP version 1/2 packet (only HEPv3 is read)")
        raise HepError("not_hep3", f"starts with {bytes(data[:4])!r}, not HEP3")
    _, length = HEADER.unpack_from(data)
    if length != len(data):
        raise HepError("bad_length", f"header says {length} bytes, packet has {len(data)}")
    family = ip_proto = proto_type = agent_id = None
    src4 = dst4 = src6 = dst6 = None
    src_port = dst_port = ts_sec = ts_usec = None
    payload: bytes | None = None
    auth_key: bytes | None = None
    correlation: str | None = None
    agent_name: str | None = None
    pos = HEADER.size
    while pos < length:
        if pos + CHUNK.size > length:
            raise HepError("truncated", f"chunk header at byte {pos} runs past the packet")
        vendor, kind, size = CHUNK.unpack_from(data, pos)
        if size < CHUNK.size or pos + size > length:
            raise HepError("truncated", f"chunk type {kind} at byte {pos} claims {size} bytes")
        body = data[pos + CHUNK.size : pos + size]
        pos += size
        if vendor != 0:
            continue  # vendor chunks are optional by definition
        if kind == T_FAMILY:
            family = _uint(body, 1, "IP family")
        elif kind == T_IP_PROTO:
            ip_proto = _uint(body, 1, "IP protocol")
        elif kind == T_IPV4_SRC:
            src4 = _ip(body, 4, "IPv4 source")
        elif kind == T_IPV4_DST:
            dst4 = _ip(body, 4, "IPv4 destination")
        elif kind == T_IPV6_SRC:
            src6 = _ip(body, 16, "IPv6 source")
        elif kind == T_IPV6_DST:
            dst6 = _ip(body, 16, "IPv6 destination")
        elif kind == T_SRC_PORT:
            src_port = _uint(body, 2, "source port")
        elif kind == T_DST_PORT:
            dst_port = _uint(body, 2, "destination port")
        elif kind == T_TIME_SEC:
            ts_sec = _uint(body, 4, "timestamp seconds")
        elif kind == T_TIME_USEC:
            ts_usec = _uint(body, 4, "timestamp microseconds")
        elif kind == T_PROTO_TYPE:
            proto_type = _uint(body, 1, "protocol type")
        elif kind == T_AGENT_ID:
            agent_id = _uint(body, 4, "capture agent id")
        elif kind == T_AUTH_KEY:
            auth_key = body.rstrip(b"\x00")
        elif kind == T_PAYLOAD:
            payload = body
        elif kind == T_PAYLOAD_ZIP:
            payload = _inflate(body)
        elif kind == T_CORRELATION:
            correlation = body.rstrip(b"\x00").decode("utf-8", "replace")
        elif kind == T_AGENT_NAME:
            agent_name = body.rstrip(b"\x00").decode("utf-8", "replace")
    if family is None:
        family = AF_INET6 if src6 is not None else AF_INET
    src, dst = (src6, dst6) if family == AF_INET6 else (src4, dst4)
    missing = [
        name
        for name, value in (
            ("source address", src),
            ("destination address", dst),
            ("source port", src_port),
            ("destination port", dst_port),
            ("capture seconds", ts_sec),
            ("payload", payload),
        )
        if value is None
    ]
    if missing:
        raise HepError("missing_chunk", "no " + ", no ".join(missing))
    assert src is not None and dst is not None and payload is not None
    return HepPacket(
        family=family,
        ip_proto=PROTO_UDP if ip_proto is None else ip_proto,
        src_ip=src,
        src_port=src_port or 0,
        dst_ip=dst,
        dst_port=dst_port or 0,
        ts_sec=ts_sec or 0,
        ts_usec=ts_usec or 0,
        proto_type=PROTOCOL_SIP if proto_type is None else proto_type,
        agent_id=agent_id or 0,
        payload=payload,
        auth_key=auth_key,
        correlation_id=correlation,
        agent_name=agent_name,
    )


def _inflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
    try:
        out = inflater.decompress(body, MAX_INFLATED)
    except zlib.error as exc:
        raise HepError("bad_payload", f"compressed payload does not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise HepError("bad_payload", f"compressed payload inflates beyond {MAX_INFLATED} bytes")
    return out


def _chunk(kind: int, data: bytes) -> bytes:
    return CHUNK.pack(0, kind, CHUNK.size + len(data)) + data


def encode(packet: HepPacket) -> bytes:
    """A HEPv3 packet with the chunks, in the order, Asterisk ``res_hep`` writes them.

    That order: family, IP protocol, ports, time, protocol type, agent id,
    addresses, auth key, correlation id, agent name, payload. Used by the
    golden files, the tests and the bench; ``decode(encode(p)) == p``.
    """
    v6 = packet.family == AF_INET6
    af = socket.AF_INET6 if v6 else socket.AF_INET
    parts = [
        _chunk(T_FAMILY, bytes([packet.family])),
        _chunk(T_IP_PROTO, bytes([packet.ip_proto])),
        _chunk(T_SRC_PORT, packet.src_port.to_bytes(2, "big")),
        _chunk(T_DST_PORT, packet.dst_port.to_bytes(2, "big")),
        _chunk(T_TIME_SEC, packet.ts_sec.to_bytes(4, "big")),
        _chunk(T_TIME_USEC, packet.ts_usec.to_bytes(4, "big")),
        _chunk(T_PROTO_TYPE, bytes([packet.proto_type])),
        _chunk(T_AGENT_ID, packet.agent_id.to_bytes(4, "big")),
        _chunk(T_IPV6_SRC if v6 else T_IPV4_SRC, socket.inet_pton(af, packet.src_ip)),
        _chunk(T_IPV6_DST if v6 else T_IPV4_DST, socket.inet_pton(af, packet.dst_ip)),
    ]
    if packet.auth_key is not None:
        parts.append(_chunk(T_AUTH_KEY, packet.auth_key))
    if packet.correlation_id is not None:
        parts.append(_chunk(T_CORRELATION, packet.correlation_id.encode()))
    if packet.agent_name is not None:
        parts.append(_chunk(T_AGENT_NAME, packet.agent_name.encode()))
    parts.append(_chunk(T_PAYLOAD, packet.payload))
    body = b"".join(parts)
    total = HEADER.size + len(body)
    if total > MAX_PACKET:
        raise HepError("too_large", f"packet of {total} bytes exceeds {MAX_PACKET}")
    return HEADER.pack(MAGIC, total) + body
