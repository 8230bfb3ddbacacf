"""How fast `regstate hep` takes a registrar's HEPv3 mirror, against Kamailio's own rate.

    .venv/bin/python bench/hep_bench.py --users 4000 --rates 500,1000,2000,3000
    .venv/bin/python bench/hep_bench.py --blast 20000,40000,80000 --seconds 5

Part 1, the peer measured in the same run: Kamailio 5.6 as the Digest registrar
(tests/integration/hep_harness.py's config) mirrors every message as HEPv3
(``siptrace``, 4 packets per authenticated REGISTER: REGISTER, 401, REGISTER,
200) to one `regstate hep` process publishing to Kafka. SIPp
(tests/sipp/register_auth.xml) registers ``--users`` phones at each rate; the
table shows Kamailio's completed REGISTERs/s and success share, the HEP packets
the listener received against those Kamailio sent (4 per REGISTER), the
datagrams the kernel dropped on the listener's port (/proc/net/udp ``drops``)
and the events/s Kafka acknowledged to the listener (from the first REGISTER
sent to the last acknowledgement). The rising stops once
Kamailio falls below 99.9 % (its saturation).

Part 2 (``--blast``): the listener alone, fed pre-encoded captures of
authenticated logins at fixed packet rates from this process, to find its own
ceiling (the highest rate with no packet dropped, by the kernel or by it).

Needs a running Kafka (`regstate kafka up`), `sipp` and `kamailio`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.hep.decode import encode  # noqa: E402
from streams.hep.listener import kernel_drops  # noqa: E402
from streams.log.topics import ensure_topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from tests.integration.hep_harness import started_hep, started_kamailio  # noqa: E402
from tests.unit.hep_builders import PBX, capture, register, response  # noqa: E402


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def packets(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("regstate_hep_packets_total"))


def acked(m: dict[str, float]) -> float:
    return m.get('regstate_hep_events_total{result="acked"}', 0.0)


def dropped(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("regstate_hep_dropped_total"))


def settle(web: int, timeout_s: float = 60.0) -> tuple[dict[str, float], float]:
    """The listener's counters once they stop moving, and when they last moved."""
    last = metrics(web)
    moved = time.monotonic()
    deadline = moved + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = metrics(web)
        if packets(now) != packets(last) or acked(now) != acked(last):
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > 1.0:
            break
    return last, moved


