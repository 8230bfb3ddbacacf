"""The fold agent's batch path in process, against bare decode+fold: no broker, one core.

The worker's throughput (bench/quix_peer.py) mixes the agent's own work with
Kafka's client, the broker and the machine's noise; this bench isolates the
first. It builds a real :class:`~streams.engine.worker.Engine` (not started: no
broker, the memory store) and drives :meth:`FoldAgent._fold_batch` with the
bench's log in batches of ``--batch`` records, as the consumer hands them over.
The producer is aiokafka's own record batch builder; ``send_batch`` closes each
batch (the bytes the worker would send) and resolves at once.

It prints the CPU per event of bare decode+fold and of the agent's path,
alternating rounds in one process, and their ratio (best round of each; CPU
time, not wall, so a busy machine's steal and waits stay out): the agent's path
sets a ceiling on the worker's rate that the Kafka client then lowers.

    .venv/bin/python bench/agent_path_bench.py --events 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka.producer.message_accumulator import BatchBuilder  # type: ignore[import-untyped]  # noqa: E402

from bench.engine_bench import bench_events  # noqa: E402
from bench.quix_peer import bare_fold  # noqa: E402
from schemas import RegistrationEvent, encode_event  # noqa: E402
from streams.engine.cli import tune_gc  # noqa: E402
from streams.engine.worker import Engine  # noqa: E402
from streams.log.routing import cached_partition  # noqa: E402
from streams.settings import Settings  # noqa: E402


class Record(NamedTuple):
    """What the consumer hands the agent per record (aiokafka's ConsumerRecord's fields)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes
    headers: tuple[Any, ...]


class _Meta(NamedTuple):
    topic_partition: Any
    offset: int


class Producer:
    """aiokafka's batch builder and a send that closes the batch and acks it at once."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    def create_batch(self) -> Any:
        return BatchBuilder(256 * 1024, 0)

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.records += builder.record_count()
        self.bytes += len(builder._build())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(_Meta((topic, partition), 0))
        return fut


def chunks(
    args: argparse.Namespace, events: list[RegistrationEvent], topic: str
) -> list[list[tuple[int, list[Record]]]]:
    """The log as the consumer would hand it over: batches of per-partition groups."""
    offsets = [0] * args.partitions
    batches: list[list[tuple[int, list[Record]]]] = []
    groups: dict[int, list[Record]] = {}
    count = 0
    for e in events:
        key = e.aor.encode()
        p = cached_partition(key, args.partitions)
        groups.setdefault(p, []).append(
            Record(topic, p, offsets[p], e.ts, key, encode_event(e), ())
        )
        offsets[p] += 1
        count += 1
        if count == args.batch:
            batches.append(sorted(groups.items()))
            groups, count = {}, 0
    if groups:
        batches.append(sorted(groups.items()))
    return batches


def agent_round(
    args: argparse.Namespace, batches: list[list[tuple[int, list[Record]]]]
) -> tuple[float, Engine]:
    """CPU seconds per event of a fresh engine's agent folding every batch, and the engine."""
    settings = Settings.from_env(
        {
            "REGSTATE_STORE": "memory",
            "REGSTATE_DATA_DIR": args.data_dir,
            "REGSTATE_PARTITIONS": str(args.partitions),
        }
    )
    engine = Engine(settings, outputs_copartitioned=True)
    producer = Producer()
    engine.producer = lambda: producer  # type: ignore[method-assign]
    agent = engine.agent
    for p in range(args.partitions):
        engine.planner.track(p)

    async def run() -> float:
        started = time.process_time()
        for batch in batches:
            done = await agent._fold_batch([(p, records, 1) for p, records in batch])
            await asyncio.gather(*done)
        return time.process_time() - started

    cpu = asyncio.run(run())
    total = sum(len(r) for b in batches for _, r in b)
    if producer.records < total:
        raise SystemExit(f"agent path: {producer.records} records sent for {total} events")
    return cpu / total, engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--aors", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="regstate-agent-path-") as tmp:
        args.data_dir = tmp
        events = bench_events(args, args.events)
        batches = chunks(args, events, "regstate.registrations")
        tune_gc(100_000)  # the worker's collector setting (D108)
        bare_us: list[float] = []
        agent_us: list[float] = []
        for _ in range(args.rounds):
            gc.collect()
            bare_us.append(bare_fold(events)[1] * 1e6)
            gc.collect()
            agent_us.append(agent_round(args, batches)[0] * 1e6)
            print(f"round: bare {bare_us[-1]:.1f} µs/event, agent path {agent_us[-1]:.1f} µs/event")
    b, a = min(bare_us), min(agent_us)
    print(f"RESULT bare decode+fold: {b:.1f} µs/event; agent path: {a:.1f} µs/event (best rounds)")
    print(f"RATIO bare/agent path: {b / a:.0%} (the worker's ceiling on this path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
