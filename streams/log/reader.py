"""Reading regstate.registrations and regstate.bindings from Kafka, for analysts.

Used by ``regstate replay`` (without ``--input``), ``regstate export`` and
``regstate audit``. What it guarantees:

* Partitions are read one after the other, in partition order, each in offset
  order, from its beginning offset (the start of retention) to a stop offset
  fixed when reading starts. Output is therefore deterministic for a given log,
  and per AOR it is the log order (one AOR lives in one partition).
* Every record goes through :class:`streams.log.deadletter.DeadLetterPolicy`, the
  engine's own admission check: what is folded here is exactly what the engine
  folds, and what the engine dead-letters is reported as a bad record
  (partition, offset, reason) and skipped.
* With ``aors``, only the partitions those AORs hash to are read, and only
  records keyed by one of them are decoded.
* With ``until_ms`` and a skew allowance ``skew_ms`` >= 0, a partition stops
  after the first record whose Kafka timestamp is after ``until_ms + skew_ms``
  (found with ListOffsets by time, ``offsets_for_times``), unless a record read
  up to there, that one included, is *late* (Kafka timestamp more than
  ``skew_ms`` after the event's ``ts``: a republished log, a node that buffered
  during an outage, a skewed clock); then the partition is read to its end
  offset, because its later records may still carry events from before
  ``until_ms``. Late records that only come after the limit, behind timely
  ones, are not seen: ``skew_ms=-1`` reads everything. See docs/decisions.md.

Time stamps here are Kafka record timestamps; callers filter events by their
``ts``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
)

from processors.sipuri import canonical_aor
from schemas import AorState, RegistrationEvent, decode_event, decode_state
from streams.log.deadletter import DeadLetter, DeadLetterPolicy
from streams.log.kafka_config import client_config
from streams.log.routing import cached_partition, kafka_partition
from streams.settings import Settings

DEFAULT_SKEW_MS: Final = 5 * 60 * 1000
"""How far a record's Kafka timestamp may trail or lead its event's ``ts``."""
FETCH_RECORDS: Final = 10_000
"""Records asked for per getmany; large batches keep the per-call overhead small."""
STALL_TIMEOUT_S: Final = 60.0
"""A partition that yields nothing for this long, before its stop offset, is an error."""
PROGRESS_THRESHOLD: Final = 50_000
"""Fewer records than this read in a few seconds: no progress bar."""


class LogReadError(RuntimeError):
    """The log cannot be read (missing topic, unreachable or stalled broker)."""


def canonical_aors(texts: Iterable[str]) -> frozenset[str]:
    """The canonical forms (R1) of the AORs an analyst typed; AorError names a bad one."""
    return frozenset(canonical_aor(t) for t in texts)


class LogRecord(NamedTuple):
    """Where an admitted event was in regstate.registrations."""

    partition: int
    offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record the engine would dead-letter: where it is and why."""

    partition: int
    offset: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"p{self.partition}@{self.offset}: {self.reason}: {self.detail}"


@dataclass
class PartitionPlan:
    """What will be read of one partition: offsets ``[start, stop)``; ``end`` as of the start."""

    partition: int
    beginning: int
    start: int
    stop: int
    end: int
    by_time: bool = False
    """``stop`` < ``end`` because of the time limit."""
    probe: int | None = None
    """With ``by_time``: the first record past the time limit (the last one read)."""
    extended: bool = False
    """Late records were found: ``stop`` was moved to ``end``."""


@dataclass
class ReadStats:
    """What a read saw; for the summary line and the exit code."""

    records: int = 0
    admitted: int = 0
    other_aors: int = 0
    bad: list[BadRecord] = field(default_factory=list)
    bad_count: int = 0
    late_partitions: list[int] = field(default_factory=list)
    truncated_partitions: list[tuple[int, int]] = field(default_factory=list)
    """(partition, beginning offset) of partitions whose history starts after offset 0."""

    def summary(self) -> str:
        parts = [f"read {self.records} records", f"good {self.admitted}"]
        if self.other_aors:
            parts.append(f"other AORs {self.other_aors}")
        parts.append(f"bad {self.bad_count}")
        return ", ".join(parts)


def consumer_for(settings: Settings, client_id: str) -> Any:
    """A group-less, non-committing consumer: an analyst's read leaves no trace in the cluster."""
    return AIOKafkaConsumer(
        **client_config(settings, client_id),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        request_timeout_ms=30_000,
    )


