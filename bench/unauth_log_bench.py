"""Events and bytes a front-end appends to the log per unauthenticated packet (issue 14).

    .venv/bin/python bench/unauth_log_bench.py

A real FrontendNode on 127.0.0.1 (UDP) with an event log that acknowledges at
once and counts what it was handed (msgpack bytes, as Kafka would store them).
Floods, each from one source address:

* ``resend_unknown``: 30 copies of one credential-less REGISTER for a user that
  does not exist (about 7.6 KB each: padded like the review's);
* ``resend_known``: the same for a user that exists;
* ``garbage_auth``: 240 REGISTERs, each for a new random AOR, with a garbage
  Authorization.

Rate limits are opened wide: what is measured is what reaches the log.
"""

from __future__ import annotations

import asyncio
import uuid

from schemas import RegistrationEvent, encode_event
from streams.frontend.node import FrontendNode, SeqCounter
from streams.frontend.registrar import ExpiryPolicy, Registrar
from streams.frontend.tables import SourceLimiter
from streams.frontend.users import hashes_for
from streams.sip.digest import DigestAuthenticator, NonceIssuer
from streams.sip.uac import Phone
from tests.sip_client import UdpClient

REALM = "pbx.example"
PAD = ["X-Pad: " + "x" * 7000]


class CountingLog:
    def __init__(self) -> None:
        self.ready = True
        self.events = 0
        self.bytes = 0

    @property
    def healthy(self) -> bool:
        return self.ready

    def append(self, event: RegistrationEvent) -> asyncio.Future[None]:
        self.events += 1
        self.bytes += len(encode_event(event))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def garbage(user: str) -> str:
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{uuid.uuid4().hex}", '
        f'uri="sip:{REALM}", response="{uuid.uuid4().hex}", qop=auth, nc=00000001, '
        'cnonce="x", algorithm=MD5'
    )


async def flood(name: str, packets: list[bytes]) -> None:
    log = CountingLog()
    users = {"1001": hashes_for("1001", REALM, "pw")}
    auth = DigestAuthenticator(REALM, users, NonceIssuer(b"s" * 32, REALM, 300_000, _now))
    node = FrontendNode(
        node_id="fe1",
        registrar=Registrar(auth, ExpiryPolicy(3600, 60, 7200)),
        event_log=log,
        limiter=SourceLimiter(10**6, 10**6, 10**6, 1),
        seq=SeqCounter(1),
    )
    await node.start("127.0.0.1", 0)
    client = await UdpClient.open(node.udp_port)
    try:
        for data in packets:
            await client.request(data)
        await asyncio.sleep(0.1)  # let the last appends settle
    finally:
        client.close()
        await node.stop()
    n = len(packets)
    print(
        f"{name:15s} packets {n:4d}  events {log.events:4d} ({log.events / n:.2f}/packet)  "
        f"bytes {log.bytes:8d} ({log.bytes / n:,.0f}/packet)"
    )


def _now() -> int:
    import time

    return time.time_ns() // 1_000_000


async def main() -> None:
    ghost = Phone("9999", "x", local_port=5999)
    one = ghost.register(extra=PAD)
    await flood("resend_unknown", [one] * 30)
    known = Phone("1001", "pw", local_port=5999)
    again = known.register(extra=PAD)
    await flood("resend_known", [again] * 30)
    packets = []
    for i in range(240):
        p = Phone(f"u{i}x{uuid.uuid4().hex[:6]}", "x", local_port=5999)
        packets.append(p.register(authorization=garbage(p.user), extra=PAD[:0]))
    await flood("garbage_auth", packets)


if __name__ == "__main__":
    asyncio.run(main())
