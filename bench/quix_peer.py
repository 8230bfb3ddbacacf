"""The engine against a Quix Streams app folding the same log with the same fold, in one run.

    .venv/bin/pip install -e '.[bench]'          # quixstreams (a bench peer, not a dependency)
    .venv/bin/python bench/quix_peer.py --events 50000
    .venv/bin/python bench/quix_peer.py --events 30000 \\
        --worker "batch1:ENGINE_BATCH_MAX=1" --worker "regstate:"

One synthetic log (bench/gen_events.py, 8 partitions), and in the same run:

bare
    decode + ``fold_event`` of every record in this process, states in a dict:
    the rate the fold alone allows on this machine right now.
worker (one line per ``--worker LABEL:ENV=V,...``)
    ``regstate worker`` (RocksDB) folding the log published under its own prefix;
    from its first folded record until its group committed the end of the log
    (folded, every output acknowledged, offsets committed). ``ENV`` names are
    ``REGSTATE_*`` without the prefix; ``PROCESSES=N`` runs N workers in one
    group, started before the log is published, which they fold as it arrives
    (the scaling figure: ``--worker 1:PROCESSES=1 --worker 2:PROCESSES=2``);
    ``BENCH_SRC=DIR`` runs the worker of another checkout (a baseline). By
    default two workers: ``faust-defaults`` (record by record, Faust's hand-off,
    1.5 s fetch wait, 4096-record stream buffer, no poll limit to speak of) and
    ``regstate`` (the settings' defaults).
quix
    A Quix Streams application (RocksDB state with changelog, at-least-once,
    librdkafka) in its own process, folding the same log with the project's
    :func:`processors.fold.fold_event`: state per AOR in its store (raw internal
    JSON, with the same decoded-state cache the worker has), the public state to
    a bindings topic and each binding event to an events topic; from its first
    record until ``Application.run`` returned after its last (final checkpoint:
    outputs flushed, offsets committed).
pipeline
    The client floor: the same decode + ``fold_event`` and the same encodings and
    batched outputs (BatchOutputs: state to a compacted topic, public state and
    binding events) over a plain aiokafka consumer and producer with the
    engine's fetch and producer settings, in one asyncio loop of its own
    process: no Faust, no table, no admission checks, offsets committed every
    second after the outputs before them were acknowledged. What the fold costs
    over this client, and so the most a worker built on it could reach
    (``--no-pipeline`` skips it).
faust (one line per ``--faust TRANSPORT``)
    A Faust app with one agent that takes every record and does nothing with it
    (``stream.events()``, no table, Faust's own settings) on the given transport
    (``aiokafka``, ``confluent``), in its own process; from its first record to
    its last (nothing sent, nothing committed). The most a Faust worker on that
    transport could consume here. One that has not taken every record within
    ``--faust-timeout`` seconds is reported as such (faust-streaming 0.15.3's
    ``confluent`` driver never gets an assignment, D121).

Prints ``RESULT`` lines and the ratios worker/quix, worker/bare and
worker/pipeline, each to two ends: the contender's commit of the log's end, and
its last record folded. The peers commit at once on their last record and the
worker on its commit timer (up to ``commit_interval_ms`` later), so the second
end compares the same span of work (D127). ``--rounds N`` runs every contender N
times (even rounds in reverse order) and prints each worker's median ratios,
every ratio taken within its round. All share this machine's cores (and the
broker); compare ratios, not absolute figures.

    .venv/bin/python bench/quix_peer.py --events 100000 --worker regstate: --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine_bench import (  # noqa: E402
    CREATED_PREFIXES,
    Rate,
    bench_events,
    drop_topics,
    engine_like_producer,
    ensure,
    ensure_scratch,
    fold_rate,
    publish,
    worker_env,
)
from schemas import RegistrationEvent, decode_event, encode_event  # noqa: E402
from streams.settings import Settings  # noqa: E402

DEFAULT_WORKERS = (
    "faust-defaults:ENGINE_BATCH_MAX=1,ENGINE_FAST_HANDOFF=0,"
    "ENGINE_FETCH_MAX_WAIT_MS=1500,ENGINE_MAX_POLL_RECORDS=100000,ENGINE_STREAM_BUFFER=4096",
    "regstate:",
)


def decoded(value: bytes) -> RegistrationEvent:
    """The event of a record of the bench's log (every one valid: no admission checks)."""
    event = decode_event(value)
    if not isinstance(event, RegistrationEvent):
        raise SystemExit(f"bench: the log has a record the codec refuses: {event}")
    return event


