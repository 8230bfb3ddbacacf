"""The fold agent: folds batches of source records into the table and the output topics.

The agent takes up to ``engine_batch_max`` records at a time (Faust's
``take_events``, waiting at most ``engine_batch_within_ms`` for a batch to fill),
folds each record in offset order with :func:`processors.fold.fold_event`, and
then, per AOR the batch touched (D74):

* writes the latest state to the table once (a new value, trap 1; its
  changelog record sent like any output, D73), in one RocksDB write batch per
  partition; reads of the table name the AOR's partition too
  (``BindingsTable.stored``: inside a batch Faust's ``current_event`` is not
  the record's, faust-streaming #497);
* publishes the latest public state to regstate.bindings once, when any of its
  records emitted binding events (or was a redelivered duplicate: republish, and
  its state to the changelog again, D114);
* publishes every binding event, one per change, in order.

Dead letters are sent per record. The records of each partition in the batch
are then held by :class:`AckGate` until every output of the batch for that
partition is acknowledged, so the commit rule is the per-record rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from faust.types import StreamT
from faust.types.tuples import Message

from processors.fold import fold_event
from processors.outcomes import Outcome
from schemas import (
    AorState,
    BindingEvent,
    decode_state,
    encode_binding_event,
    encode_state,
    encode_state_forms,
)
from streams.engine.faust_edge import EngineConsumer, Fetched
from streams.engine.outputs import BatchOutputs
from streams.log.deadletter import DeadLetter
from streams.log.routing import cached_partition

if TYPE_CHECKING:
    from streams.engine.worker import Engine

log = logging.getLogger("regstate.engine")


class _Touched:
    """One AOR's running state within a batch."""

    __slots__ = (
        "changed",
        "changes",
        "encoded",
        "events",
        "partition",
        "public",
        "republish",
        "state",
        "ts",
    )

    def __init__(self, partition: int, state: AorState | None) -> None:
        self.partition = partition  # of the AOR's records: the AOR's
        self.state = state
        self.changed = False
        self.ts = 0  # of the AOR's last record that changed its state
        self.republish = False
        self.events: list[BindingEvent] = []
        self.changes: list[bytes] = []  # the events, encoded (in the fold's guard)
        self.encoded = b""  # the latest state, internal JSON
        self.public: tuple[AorState, bytes] | None = None  # a state and its public JSON


