"""Bench of ``regstate dialer-view``: bootstrap time into SQLite, and lookup latency.

    .venv/bin/python bench/dialer_bench.py                        # 1M bindings, 8 partitions
    .venv/bin/python bench/dialer_bench.py --bindings 100000 --rate 1000 --seconds 10
    .venv/bin/python bench/dialer_bench.py --kamailio   # + bootstrap with Kamailio's table on

1. Publishes ``--bindings`` AorStates (one contact each, AORs ``sip:<n>@dN.example``
   so extensions repeat over 4 domains) to regstate.bindings of a fresh topic
   prefix, as the engine would (public JSON, key = AOR bytes, acks=all).
2. Starts a dialer view (in this process, on a fresh SQLite file) and times it from
   start to ready (caught up with the end offsets seen at start).
3. Looks up random extensions at ``--rate`` per second for ``--seconds`` through
   the Python API (:class:`streams.dialer.report.DialerView`, read-only on the
   file) and then over HTTP (``GET /v1/extensions/{ext}``, one keep-alive
   connection), paced by an absolute schedule, and prints p50/p99/max latency.

4. With ``--kamailio``, bootstraps the same records again into a fresh file with
   Kamailio's ``location`` table on and prints the on/off ratio of wall time, CPU
   and file size (both in the same run, on the same topic).

Needs a running Kafka (``regstate kafka up``); uses ``REGSTATE_BOOTSTRAP_SERVERS``.
The topics are deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from streams.dialer.report import DialerView
from streams.dialer.store import NO_EXTRA_TABLES, ExtraTables
from streams.dialer.view import DialerViewService, sqlite_opener
from streams.log.topics import BINDINGS, ensure_topics, topic_specs
from streams.settings import Settings

T0 = 1_767_225_600_000
DOMAINS = 4


def state_json(i: int) -> tuple[bytes, bytes]:
    """Key and public AorState JSON of binding ``i`` (same shape as schemas.encode_state)."""
    ext = 100_000 + i // DOMAINS
    aor = f"sip:{ext}@d{i % DOMAINS}.example"
    contact = f"sip:{ext}@10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:5060"
    doc = {
        "aor": aor,
        "version": 3,
        "updated_ts": T0,
        "contacts": [
            {
                "key": contact,
                "uri": contact,
                "expires_at": T0 + 3_600_000,
                "registered_at": T0 - 60_000,
                "refreshed_at": T0,
                "call_id": f"c{i}",
                "cseq": 3,
                "q": None,
                "instance": None,
                "reg_id": None,
                "source": {"ip": "198.51.100.7", "port": 20000 + i % 40000, "transport": "udp"},
                "user_agent": "Yealink SIP-T46U 108.86.0.20",
                "node": f"fe{i % 3 + 1}",
                "path": [],
            }
        ],
        "health": {"state": "registered", "since": T0 - 60_000, "auth_failures": 0},
    }
    return aor.encode(), orjson.dumps(doc)


async def publish(settings: Settings, n: int) -> float:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for i in range(n):
            k, v = state_json(i)
            pending.append(await producer.send(settings.topic(BINDINGS), v, key=k))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


def file_mib(path: str) -> float:
    return os.path.getsize(path) / 2**20


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def report(name: str, lat_ms: list[float]) -> None:
    print(
        f"{name}: {len(lat_ms)} lookups, p50 {pct(lat_ms, 0.5):.3f} ms, "
        f"p99 {pct(lat_ms, 0.99):.3f} ms, max {max(lat_ms):.3f} ms"
    )


async def api_lookups(db: str, n: int, rate: int, seconds: float) -> list[float]:
    view = DialerView(db, clock=lambda: T0)
    rng = random.Random(1)
    lat: list[float] = []
    start = time.perf_counter()
    total = int(rate * seconds)
    for k in range(total):
        due = start + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        ext = str(100_000 + rng.randrange(n) // DOMAINS)
        t = time.perf_counter()
        rows = view.where(ext)
        lat.append((time.perf_counter() - t) * 1000)
        assert rows, ext
    view.close()
    return lat


async def http_lookups(port: int, n: int, rate: int, seconds: float) -> list[float]:
    rng = random.Random(2)
    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=conn) as http:
        start = time.perf_counter()
        total = int(rate * seconds)
        for k in range(total):
            due = start + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ext = str(100_000 + rng.randrange(n) // DOMAINS)
            t = time.perf_counter()
            async with http.get(f"/v1/extensions/{ext}") as r:
                await r.read()
                assert r.status == 200, ext
            lat.append((time.perf_counter() - t) * 1000)
    return lat


@dataclass(frozen=True)
class Bootstrap:
    records: int
    batches: int
    wall: float
    cpu: float
    mib: float

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.records} records in {self.wall:.1f} s "
            f"({self.records / self.wall:,.0f}/s), {self.batches} transactions; "
            f"file {self.mib:.0f} MiB; CPU {self.cpu:.1f} s "
            "(all threads; wall > CPU means waiting on Kafka or other load)"
        )


async def bootstrap(
    settings: Settings, db: str, tables: ExtraTables
) -> tuple[DialerViewService, asyncio.Task[None], asyncio.Event, Bootstrap]:
    """Start a dialer view on a fresh file and time it to ready; it keeps serving."""
    service = DialerViewService(
        settings,
        sqlite_opener(db, clock=lambda: T0, tables=tables),
        clock=lambda: T0,
        progress=None,
    )
    stop = asyncio.Event()
    started = time.monotonic()
    cpu_started = time.process_time()
    task = asyncio.create_task(service.run(stop))
    while not service.ready:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    took = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    m = service.metrics
    return service, task, stop, Bootstrap(m.records_applied, m.batches, took, cpu, file_mib(db))


async def main_async(args: argparse.Namespace) -> None:
    base = Settings.from_env()
    prefix = args.prefix or f"bench-dialer-{uuid.uuid4().hex[:8]}."
    settings = Settings(
        bootstrap_servers=base.bootstrap_servers,
        topic_prefix=prefix,
        partitions=args.partitions,
        dialer_web_port=0,
    )
    if not args.skip_publish:
        took = await publish(settings, args.bindings)
        print(f"published {args.bindings} bindings to {prefix}bindings in {took:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.sqlite3")
        service, task, stop, off = await bootstrap(settings, db, NO_EXTRA_TABLES)
        print(off.line("bootstrap"))
        report("python API", await api_lookups(db, args.bindings, args.rate, args.seconds))
        assert service.port is not None
        report("HTTP", await http_lookups(service.port, args.bindings, args.rate, args.seconds))
        stop.set()
        await task
        if args.kamailio:
            # The same records again into a fresh file, now also writing Kamailio's location
            # table (one row per binding, same transactions): what the table costs.
            db_on = str(Path(tmp) / "bench-kamailio.sqlite3")
            _, task, stop, on = await bootstrap(
                settings, db_on, ExtraTables(kamailio_location=True)
            )
            stop.set()
            await task
            conn = sqlite3.connect(db_on)
            (rows,) = conn.execute("SELECT count(*) FROM location").fetchone()
            conn.close()
            assert rows == off.records, (rows, off.records)
            print(on.line("bootstrap + kamailio location"))
            print(
                f"kamailio location on/off: wall {on.wall / off.wall:.2f}x, "
                f"CPU {on.cpu / off.cpu:.2f}x, file {on.mib / off.mib:.2f}x "
                f"({rows} location rows)"
            )
    if not args.keep and not args.skip_publish:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([s.name for s in topic_specs(settings)])
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bindings", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rate", type=int, default=1000, help="lookups per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per lookup phase")
    parser.add_argument("--prefix", help="reuse a kept prefix (with --skip-publish)")
    parser.add_argument("--skip-publish", action="store_true")
    parser.add_argument(
        "--kamailio",
        action="store_true",
        help="bootstrap again with Kamailio's location table on; print the on/off ratio",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the topics (never deleted with --skip-publish)"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