def bare_records(events: list[RegistrationEvent]) -> list[tuple[bytes, bytes]]:
    """The log's records, (key, value), as bare decode+fold reads them."""
    return [(e.aor.encode(), encode_event(e)) for e in events]


def bare_fold(events: list[RegistrationEvent]) -> tuple[float, float]:
    """decode + fold of every record, in memory, one core: (wall, CPU) seconds per event."""
    from processors.fold import fold_event

    policy = Settings().fold_policy()
    records = bare_records(events)
    states: dict[bytes, Any] = {}
    started, cpu = time.perf_counter(), time.process_time()
    for key, value in records:
        folded = fold_event(states.get(key), decoded(value), policy)
        states[key] = folded.state
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return wall / len(records), cpu / len(records)


def bare_rate(events: list[RegistrationEvent]) -> float:
    """decode + fold of every record, in memory, one core: records per second."""
    wall, cpu = bare_fold(events)
    print(f"bare decode+fold: CPU {cpu * 1e6:.0f} µs/event", flush=True)
    return 1 / wall


def parse_worker(spec: str) -> tuple[str, dict[str, str], int | None]:
    """``LABEL:ENV=V,...`` (``PROCESSES=N`` runs N worker processes in one group)."""
    label, _, rest = spec.partition(":")
    env = {}
    processes = None
    for item in filter(None, rest.split(",")):
        name, _, value = item.partition("=")
        if name.strip().upper() == "PROCESSES":
            processes = int(value)
        else:
            env[f"REGSTATE_{name.strip().upper()}"] = value.strip()
    return label or "regstate", env, processes


# --------------------------------------------------------------------------- the peers


def quix_child(args: argparse.Namespace) -> int:
    """Run the Quix app until it has processed ``--events`` records; print its timing as JSON."""
    from quixstreams import Application
    from quixstreams.models import TopicConfig
    from quixstreams.state.rocksdb import RocksDBOptions

    from processors.fold import fold_event
    from processors.outcomes import Outcome
    from schemas import AorState, decode_state, encode_binding_event, encode_state

    policy = Settings().fold_policy()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,  # the worker commits every second too
        state_dir=args.state_dir,
        loglevel="WARNING",
        processing_guarantee="at-least-once",
        # The state holds the fold's own bytes under a bytes key: no JSON layer.
        rocksdb_options=RocksDBOptions(dumps=lambda v: v, loads=lambda v: v),
    )
    config = TopicConfig(num_partitions=args.partitions, replication_factor=1)
    source = app.topic(args.source, key_deserializer="bytes", value_deserializer="bytes")
    bindings = app.topic(
        args.out_prefix + "bindings",
        key_serializer="bytes",
        value_serializer="bytes",
        config=config,
    )
    events_topic = app.topic(
        args.out_prefix + "binding-events",
        key_serializer="bytes",
        value_serializer="bytes",
        config=config,
    )
    cache: dict[bytes, AorState] = {}
    seen = [0]
    first = [0.0, 0.0]
    last = [0.0]  # its last record taken (folded just after)
    total = args.events

    def fold(value: bytes, key: bytes, timestamp: int, headers: Any, state: Any) -> list[Any]:
        if not seen[0]:
            first[:] = [time.monotonic(), time.process_time()]
        seen[0] += 1
        if seen[0] >= total:
            last[0] = time.monotonic()
            app.stop()
        current = cache.get(key)
        if current is None:
            raw = state.get(b"s")
            current = None if raw is None else decode_state(raw)
        folded = fold_event(current, decoded(value), policy)
        if folded.outcome is Outcome.DUPLICATE:
            return []
        new = folded.state
        cache[key] = new
        state.set(b"s", encode_state(new, internal=True))
        if not folded.events:
            return []
        public = encode_state(new, internal=False) if new.contacts else None
        return [(b"b", public)] + [(b"e", encode_binding_event(be)) for be in folded.events]

    sdf = app.dataframe(source).apply(fold, stateful=True, expand=True, metadata=True)
    sdf.filter(lambda o: o[0] == b"b").apply(lambda o: o[1]).to_topic(bindings)
    sdf.filter(lambda o: o[0] == b"e").apply(lambda o: o[1]).to_topic(events_topic)
    app.run()
    done, cpu = time.monotonic(), time.process_time() - first[1]
    timing = {
        "records": seen[0],
        "seconds": done - first[0],
        "folded_seconds": last[0] - first[0],
        "cpu": cpu,
    }
    print(json.dumps(timing), flush=True)
    return 0


