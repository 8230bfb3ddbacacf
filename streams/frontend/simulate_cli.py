"""``regstate simulate --phones N``: a fleet of SIP phones registering to a front-end.

For labs and load tests, not production: each phone ``<prefix><i>`` has the
password ``sim-pw-<prefix><i>``; ``--create-users`` writes their HA1 hashes to
the user file first (and waits 3 s, so a running node has re-read it). Every
phone has its own UDP socket, registers through the 401 challenge, refreshes
at half its expiry until ``--duration`` has passed, then unregisters (Expires
0) unless ``--no-unregister``. Requests are resent after 0.5, 1, 2 and 4 s
(RFC 3261 Timer E) before the phone gives up.

Front-ends limit requests per source IP: against one, run the simulator with
REGSTATE_SIP_RATE_KEY=ip_port on the node, or raise its limits.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.settings import Settings
from streams.sip.uac import Phone, Response, parse_response

RETRANSMIT_S = (0.5, 1.0, 2.0, 4.0)
USER_RELOAD_WAIT_S = 3.0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``simulate`` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help="a fleet of SIP phones registering to a front-end (lab and load tests)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--phones", type=int, required=True, help="how many phones")
    parser.add_argument("--server", default="127.0.0.1:5060", help="front-end HOST:PORT")
    parser.add_argument("--domain", help="SIP domain of the AORs (default: REGSTATE_SIP_REALM)")
    parser.add_argument("--prefix", default="sim", help="user names are PREFIX0000, ...")
    parser.add_argument("--rate", type=float, default=100.0, help="first REGISTERs per second")
    parser.add_argument("--expires", type=int, default=120, help="Expires the phones ask for")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds of refreshing")
    parser.add_argument(
        "--wrong-password-share",
        type=float,
        default=0.0,
        help="share of phones with a bad password",
    )
    parser.add_argument(
        "--no-unregister", action="store_true", help="leave the phones registered at the end"
    )
    parser.add_argument("--bind", default="127.0.0.1", help="local address of the phones")
    parser.add_argument(
        "--create-users", action="store_true", help="add the phones' users to the user file"
    )
    parser.set_defaults(func=run)


def user_name(prefix: str, i: int) -> str:
    """The user of phone ``i``."""
    return f"{prefix}{i:04d}"


def sim_password(user: str) -> str:
    """The lab password of a simulated user."""
    return f"sim-pw-{user}"


@dataclass
class FleetReport:
    """Final answers by status, and seconds from first REGISTER to 200 per registration."""

    statuses: Counter[int] = field(default_factory=Counter)
    timeouts: int = 0
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the operator."""
        lat = sorted(self.latencies)

        def pct(p: float) -> str:
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))] * 1000:.1f} ms" if lat else "-"

        codes = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        return (
            f"answers {codes or '-'}; timeouts {self.timeouts}; "
            f"register p50 {pct(0.5)} p99 {pct(0.99)}"
        )


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable while the node restarts: the resends cover it


async def _transaction(sock: _Socket, data: bytes, cseq: int) -> Response | None:
    """Send with RFC 3261 resends until a final response of this CSeq arrives."""
    assert sock.transport is not None
    for wait in RETRANSMIT_S:
        sock.transport.sendto(data)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(sock.queue.get(), left)
            except TimeoutError:
                break
            try:
                response = parse_response(raw)
            except ValueError:
                continue
            if response.status >= 200 and (response.get("cseq") or "").startswith(f"{cseq} "):
                return response
    return None


async def _register_once(
    sock: _Socket, phone: Phone, expires: int, report: FleetReport, password: str
) -> bool:
    started = time.monotonic()
    first = await _transaction(sock, phone.register(expires=expires), phone.cseq)
    if first is None:
        report.timeouts += 1
        return False
    final = first
    if first.status == 401:
        auth = phone.answer(first.all("www-authenticate"), password)
        final_or_none = await _transaction(
            sock, phone.register(expires=expires, authorization=auth), phone.cseq
        )
        if final_or_none is None:
            report.timeouts += 1
            return False
        final = final_or_none
    report.statuses[final.status] += 1
    if final.status == 200:
        report.latencies.append(time.monotonic() - started)
        return True
    return False


async def run_phone(
    i: int, args: argparse.Namespace, server: tuple[str, int], domain: str, report: FleetReport
) -> None:
    """One phone's life: register, refresh until the duration is over, unregister."""
    loop = asyncio.get_running_loop()
    transport, sock = await loop.create_datagram_endpoint(
        _Socket, local_addr=(args.bind, 0), remote_addr=server
    )
    sock.transport = transport
    user = user_name(args.prefix, i)
    rng = random.Random(i)  # noqa: S311 - jitter, not a secret
    wrong = rng.random() < args.wrong_password_share
    password = "wrong-password" if wrong else sim_password(user)
    phone = Phone(user, password, domain, args.bind, transport.get_extra_info("sockname")[1])
    end = time.monotonic() + args.duration + i / args.rate
    try:
        await asyncio.sleep(i / args.rate)
        ok = await _register_once(sock, phone, args.expires, report, password)
        while ok and time.monotonic() < end:
            pause = args.expires / 2 * rng.uniform(0.9, 1.0)
            await asyncio.sleep(max(0.0, min(pause, end - time.monotonic())))
            if time.monotonic() >= end:
                break
            ok = await _register_once(sock, phone, args.expires, report, password)
        if ok and not args.no_unregister:
            await _register_once(sock, phone, 0, report, password)
    finally:
        transport.close()


async def simulate(args: argparse.Namespace, domain: str) -> FleetReport:
    """Run the fleet described by ``args``; the report when every phone is done."""
    host, _, port = args.server.rpartition(":")
    report = FleetReport()
    async with asyncio.TaskGroup() as group:
        for i in range(args.phones):
            group.create_task(run_phone(i, args, (host, int(port)), domain, report))
    return report


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every registration got a 200 (wrong-password phones excluded)."""
    settings = Settings.from_env()
    domain = args.domain or settings.sip_realm
    if args.phones < 1 or args.rate <= 0:
        print("regstate simulate: --phones and --rate must be positive", file=sys.stderr)
        return 2
    if args.create_users:
        from streams.frontend.users import hashes_for, load_users, save_users, users_path

        path = users_path(settings.data_dir, settings.sip_users_file)
        users = load_users(path, settings.sip_realm)
        for i in range(args.phones):
            user = user_name(args.prefix, i)
            users[user] = hashes_for(user, settings.sip_realm, sim_password(user))
        save_users(path, settings.sip_realm, users)
        print(f"{args.phones} simulated users in {path}", file=sys.stderr)
        # A running node re-reads the user file every 2 s: give it the time to.
        time.sleep(USER_RELOAD_WAIT_S)
    started = time.monotonic()
    report = asyncio.run(simulate(args, domain))
    elapsed = time.monotonic() - started
    print(f"{args.phones} phones, {elapsed:.1f} s: {report.summary()}")
    bad = sum(v for k, v in report.statuses.items() if k not in (200, 401)) + report.timeouts
    return 0 if bad == 0 and (args.wrong_password_share > 0 or 401 not in report.statuses) else 1
