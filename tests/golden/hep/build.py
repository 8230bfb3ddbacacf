"""Writes the HEPv3 golden packets in this directory (run once; the tests never do).

Each packet is laid out as Asterisk ``res_hep`` sends it, from its documented
packed structures, written out here with ``struct`` field by field (not with
regstate's encoder, which the tests check against these bytes):

``hep_ctrl`` ("HEP3", u16 total length), then the ``hep_generic`` chunks in
order: IP family (u8), IP protocol (u8), source port (u16), destination port
(u16), seconds (u32), microseconds (u32), protocol type (u8, 1 = SIP),
capture agent id (u32); then the source and destination address chunks (IPv4
type 3/4 or IPv6 5/6); the auth key chunk (14) when ``capture_password`` is
set; the UUID chunk (17, correlation id: the Call-ID for PJSIP); the capture
agent name chunk (19) when ``capture_name`` is set; the payload chunk (15).
Every chunk: vendor 0 (u16), type (u16), length including its 6-byte header
(u16), network byte order.

    .venv/bin/python tests/golden/hep/build.py
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent

REGISTER = (
    "REGISTER sip:pbx.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.51.100.7:5062;rport;branch=z9hG4bKPj1a2b3c\r\n"
    "From: <sip:1001@pbx.example>;tag=f1\r\n"
    "To: <sip:1001@pbx.example>\r\n"
    "Call-ID: c7d1e5@198.51.100.7\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Contact: <sip:1001@198.51.100.7:5062;ob>\r\n"
    "Expires: 300\r\n"
    'Authorization: Digest username="1001", realm="asterisk", nonce="n", '
    'uri="sip:pbx.example", response="00000000000000000000000000000000"\r\n'
    "User-Agent: Yealink SIP-T46S\r\n"
    "Content-Length: 0\r\n\r\n"
)
OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 198.51.100.7:5062;rport=41000;received=203.0.113.9;"
    "branch=z9hG4bKPj1a2b3c\r\n"
    "From: <sip:1001@pbx.example>;tag=f1\r\n"
    "To: <sip:1001@pbx.example>;tag=z9hG4bKPj1a2b3c\r\n"
    "Call-ID: c7d1e5@198.51.100.7\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Date: Tue, 01 Dec 2026 13:00:00 GMT\r\n"
    "Contact: <sip:1001@198.51.100.7:5062;ob>;expires=299\r\n"
    "Expires: 300\r\n"
    "Server: Asterisk PBX 20.5.0\r\n"
    "Content-Length:  0\r\n\r\n"
)


def u8(kind: int, value: int) -> bytes:
    return struct.pack("!HHHB", 0, kind, 7, value)


def u16(kind: int, value: int) -> bytes:
    return struct.pack("!HHHH", 0, kind, 8, value)


def u32(kind: int, value: int) -> bytes:
    return struct.pack("!HHHI", 0, kind, 10, value)


def var(kind: int, data: bytes) -> bytes:
    return struct.pack("!HHH", 0, kind, 6 + len(data)) + data


def res_hep(
    *,
    src: tuple[str, int],
    dst: tuple[str, int],
    sec: int,
    usec: int,
    capture_id: int,
    uuid: str,
    payload: str,
    password: str = "",
    name: str = "",
) -> bytes:
    v6 = ":" in src[0]
    family = 10 if v6 else 2  # AF_INET6 on Linux, AF_INET
    af = socket.AF_INET6 if v6 else socket.AF_INET
    body = (
        u8(1, family)
        + u8(2, 17)  # IPPROTO_UDP
        + u16(7, src[1])
        + u16(8, dst[1])
        + u32(9, sec)
        + u32(10, usec)
        + u8(11, 1)  # HEPV3_CAPTURE_TYPE_SIP
        + u32(12, capture_id)
        + var(5 if v6 else 3, socket.inet_pton(af, src[0]))
        + var(6 if v6 else 4, socket.inet_pton(af, dst[0]))
    )
    if password:
        body += var(14, password.encode())
    body += var(17, uuid.encode())
    if name:
        body += var(19, name.encode())
    body += var(15, payload.encode())
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


CASES = {
    "asterisk_register_ipv4": dict(
        src=("203.0.113.9", 41000),
        dst=("192.0.2.1", 5060),
        sec=1796130000,
        usec=123456,
        capture_id=2001,
        uuid="c7d1e5@198.51.100.7",
        payload=REGISTER,
    ),
    "asterisk_200_ipv4_password_name": dict(
        src=("192.0.2.1", 5060),
        dst=("203.0.113.9", 41000),
        sec=1796130000,
        usec=125001,
        capture_id=2001,
        uuid="c7d1e5@198.51.100.7",
        payload=OK,
        password="s3cret",  # noqa: S106 - a HEP capture password of a sample
        name="ast1",
    ),
    "asterisk_register_ipv6": dict(
        src=("2001:db8::9", 41000),
        dst=("2001:db8::1", 5060),
        sec=1796130001,
        usec=0,
        capture_id=2002,
        uuid="c7d1e5@198.51.100.7",
        payload=REGISTER,
    ),
}


def main() -> None:
    for name, case in CASES.items():
        (HERE / f"{name}.hex").write_text(res_hep(**case).hex() + "\n")  # type: ignore[arg-type]
        expected = {k: v for k, v in case.items() if k != "payload"}
        payload = str(case["payload"])
        expected["payload_sha"] = hashlib.sha256(payload.encode()).hexdigest()
        (HERE / f"{name}.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
