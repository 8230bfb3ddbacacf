"""Engine benchmark: sustained events/s of one worker, publish-to-bindings latency, restart time.

    .venv/bin/regstate kafka up
    .venv/bin/python bench/engine_bench.py --events 100000            # all three phases
    .venv/bin/python bench/engine_bench.py --phases throughput --events 50000 --profile /tmp/w.prof
    .venv/bin/python bench/engine_bench.py --phases restart --bindings 1000000 \\
        --restart-prefix bench-1m. --data-dir /tmp/regstate-bench     # reuses a filled table

Phases (each prints one ``RESULT`` line; targets in brackets):

throughput
    Publishes N synthetic events (bench/gen_events.py) to a fresh topic prefix,
    starts one ``regstate worker`` (RocksDB store), and times the fold of all of
    them: from the worker's first folded event until the consumer group has
    committed the end of regstate.registrations (the engine commits an offset
    only once the outputs of every record before it were acknowledged, so this
    is the time to fold *and* publish everything), and to the last event folded
    (without the wait for the worker's next commit, D127).
latency [p99 <= 100 ms]
    With the same worker, publishes events at half the rate to the last fold, each with
    ``ts`` set to its send time, and reads regstate.bindings: latency is the
    arrival time of each new AorState minus its ``updated_ts`` (the ts of the
    event that produced it; states re-published for duplicate events are not
    counted). Same clock on both ends (one machine). The publisher runs in a
    process of its own. A second line gives the share of states the worker
    handed to its producer within 50 and 100 ms of their event's ts (its
    ``regstate_publish_to_bindings_seconds`` histogram, over the phase), a third
    the worker's CPU per event, the bench's own (its publisher's and reader's:
    they share the worker's cores, D128) and the machine's CPU use. Then
    the floor: a relay process (aiokafka consumer and producer, the engine's
    batched outputs, no fold) re-sends the same events at the same rate between
    topics of its own, with the worker idle; its p50/p99 is what the broker,
    publisher and reader on this machine leave, and the last line gives the
    worker's ratio to it.
restart [ready <= 10 s]
    Fills a table with B bindings (B register events, one AOR each, granted a
    week), stops the worker (SIGTERM) and restarts it, three times: the time
    from process start to ``/readyz`` answering 200 (RocksDB keeps the table on
    disk; only the changelog tail is replayed). ``--restart-cold`` deletes the
    worker's local table before each restart: the whole changelog is restored (a
    lost disk, a new host, the first start after D123 moved the table).

Workers run with a huge grace period so the sweeper does not add events, and
with small RocksDB caches. Everything runs on this machine: the bench, the
broker and the worker share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import (  # type: ignore[import-untyped]  # noqa: E402
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]  # noqa: E402

from schemas import ContactEntry, RegistrationEvent, Source, encode_event  # noqa: E402
from streams.settings import Settings  # noqa: E402

NO_SWEEP_MS = 10**13
WEEK_S = 7 * 24 * 3600


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class WorkerProc:
    """A ``regstate worker`` subprocess with its own environment."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['REGSTATE_WEB_PORT']}"

    def start(self) -> None:
        out = self.log.open("ab")
        self.started_at = time.monotonic()
        # REGSTATE_BENCH_SRC: run the worker of another checkout (e.g. main, as a baseline).
        env = {**os.environ, **self.env}
        src = env.get("REGSTATE_BENCH_SRC") or str(ROOT)
        if env.get("REGSTATE_BENCH_SRC"):
            env["PYTHONPATH"] = src
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            cwd=src,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str) -> tuple[int, bytes]:
        if self.proc is not None and self.proc.poll() is not None:
            raise SystemExit(f"bench: worker exited ({self.proc.returncode}); see {self.log}")
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:  # noqa: S310
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return 0, b""

    def cpu_seconds(self) -> float:
        """User + system CPU the worker process has used so far (Linux /proc)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def folded(self) -> float:
        status, body = self.get("/metrics")
        if status != 200:
            return 0.0
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("regstate_events_folded_total{"):
                total += float(line.rpartition(" ")[2])
        return total


def worker_env(args: argparse.Namespace, prefix: str, data_dir: Path, wid: str) -> dict[str, str]:
    env = {
        "REGSTATE_BOOTSTRAP_SERVERS": args.bootstrap,
        "REGSTATE_TOPIC_PREFIX": prefix,
        "REGSTATE_PARTITIONS": str(args.partitions),
        "REGSTATE_DATA_DIR": str(data_dir),
        "REGSTATE_WORKER_ID": wid,
        "REGSTATE_WEB_PORT": str(free_port()),
        "REGSTATE_STORE": "rocksdb",
        "REGSTATE_GRACE_MS": str(NO_SWEEP_MS),
        "REGSTATE_STANDBY_REPLICAS": "0",
        "REGSTATE_LOG_LEVEL": "warning",
    }
    if args.profile:
        env["REGSTATE_PROFILE"] = args.profile
    return env


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def _wait_committed_to_end(bootstrap: str, group: str, topic: str, within_s: float) -> float:
    """When (``time.monotonic()``) ``group`` had committed the end of ``topic``: polled
    every 20 ms on one admin client, so the rate's end is not a client's start-up late."""
    ends = await end_offsets(bootstrap, topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            offsets = await admin.list_consumer_group_offsets(group)
            got = {tp.partition: m.offset for tp, m in offsets.items() if tp.topic == topic}
            if all(end == 0 or got.get(p, -1) >= end for p, end in ends.items()):
                return time.monotonic()
            await asyncio.sleep(0.02)
    finally:
        await admin.close()
    raise SystemExit(f"bench: {group} did not commit the end of {topic} in {within_s:.0f} s")


CREATED_PREFIXES: list[str] = []
"""Topic prefixes this run created; :func:`drop_topics` deletes their topics at the end."""


def drop_topics(bootstrap: str, prefixes: list[str]) -> None:
    """Delete every topic under ``prefixes``: a broker that keeps thousands of old bench
    topics answers every full metadata request with all of them and spends CPU on
    their partitions, which slows the next runs."""
    if not prefixes:
        return
    from devkafka.topics import delete_topics, topic_names

    async def run() -> int:
        names = await topic_names(bootstrap)
        return await delete_topics(bootstrap, (t for t in names if t.startswith(tuple(prefixes))))

    print(f"bench: deleted {asyncio.run(run())} topics of this run", flush=True)


def publish(
    settings: Settings, events: Iterator[RegistrationEvent] | list[RegistrationEvent]
) -> float:
    from streams.log.publisher import publish_events

    started = time.monotonic()
    report = asyncio.run(publish_events(settings, events))
    if not report.ok:
        raise SystemExit(f"bench: publish failed: {report.errors}")
    return report.published / (time.monotonic() - started)


def ensure(settings: Settings) -> None:
    from streams.log.topics import ensure_topics

    asyncio.run(ensure_topics(settings))


def ensure_scratch(
    settings: Settings, names: list[str], partitions: int, config: dict[str, str] | None = None
) -> None:
    """Create topics of the bench's own (not regstate's five) as regstate creates its
    topics (:func:`streams.log.topics.ensure_topics`: every partition led on return)."""
    from streams.log.topics import TopicSpec, ensure_topics

    specs = [TopicSpec(n, n, partitions, 1, config or {}) for n in names]
    asyncio.run(ensure_topics(settings, specs))


# --------------------------------------------------------------------------- phases


def bench_events(args: argparse.Namespace, total: int) -> list[RegistrationEvent]:
    """The synthetic log of a run (bench/gen_events.py), ending about now."""
    from bench.gen_events import generate_events

    span = 300_000 * total // args.aors
    return list(generate_events(total, args.aors, 4, args.seed, start_ts=now_ms() - span, raw=True))


class Rate(NamedTuple):
    """A timed fold's events/s to its two ends, from the same start (D127)."""

    eps: float
    """To the commit of the log's end."""
    folded_eps: float
    """To the last event folded (the end the worker and the peers compare alike)."""