async def topic_partitions(consumer: Any, topic: str) -> list[int]:
    """The partition ids of ``topic``, sorted; LogReadError if the topic does not exist.

    Asks for the metadata of all topics: a request naming a missing topic could
    auto-create it on a broker with auto.create.topics.enable.
    """
    # The consumer's public topics() returns names only and leaves its own cache
    # empty for them; the all-topics metadata it fetched holds the partitions.
    cluster = await consumer._client.fetch_all_metadata()
    parts = cluster.partitions_for_topic(topic) if topic in cluster.topics() else None
    if not parts:
        raise LogReadError(f"topic {topic} does not exist")
    return sorted(parts)


class _Progress:
    """A tqdm bar on stderr, only on a terminal and only for big reads."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar: Any = None
        if enabled and total >= PROGRESS_THRESHOLD:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rec", unit_scale=True, file=sys.stderr, desc=desc)

    def grow(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.total += n
            self.bar.refresh()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _offsets_at(consumer: Any, tps: list[Any], ts_ms: int) -> dict[int, int | None]:
    """Per partition, the first offset whose record timestamp is >= ``ts_ms`` (None: none)."""
    found = await consumer.offsets_for_times({tp: max(0, ts_ms) for tp in tps})
    return {tp.partition: (None if hit is None else hit.offset) for tp, hit in found.items()}


async def plan_partitions(
    consumer: Any,
    topic: str,
    partitions: Collection[int],
    *,
    until_ms: int | None,
    skew_ms: int,
    since_ms: int | None = None,
    stop_offsets: Mapping[int, int] | None = None,
) -> list[PartitionPlan]:
    """Fix the offsets to read of each partition, before reading any record.

    ``stop`` is the end offset as of now, or earlier with ``until_ms`` and
    ``skew_ms >= 0``: just past the first record timestamped after
    ``until_ms + skew_ms`` (that record is read, as a probe for late records).
    ``start`` is the beginning offset, or later with ``since_ms`` and
    ``skew_ms >= 0`` (first record timestamped at or after ``since_ms - skew_ms``):
    only callers that need no history before ``since_ms`` pass it (export).
    ``stop_offsets`` caps ``stop`` per partition (an audit folds up to offsets
    it took before waiting for the engine).
    """
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        return []
    beginnings = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    stops: dict[int, int | None] = {}
    starts: dict[int, int | None] = {}
    if until_ms is not None and skew_ms >= 0:
        stops = await _offsets_at(consumer, tps, until_ms + skew_ms + 1)
    if since_ms is not None and skew_ms >= 0:
        starts = await _offsets_at(consumer, tps, since_ms - skew_ms)
    plans: list[PartitionPlan] = []
    for tp in tps:
        p = tp.partition
        beginning, end = beginnings[tp], ends[tp]
        stop = stops.get(p)
        by_time = stop is not None and stop < end
        # The first record past the time limit is read too: the fold skips it if its
        # event is after until_ms, and if it is not, it is late and proves that the
        # limit is wrong for this partition (the reader then reads to the end).
        stop = min(end, stop + 1) if stop is not None else end
        if stop_offsets is not None and p in stop_offsets:
            stop = min(stop, stop_offsets[p])
        start = beginning
        if since_ms is not None and skew_ms >= 0:
            first = starts.get(p)
            # No record timestamped after since - skew: nothing of this partition is wanted.
            start = end if first is None else max(beginning, first)
        start = min(start, stop)
        probe = stop - 1 if by_time else None
        plans.append(
            PartitionPlan(p, beginning, start, max(stop, start), end, by_time, probe=probe)
        )
    return plans


async def partition_batches(
    consumer: Any,
    topic: str,
    plan: PartitionPlan,
    *,
    stall_timeout_s: float = STALL_TIMEOUT_S,
) -> AsyncIterator[list[Any]]:
    """Every record of ``[plan.start, plan.stop)``, in offset order, in batches.

    The consumer may raise ``plan.stop`` (up to ``plan.end``) between batches;
    the new value is honoured. Raises LogReadError when nothing arrives for
    ``stall_timeout_s`` while records are still due.
    """
    tp = TopicPartition(topic, plan.partition)
    consumer.assign([tp])
    consumer.seek(tp, plan.start)
    last_progress = time.monotonic()
    while True:
        position = await consumer.position(tp)
        if position >= plan.stop:
            return
        batches = await consumer.getmany(tp, timeout_ms=500, max_records=FETCH_RECORDS)
        records = batches.get(tp, [])
        if records:
            last_progress = time.monotonic()
            if records[-1].offset >= plan.stop:
                # The fetch went past the stop; the rest is dropped, and fetched
                # again below if the consumer moves the stop (late records).
                records = [r for r in records if r.offset < plan.stop]
                if not records:
                    return
                yield records
                resume = records[-1].offset + 1
                if plan.stop > resume:
                    consumer.seek(tp, resume)
            else:
                yield records
        elif time.monotonic() - last_progress > stall_timeout_s:
            raise LogReadError(
                f"{topic} partition {plan.partition}: nothing read for "
                f"{stall_timeout_s:.0f} s at offset {position} (stop {plan.stop})"
            )


@dataclass
class RegistrationsReader:
    """Streams the admitted events of regstate.registrations, with their Kafka positions.

    Use ``async for record, event in reader.events(): ...``; bad records are
    counted in ``stats`` and passed to ``on_bad``; ``on_note`` receives one-line
    remarks an analyst should see (history truncated by retention, a partition
    read to its end because of late records).
    """

    settings: Settings
    until_ms: int | None = None
    since_ms: int | None = None
    """Start reading near this time (skipping earlier history): export only."""
    skew_ms: int = DEFAULT_SKEW_MS
    aors: frozenset[str] | None = None
    stop_offsets: Mapping[int, int] | None = None
    """Read no partition beyond these offsets (audit)."""
    progress: bool = False
    on_bad: Callable[[BadRecord], None] | None = None
    on_note: Callable[[str], None] | None = None
    client_id: str = "regstate-replay"
    stats: ReadStats = field(default_factory=ReadStats)
    plans: list[PartitionPlan] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return self.settings.topic("registrations")

    def _note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    async def events(self) -> AsyncIterator[tuple[LogRecord, RegistrationEvent]]:
        """Every admitted event in partition, then offset, order (see the module docstring)."""
        async for batch in self.batches():
            for item in batch:
                yield item

    async def batches(self) -> AsyncIterator[list[tuple[LogRecord, RegistrationEvent]]]:
        """:meth:`events`, a fetch at a time (cheaper per event than an async iteration each)."""
        consumer = consumer_for(self.settings, self.client_id)
        await consumer.start()
        try:
            async for batch in self._batches(consumer):
                yield batch
        finally:
            await consumer.stop()

    async def _batches(
        self, consumer: Any
    ) -> AsyncIterator[list[tuple[LogRecord, RegistrationEvent]]]:
        topic = self.topic
        all_partitions = await topic_partitions(consumer, topic)
        n = len(all_partitions)
        keys: frozenset[bytes] | None = None
        wanted = all_partitions
        if self.aors is not None:
            keys = frozenset(a.encode() for a in self.aors)
            wanted = sorted({kafka_partition(k, n) for k in keys})
        self.plans = await plan_partitions(
            consumer,
            topic,
            wanted,
            until_ms=self.until_ms,
            skew_ms=self.skew_ms,
            since_ms=self.since_ms,
            stop_offsets=self.stop_offsets,
        )
        for plan in self.plans:
            if plan.beginning > 0 and self.since_ms is None:
                self.stats.truncated_partitions.append((plan.partition, plan.beginning))
                self._note(
                    f"{topic} partition {plan.partition} starts at offset {plan.beginning}: "
                    "older history was deleted (retention); its states may lack those events"
                )
        policy = DeadLetterPolicy(n, cached_partition)
        progress = _Progress(sum(p.stop - p.start for p in self.plans), self.progress, "records")
        stats = self.stats
        skew = self.skew_ms
        try:
            for plan in self.plans:
                async for records in partition_batches(consumer, topic, plan):
                    batch: list[tuple[LogRecord, RegistrationEvent]] = []
                    stats.records += len(records)
                    progress.update(len(records))
                    for r in records:
                        if keys is not None and r.key not in keys:
                            stats.other_aors += 1
                            if r.offset == plan.probe and not plan.extended:
                                self._probe(plan, r, progress)
                            continue
                        got = policy.admit(
                            topic,
                            r.partition,
                            r.offset,
                            r.key,
                            r.value,
                            r.headers or (),
                            r.timestamp if r.timestamp >= 0 else None,
                        )
                        if isinstance(got, DeadLetter):
                            self._bad(BadRecord(r.partition, r.offset, got.reason, got.detail))
                            continue
                        if plan.by_time and not plan.extended and r.timestamp - got.ts > skew:
                            self._extend(plan, r.offset, r.timestamp - got.ts, progress)
                        batch.append((LogRecord(r.partition, r.offset, r.timestamp), got))
                    stats.admitted += len(batch)
                    if batch:
                        yield batch
        finally:
            progress.close()

    def _probe(self, plan: PartitionPlan, r: Any, progress: _Progress) -> None:
        """Check the first record past the time limit for lateness, whatever its AOR.

        With ``aors``, the records of other AORs are not decoded, but this one
        decides whether the limit holds for the partition, so it is.
        """
        event = decode_event(r.value)
        if isinstance(event, RegistrationEvent) and r.timestamp - event.ts > self.skew_ms:
            self._extend(plan, r.offset, r.timestamp - event.ts, progress)

    def _extend(self, plan: PartitionPlan, offset: int, late_ms: int, progress: _Progress) -> None:
        """A late record: the time limit cannot be trusted for this partition any more.

        Its later records may carry events from before ``until_ms`` too, so the
        partition is read to its end offset.
        """
        progress.grow(plan.end - plan.stop)
        plan.stop, plan.extended = plan.end, True
        self.stats.late_partitions.append(plan.partition)
        self._note(
            f"{self.topic} partition {plan.partition} holds late records (offset {offset} "
            f"was appended {late_ms / 1000:.0f} s after its event ts); "
            "reading it to its end offset"
        )

    def _bad(self, bad: BadRecord) -> None:
        self.stats.bad_count += 1
        if len(self.stats.bad) < 1000:
            self.stats.bad.append(bad)
        if self.on_bad is not None:
            self.on_bad(bad)


@dataclass
class LiveView:
    """regstate.bindings as a compacted reader sees it: last value per key, tombstones delete."""

    states: dict[str, AorState] = field(default_factory=dict)
    last_record: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per key (also deleted ones), (partition, offset) of its last record."""
    undecodable: dict[str, tuple[tuple[int, int], str]] = field(default_factory=dict)
    """Keys whose last record cannot be decoded as an AorState: position and reason."""
    records: int = 0
    keyless: list[tuple[int, int]] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)


