"""What the engine's integration tests share: worker subprocesses, topic readers, replays.

Workers run as ``python -m streams worker`` subprocesses with their own
``REGSTATE_*`` environment (a unique topic prefix, data dir and web port per
test), exactly as an operator runs them. Nothing here sleeps a fixed time: every
wait polls a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from processors.fold import fold_event
from processors.policy import FoldPolicy
from schemas import AorState, BindingEvent, RegistrationEvent, decode_event, state_to_dict
from schemas.codec import binding_event_to_dict
from streams.settings import Settings
from tests.helpers import PROJECT_ROOT, wait_until

PYTHON = sys.executable
NO_SWEEP = 10**13
"""A grace period (ms) no binding reaches: the sweeper stays quiet and the log stays fixed."""
BOUNDARY_MS = 120_000
"""AORs with a binding expiring this close to the test's clock are not compared with a
worker's answer: the worker's clock reads a moment later than the test's."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def engine_env(bootstrap: str, prefix: str, data_dir: Path, **extra: str | int) -> dict[str, str]:
    """REGSTATE_* for a worker of one test: its own topics and state, small caches."""
    env = {
        "REGSTATE_BOOTSTRAP_SERVERS": bootstrap,
        "REGSTATE_TOPIC_PREFIX": prefix,
        "REGSTATE_DATA_DIR": str(data_dir),
        "REGSTATE_PARTITIONS": "4",
        "REGSTATE_REPLICATION_FACTOR": "1",
        "REGSTATE_ROCKSDB_BLOCK_CACHE_BYTES": str(8 * 1024 * 1024),
        "REGSTATE_ROCKSDB_WRITE_BUFFER_BYTES": str(4 * 1024 * 1024),
    }
    env.update({f"REGSTATE_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def settings_of(env: Mapping[str, str]) -> Settings:
    """The Settings a worker with ``env`` runs with."""
    return Settings.from_env(env)


@dataclass
class Worker:
    """One ``regstate worker`` subprocess."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.env["REGSTATE_WEB_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Worker:
        """Start the process (again); its output goes to ``log_path`` (appended)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        full_env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "streams", "worker"],
            cwd=PROJECT_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would; waits for the process to be gone."""
        self._signal(signal.SIGKILL, 10)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it does not exit in ``timeout`` s."""
        self._signal(signal.SIGTERM, timeout)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.exit_codes.append(self.proc.wait(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_codes.append(self.proc.wait(10))

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """``GET path`` on this worker: ``(status, body)``; status 0 if unreachable."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:  # noqa: S310
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def ready(self) -> bool:
        assert self.alive(), f"worker exited; log: {self.log_tail()}"
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 90) -> None:
        wait_until(self.ready, timeout, 0.2, f"{self.url}/readyz (log {self.log_path})")

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{'name{labels}': value}``."""
        status, body = self.get("/metrics")
        if status != 200:
            return {}
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def metric_sum(metrics: Mapping[str, float], name: str) -> float:
    """Sum of every sample of one metric family."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


# --------------------------------------------------------------------------- Kafka reads


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, within: float = 60) -> list[Any]:
    """Every record of ``topic`` from offset 0 to the end offsets taken at the start.

    Records come partition by partition, each in offset order.
    """
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        by_partition: dict[int, list[Any]] = defaultdict(list)
        deadline = time.monotonic() + within
        remaining = {p for p, end in ends.items() if end > 0}
        while remaining:
            assert time.monotonic() < deadline, f"reading {topic}: still missing {remaining}"
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < ends[tp.partition]:
                        by_partition[tp.partition].append(r)
                # Done at the end offset (compaction may have removed the last records).
                if await consumer.position(tp) >= ends[tp.partition]:
                    remaining.discard(tp.partition)
        return [r for p in sorted(by_partition) for r in by_partition[p]]
    finally:
        await consumer.stop()


def read_events(bootstrap: str, topic: str) -> list[RegistrationEvent]:
    """Every record of a registrations ``topic``, decoded, in :func:`read_topic`'s order.

    Each must be an event keyed by its AOR, as the front-ends publish them; a
    Rejection (no kind, node or contacts) or another key fails the test.
    """
    events = []
    for r in asyncio.run(read_topic(bootstrap, topic)):
        e = decode_event(r.value)
        assert isinstance(e, RegistrationEvent), e
        assert r.key == e.aor.encode(), (r.key, e.aor)
        events.append(e)
    return events


def compacted(records: Iterable[Any]) -> dict[bytes, bytes]:
    """The compacted view of a topic: last value per key; a tombstone deletes the key."""
    view: dict[bytes, bytes] = {}
    for r in records:
        if r.value is None:
            view.pop(r.key, None)
        else:
            view[r.key] = r.value
    return view


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


def wait_committed_to_end(
    bootstrap: str, group: str, topic: str, timeout: float = 120
) -> dict[int, int]:
    """Wait until the group committed every partition of ``topic`` up to its end offset.

    The engine commits an offset only after the outputs of every record before
    it were acknowledged, so once this returns all outputs are readable.
    """

    behind: dict[int, tuple[int | None, int]] = {}  # at the last look: (committed, end)

    def done() -> dict[int, int] | None:
        ends = asyncio.run(end_offsets(bootstrap, topic))
        committed = asyncio.run(committed_offsets(bootstrap, group))
        behind.clear()
        behind.update(
            {
                p: (committed.get((topic, p)), end)
                for p, end in ends.items()
                if end and committed.get((topic, p), -1) < end
            }
        )
        return None if behind else ends

    try:
        return wait_until(done, timeout, 0.5, f"group {group} committed to the end of {topic}")
    except AssertionError as exc:
        # Which partitions stalled, and where: what a flaky stall needs to be explained.
        raise AssertionError(f"{exc}; partitions behind, (committed, end): {behind}") from None


def assert_api_answers_replay(
    workers: Sequence[Worker], states: Mapping[str, AorState], now: int, *, step: int = 1
) -> tuple[int, int]:
    """Ask every worker ``GET /v1/aors/{aor}`` for every ``step``-th AOR of ``states`` (a
    replay), those with no binding within :data:`BOUNDARY_MS` of ``now``: 200 with the
    replay's active contacts, or 404 when none is active. (AORs compared, AORs found.)"""
    compared = found = 0
    for aor in sorted(states)[::step]:
        state = states[aor]
        if any(abs(c.expires_at - now) < BOUNDARY_MS for c in state.contacts):
            continue
        active = state.only_active(now)
        for w in workers:
            status, body = w.get(f"/v1/aors/{quote(aor, safe=':@')}")
            if active.contacts:
                assert status == 200, (w.url, aor, status, body)
                assert orjson.loads(body) == state_to_dict(active), aor
            else:
                assert status == 404, (w.url, aor, status, body)
        compared += 1
        found += bool(active.contacts)
    return compared, found


# --------------------------------------------------------------------------- replays


@dataclass
class LogReplay:
    """The fold of a whole topic, partition by partition: states and binding events per AOR."""

    states: dict[str, AorState]
    events: dict[str, list[BindingEvent]]
    folded: int
    refused: int


def replay_records(records: Iterable[Any], policy: FoldPolicy) -> LogReplay:
    """Fold Kafka records of regstate.registrations as the engine must (bad ones skipped)."""
    states: dict[str, AorState] = {}
    events: dict[str, list[BindingEvent]] = defaultdict(list)
    folded = refused = 0
    for r in records:
        ev = decode_event(r.value)
        if not isinstance(ev, RegistrationEvent) or r.key != ev.aor.encode():
            refused += 1
            continue
        result = fold_event(states.get(ev.aor), ev, policy)
        states[ev.aor] = result.state
        events[ev.aor].extend(result.events)
        folded += 1
    return LogReplay(states, dict(events), folded, refused)


def public_view(states: Mapping[str, AorState]) -> dict[str, dict[str, Any]]:
    """What regstate.bindings must hold: the public AorState of every AOR with a contact."""
    return {aor: state_to_dict(s) for aor, s in states.items() if s.contacts}


def bindings_view(records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """The compacted regstate.bindings, decoded."""
    return {k.decode(): orjson.loads(v) for k, v in compacted(records).items()}


def binding_events_view(records: Iterable[Any]) -> dict[str, list[dict[str, Any]]]:
    """regstate.binding-events per AOR, in log order."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[r.key.decode()].append(orjson.loads(r.value))
    return dict(out)


def expected_binding_events(replay: LogReplay) -> dict[str, list[dict[str, Any]]]:
    """The binding events the fold emits for the log, per AOR, as JSON maps."""
    return {
        aor: [orjson.loads(orjson.dumps(binding_event_to_dict(e))) for e in evs]
        for aor, evs in replay.events.items()
        if evs
    }


def diff_views(got: Mapping[str, Any], want: Mapping[str, Any], limit: int = 5) -> list[str]:
    """Human-readable differences between two ``{key: value}`` views (first ``limit``)."""
    out: list[str] = []
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            out.append(f"{key}: got {got.get(key)!r}\n    want {want.get(key)!r}")
            if len(out) >= limit:
                break
    return out


# --------------------------------------------------------------------------- logs


def generate(
    n_events: int, n_aors: int, *, seed: int, start_ts: int, n_nodes: int = 4
) -> list[RegistrationEvent]:
    """bench/gen_events.py's synthetic registrar log (deterministic per arguments)."""
    from bench.gen_events import generate_events

    return list(generate_events(n_events, n_aors, n_nodes, seed, start_ts=start_ts, raw=False))


def publish(settings: Settings, events: Iterable[RegistrationEvent]) -> int:
    """Append ``events`` with the project's publisher (acks=all); return how many were acked."""
    from streams.log.publisher import publish_events

    report = asyncio.run(publish_events(settings, events))
    assert report.ok, f"publish failed: {report.errors}"
    return report.published


def ensure(settings: Settings) -> None:
    """Create the test's topics (streams.log.topics.ensure_topics)."""
    from streams.log.topics import ensure_topics

    asyncio.run(ensure_topics(settings))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BackgroundPublisher:
    """Publishes events at a steady rate from a thread, with acks=all; remembers what was acked."""

    def __init__(self, settings: Settings, events: list[RegistrationEvent], rate: float) -> None:
        import threading

        self.settings = settings
        self.events = events
        self.rate = rate
        self.acked = 0
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> BackgroundPublisher:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "publisher did not finish"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:  # noqa: BLE001 - re-raised in join()
            self.error = exc

    async def _publish(self) -> None:
        from streams.log.publisher import EventPublisher

        def on_ack(n: int) -> None:
            self.acked += n

        async with EventPublisher(self.settings, on_ack=on_ack, max_in_flight=500) as pub:
            started = time.monotonic()
            for i, event in enumerate(self.events):
                delay = started + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                assert await pub.send(event), pub.report.errors
                self.sent += 1
            report = await pub.flush()
        assert report.ok and report.published == len(self.events), report.errors
        self.acked = report.published