def fold_rate(
    args: argparse.Namespace,
    work: Path,
    events: list[RegistrationEvent],
    label: str = "throughput",
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
    live: bool = False,
) -> tuple[WorkerProc, Rate]:
    """Publish ``events`` under a fresh prefix, fold them with ``workers`` worker processes
    (one group); return the first worker (the others are stopped) and the rates.

    The rate runs from the first folded event until the group has committed the
    end of regstate.registrations (so: folded, published, acked). That end
    includes the wait for the worker's next commit (``commit_interval_ms``), which
    the bench's peers do not have (they commit at once on their last record), so
    the rate to the last folded event is returned too (D127). ``live``: the
    workers start (and share the partitions) first and the log is published
    while they fold; otherwise the log is published first (a backlog).
    """
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    CREATED_PREFIXES.append(prefix)
    slug = label.replace(" ", "-")
    envs = []
    for i in range(workers):
        env = worker_env(args, prefix, work / f"w-{slug}-{i}", f"bt{i}")
        env.update(extra_env or {})
        envs.append(env)
    settings = Settings.from_env(envs[0])
    ensure(settings)
    if not live:
        rate = publish(settings, events)
        print(f"{label}: published {len(events)} events at {rate:.0f}/s", flush=True)

    procs = [WorkerProc(env, work / f"{slug}-worker-{i}.log") for i, env in enumerate(envs)]
    for proc in procs:
        proc.start()
    for proc in procs:
        wait_for(proc.ready, 180, "worker ready")
    publisher = None
    if live:
        # Every worker ready with its share; a thread publishes while they fold.
        import threading

        def _publish() -> None:
            rate = publish(settings, events)
            print(f"{label}: published {len(events)} events at {rate:.0f}/s", flush=True)

        publisher = threading.Thread(target=_publish, daemon=True)
        publisher.start()

    def folded() -> float:
        return sum(p.folded() for p in procs)

    first = wait_for(lambda: folded() > 0 and time.monotonic(), 120, "first fold", 0.02)
    cpu_first = sum(p.cpu_seconds() for p in procs)
    wait_for(lambda: folded() >= len(events), 3600, "all events folded", 0.05)
    folded_at = time.monotonic()
    group, topic = f"{prefix}engine", settings.topic("registrations")
    done = asyncio.run(_wait_committed_to_end(args.bootstrap, group, topic, 600))
    cpu_us = (sum(p.cpu_seconds() for p in procs) - cpu_first) / len(events) * 1e6
    eps = len(events) / (done - first)
    folded_eps = len(events) / (folded_at - first)
    # CPU per event is the figure the other tenants of a shared machine disturb least.
    print(
        f"RESULT {label}: {len(events)} events {'published and ' if live else ''}"
        f"folded by {workers} worker(s) in "
        f"{folded_at - first:.2f} s, outputs acknowledged and committed after "
        f"{done - first:.2f} s: {eps:.0f} events/s ({folded_eps:.0f} to the last folded), "
        f"worker CPU {cpu_us:.0f} µs/event",
        flush=True,
    )
    if publisher is not None:
        publisher.join()
    for proc in procs[1:]:
        proc.stop()
    return procs[0], Rate(eps, folded_eps)