def pipeline_child(args: argparse.Namespace) -> int:
    """Run the client floor until it has folded ``--events`` records and committed them;
    print its timing as JSON."""
    from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

    from processors.fold import fold_event
    from processors.outcomes import Outcome
    from schemas import AorState, encode_binding_event, encode_state, encode_state_forms
    from streams.engine.outputs import BatchOutputs

    settings = Settings()
    policy = settings.fold_policy()
    state_topic = args.out_prefix + "pipeline-state"
    bindings = args.out_prefix + "bindings"
    events_topic = args.out_prefix + "binding-events"

    async def run() -> dict[str, float]:
        consumer = AIOKafkaConsumer(
            args.source,
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.engine_fetch_max_wait_ms,
            fetch_min_bytes=settings.engine_fetch_min_bytes,
            max_poll_records=settings.engine_max_poll_records,
        )
        producer = engine_like_producer(args.bootstrap, settings)
        await consumer.start()
        await producer.start()
        states: dict[bytes, AorState] = {}
        positions: dict[TopicPartition, int] = {}
        sent: list[asyncio.Future[Any]] = []
        seen = 0
        first = (0.0, 0.0)
        folded_at = 0.0
        committed_at = 0.0
        try:
            while seen < args.events:
                fetched = await consumer.getmany(timeout_ms=1000)
                if not fetched:
                    continue
                if not seen:
                    first = (time.monotonic(), time.process_time())
                outputs = BatchOutputs(producer)
                for tp, records in fetched.items():
                    p = tp.partition
                    for r in records:
                        seen += 1
                        folded = fold_event(states.get(r.key), decoded(r.value), policy)
                        if folded.outcome is Outcome.DUPLICATE:
                            continue
                        new = states[r.key] = folded.state
                        if folded.events:
                            internal, public = encode_state_forms(new)
                            outputs.add(bindings, p, r.key, public if new.contacts else None)
                            for be in folded.events:
                                outputs.add(events_topic, p, r.key, encode_binding_event(be))
                        else:
                            internal = encode_state(new, internal=True)
                        outputs.add(state_topic, p, r.key, internal)
                    positions[tp] = records[-1].offset + 1
                if seen >= args.events:
                    folded_at = time.monotonic()
                sent.extend(await outputs.send())
                if seen >= args.events or time.monotonic() - committed_at >= 1.0:
                    # The worker's rule: an offset is committed once the outputs before it
                    # are acknowledged (here every second, as the worker commits).
                    await asyncio.gather(*sent)
                    sent = []
                    await consumer.commit(dict(positions))
                    committed_at = time.monotonic()
        finally:
            await producer.stop()
            await consumer.stop()
        return {
            "records": seen,
            "seconds": time.monotonic() - first[0],
            "folded_seconds": folded_at - first[0],
            "cpu": time.process_time() - first[1],
        }

    print(json.dumps(asyncio.run(run())), flush=True)
    return 0


def faust_child(args: argparse.Namespace) -> int:
    """Run an empty Faust agent on ``--transport`` until it has taken ``--events`` records;
    print its timing as JSON and leave at once (it commits nothing worth waiting for)."""
    import faust
    from faust.worker import Worker

    app = faust.App(
        args.group,
        broker=f"{args.transport}://{args.bootstrap}",
        store="memory://",
        datadir=args.state_dir,
        web_enabled=False,
        topic_disable_leader=True,
    )
    source = app.topic(args.source, key_serializer="raw", value_serializer="raw")
    total = args.events

    @app.agent(source)
    async def take(stream: Any) -> None:
        seen = 0
        first = (0.0, 0.0)
        async for _ in stream.events():
            if not seen:
                first = (time.monotonic(), time.process_time())
            seen += 1
            if seen >= total:
                timing = {
                    "records": seen,
                    "seconds": time.monotonic() - first[0],
                    "cpu": time.process_time() - first[1],
                }
                # Faust's worker redirects sys.stdout to its log, and its spinner leaves
                # escape codes on the line: the timing goes on a line of its own.
                os.write(1, ("\n" + json.dumps(timing) + "\n").encode())
                os._exit(0)

    Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
    return 1  # the agent leaves the process; a worker that returns never took them all