async def read_bindings(settings: Settings, *, progress: bool = False) -> LiveView:
    """Read regstate.bindings from offset 0 to its end offsets as of the start.

    Guarantees: each key's value is its last record's (a null value deletes it),
    as a compacted topic's reader must see it; a value that is not an AorState
    (bad JSON, foreign shape) removes the key from ``states`` and is listed in
    ``undecodable`` until a later good record for the key replaces it.
    """
    topic = settings.topic("bindings")
    view = LiveView()
    consumer = consumer_for(settings, "regstate-audit")
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        plans = await plan_partitions(consumer, topic, partitions, until_ms=None, skew_ms=-1)
        view.ends = {p.partition: p.end for p in plans}
        bar = _Progress(sum(p.stop - p.start for p in plans), progress, "bindings")
        try:
            for plan in plans:
                async for records in partition_batches(consumer, topic, plan):
                    view.records += len(records)
                    bar.update(len(records))
                    for r in records:
                        _take_binding(view, r)
        finally:
            bar.close()
    finally:
        await consumer.stop()
    return view


def _take_binding(view: LiveView, r: Any) -> None:
    if r.key is None:
        view.keyless.append((r.partition, r.offset))
        return
    key = r.key.decode("utf-8", errors="replace")
    view.last_record[key] = (r.partition, r.offset)
    view.undecodable.pop(key, None)
    if r.value is None:
        view.states.pop(key, None)
        return
    try:
        view.states[key] = decode_state(r.value)
    except Exception as exc:  # noqa: BLE001 - any foreign bytes: report, never crash the audit
        view.states.pop(key, None)
        view.undecodable[key] = ((r.partition, r.offset), f"{type(exc).__name__}: {exc}")


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The end offset of every partition of ``topic`` (LogReadError if it does not exist)."""
    consumer = consumer_for(settings, "regstate-audit")
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def group_lag(
    settings: Settings, group: str, topic: str, ends: dict[int, int]
) -> dict[int, int] | None:
    """Records of ``topic`` below ``ends`` that ``group`` has not committed, per partition.

    None when the group has committed nothing on the topic (no engine ran, or
    another group id). A partition without a commit counts as entirely behind.
    """
    admin = AIOKafkaAdminClient(**client_config(settings, "regstate-audit"))
    await admin.start()
    try:
        # A young cluster has no __consumer_offsets yet: its first coordinator
        # lookups fail until the broker has created it. That is a wait, not an error.
        deadline = time.monotonic() + 30.0
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
                break
            except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    if not committed:
        return None
    return {p: max(0, end - max(0, committed.get(p, 0))) for p, end in ends.items()}
