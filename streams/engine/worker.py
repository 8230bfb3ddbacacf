"""The engine: a Faust worker that folds regstate.registrations into the bindings table.

One agent reads regstate.registrations (raw bytes keys and values), admits each
record through the dead-letter policy (:mod:`streams.log.deadletter`), folds it with
:func:`processors.fold.fold_event` into the table ``bindings`` (keyed by the AOR's
bytes, value the internal AorState JSON), and publishes what changed:

* regstate.bindings: the AorState public JSON (a tombstone once the AOR has no
  contact), keyed by AOR, only when the fold emitted binding events;
* regstate.binding-events: each BindingEvent, keyed by AOR;
* regstate.deadletter: refused records, unchanged, with headers saying why.

Guarantees (docs/design.md sections 7 and 9):

* At-least-once, never Faust's exactly_once. The offset of a record is committed
  only after every record it caused (table changelog, bindings, binding events or
  dead letter) was acknowledged by the brokers with acks=all from an idempotent
  producer: :class:`AckGate` holds a reference on the source message until then
  and releases them in offset order per partition, and Faust commits only
  offsets whose messages were released. A failed output stops the process
  (exit 70) before anything after it can be committed; on restart the records
  are folded again, which R4/R5 make harmless (trap 4).
* A redelivered record the table already holds (outcome DUPLICATE) re-publishes
  the AOR's current state, so regstate.bindings converges even if the crash hit
  between the table write and the bindings write. Binding events of such a
  record are not re-derived; a reader sees the version gap (R11).
* Table writes are always ``table[k] = v`` of a new value (trap 1); the table and
  the source topic have the same partition count and bytes keys (traps 2, 3).
* The sweeper (:mod:`processors.expiry`) appends ``expire`` events to the source
  topic for the partitions this worker actively owns; it never writes the table
  (trap 8).

The query API (``/v1/aors/{aor}``, ``/healthz``, ``/readyz``, ``/metrics``) runs on
Faust's web server; Faust's table and router dump endpoints are off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from typing import Any, Final

import orjson
from faust.types import TP

from processors.expiry import SeqSource, SweepPlanner, sweeper_node
from schemas import AorState, encode_event
from streams.clock import Clock, now_ms, now_us
from streams.engine.ackgate import AckGate
from streams.engine.agent import FoldAgent
from streams.engine.faust_edge import BindingsTable, build_app, rocksdb_options
from streams.engine.views import add_views
from streams.log.deadletter import DeadLetter, DeadLetterPolicy
from streams.log.routing import cached_partition
from streams.log.topics import BINDING_EVENTS, BINDINGS, DEADLETTER, REGISTRATIONS
from streams.metrics.engine import EngineMetrics
from streams.settings import Settings
from streams.webserver import HttpAuth

log = logging.getLogger("regstate.engine")

TABLE_NAME: Final = "bindings"
EXIT_OUTPUT_FAILED: Final = 70
"""Exit status when an output could not be written (EX_SOFTWARE): restart to retry."""
REBUILD_CHUNK: Final = 2000
"""Table entries indexed per event-loop turn when rebuilding the expiry index."""
FAUST_OFFSET_KEY: Final = b"__faust\0offset__"
"""Faust's own bookkeeping key inside each RocksDB partition; not an AOR."""