def child_rate(
    args: argparse.Namespace,
    work: Path,
    events: list[RegistrationEvent],
    peer: str,
    transport: str = "",
) -> Rate:
    """Publish the log under a prefix of its own, run ``peer`` (quix, pipeline, faust) on
    it in a child process; print and return its rates (0 when the child had not taken
    every record within ``--faust-timeout``)."""
    label = f"{peer}-{transport}" if transport else peer
    prefix = f"bench-{peer}-{uuid.uuid4().hex[:8]}."
    CREATED_PREFIXES.append(prefix)
    settings = Settings.from_env(worker_env(args, prefix, work / label, peer[0]))
    ensure(settings)
    if peer == "pipeline":
        ensure_scratch(
            settings, [f"{prefix}pipeline-state"], args.partitions, {"cleanup.policy": "compact"}
        )
    rate = publish(settings, events)
    print(f"{label}: published {len(events)} events at {rate:.0f}/s", flush=True)
    cmd = [
        sys.executable,
        __file__,
        f"--{peer}-child",
        "--bootstrap",
        args.bootstrap,
        "--events",
        str(len(events)),
        "--partitions",
        str(args.partitions),
        "--source",
        settings.topic("registrations"),
        "--out-prefix",
        prefix,
        "--group",
        f"{prefix}{peer}",
        "--state-dir",
        str(work / f"{label}-state"),
        *(["--transport", transport] if transport else []),
    ]
    log_path = work / f"{label}.log"
    # Only the empty agent may be waiting on a transport that never delivers.
    timeout = args.faust_timeout if peer == "faust" else 3600
    with log_path.open("wb") as log:
        try:
            out = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, env=os.environ, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            print(
                f"RESULT {label}: had not taken all {len(events)} records after "
                f"{timeout:g} s; see {log_path}",
                flush=True,
            )
            return Rate(0.0, 0.0)
    if out.returncode != 0:
        raise SystemExit(f"bench: {label} failed ({out.returncode}); see {log_path}")
    timing = json.loads(out.stdout.decode().strip().splitlines()[-1])
    eps = len(events) / float(timing["seconds"])
    # The empty agent's one end is its last record.
    folded_eps = len(events) / float(timing.get("folded_seconds", timing["seconds"]))
    done = (
        "taken (nothing sent or committed)"
        if peer == "faust"
        else "folded, outputs acknowledged and committed"
    )
    print(
        f"RESULT {label}: {timing['records']} records {done} in {timing['seconds']:.2f} s: "
        f"{eps:.0f} events/s ({folded_eps:.0f} to the last folded), "
        f"CPU {timing['cpu'] / len(events) * 1e6:.0f} µs/event (all its threads)",
        flush=True,
    )
    return Rate(eps, folded_eps)


def print_ratios(
    end: str, rates: dict[str, float], bare: float, quix: float, pipeline: float
) -> None:
    """The RATIO lines of the workers' ``rates``, every rate measured to ``end``."""
    for label, eps in rates.items():
        line = (
            f"RATIO worker {label} ({end}): {eps:.0f} events/s = {eps / bare:.0%} of bare "
            f"({bare:.0f})"
        )
        if quix:
            line += f", {eps / quix:.2f}x quix ({quix:.0f}) [targets: >= 50% of bare, >= 1.5x quix]"
        print(line, flush=True)
        if pipeline:
            print(
                f"RATIO worker {label} to the client floor ({end}): {eps / pipeline:.0%} of "
                f"{pipeline:.0f} events/s; the floor is {pipeline / bare:.0%} of bare",
                flush=True,
            )


ENDS: dict[str, Callable[[Rate], float]] = {
    "to the commit of the end": lambda r: r.eps,
    # The peers commit at once on their last record, the worker on its commit timer: the
    # rates to the last record folded compare the same span of work (D127).
    "to the last folded": lambda r: r.folded_eps,
}


class Round(NamedTuple):
    """One round's rates the medians use: bare (the faster of its two measures), each
    worker, the Quix app."""

    bare: float
    workers: dict[str, Rate]
    quix: Rate