def phase_throughput(
    args: argparse.Namespace, work: Path
) -> tuple[WorkerProc, float, list[RegistrationEvent]]:
    """Fold N pre-published events; return the running worker, its rate and unpublished events.

    The rate is the one to the last folded event: on a short log the wait for the
    worker's next commit is a large share of the time to the commit (D127), and the
    latency phase runs at half the worker's rate, not at half of a rate that wait lowered.
    """
    events = bench_events(args, args.events + args.latency_events)
    worker, rate = fold_rate(args, work, events[: args.events])
    return worker, rate.folded_eps, events[args.events :]


def _publish_paced(
    bootstrap: str, topic: str, events: list[RegistrationEvent], rate: float, spent: Any
) -> None:
    """Publish ``events`` at ``rate``, each with ``ts`` set as it is handed to the producer;
    leave the CPU seconds publishing took (not the process's start-up) in ``spent``.

    Runs in its own process, so the reader's arrival times are not delayed by the
    publisher's work on one event loop (and the reverse); sends every 5 ms what is due.
    """
    cpu = time.process_time()

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=1
        )
        await producer.start()
        try:
            start = time.monotonic()
            sent = 0
            while sent < len(events):
                due = min(len(events), int((time.monotonic() - start) * rate) + 1)
                for ev in events[sent:due]:
                    ev = ev._replace(ts=now_ms())
                    await producer.send(topic, encode_event(ev), key=ev.aor.encode())
                sent = due
                await asyncio.sleep(0.005)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())
    spent.value = time.process_time() - cpu


