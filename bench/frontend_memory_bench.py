"""Peak RSS of a front-end process under attacker-sized floods (issue 14, defect 8).

    .venv/bin/python bench/frontend_memory_bench.py long_to --packets 5000
    .venv/bin/python bench/frontend_memory_bench.py transactions --packets 20000

One process: a real FrontendNode on 127.0.0.1 UDP (an event log that
acknowledges at once and keeps nothing), and a client sending from one socket,
each request waiting for its answer. Rate limits are opened wide, and the node's
clock is frozen, so the 32 s transaction TTL does not expire entries during the
run: the cache fills as it would under an attacker sending faster than this
client can (about 3,000 packets/s fill 100k entries within the TTL). Prints the
peak RSS (``ru_maxrss``) before and after the flood, and what the node's caches
hold. Run each flood in its own process; compare branches in the same run.

* ``long_to``: credential-less REGISTERs, each with a new ~7.5 KB To URI;
* ``transactions``: credential-less REGISTERs, each a new transaction whose
  401 echoes 7 KB of Via headers (the transaction cache keeps each answer).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import uuid

from schemas import RegistrationEvent
from streams.frontend.node import FrontendNode, SeqCounter
from streams.frontend.registrar import ExpiryPolicy, Registrar
from streams.frontend.tables import SourceLimiter
from streams.frontend.users import hashes_for
from streams.sip.digest import DigestAuthenticator, NonceIssuer
from tests.sip_client import UdpClient

REALM = "pbx.example"


class NullLog:
    ready = True
    healthy = True

    def append(self, event: RegistrationEvent) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def request(i: int, port: int, flood: str) -> bytes:
    user = f"u{i}"
    if flood == "long_to":
        to = f"<sip:{user}{'x' * 7500}@{REALM}>"
        vias = [f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport"]
    else:
        to = f"<sip:{user}@{REALM}>"
        vias = [
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}{j};x={'v' * 400}"
            for j in range(16)
        ]
    lines = [
        f"REGISTER sip:{REALM} SIP/2.0",
        *vias,
        f"From: <sip:{user}@{REALM}>;tag=t",
        f"To: {to}",
        f"Call-ID: {uuid.uuid4().hex}",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:{port}>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flood", choices=["long_to", "transactions"])
    parser.add_argument("--packets", type=int, default=5000)
    args = parser.parse_args()
    users = {"1001": hashes_for("1001", REALM, "pw")}
    auth = DigestAuthenticator(REALM, users, NonceIssuer(b"s" * 32, REALM, 300_000, _now))
    node = FrontendNode(
        node_id="fe1",
        registrar=Registrar(auth, ExpiryPolicy(3600, 60, 7200)),
        event_log=NullLog(),
        limiter=SourceLimiter(10**6, 10**6, 10**6, 1),
        seq=SeqCounter(1),
        now_ms=lambda: 1_800_000_000_000,
    )
    await node.start("127.0.0.1", 0)
    client = await UdpClient.open(node.udp_port)
    before = rss_mib()
    statuses: dict[int, int] = {}
    try:
        for i in range(args.packets):
            r = await client.request(request(i, client.port, args.flood))
            statuses[r.status] = statuses.get(r.status, 0) + 1
    finally:
        client.close()
        await node.stop()
    print(
        f"{args.flood}: {args.packets} packets, answers {statuses}; peak RSS "
        f"{before:.0f} MiB before, {rss_mib():.0f} MiB after; transaction cache "
        f"{len(node.transactions)} entries"
    )


def _now() -> int:
    import time

    return time.time_ns() // 1_000_000


if __name__ == "__main__":
    asyncio.run(main())