class FoldAgent:
    """The ``fold`` agent of one :class:`~streams.engine.worker.Engine` (concurrency 1)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.metrics = engine.metrics
        # Decoded states of hot AORs; only the agent writes it, a rebalance clears it.
        self.cache: dict[bytes, AorState] = {}
        self._changelog = engine.table.changelog_topic_name
        self._partition_counts: dict[str, int] = {}

    async def run(self, stream: StreamT[bytes]) -> None:
        """Fold every record of every owned partition, in order, a batch at a time."""
        batches = self.engine.app.regstate_batches
        if batches is not None:
            await self._run_direct(batches)
            return
        batch_max = self.settings.engine_batch_max
        if batch_max <= 1:
            async for event in stream.events():
                await self.fold_messages([event.message])
            return
        within = self.settings.engine_batch_within_ms / 1000
        # take_events is on faust's Stream, not on the StreamT protocol.
        take_events = stream.take_events  # type: ignore[attr-defined]
        async for events in take_events(batch_max, within=within):
            await self.fold_messages([e.message for e in events])

    async def _run_direct(self, batches: asyncio.Queue[list[Fetched]]) -> None:
        """Fold the chunks the consumer hands over directly (D72, D107), doing what Faust's
        stream does for its records: skip chunks of an older generation or fetched
        before a rebalance suspended the flow (they are fetched again from the
        committed offset), track the rest as unacked until AckGate releases them."""
        app = self.engine.app
        consumer: EngineConsumer = app.consumer  # type: ignore[assignment]
        batch_max = self.settings.engine_batch_max
        gate = self.engine.gate
        inbound = app.monitor.stream_inbound_time
        while True:
            chunks = await batches.get()
            count = sum(len(c.records) for c in chunks)
            while count < batch_max and not batches.empty():
                more = batches.get_nowait()
                chunks = chunks + more
                count += sum(len(c.records) for c in more)
            if not app.flow_control.is_active():
                continue
            generation = app.consumer_generation_id
            live = [c for c in chunks if c.generation == generation]
            started = time.perf_counter()
            now = time.monotonic()
            for chunk in live:
                consumer.track_fetched(chunk)
                # Faust's liveness check (verify_event_path) reads when a stream last took
                # a record of each partition; without it, it logs every few seconds, 5
                # minutes after start, that the stream "has not started processing".
                inbound[chunk.tp] = now
            done = await self._fold_batch([(c.tp.partition, c.records, 1) for c in live])
            for chunk in live:
                release = partial(consumer.ack_fetched, chunk)
                gate.hold_group(chunk.tp.partition, len(chunk.records), release, done)
            self.metrics.fold_seconds.observe(time.perf_counter() - started)

    async def fold_messages(self, messages: list[Message]) -> None:
        """Fold Faust messages a stream delivered (offset order per partition) and hold
        them until their outputs."""
        started = time.perf_counter()
        groups: dict[int, list[Message]] = {}
        for msg in messages:
            group = groups.get(msg.partition)
            if group is None:
                group = groups[msg.partition] = []
            group.append(msg)
        # Faust's messages carry their timestamp in seconds.
        done = await self._fold_batch([(p, group, 1000) for p, group in groups.items()])
        hold = self.engine.gate.hold_messages
        for partition, group in groups.items():
            hold(partition, group, done)
        self.metrics.fold_seconds.observe(time.perf_counter() - started)

    async def _fold_batch(
        self, groups: list[tuple[int, Sequence[Any], int]]
    ) -> list[asyncio.Future[Any]]:
        """Fold each ``(partition, records, ms_per_timestamp_unit)`` group's records in
        order, send the batch's outputs; return one future for all of them."""
        engine = self.engine
        positions = engine.positions
        admission = engine.admission
        policy = engine.policy
        metrics = self.metrics
        dead: list[asyncio.Future[Any]] = []  # dead letters, sent record by record
        touched: dict[bytes, _Touched] = {}
        for partition, records, ms_per_unit in groups:
            if not records:
                continue
            positions[partition] = records[-1].offset + 1
            for msg in records:
                key: bytes | None = msg.key
                raw: bytes | None = msg.value
                stamp = msg.timestamp
                record_ts = int(stamp * ms_per_unit) if stamp else None
                admitted = admission.admit(
                    msg.topic, partition, msg.offset, key, raw, (), record_ts
                )
                if isinstance(admitted, DeadLetter):
                    # Original headers are copied only for the rare refused record.
                    letter = replace(admitted, original_headers=_headers(msg.headers))
                    dead.append(await engine.dead_letter(letter))
                    continue
                assert key is not None  # admitted records have a key
                ev = admitted
                if record_ts is not None:
                    metrics.observe_skew(ev.node, ev.ts - record_ts)
                t = touched.get(key)
                if t is None:
                    t = touched[key] = _Touched(partition, self.read(partition, key))
                try:
                    folded = fold_event(t.state, ev, policy)
                    # Encoding sits inside the guard too: a value the codec cannot write
                    # is dead-lettered like a fold bug, never raised into the agent (D81).
                    if folded.events:
                        encoded, public = encode_state_forms(folded.state)
                    else:
                        encoded, public = encode_state(folded.state, internal=True), None
                    changes = [encode_binding_event(be) for be in folded.events]
                except Exception as exc:  # the policy turns a fold bug into a dead letter
                    letter = admission.fold_failed(
                        msg.topic, partition, msg.offset, key, raw, exc, _headers(msg.headers)
                    )
                    log.exception("fold raised on %s; dead-lettered", ev.id)
                    dead.append(await engine.dead_letter(letter))
                    continue
                outcome = folded.outcome
                metrics.observe_fold(ev.kind, outcome)
                if outcome is Outcome.DUPLICATE:
                    if t.state is not None:
                        # Redelivered after a crash: the table may be ahead of its outputs.
                        metrics.republished += 1
                        t.republish = True
                        t.encoded = encoded  # the unchanged state's, for its changelog
                    continue
                t.state = folded.state
                t.encoded = encoded
                t.public = None if public is None else (folded.state, public)
                t.changes.extend(changes)
                t.changed = True
                t.ts = ev.ts
                if folded.events:
                    t.events.extend(folded.events)
        outputs = BatchOutputs(engine.producer(), self._sent)
        stores: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, t in touched.items():
            if t.state is not None:
                await self._write(key, t, outputs, stores)
        for partition, writes in stores.items():
            engine.table.store_many(partition, writes)
        sent = await outputs.send() + dead
        # One future for the whole batch: every record of it waits for every output.
        return [asyncio.gather(*sent)] if sent else []

    async def _write(
        self,
        key: bytes,
        t: _Touched,
        outputs: BatchOutputs,
        stores: dict[int, list[tuple[bytes, bytes]]],
    ) -> None:
        """One AOR's outputs of a batch: latest state to ``stores`` (the table's writes, per
        partition) and to bindings, its events."""
        state = t.state
        assert state is not None
        engine = self.engine
        partition = t.partition
        if t.changed:
            value = t.encoded  # a new value, never mutated (trap 1)
            writes = stores.get(partition)
            if writes is None:
                writes = stores[partition] = []
            writes.append((key, value))
            outputs.add(self._changelog, partition, key, value)
            self.remember(key, state)
        elif t.republish:
            # The local table is written before the batch's outputs are acknowledged, so
            # a crash in between leaves it holding a state whose changelog record never
            # reached Kafka; the redelivered record is then a duplicate here. Send the
            # state to the changelog again: a standby or the partition's next owner
            # rebuilds the table from it (D114).
            outputs.add(self._changelog, partition, key, t.encoded)
        if not (t.events or t.republish):
            return
        bindings = engine.bindings_topic
        out = partition if engine.same_partitions else await self._partition_of(bindings, key)
        outputs.add(bindings, out, key, _public(state, t.public))
        if t.changed:
            self.metrics.publish_to_bindings.observe(max(0, engine.now_ms() - t.ts) / 1000)
        if t.events:
            events_topic = engine.events_topic
            if not engine.same_partitions:
                out = await self._partition_of(events_topic, key)
            counts = self.metrics.binding_events
            for be, change in zip(t.events, t.changes, strict=True):
                counts[be.event] += 1
                outputs.add(events_topic, out, key, change)
            engine.planner.observe(partition, key, state)

    def _sent(self, topic: str, partition: int, fut: asyncio.Future[Any], count: int) -> None:
        if topic == self._changelog:
            self.engine.table.changelog_sent(partition, fut, count)

    async def _partition_of(self, topic: str, key: bytes) -> int:
        """The partition the producer's default partitioner gives ``key`` in ``topic``."""
        n = self._partition_counts.get(topic)
        if n is None:
            n = self._partition_counts[topic] = await self.engine.partition_count(topic)
        return cached_partition(key, n)

    def read(self, partition: int, key: bytes, *, remember: bool = True) -> AorState | None:
        """The AOR's state: from the cache, else the table (``partition``, the AOR's).

        ``remember``: cache a state read from the table. The sweep reads without it,
        so its cold AORs do not push the fold's hot ones out of the cache.
        """
        state = self.cache.get(key)
        if state is not None:
            return state
        raw = self.engine.table.stored(partition, key)
        if raw is None:
            return None
        state = decode_state(raw)
        if remember:
            self.remember(key, state)
        return state

    def remember(self, key: bytes, state: AorState) -> None:
        cache = self.cache
        cache.pop(key, None)  # re-insert at the end: evicted last
        if len(cache) >= self.settings.state_cache_size:
            del cache[next(iter(cache))]
        cache[key] = state


def _public(state: AorState, encoded: tuple[AorState, bytes] | None) -> bytes | None:
    """regstate.bindings value: the public AorState, or a tombstone when no contact is left.

    ``encoded``: a state and its public JSON from the fold, used when it is this
    state (its last change emitted binding events and was not a redelivery).
    """
    if not state.contacts:
        return None
    if encoded is not None and encoded[0] is state:
        return encoded[1]
    return encode_state(state, internal=False)


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]