def engine_like_producer(bootstrap: str, settings: Settings) -> AIOKafkaProducer:
    """An aiokafka producer set as the worker's Faust producer is (build_app: acks=all,
    idempotence, the linger, 256 KiB batches), for the benches' peers of the worker."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.producer_linger_ms,
        max_batch_size=256 * 1024,
    )


def _relay(bootstrap: str, source: str, out: str, ready: Any) -> None:
    """The transport floor of the latency phase: every record of ``source``, as it arrives,
    sent on to ``out`` with no fold, with the engine's batched outputs (BatchOutputs), its
    producer settings and fetch wait; its fetches answer on the first record (aiokafka's
    ``fetch_min_bytes``), so the worker's fetch minimum (D110) is not in the floor. The
    value carries the record's timestamp as ``updated_ts``. Runs in a process of its own,
    like the worker, until killed."""
    from streams.engine.outputs import BatchOutputs

    settings = Settings()

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.engine_fetch_max_wait_ms,
            max_poll_records=settings.engine_max_poll_records,
        )
        producer = engine_like_producer(bootstrap, settings)
        await consumer.start()
        await producer.start()
        tps = await _assign_at_end(consumer, source)
        ready.set()
        while True:
            fetched = await consumer.getmany(*tps, timeout_ms=1000)
            outputs = BatchOutputs(producer)
            for tp, records in fetched.items():
                for r in records:
                    value = orjson.dumps({"version": r.offset, "updated_ts": r.timestamp})
                    outputs.add(out, tp.partition, r.key, value)
            await outputs.send()

    asyncio.run(run())


async def _assign_at_end(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to ``consumer``, positioned at its end."""
    await consumer._client.force_metadata_update()  # the topic is not subscribed: ask for it
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return tps


class Latency(NamedTuple):
    """What one latency run measured."""

    samples: list[float]
    """Of each new state: its arrival minus its ``updated_ts``, in ms."""
    publisher_cpu_s: float
    reader_cpu_s: float


async def _latency(
    args: argparse.Namespace, source: str, topic: str, tail: list[RegistrationEvent], rate: float
) -> Latency:
    """Publish ``tail`` to ``source`` at ``rate``; read each new state from ``topic``."""
    reader_cpu = time.process_time()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    await _assign_at_end(consumer, topic)
    samples: list[float] = []
    phase_start_ms = now_ms()
    versions: dict[bytes, int] = {}
    spawn = multiprocessing.get_context("spawn")
    spent = spawn.Value("d", 0.0)
    publisher = spawn.Process(
        target=_publish_paced,
        args=(args.bootstrap, source, tail, rate, spent),
        daemon=True,
    )
    publisher.start()
    started = time.monotonic()
    stop_at: float | None = None
    while stop_at is None or time.monotonic() < stop_at:
        batches = await consumer.getmany(timeout_ms=50)
        arrived = time.time_ns() / 1e6
        for records in batches.values():
            for r in records:
                if r.value is None:
                    continue
                state = orjson.loads(r.value)
                # A duplicate event re-publishes an unchanged state (its updated_ts
                # is that of an older event): not a new state, no latency sample.
                if state["version"] <= versions.get(r.key, -1):
                    continue
                versions[r.key] = state["version"]
                if state["updated_ts"] >= phase_start_ms:
                    samples.append(arrived - state["updated_ts"])
        if stop_at is None and not publisher.is_alive():
            sent_for = time.monotonic() - started
            stop_at = time.monotonic() + max(2.0, 0.1 * sent_for)
    publisher.join()
    await consumer.stop()
    return Latency(samples, spent.value, time.process_time() - reader_cpu)


def _within(worker: WorkerProc, le: str) -> tuple[float, float]:
    """(count at or under ``le`` seconds, count) of the worker's publish-to-bindings histogram."""
    _, body = worker.get("/metrics")
    under = total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(f'regstate_publish_to_bindings_seconds_bucket{{le="{le}"}}'):
            under = float(line.rpartition(" ")[2])
        elif line.startswith("regstate_publish_to_bindings_seconds_count"):
            total = float(line.rpartition(" ")[2])
    return under, total