def one_round(
    args: argparse.Namespace, work: Path, events: list[RegistrationEvent], n: int
) -> Round:
    """Bare, every contender on a log of its own, bare again; print the round's ratios.

    Even rounds run the contenders in reverse order, so a machine that slows down
    or speeds up during a run does not favour the same contender every round.
    """
    if args.rounds > 1:
        print(f"bench: round {n} of {args.rounds}", flush=True)
    bare = bare_rate(events)
    print(f"RESULT bare decode+fold: {bare:.0f} events/s (in process, one core)", flush=True)
    workers: dict[str, Rate] = {}
    peers: dict[str, Rate] = {}

    def worker(spec: str) -> None:
        label, env, processes = parse_worker(spec)
        # With PROCESSES the workers share the partitions before the log is published
        # (else the first to be ready folds most of a backlog alone).
        proc, rate = fold_rate(
            args, work, events, f"worker {label}", env, processes or 1, processes is not None
        )
        proc.stop()
        workers[label] = rate

    def peer(name: str, transport: str = "") -> None:
        peers[name] = child_rate(args, work, events, name, transport)

    runs: list[Callable[[], None]] = [
        functools.partial(worker, spec)
        for spec in ([] if args.no_worker else args.worker or DEFAULT_WORKERS)
    ]
    runs += [] if args.no_quix else [functools.partial(peer, "quix")]
    runs += [] if args.no_pipeline else [functools.partial(peer, "pipeline")]
    runs += [functools.partial(peer, "faust", transport) for transport in args.faust]
    try:
        for run in runs if n % 2 else runs[::-1]:
            run()
    finally:
        drop_topics(args.bootstrap, CREATED_PREFIXES)
        CREATED_PREFIXES.clear()
    again = bare_rate(events)
    print(f"bare decode+fold again: {again:.0f} events/s", flush=True)
    bare = max(bare, again)  # the ratio against the faster of the two: the stricter one
    none = Rate(0.0, 0.0)
    quix, pipeline = peers.get("quix", none), peers.get("pipeline", none)
    for end, pick in ENDS.items():
        rates = {label: pick(r) for label, r in workers.items()}
        print_ratios(end, rates, bare, pick(quix), pick(pipeline))
    return Round(bare, workers, quix)


def print_medians(rounds: list[Round]) -> None:
    """Each worker's median ratios over the rounds, every ratio taken within its round."""
    for label in rounds[0].workers:
        for end, pick in ENDS.items():
            of_bare = [pick(r.workers[label]) / r.bare for r in rounds]
            line = (
                f"MEDIAN worker {label} ({end}) over {len(rounds)} rounds: "
                f"{statistics.median(of_bare):.0%} of bare "
                f"(rounds: {', '.join(f'{x:.0%}' for x in of_bare)})"
            )
            if all(pick(r.quix) for r in rounds):
                of_quix = [pick(r.workers[label]) / pick(r.quix) for r in rounds]
                line += (
                    f", {statistics.median(of_quix):.2f}x quix "
                    f"(rounds: {', '.join(f'{x:.2f}x' for x in of_quix)})"
                )
            print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--aors", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker", action="append", default=[], help="LABEL:ENV=V,...")
    parser.add_argument("--no-quix", action="store_true", help="no Quix Streams app")
    parser.add_argument("--no-pipeline", action="store_true", help="no client floor (pipeline)")
    parser.add_argument(
        "--faust",
        action="append",
        default=[],
        choices=("aiokafka", "confluent"),
        help="an empty Faust agent on this transport (repeatable)",
    )
    parser.add_argument(
        "--faust-timeout", type=float, default=90.0, help="seconds an empty agent may take"
    )
    parser.add_argument("--no-worker", action="store_true", help="no regstate worker")
    parser.add_argument("--data-dir", default="", help="work dir (default: a temp dir)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every contender this many times (medians)"
    )
    parser.add_argument("--profile", default="")
    parser.add_argument("--quix-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--faust-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--out-prefix", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quix_child:
        return quix_child(args)
    if args.pipeline_child:
        return pipeline_child(args)
    if args.faust_child:
        return faust_child(args)
    if "confluent" in args.faust and importlib.util.find_spec("confluent_kafka") is None:
        parser.error("--faust confluent needs confluent-kafka: .venv/bin/pip install -e '.[bench]'")
    work = Path(args.data_dir or f"/tmp/regstate-quix-{uuid.uuid4().hex[:8]}")  # noqa: S108
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench: work dir {work} (logs there)", flush=True)
    events = bench_events(args, args.events)

    rounds = [one_round(args, work, events, n) for n in range(1, args.rounds + 1)]
    if len(rounds) > 1:
        print_medians(rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