def sipp(port: int, users: list[str], rate: int, work: Path) -> tuple[float, int, int]:
    csv = work / f"users-{rate}.csv"
    csv.write_text(
        "SEQUENTIAL\n"
        + "".join(f"{u};[authentication username={u} password=pw-{u}]\n" for u in users)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    started = time.monotonic()
    result = subprocess.run(
        [
            "sipp", "-sf", str(ROOT / "tests" / "sipp" / "register_auth.xml"), "-inf", str(csv),
            "-m", str(len(users)), "-r", str(rate), "-l", "500", "-i", "127.0.0.1",
            "-p", str(local), f"127.0.0.1:{port}", "-nostdin", "-timeout", "300s",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    ok = re.search(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)", result.stdout)
    failed = re.search(r"Failed call\s+\|\s+\d+\s+\|\s+(\d+)", result.stdout)
    return elapsed, int(ok.group(1)) if ok else 0, int(failed.group(1)) if failed else 0


def part1(env: dict[str, str], work: Path, users: int, rates: list[int]) -> None:
    print("-- Kamailio 5.6 (siptrace HEPv3) -> regstate hep -> Kafka")
    print(
        f"{'rate':>6} {'kamailio REG/s':>15} {'ok':>8} {'HEP sent':>9} {'HEP recv':>9} "
        f"{'kernel drops':>12} {'listener drops':>14} {'events/s':>9}"
    )
    with started_hep(env, work / "hep.log") as hep:
        for rate in rates:
            names = [f"7{uuid.uuid4().hex[:6]}{i:05d}" for i in range(users)]
            with started_kamailio(work / f"kam-{rate}", hep.port) as kam:
                before, drops0 = metrics(hep.web_port), kernel_drops(hep.port)
                t0 = time.monotonic()
                elapsed, ok, failed = sipp(kam.port, names, rate, work)
                after, t1 = settle(hep.web_port)
            got = packets(after) - packets(before)
            events = acked(after) - acked(before)
            share = ok / users
            print(
                f"{rate:>6} {ok / elapsed:>15.0f} {share:>8.3%} {4 * ok:>9} {got:>9.0f} "
                f"{kernel_drops(hep.port) - drops0:>12} {dropped(after) - dropped(before):>14.0f} "
                f"{events / (t1 - t0):>9.0f}"
            )
            if share < 0.999:
                print(f"   Kamailio saturated at {rate}/s ({failed} failed calls)")
                break


def part2(env: dict[str, str], work: Path, rates: list[int], seconds: float) -> None:
    print("-- regstate hep alone: pre-encoded login captures at fixed packet rates")
    print(f"{'pkts/s asked':>12} {'sent/s':>9} {'recv':>9} {'kernel drops':>12} {'events/s':>9}")
    with started_hep(env, work / "hep-blast.log") as hep:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dest = ("127.0.0.1", hep.port)
        t_us = time.time_ns() // 1000
        for rate in rates:
            total = int(rate * seconds)
            logins = []
            for i in range(total // 4):
                user = f"8{uuid.uuid4().hex[:5]}{i}"
                r1 = register(user, branch=f"z9hG4bKa{user}", cseq=1)
                r2 = register(user, branch=f"z9hG4bKb{user}", cseq=2, auth=True)
                ok = response(r2, 200, contacts=[f"<sip:{user}@10.0.0.5:5062>;expires=300"])
                phone = (f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 5062)
                t_us += 1000
                logins += [
                    encode(capture(r1, phone, PBX, t_us)),
                    encode(capture(response(r1, 401), PBX, phone, t_us + 1)),
                    encode(capture(r2, phone, PBX, t_us + 2)),
                    encode(capture(ok, PBX, phone, t_us + 3)),
                ]
            before, drops0 = metrics(hep.web_port), kernel_drops(hep.port)
            start = time.monotonic()
            for n, packet in enumerate(logins):
                # Paced: never ahead of the asked rate (bursts of at most 1 ms).
                ahead = n / rate - (time.monotonic() - start)
                if ahead > 0.001:
                    time.sleep(ahead)
                sock.sendto(packet, dest)
            sent_s = len(logins) / (time.monotonic() - start)
            after, t1 = settle(hep.web_port)
            got = packets(after) - packets(before)
            events = acked(after) - acked(before)
            drops = kernel_drops(hep.port) - drops0
            print(
                f"{rate:>12} {sent_s:>9.0f} {got:>9.0f} {drops:>12} {events / (t1 - start):>9.0f}"
            )
            if drops or got < len(logins):
                print(f"   listener dropped packets at {rate}/s")
                break
        sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4000, help="SIPp phones per rate step")
    parser.add_argument("--rates", default="500,1000,2000,3000", help="SIPp REGISTER rates")
    parser.add_argument("--blast", default="", help="packet rates for part 2 (empty: skip)")
    parser.add_argument("--seconds", type=float, default=5.0, help="part 2: seconds per rate")
    args = parser.parse_args()
    settings = Settings.from_env()
    prefix = f"bench-hep-{uuid.uuid4().hex[:8]}."
    env = {
        "REGSTATE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "REGSTATE_TOPIC_PREFIX": prefix,
        "REGSTATE_PARTITIONS": str(settings.partitions),
        "REGSTATE_LOG_LEVEL": "info",
    }
    asyncio.run(ensure_topics(Settings.from_env(env)))
    with tempfile.TemporaryDirectory(prefix="hep-bench-") as tmp:
        work = Path(tmp)
        if args.rates:
            part1(env, work, args.users, [int(r) for r in args.rates.split(",")])
        if args.blast:
            part2(env, work, [int(r) for r in args.blast.split(",")], args.seconds)
    print(f"(topics {prefix}*: delete them with your Kafka tools when done)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