class _CpuTimes:
    """The machine's CPU time from /proc/stat (Linux): busy and stolen, summed over cores."""

    def __init__(self, busy: float, steal: float, total: float) -> None:
        self.busy, self.steal, self.total = busy, steal, total

    def __sub__(self, other: _CpuTimes) -> _CpuTimes:
        return _CpuTimes(self.busy - other.busy, self.steal - other.steal, self.total - other.total)

    def __str__(self) -> str:
        total = self.total or 1.0
        return f"{self.busy / total:.0%} busy, {self.steal / total:.0%} stolen by the host"


def _cpu_times() -> _CpuTimes:
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return _CpuTimes(0.0, 0.0, 0.0)
    idle = fields[3] + fields[4]  # idle, iowait
    steal = fields[7] if len(fields) > 7 else 0.0
    total = sum(fields[:8])
    return _CpuTimes(total - idle - steal, steal, total)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def _relay_latency(
    args: argparse.Namespace, settings: Settings, tail: list[RegistrationEvent], rate: float
) -> list[float]:
    """The latency of the transport floor (:func:`_relay`) on topics of its own, at ``rate``."""
    source, out = settings.topic("relay-in"), settings.topic("relay-out")
    ensure_scratch(settings, [source, out], args.partitions)
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    relay = spawn.Process(target=_relay, args=(args.bootstrap, source, out, ready), daemon=True)
    relay.start()
    try:
        if not ready.wait(120):
            raise SystemExit("bench: the relay did not start")
        return asyncio.run(_latency(args, source, out, tail, rate)).samples
    finally:
        relay.kill()
        relay.join()


def phase_latency(
    args: argparse.Namespace, worker: WorkerProc, eps: float, tail: list[RegistrationEvent]
) -> None:
    """Publish the tail at half ``eps``; measure event ts to regstate.bindings arrival. Then
    the same for the relay (no fold, same transport), with the worker idle: the floor the
    broker, the publisher and the reader on this machine leave."""
    rate = args.latency_rate or eps / 2
    n = min(len(tail), int(rate * args.latency_seconds))
    settings = Settings.from_env(worker.env)
    before = {le: _within(worker, le) for le in ("0.05", "0.1")}
    cpu, machine = worker.cpu_seconds(), _cpu_times()
    measured = asyncio.run(
        _latency(args, settings.topic("registrations"), settings.topic("bindings"), tail[:n], rate)
    )
    samples = measured.samples
    cpu, machine = worker.cpu_seconds() - cpu, _cpu_times() - machine
    inside = {}
    for le, (under0, total0) in before.items():
        under, total = _within(worker, le)
        inside[le] = (under - under0) / max(1.0, total - total0)
    if not samples:
        raise SystemExit("bench: no bindings record arrived")
    p50, p99 = _percentiles(samples)
    print(
        f"RESULT latency at {rate:.0f} events/s for {n / rate:.0f} s: {len(samples)} bindings "
        f"records, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {samples[-1]:.1f} ms, "
        f"{sum(x > 100 for x in samples)} over 100 ms "
        f"[target p99 <= 100 ms]",
        flush=True,
    )
    print(
        "RESULT latency inside the worker (event ts to its state handed to the producer, "
        f"regstate_publish_to_bindings_seconds): {inside['0.05']:.1%} within 50 ms, "
        f"{inside['0.1']:.1%} within 100 ms",
        flush=True,
    )
    print(
        f"RESULT CPU during the latency phase: worker {cpu / n * 1e6:.0f} µs/event; "
        f"the bench's publisher {measured.publisher_cpu_s / n * 1e6:.0f} µs/event, its "
        f"reader {measured.reader_cpu_s / n * 1e6:.0f} µs/event; machine {machine}",
        flush=True,
    )
    machine = _cpu_times()
    floor = _relay_latency(args, settings, tail[:n], rate)
    machine = _cpu_times() - machine
    if not floor:
        raise SystemExit("bench: no relayed record arrived")
    f50, f99 = _percentiles(floor)
    print(
        f"RESULT latency floor (relay: consume and re-send, no fold) at {rate:.0f} events/s: "
        f"{len(floor)} records, p50 {f50:.1f} ms, p99 {f99:.1f} ms, max {floor[-1]:.1f} ms; "
        f"worker/floor p50 {p50 / f50:.2f}x, p99 {p99 / f99:.2f}x; machine {machine}",
        flush=True,
    )


