"""The Faust edge: the app, its transport (consumer and producer subclasses) and the table.

Everything regstate changes inside faust-streaming lives here, each with the
reason (D70-D75, D107, D110, D115, D124 and D126 in docs/decisions.md):

* :class:`IdempotentProducer`: ``acks=all`` and idempotence in at-least-once mode.
* :class:`EngineConsumer`: the aiokafka driver's consumer, its acknowledged offsets
  kept without repeats (D115), a failed commit not recorded as done (D126), whose
  thread fetches
  with a settable ``fetch_max_wait_ms`` (Faust hard-codes 1500 ms) and
  ``fetch_min_bytes`` (aiokafka's 1), and a drain loop that hands
  the fold agent each partition's fetched records as one :class:`Fetched`
  chunk (tracked and acked a chunk at a time), and records of other topics to
  their streams without Faust's per-record ``wait_first`` whenever the
  hand-off cannot block.
* :class:`EngineConsumerThread`: each commit fenced to the generation it was decided in
  (:mod:`streams.engine.commit_fence`, D124).
* :class:`BindingsTable`: writes the store in batches; the agent sends its
  changelog records.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import faust
import rocksdict
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumerDriver
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducerDriver
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP, ProducerT, TransportT
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streams.engine.commit_fence import CommitFence
from streams.log.kafka_config import faust_broker_options
from streams.log.topics import REGISTRATIONS
from streams.settings import Settings
from streams.webserver import scheme, tls_context

log = logging.getLogger(__name__)

YIELD_EVERY = 500
"""Records handed to streams between two forced event-loop turns of the drain loop."""
DIRECT_BATCHES_QUEUED = 4
"""Fetched batches of source records waiting for the fold agent before the fetcher waits."""
_UNSET = object()
"""A partition with no committed offset recorded (absent from ``_committed_offset``)."""


class Fetched:
    """One partition's source records of one fetch, handed to the fold agent whole (D72, D107).

    ``records`` are aiokafka ``ConsumerRecord`` objects in offset order (their
    ``timestamp`` in milliseconds), never wrapped one by one in Faust messages.
    ``sentinel`` is the one Faust message that stands for all of them in the
    consumer's set of unacknowledged messages while they are folded and held.
    """

    __slots__ = ("generation", "records", "sentinel", "tp")

    def __init__(self, tp: TP, records: list[Any], generation: int) -> None:
        self.tp = tp
        self.records = records
        self.generation = generation
        self.sentinel: Any = None


class IdempotentProducer(AIOKafkaProducerDriver):
    """Faust's aiokafka producer with ``acks=all`` and idempotence.

    Faust turns both on only in exactly_once mode (``_settings_extra``); regstate
    wants them in at-least-once mode too (docs/design.md section 3, trap 10): a retried
    batch is then neither duplicated nor reordered within a partition.
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class EngineConsumerThread(AIOKafkaConsumerThread):
    """The consumer thread, its aiokafka consumer given regstate's fetch wait and minimum,
    and a fence against commits that outlive a rebalance (D124)."""

    commit_fence: CommitFence | None = None

    async def on_start(self) -> None:
        await super().on_start()
        # Before the consumer subscribes, so before its first assignment.
        self.commit_fence = CommitFence.install(self._consumer)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes fetch_max_wait_ms=1500 with no setting. A fetch for the
        # partitions without buffered records then parks up to 1.5 s on the broker
        # while the others drain, and no new fetch for them goes out meanwhile.
        # aiokafka reads the attribute when it builds its Fetcher in start().
        wait_ms = getattr(self.app, "regstate_fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms
        # With a minimum above one record, the broker holds a fetch until that many bytes
        # or the wait is up: at live rates one fetch, so one fold cycle (its RocksDB
        # writes, output batches and produce request), per wait instead of per record
        # or two (D110).
        min_bytes = getattr(self.app, "regstate_fetch_min_bytes", None)
        if min_bytes is not None:
            consumer._fetch_min_bytes = min_bytes
        return consumer


class AckedOffsets(list[int]):
    """One partition's acknowledged offsets as Faust keeps them for its commit, each once.

    Faust's ``Consumer._new_offset`` adds the partition's gap ranges to this list,
    sorts it and commits up to the end of its first run of consecutive offsets. An
    offset in it twice ends every run after one offset, so each commit (one a second)
    moved the partition one offset on: a SIGKILL test saw its group over 2,000
    offsets behind for minutes (D115). Offsets get in twice when ``_new_offset`` adds a gap
    range over offsets that were acknowledged too (records handed over on both sides
    of a restart's seek to the committed offsets). Faust sorts the list before every
    use; sorting here also drops the repeats.
    """

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        self[:] = sorted(set(self), key=key, reverse=reverse)


class EngineConsumer(AIOKafkaConsumerDriver):
    """Faust's aiokafka consumer with a cheaper hand-off from fetcher to streams, and
    acknowledged offsets kept without repeats (:class:`AckedOffsets`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acked: defaultdict[TP, list[int]] = defaultdict(AckedOffsets)
        self._not_committed: dict[TP, object] = {}

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return EngineConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        did_commit: bool = await super()._commit(offsets)
        if not did_commit:
            # Faust's _commit_offsets records the offsets as committed next, whether or
            # not they were (no await in between): keep what it had, to put back (D126).
            self._not_committed = {tp: self._committed_offset.get(tp, _UNSET) for tp in offsets}
        return did_commit

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        """Faust's commit, with a commit that did not happen not recorded as done (D126).

        Faust's version updates ``_committed_offset`` even when the commit failed (a
        rebalance, "already rebalanced"; or refused by the commit fence, D124). Landing
        after the revocation that cleared it, that left a partition this worker kept
        marked committed up to offsets the broker never stored: the records fetched
        again from the broker's committed offset were then never acknowledged, and the
        partition was never committed.
        """
        self._not_committed = {}
        try:
            return await super()._commit_offsets(offsets, start_new_transaction)
        finally:
            for tp, offset in self._not_committed.items():
                if offset is _UNSET:
                    self._committed_offset.pop(tp, None)
                else:
                    self._committed_offset[tp] = cast("int | None", offset)
            self._not_committed = {}

    def _handoff_cannot_block(self, topic: str) -> bool:
        """Whether the conductor's callback for a record of ``topic`` runs without waiting.

        It waits only on suspended flow control (a rebalance), a full producer
        buffer or a full stream queue; those are checked here in the same loop
        turn as the call, so nothing changes between the check and the call.
        """
        app = self.app
        if self.suspend_flow.is_set() or not app.flow_control.is_active():
            return False
        buffer: Any = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False
        channels = app.topics._topic_name_index.get(topic, ())  # type: ignore[attr-defined]
        return not any(chan.queue.full() for chan in channels)

    def track_fetched(self, chunk: Fetched) -> None:
        """Track ``chunk`` as Faust tracks a message it hands to a stream (``track_message``).

        Its last record, as a Faust message, stands for all of it in the set
        ``wait_empty`` waits on: a rebalance or a shutdown waits until the
        chunk is acknowledged. Faust's per-message sensors are not called for
        source records (regstate's metrics count them; Faust's monitor is not
        served, ``web_stats_enabled=False``).
        """
        sentinel = self._to_message(chunk.tp, chunk.records[-1])
        chunk.sentinel = sentinel
        self._unacked_messages.add(sentinel)

    def ack_fetched(self, chunk: Fetched) -> None:
        """``Consumer.ack`` for every record of ``chunk``, in one step: its offsets become
        committable (contiguous with the acked ones before them, as Faust commits)."""
        tp = chunk.tp
        with ack_lock:
            sentinel = chunk.sentinel
            if sentinel is None or sentinel.acked:
                return
            sentinel.acked = True
            self._unacked_messages.discard(sentinel)
            committed = self._committed_offset[tp]
            index = self._acked_index[tp]
            fresh = [
                r.offset
                for r in chunk.records
                if (committed is None or r.offset >= committed) and r.offset not in index
            ]
            index.update(fresh)
            self._acked[tp].extend(fresh)
            self._n_acked += len(fresh)
            notify(self._waiting_for_ack)

    async def _take_fetched(self, tp: TP, records: list[Any], generation: int) -> Fetched | None:
        """The records of ``tp`` not read before, as one chunk; Faust's offset bookkeeping
        (read offset, gaps) for all of them."""
        read_offset = self._read_offset
        last = read_offset[tp]
        if last is not None and records[0].offset < last:
            records = [r for r in records if r.offset >= last]  # seen before: a seek back
            if not records:
                return None
        first = records[0].offset
        contiguous = records[-1].offset - first == len(records) - 1
        if not (contiguous and (not last or first - last <= 1)):
            for r in records:
                await self._note_gap(tp, last, r.offset, source=True)
                last = r.offset
        read_offset[tp] = records[-1].offset
        return Fetched(tp, records, generation)

    async def _note_gap(self, tp: TP, last: int | None, offset: int, *, source: bool) -> None:
        """Faust's gap rule, for a record at ``offset`` read right after ``last``: offsets
        missing between them (compaction, transaction markers) are noted as done, so
        the commit can pass them."""
        if not (last and offset - last > 1 and self.app.topics.acks_enabled_for(tp.topic)):
            return
        if source:
            # The source topic is neither compacted nor transactional: a gap here
            # means records fetched before a seek (D115). Said, because the commit
            # treats the gap's offsets as done.
            self.log.warning(
                "%s: offsets %d-%d missing from a fetch, noted as a gap (seen "
                "right after a restart's seek; elsewhere, report it: D115)",
                tp,
                last + 1,
                offset - 1,
            )
        await self._add_gap(tp, last + 1, offset)

    async def _commit_if_due(self) -> None:
        """Commit once ``broker_commit_every`` records were acked since the last time, as
        Faust's drain loop does between records."""
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        """Deliver fetched records to the streams, in order, until stopped.

        Records of the fold agent's topic go to it a whole partition's fetch at
        a time (:class:`Fetched`), never through Faust's per-record path (D107).
        For any other topic Faust's loop awaits ``wait_first(callback(message),
        suspend_flow.wait())`` for every record, so a rebalance can interrupt a
        hand-off blocked on a full buffer. That costs four tasks per record. Here
        the callback is awaited directly when it cannot block (see
        :meth:`_handoff_cannot_block`), and through ``wait_first`` otherwise: the
        same semantics, the slow path only when it matters. Offsets read, gaps,
        flow, generation and stop handling as Faust's ``getmany``.
        """
        if not getattr(self.app, "regstate_fast_handoff", True):
            await super()._drain_messages(fetcher)  # Faust's own loop, for comparison
            return
        app = self.app
        callback = self.callback
        direct_topic: str | None = getattr(app, "regstate_direct_topic", None)
        batches: asyncio.Queue[list[Fetched]] | None = getattr(app, "regstate_batches", None)
        if batches is None:
            direct_topic = None
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        read_offset = self._read_offset
        cannot_block = self._handoff_cannot_block
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop or not self.flow_active:
                    continue
                generation = app.consumer_generation_id
                pending: list[Fetched] = []
                others: dict[TP, list[Any]] = {}
                for tp, recs in records.items():
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    if tp.topic != direct_topic:
                        others[tp] = recs
                        continue
                    chunk = await self._take_fetched(tp, recs, generation)
                    if chunk is not None:
                        pending.append(chunk)
                await self._commit_if_due()
                if pending and batches is not None:
                    if batches.full():  # the agent is behind: wait, unless a rebalance starts
                        await self.wait_first(batches.put(pending), self.suspend_flow.wait())
                    else:
                        batches.put_nowait(pending)
                for tp, record in self.scheduler.iterate(others):
                    if not self.flow_active or app.consumer_generation_id != generation:
                        break
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    offset = record.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue  # seen before (a seek back): Faust drops it too
                    await self._note_gap(tp, last, offset, source=False)
                    await self._commit_if_due()
                    message = self._to_message(tp, record)
                    if cannot_block(message.topic):
                        await callback(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class EngineTransport(AIOKafkaTransport):
    """The aiokafka transport with regstate's consumer and producer."""

    Consumer = EngineConsumer
    Producer = IdempotentProducer


class EngineApp(faust.App):
    """A Faust app on :class:`EngineTransport` with :class:`IdempotentProducer`.

    The two ``regstate_*`` attributes are how :func:`build_app` passes regstate's
    settings to the consumer (Faust's settings object takes no unknown keys).
    """

    regstate_fetch_max_wait_ms: int | None = None
    regstate_fetch_min_bytes: int | None = None
    regstate_fast_handoff: bool = True
    regstate_direct_topic: str | None = None
    """Records of this topic go from the consumer to :attr:`regstate_batches` (D72)."""
    regstate_batches: asyncio.Queue[list[Fetched]] | None = None

    def _new_transport(self) -> TransportT:
        return EngineTransport(self.conf.broker_consumer, self)

    def _new_producer(self) -> ProducerT:
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


class BindingsTable(faust.Table):  # type: ignore[type-arg]  # raw bytes keys and values
    """A Faust table whose changelog records the agent sends itself, batched (D73, D75).

    ``table[k] = v`` hands its changelog record to Faust's producer buffer, which
    sends one record per event-loop turn and, past 100 waiting, makes the
    consumer flush it one record at a time: a batch of 2000 writes then crawled.
    :meth:`store` writes only the local store; the agent adds the changelog
    record to the batch's outputs (same key, value, topic and partition as
    Faust's, so recovery and standbys read it unchanged) and reports each sent
    changelog batch to :meth:`changelog_sent`, which records the partition's
    persisted changelog offset on its ack, as Faust's ``_on_changelog_sent``
    does, so a restart replays only the changelog's tail.
    """

    def stored(self, partition: int, key: bytes) -> bytes | None:
        """The local store's value of ``key``, one of ``partition``'s keys.

        One get on the partition's RocksDB, not Faust's lookup: that takes the
        partition from ``current_event()``, which inside a batch is not the
        record's (faust-streaming #497), and searches every partition's database
        when no event is current.
        """
        db = self._partition_db(partition)
        if db is None:
            value: bytes | None = self.data.get(key)  # the memory store: no partitions
            return value
        return db.get(key)  # type: ignore[no-any-return]

    def store_many(self, partition: int, items: list[tuple[bytes, bytes]]) -> None:
        """Write ``items`` of ``partition`` to the local store only, in one RocksDB write
        batch (as Faust applies changelog records on recovery), not key by key through
        Faust's store (a context lookup and a key-index update per key)."""
        db = self._partition_db(partition)
        if db is None:
            for key, value in items:  # the memory store: no partitions
                self.data[key] = value
            return
        batch = rocksdict.WriteBatch(raw_mode=True)  # Faust opens its stores in raw mode
        for key, value in items:
            batch.put(key, value)
        db.write(batch)

    def _partition_db(self, partition: int) -> Any | None:
        """``partition``'s RocksDB (opened on first use, as Faust does), or None for the
        memory store."""
        data: Any = self.data
        db_for_partition = getattr(data, "_db_for_partition", None)
        if db_for_partition is None or not getattr(data, "use_rocksdict", False):
            return None
        return db_for_partition(partition)

    def changelog_sent(self, partition: int, fut: asyncio.Future[Any], count: int) -> None:
        """A batch of ``count`` changelog records of ``partition`` was handed to the producer."""

        def persisted(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                return  # AckGate sees the failure and stops the worker
            meta = f.result()
            # One RocksDB write per changelog batch, with its last offset.
            self.data.set_persisted_offset(meta.topic_partition, meta.offset + count - 1)

        fut.add_done_callback(persisted)


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """Table ``options`` Faust passes to its RocksDBOptions (stores/rocksdb.py), per partition.

    Faust's defaults are a 2 GiB block cache and three 64 MiB memtables per
    partition (trap 6): eight partitions could claim 17 GiB.
    """
    return {
        "block_cache_size": settings.rocksdb_block_cache_bytes,
        "block_cache_compressed_size": settings.rocksdb_block_cache_bytes // 4,
        "write_buffer_size": settings.rocksdb_write_buffer_bytes,
        "max_write_buffer_number": settings.rocksdb_max_write_buffers,
    }


def build_app(settings: Settings) -> EngineApp:
    """The Faust app with every setting regstate depends on spelled out."""
    datadir = settings.engine_dir()
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    unused = Path(settings.data_dir) / "engine" / settings.worker_id / "v1"
    if unused.is_dir():
        log.warning(
            "engine: %s holds a table from before tables were kept per topic prefix (D123) "
            "and is no longer read; this worker's table is %s, restored from the changelog "
            "when it is new. Delete %s once this worker is ready.",
            unused.parent,
            datadir,
            unused.parent,
        )
    app = EngineApp(
        settings.engine_group(),
        # Bootstrap servers and SASL/TLS credentials: the one Kafka client setup.
        **faust_broker_options(settings),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(datadir),
        autodiscover=False,
        # docs/design.md section 7: at-least-once with an idempotent fold; never
        # exactly_once (trap 5).
        processing_guarantee="at_least_once",
        producer_acks=-1,
        # Our own sends are awaited through AckGate, not attached to commits.
        stream_publish_on_commit=False,
        stream_wait_empty=True,
        topic_replication_factor=settings.replication_factor,
        topic_partitions=settings.partitions,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_ms / 1000,
        # A dead worker leaves the group after this; the broker's minimum is 6 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # Records per hand-off from the consumer thread (aiokafka: unlimited).
        broker_max_poll_records=settings.engine_max_poll_records,
        # Records a stream may hold; the fetcher pauses a partition at 80 % of it.
        stream_buffer_maxsize=settings.engine_stream_buffer,
        # Faust waits 3 s after each rebalance for more members by default.
        stream_recovery_delay=0.2,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_batch_size=256 * 1024,
        web_enabled=True,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_host,
        canonical_url=f"{scheme(settings)}://{settings.web_host}:{settings.web_port}",
        web_ssl_context=tls_context(settings),
        # trap 10: no table dumps over HTTP; only the views below.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
    )
    app.regstate_fetch_max_wait_ms = settings.engine_fetch_max_wait_ms
    app.regstate_fetch_min_bytes = settings.engine_fetch_min_bytes
    app.regstate_fast_handoff = bool(settings.engine_fast_handoff)
    if settings.engine_fast_handoff and settings.engine_direct_batches:
        app.regstate_direct_topic = settings.topic(REGISTRATIONS)
        app.regstate_batches = asyncio.Queue(maxsize=DIRECT_BATCHES_QUEUED)
    return app