class Engine:
    """The worker: agent, table, outputs, sweeper and query API on one Faust app."""

    def __init__(
        self,
        settings: Settings,
        *,
        now_ms: Clock = now_ms,
        outputs_copartitioned: bool = False,
    ) -> None:
        """Define the app. ``outputs_copartitioned``: regstate.bindings and binding-events
        are known to have ``settings.partitions`` partitions, so outputs go to the
        source record's partition without hashing the key again (same result)."""
        self.settings = settings
        self.now_ms = now_ms
        self.policy = settings.fold_policy()
        self.metrics = EngineMetrics()
        self.node = sweeper_node(settings.worker_id)
        self.planner = SweepPlanner(
            self.node,
            grace_ms=settings.grace_ms,
            resend_ms=settings.sweep_resend_ms,
            now=now_ms,
            seq=SeqSource(now_us),
        )
        self.admission = DeadLetterPolicy(settings.partitions, cached_partition)
        self.source_topic = settings.topic(REGISTRATIONS)
        self.bindings_topic = settings.topic(BINDINGS)
        self.events_topic = settings.topic(BINDING_EVENTS)
        self.deadletter_topic = settings.topic(DEADLETTER)
        # Explicit output partitions (= the source's) skip the producer's murmur2.
        self.same_partitions = outputs_copartitioned

        self.app = build_app(settings)
        self.source = self.app.topic(
            self.source_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        extra = {"min.insync.replicas": "2"} if settings.replication_factor >= 3 else {}
        self.table: BindingsTable = self.app.tables.add(  # type: ignore[assignment]
            BindingsTable(
                self.app,
                name=TABLE_NAME,
                default=None,
                key_type=bytes,  # bytes -> Faust's "raw" serializer: keys unchanged (trap 3)
                value_type=bytes,
                partitions=settings.partitions,
                # Changelog records applied per batch on recovery (Faust: 1000).
                recovery_buffer_size=10_000,
                options=rocksdb_options(settings) if settings.store == "rocksdb" else None,
                extra_topic_configs=extra,
                beacon=self.app.tables.beacon,
                help="AorState (internal JSON) per AOR",
            )
        )
        self.table.on_recover(self._on_recovered)
        self.gate = AckGate(lambda: self.app.consumer, self._output_failed)

        self.agent = FoldAgent(self)
        # Next offset to fold per owned source partition (the lag figure).
        self.positions: dict[int, int] = {}
        self.owned: set[int] = set()
        self._ready = False
        self._rebuilds: dict[int, asyncio.Task[None]] = {}

        self.app.agent(self.source, name="fold")(self.agent.run)
        self.app.timer(settings.sweep_interval_ms / 1000, name="sweep")(self._sweep)
        # mode types a receiver as a union of callables mypy cannot match an async method to.
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        self.http_auth = HttpAuth.from_settings(settings)
        add_views(self)

    async def dead_letter(self, letter: DeadLetter) -> asyncio.Future[Any]:
        self.metrics.deadletters[letter.reason] += 1
        log.warning(
            "dead letter %s[%d]@%d: %s: %s",
            letter.topic,
            letter.partition,
            letter.offset,
            letter.reason,
            letter.detail[:200],
        )
        return await self.send(
            self.deadletter_topic,
            letter.key,
            letter.value,
            None,
            letter.headers(self.settings.worker_id),
        )

    def producer(self) -> Any:
        """The running aiokafka producer under Faust's (batches are sent on it directly)."""
        return self.app.producer._ensure_producer()  # type: ignore[attr-defined]

    async def partition_count(self, topic: str) -> int:
        """Partitions of ``topic``, from the producer's metadata."""
        client = self.producer().client
        await client._wait_on_metadata(topic)
        return len(client.cluster.partitions_for_topic(topic))

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Hand one record to the producer; the future resolves when the brokers ack it.

        Awaiting only enqueues (aiokafka batches per partition), so outputs of
        many events are in flight together; AckGate awaits their delivery.
        """
        fut = await self.app.producer.send(topic, key, value, partition, None, headers)
        return fut  # type: ignore[return-value]  # Faust types it Awaitable; aiokafka returns a Future

    def _output_failed(self, exc: BaseException) -> None:
        """An output was refused after the producer's retries: stop before any commit.

        A send cancelled because the worker is stopping only leaves its record
        uncommitted (it is folded again after the restart): no exit status for it.
        """
        if isinstance(exc, asyncio.CancelledError) and self.app.should_stop:
            log.info("an output was cancelled by the shutdown; its record stays uncommitted")
            return
        log.critical("an output could not be written (%r); exiting so nothing is committed", exc)
        logging.shutdown()
        os._exit(EXIT_OUTPUT_FAILED)

    # ------------------------------------------------------------------ rebalance

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Signal ``on_partitions_revoked(sender, revoked)``: forget what the partitions held."""
        revoked: set[TP] = args[0] if args else kwargs.get("revoked", set())
        self._ready = False
        gone = {tp.partition for tp in revoked if tp.topic == self.source_topic}
        self.gate.forget(gone)
        # A partition may come back after another worker changed it.
        self.agent.cache.clear()
        for p in gone:
            task = self._rebuilds.pop(p, None)
            if task is not None:
                task.cancel()
            self.planner.forget(p)
            self.positions.pop(p, None)
        self.owned -= gone

    async def _on_rebalance_complete(
        self, sender: Any, *args: Any, signal: Any, **kwargs: Any
    ) -> None:
        """Signal ``on_rebalance_complete``: recovery done, streams about to resume."""
        self._ready = True

    async def _on_recovered(self) -> None:
        """After each recovery: index the partitions this worker now actively owns."""
        actives = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.source_topic
        }
        for p in self.owned - actives:
            self.planner.forget(p)
        for p in actives - self.owned:
            self.planner.track(p)
            self._rebuilds[p] = asyncio.ensure_future(self._rebuild(p))
        self.owned = actives
        self.agent.cache.clear()

    async def _rebuild(self, partition: int) -> None:
        """Index the AORs of one newly owned partition from the table, a chunk per loop turn."""
        started = time.monotonic()
        count = 0
        try:
            for n, (key, raw) in enumerate(self.table_items(partition), 1):
                first, bindings = _first_expiry(raw)
                if first is not None:
                    self.planner.rebuild_raw(partition, key, first, bindings)
                count = n
                if n % REBUILD_CHUNK == 0:
                    await asyncio.sleep(0)
                    if partition not in self.owned:
                        return
        finally:
            if self._rebuilds.get(partition) is asyncio.current_task():
                del self._rebuilds[partition]
        log.info(
            "expiry index of partition %d rebuilt: %d AORs in %.2f s",
            partition,
            count,
            time.monotonic() - started,
        )

    def table_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Raw ``(key, value)`` of one partition of the local table store."""
        store: Any = self.table.data
        if self.settings.store == "rocksdb":
            db = store._db_for_partition(partition)  # Faust's per-partition rocksdict.Rdict
            for key, value in db.items():
                if key != FAUST_OFFSET_KEY and value is not None:
                    yield key, value
        else:
            # The memory store keeps every partition in one dict.
            n = self.settings.partitions
            for key, value in list(store.data.items()):
                if value is not None and cached_partition(key, n) == partition:
                    yield key, value

    # ------------------------------------------------------------------ sweeper

    async def _sweep(self) -> None:
        """Append ``expire`` events for due bindings of the owned partitions (never the table)."""
        if not self.ready():
            return
        planned = self.planner.plan(self._read_for_sweep, self.settings.sweep_batch)
        for item in planned:
            fut = await self.send(
                self.source_topic, item.key, encode_event(item.event), item.partition
            )
            fut.add_done_callback(self._expire_sent)

    def _read_for_sweep(self, partition: int, key: bytes) -> AorState | None:
        if partition not in self.owned:
            return None
        return self.agent.read(partition, key, remember=False)

    def _expire_sent(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.metrics.expire_send_errors += 1
            log.warning("an expire event was not appended: %r (re-planned later)", fut)
        else:
            self.metrics.expires_sent += 1

    # ------------------------------------------------------------------ state for the views

    def ready(self) -> bool:
        """Recovery complete and no rebalance in progress."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]  # TableManager, not the ABC
        return (
            self._ready
            and recovery.completed.is_set()
            and not recovery.in_recovery
            and not self.app.rebalancing
        )

    def lag(self) -> dict[int, int]:
        """Records of each owned source partition not yet folded (from the fetched high-water)."""
        out: dict[int, int] = {}
        consumer: Any = self.app.consumer
        for p in sorted(self.owned):
            tp = TP(self.source_topic, p)
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001, S112 - not fetched yet: no figure
                continue
            if high is None:
                continue
            out[p] = max(0, int(high) - self.positions.get(p, int(high)))
        return out


def _first_expiry(raw: bytes) -> tuple[int | None, int]:
    """Earliest binding expiry and binding count of an internal AorState JSON."""
    try:
        contacts = orjson.loads(raw).get("contacts") or ()
        expiries = [c["expires_at"] for c in contacts]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None, 0
    return (min(expiries) if expiries else None), len(expiries)