def _bindings_events(n: int, seed_ts: int) -> Iterator[RegistrationEvent]:
    source = Source("192.0.2.1", 5060, "udp")
    for i in range(n):
        aor = f"sip:{10_000_000 + i}@pbx.example.com"
        yield RegistrationEvent(
            kind="register",
            id=f"benchfe:{seed_ts * 1000 + i}",
            node="benchfe",
            seq=seed_ts * 1000 + i,
            ts=seed_ts + i // 1000,
            aor=aor,
            call_id=f"c{i}@bench",
            cseq=1,
            contacts=(ContactEntry(f"sip:{10_000_000 + i}@198.51.100.{i % 250}:5060", WEEK_S),),
            expires=WEEK_S,
            source=source,
            user_agent="bench",
        )


def phase_restart(args: argparse.Namespace, work: Path) -> None:
    prefix = args.restart_prefix or f"bench-1m-{uuid.uuid4().hex[:8]}."
    if not args.restart_prefix:
        CREATED_PREFIXES.append(prefix)
    data = work / "restart"
    env = worker_env(args, prefix, data, "br")
    env.pop("REGSTATE_PROFILE", None)
    settings = Settings.from_env(env)
    ensure(settings)
    topic = settings.topic("registrations")
    have = sum(asyncio.run(end_offsets(args.bootstrap, topic)).values())
    if have < args.bindings:
        rate = publish(settings, _bindings_events(args.bindings - have, now_ms() + have))
        print(f"published {args.bindings - have} register events at {rate:.0f}/s", flush=True)
    worker = WorkerProc(env, work / "restart-worker.log")
    worker.start()
    wait_for(worker.ready, 600, "worker ready")
    started = time.monotonic()
    group = settings.engine_group()
    # Poll the cheap metrics endpoint while folding, the group's offsets only at the end.
    wait_for(lambda: worker.folded() >= args.bindings - have, 7200, "fill", 2.0)
    asyncio.run(_wait_committed_to_end(args.bootstrap, group, topic, 600))
    print(
        f"table filled: {args.bindings} bindings, folded in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    times = []
    for _ in range(3):
        worker.stop()
        if args.restart_cold:
            shutil.rmtree(settings.engine_dir())
        worker.start()
        wait_for(worker.ready, 3600, "ready after restart", 0.05)
        times.append(time.monotonic() - worker.started_at)
    worker.stop()
    how = "from the changelog alone" if args.restart_cold else "RocksDB"
    print(
        f"RESULT restart to ready with {args.bindings} bindings ({how}): "
        + ", ".join(f"{t:.2f} s" for t in times)
        + ("" if args.restart_cold else " [target <= 10 s]"),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--phases", default="throughput,latency,restart")
    parser.add_argument("--events", type=int, default=100_000, help="throughput: events")
    parser.add_argument("--aors", type=int, default=10_000, help="throughput: distinct AORs")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument(
        "--latency-rate", type=float, default=0.0, help="events/s (default: half the throughput)"
    )
    parser.add_argument("--latency-events", type=int, default=60_000, help="generated for it")
    parser.add_argument("--bindings", type=int, default=1_000_000, help="restart: table size")
    parser.add_argument("--restart-prefix", default="", help="restart: reuse this topic prefix")
    parser.add_argument(
        "--restart-cold",
        action="store_true",
        help="restart: delete the worker's local table first (restore the whole changelog)",
    )
    parser.add_argument("--data-dir", default="", help="worker state (default: a temp dir)")
    parser.add_argument("--profile", default="", help="cProfile the throughput worker here")
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the run's topics")
    args = parser.parse_args(argv)
    phases = set(args.phases.split(","))
    work = Path(args.data_dir or f"/tmp/regstate-bench-{uuid.uuid4().hex[:8]}")  # noqa: S108
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench: work dir {work} (worker logs there)", flush=True)
    try:
        if phases & {"throughput", "latency"}:
            worker, eps, tail = phase_throughput(args, work)
            try:
                if "latency" in phases:
                    phase_latency(args, worker, eps, tail)
            finally:
                worker.stop()
            if args.profile:
                print(f"profile of the throughput worker: {args.profile}", flush=True)
        if "restart" in phases:
            phase_restart(args, work)
    finally:
        if not args.keep_topics:
            drop_topics(args.bootstrap, CREATED_PREFIXES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
