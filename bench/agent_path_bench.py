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

``--instructions`` counts instructions instead (valgrind's cachegrind, which
this machine's noise does not move): each part of the path runs in a child at
``--events`` and three times as many, and the difference per event is printed,
for bare decode+fold, the agent's path, and the agent's path without each of
its own parts (``--without``: the part replaced by a no-op, the outputs then
invalid; for attributing the cost only). Instructions are not time (memory
stalls are left out) but they tell the parts apart exactly.

    .venv/bin/python bench/agent_path_bench.py --instructions --events 4000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka.producer.message_accumulator import BatchBuilder  # type: ignore[import-untyped]  # noqa: E402

from bench.engine_bench import bench_events  # noqa: E402
from bench.quix_peer import bare_fold, bare_records  # noqa: E402
from schemas import RegistrationEvent, decode_event, encode_event  # noqa: E402
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

    def create_batch(self) -> Any:
        return BatchBuilder(256 * 1024, 0)

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.records += builder.record_count()
        builder._build()  # the bytes the worker's producer would send
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
    args: argparse.Namespace, batches: list[list[tuple[int, list[Record]]]], *, check: bool = True
) -> tuple[float, Engine]:
    """CPU seconds per event of a fresh engine's agent folding every batch, and the engine.

    ``check``: fail unless the producer got at least one record per event."""
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
    if check and producer.records < total:
        raise SystemExit(f"agent path: {producer.records} records sent for {total} events")
    return cpu / total, engine


def _nothing(*args: object, **kwargs: object) -> None:
    return None


def _replace(owner: object, name: str, value: object) -> None:
    """Put ``value`` in place of ``owner.name``, which must exist (a renamed function would
    otherwise leave the part in place and its cost unmeasured)."""
    if not hasattr(owner, name):
        raise SystemExit(f"agent path: {owner!r} has no {name} to replace")
    setattr(owner, name, value)


def _without_metrics() -> None:
    from streams.metrics.engine import EngineMetrics

    _replace(EngineMetrics, "observe_skew", _nothing)
    _replace(EngineMetrics, "observe_fold", _nothing)


def _without_planner() -> None:
    from processors.expiry import SweepPlanner

    _replace(SweepPlanner, "observe", _nothing)


def _without_encode() -> None:
    import streams.engine.agent as agent

    _replace(agent, "encode_state_forms", lambda state: (b"{}", b"{}"))
    _replace(agent, "encode_state", lambda state, internal=False: b"{}")
    _replace(agent, "encode_binding_event", lambda event: b"{}")


def _without_admission() -> None:
    from streams.log.deadletter import DeadLetterPolicy

    def admit(
        self: object,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        *rest: object,
    ) -> object:
        return decode_event(value)  # decode only: no key, timestamp, AOR or partition checks

    _replace(DeadLetterPolicy, "admit", admit)


def _without_outputs() -> None:
    from streams.engine.outputs import BatchOutputs

    _replace(BatchOutputs, "add", _nothing)


PARTS: dict[str, Callable[[], None]] = {
    "metrics": _without_metrics,  # per-record fold outcome and clock skew counters
    "planner": _without_planner,  # the expiry index, per AOR written
    "encode": _without_encode,  # internal and public state JSON, binding event JSON
    "admission": _without_admission,  # the dead-letter checks beyond decoding
    "outputs": _without_outputs,  # records appended to the producer's batches
}
RUNS = ("setup", "records", "bare", "agent")
"""--only: the log and batches alone, bare's records, bare decode+fold, the agent's path."""
SIZE_FACTOR = 3
"""--instructions runs each part at --events and this many times as many."""


def run_only(args: argparse.Namespace) -> None:
    """One part, once, for an instruction count (the child of --instructions)."""
    events = bench_events(args, args.events)
    batches = chunks(args, events, "regstate.registrations")
    tune_gc(100_000)
    for part in args.without:
        PARTS[part]()
    if args.only == "records":
        bare_records(events)
    elif args.only == "bare":
        bare_fold(events)
    elif args.only == "agent":
        agent_round(args, batches, check=not args.without)


def count_instructions(args: argparse.Namespace) -> int:
    """Per-event instructions of bare decode+fold and the agent's path, part by part."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("agent path: --instructions needs valgrind (Debian: valgrind)", file=sys.stderr)
        return 2
    small: int = args.events
    large = small * SIZE_FACTOR
    runs: list[tuple[str, tuple[str, ...]]] = [(only, ()) for only in RUNS]
    runs += [("agent", (part,)) for part in PARTS]

    def instructions(only: str, without: tuple[str, ...], events: int) -> int:
        cmd = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
        cmd += [sys.executable, __file__, "--only", only, "--events", str(events)]
        cmd += [f"--aors={args.aors}", f"--partitions={args.partitions}", f"--seed={args.seed}"]
        cmd += [f"--batch={args.batch}"] + [f"--without={w}" for w in without]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
        found = re.search(r"I\s+refs:\s+([\d,]+)", out)
        if found is None:
            raise SystemExit(f"agent path: no instruction count from valgrind: {out[-500:]}")
        return int(found.group(1).replace(",", ""))

    jobs = [(only, without, n) for only, without in runs for n in (small, large)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores; counts do not depend on it
        counts = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))

    def per_event(only: str, without: tuple[str, ...] = ()) -> float:
        grown = counts[only, without, large] - counts[only, without, small]
        return grown / (large - small)

    setup = per_event("setup")
    bare = per_event("bare") - per_event("records")
    agent = per_event("agent") - setup
    print(
        f"RESULT instructions per event: bare decode+fold {bare / 1e3:.1f}k, agent path "
        f"{agent / 1e3:.1f}k; RATIO {bare / agent:.0%}"
    )
    for part in PARTS:
        cost = agent - (per_event("agent", (part,)) - setup)
        print(f"  {part}: {cost / 1e3:.1f}k per event ({cost / agent:.1%} of the agent path)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--aors", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="count instructions")
    parser.add_argument("--only", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--without", action="append", default=[], choices=sorted(PARTS))
    args = parser.parse_args(argv)
    if args.instructions:
        return count_instructions(args)
    with tempfile.TemporaryDirectory(prefix="regstate-agent-path-") as tmp:
        args.data_dir = tmp
        if args.only:
            run_only(args)
            return 0
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
