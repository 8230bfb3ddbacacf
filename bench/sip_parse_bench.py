"""Parse time of a typical REGISTER, and refusal time of a 46 KiB message.

.venv/bin/python bench/sip_parse_bench.py
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from streams.sip.message import SipParseError, parse_request

TYPICAL = (
    b"REGISTER sip:pbx.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Agent 1001" <sip:1001@pbx.example>;tag=a1b2c3\r\n'
    b"To: <sip:1001@pbx.example>\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b'Contact: <sip:1001@10.0.0.5:5060;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-'
    b'1000-8000-000A95A0E128>";reg-id=1\r\n'
    b"Expires: 600\r\n"
    b"User-Agent: Yealink SIP-T46S 66.85.0.5\r\n"
    b"Supported: path, outbound\r\n"
    b'Authorization: Digest username="1001", realm="pbx.example", nonce="abc", '
    b'uri="sip:pbx.example", response="0123456789abcdef0123456789abcdef", algorithm=MD5, '
    b'qop=auth, nc=00000001, cnonce="xyz"\r\n'
    b"Content-Length: 0\r\n\r\n"
)
HUGE = b"REGISTER sip:x SIP/2.0\r\n" + b"X-A: b\r\n" * 5900 + b"\r\n"


def refuse() -> None:
    with contextlib.suppress(SipParseError):
        parse_request(HUGE)


def best(fn: object, n: int) -> float:
    return min(timeit.repeat(fn, number=n, repeat=7)) / n  # type: ignore[arg-type]


if __name__ == "__main__":
    t = best(lambda: parse_request(TYPICAL), 5000)
    print(f"typical REGISTER ({len(TYPICAL)} B): {t * 1e6:.1f} us per parse")
    t = best(refuse, 20000)
    print(f"{len(HUGE)} B message: refused in {t * 1e6:.2f} us")
