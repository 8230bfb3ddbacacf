"""The engine: a Faust worker that folds regstate.registrations into the bindings table.

One agent reads regstate.registrations (raw bytes keys and values), admits each
record through the dead-letter policy (:mod:`streams.log.deadletter`), folds it with
:func:`processors.fold.fold_event` into the table ``bindings`` (keyed by the AOR's
bytes, value the internal AorState JSON), and publishes what changed:

* regstate.bindings: the AorState public JSON (a tombstone once the AOR has no
  contact), keyed by AOR, only when the fold emitted binding events;
* regstate.binding-events: each BindingEvent, keyed by AOR;
* regstate.deadletter: refused records, unchanged, with headers saying why.

Guarantees (DESIGN sections 7 and 9):

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
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import faust
import orjson
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducerDriver
from faust.types import TP, EventT, ProducerT, StreamT
from faust.types.tuples import FutureMessage, Message
from faust.web import Request, Response, View

from processors.expiry import SeqSource, SweepPlanner, sweeper_node
from processors.fold import fold_event
from processors.outcomes import Outcome
from processors.problems import problems_response
from processors.sipuri import AorError, canonical_aor
from processors.why import not_found_body
from schemas import AorState, decode_state, encode_binding_event, encode_event, encode_state
from streams.clock import Clock, now_ms, now_us
from streams.log.deadletter import DeadLetter, DeadLetterPolicy
from streams.log.kafka_config import faust_broker_options
from streams.log.routing import cached_partition, kafka_partition, owner_of, same_worker
from streams.log.topics import BINDING_EVENTS, BINDINGS, DEADLETTER, REGISTRATIONS
from streams.metrics.engine import EngineMetrics, render
from streams.settings import Settings
from streams.webserver import CHALLENGE, HttpAuth, scheme, tls_context

UNAUTHORIZED: Final = {"WWW-Authenticate": CHALLENGE}

log = logging.getLogger("regstate.engine")

TABLE_NAME: Final = "bindings"
ROUTED_HEADER: Final = "X-Regstate-Routed"
"""Set on a request one worker forwards to another: the receiver never forwards again."""
EXIT_OUTPUT_FAILED: Final = 70
"""Exit status when an output could not be written (EX_SOFTWARE): restart to retry."""
REBUILD_CHUNK: Final = 2000
"""Table entries indexed per event-loop turn when rebuilding the expiry index."""
FAUST_OFFSET_KEY: Final = b"__faust\0offset__"
"""Faust's own bookkeeping key inside each RocksDB partition; not an AOR."""


# --------------------------------------------------------------------------- Faust edge


class IdempotentProducer(AIOKafkaProducerDriver):
    """Faust's aiokafka producer with ``acks=all`` and idempotence.

    Faust turns both on only in exactly_once mode (``_settings_extra``); regstate
    wants them in at-least-once mode too (DESIGN section 3, trap 10): a retried
    batch is then neither duplicated nor reordered within a partition.
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class EngineApp(faust.App):
    """A Faust app whose producer is :class:`IdempotentProducer`."""

    def _new_producer(self) -> ProducerT:
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


class BindingsTable(faust.Table):  # type: ignore[type-arg]  # raw bytes keys and values
    """A Faust table that remembers the changelog future of its latest write.

    ``table[k] = v`` returns nothing; the agent needs that future to hold the
    source offset until the changelog record is acknowledged.
    """

    last_changelog: FutureMessage | None = None

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> FutureMessage:
        """Faust's changelog send, its future kept in :attr:`last_changelog`."""
        fut = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        self.last_changelog = fut
        return fut


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
    datadir = Path(settings.data_dir) / "engine" / settings.worker_id
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return EngineApp(
        f"{settings.topic_prefix}engine",
        # Bootstrap servers and SASL/TLS credentials: the one Kafka client setup.
        **faust_broker_options(settings),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(datadir),
        autodiscover=False,
        # DESIGN section 7: at-least-once with an idempotent fold; never exactly_once (trap 5).
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


# --------------------------------------------------------------------------- ack ordering


class _Held:
    """One source message waiting for ``left`` outputs before it may be acked."""

    __slots__ = ("left", "message", "queue")

    def __init__(self, message: Message, left: int, queue: deque[_Held]) -> None:
        self.message = message
        self.left = left
        self.queue = queue


class AckGate:
    """Releases source messages for commit only once their outputs are acknowledged.

    Faust commits the offsets of acked messages (contiguous from the last
    commit). :meth:`hold` takes one extra reference on the message, so the
    stream's own ack does not complete it; when every output future of the
    message has succeeded, and every earlier held message of the same partition
    has been released, the reference is dropped and the message acked. Releasing
    in offset order keeps the acked offsets contiguous. A failed future calls
    ``on_failure`` and releases nothing more for that partition.
    """

    def __init__(self, consumer: Callable[[], Any], on_failure: Callable[[BaseException], None]):
        self._consumer = consumer
        self._on_failure = on_failure
        self._queues: dict[int, deque[_Held]] = {}

    def hold(self, message: Message, futures: list[asyncio.Future[Any]]) -> None:
        """Keep ``message`` from being committed until ``futures`` succeed (and those before)."""
        queue = self._queues.get(message.partition)
        if queue is None:
            queue = self._queues[message.partition] = deque()
        if not futures and not queue:
            return  # nothing in flight: the stream's own ack is already in order
        message.incref()
        held = _Held(message, len(futures), queue)
        queue.append(held)
        if not futures:
            return  # released when the messages before it are
        for fut in futures:
            fut.add_done_callback(lambda f, h=held: self._done(h, f))  # type: ignore[misc]

    def _done(self, held: _Held, fut: asyncio.Future[Any]) -> None:
        exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
        if exc is not None:
            self._on_failure(exc)
            return
        held.left -= 1
        if held.left == 0:
            queue = held.queue
            consumer = self._consumer()
            while queue and queue[0].left == 0:
                queue.popleft().message.ack(consumer)

    def pending(self) -> int:
        """Messages held, all partitions."""
        return sum(len(q) for q in self._queues.values())

    def forget(self, partitions: set[int]) -> None:
        """Drop held messages of revoked partitions: Faust will not commit them anyway."""
        for p in partitions:
            self._queues.pop(p, None)


# --------------------------------------------------------------------------- engine


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
        self._same_partitions = outputs_copartitioned

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

        # Decoded states of hot AORs; only the agent writes it, a rebalance clears it.
        self._cache: dict[bytes, AorState] = {}
        self._positions: dict[int, int] = {}
        self._owned: set[int] = set()
        self._ready = False
        self._rebuilds: dict[int, asyncio.Task[None]] = {}

        self.app.agent(self.source, name="fold")(self._fold)
        self.app.timer(settings.sweep_interval_ms / 1000, name="sweep")(self._sweep)
        # mode types a receiver as a union of callables mypy cannot match an async method to.
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        self._add_views()

    # ------------------------------------------------------------------ the agent

    async def _fold(self, stream: StreamT[bytes]) -> None:
        """Fold every record of every owned partition, in order (concurrency 1)."""
        fold_seconds = self.metrics.fold_seconds
        async for event in stream.events():
            started = time.perf_counter()
            futures = await self._handle(event)
            fold_seconds.observe(time.perf_counter() - started)
            self.gate.hold(event.message, futures)

    async def _handle(self, event: EventT[bytes]) -> list[asyncio.Future[Any]]:
        """Fold one record and start its outputs; return the futures the commit waits for."""
        msg = event.message
        partition = msg.partition
        self._positions[partition] = msg.offset + 1
        key: bytes | None = msg.key
        raw: bytes | None = msg.value
        record_ts = int(msg.timestamp * 1000) if msg.timestamp else None
        admitted = self.admission.admit(msg.topic, partition, msg.offset, key, raw, (), record_ts)
        if isinstance(admitted, DeadLetter):
            # Original headers are copied only for the rare refused record.
            letter = replace(admitted, original_headers=_headers(msg.headers))
            return [await self._dead_letter(letter)]
        assert key is not None  # admitted records have a key
        ev = admitted
        if record_ts is not None:
            self.metrics.observe_skew(ev.node, ev.ts - record_ts)
        state = self._read(key)
        try:
            folded = fold_event(state, ev, self.policy)
            # Encoding sits inside the guard too: a value the codec cannot write is
            # dead-lettered like a fold bug, never raised into the agent (D81).
            encoded = encode_state(folded.state, internal=True)
            public = _public(folded.state) if folded.events else None
            changes = [encode_binding_event(be) for be in folded.events]
        except Exception as exc:  # the policy turns a fold bug into a dead letter
            letter = self.admission.fold_failed(
                msg.topic, partition, msg.offset, key, raw, exc, _headers(msg.headers)
            )
            log.exception("fold raised on %s; dead-lettered", ev.id)
            return [await self._dead_letter(letter)]
        outcome = folded.outcome
        self.metrics.observe_fold(ev.kind, outcome)
        out = partition if self._same_partitions else None
        if outcome is Outcome.DUPLICATE:
            if state is None:
                return []
            # Redelivered after a crash: the table may be ahead of regstate.bindings.
            self.metrics.republished += 1
            return [await self._send(self.bindings_topic, key, _public(state), out)]
        new = folded.state
        self.table.last_changelog = None
        self.table[key] = encoded  # a new value, never mutated (trap 1)
        self._remember(key, new)
        futures: list[asyncio.Future[Any]] = []
        changelog = self.table.last_changelog
        if changelog is not None:
            futures.append(changelog)
        if folded.events:
            futures.append(await self._send(self.bindings_topic, key, public, out))
            self.metrics.publish_to_bindings.observe(max(0, self.now_ms() - ev.ts) / 1000)
            for be, change in zip(folded.events, changes, strict=True):
                self.metrics.binding_events[be.event] += 1
                futures.append(await self._send(self.events_topic, key, change, out))
            self.planner.observe(partition, key, new)
        return futures

    async def _dead_letter(self, letter: DeadLetter) -> asyncio.Future[Any]:
        self.metrics.deadletters[letter.reason] += 1
        log.warning(
            "dead letter %s[%d]@%d: %s: %s",
            letter.topic,
            letter.partition,
            letter.offset,
            letter.reason,
            letter.detail[:200],
        )
        return await self._send(
            self.deadletter_topic,
            letter.key,
            letter.value,
            None,
            letter.headers(self.settings.worker_id),
        )

    async def _send(
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

    def _read(self, key: bytes) -> AorState | None:
        state = self._cache.get(key)
        if state is not None:
            return state
        raw = self.table.get(key)
        if raw is None:
            return None
        state = decode_state(raw)
        self._remember(key, state)
        return state

    def _remember(self, key: bytes, state: AorState) -> None:
        cache = self._cache
        cache.pop(key, None)  # re-insert at the end: evicted last
        if len(cache) >= self.settings.state_cache_size:
            del cache[next(iter(cache))]
        cache[key] = state

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
        self._cache.clear()
        for p in gone:
            task = self._rebuilds.pop(p, None)
            if task is not None:
                task.cancel()
            self.planner.forget(p)
            self._positions.pop(p, None)
        self._owned -= gone

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
        for p in self._owned - actives:
            self.planner.forget(p)
        for p in actives - self._owned:
            self.planner.track(p)
            self._rebuilds[p] = asyncio.ensure_future(self._rebuild(p))
        self._owned = actives
        self._cache.clear()

    async def _rebuild(self, partition: int) -> None:
        """Index the AORs of one newly owned partition from the table, a chunk per loop turn."""
        started = time.monotonic()
        count = 0
        try:
            for n, (key, raw) in enumerate(self._table_items(partition), 1):
                first, bindings = _first_expiry(raw)
                if first is not None:
                    self.planner.rebuild_raw(partition, key, first, bindings)
                count = n
                if n % REBUILD_CHUNK == 0:
                    await asyncio.sleep(0)
                    if partition not in self._owned:
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

    def _table_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
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
            fut = await self._send(
                self.source_topic, item.key, encode_event(item.event), item.partition
            )
            fut.add_done_callback(self._expire_sent)

    def _read_for_sweep(self, partition: int, key: bytes) -> AorState | None:
        if partition not in self._owned:
            return None
        state = self._cache.get(key)
        if state is not None:
            return state
        raw = self.table.get(key)
        return None if raw is None else decode_state(raw)

    def _expire_sent(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.metrics.expire_send_errors += 1
            log.warning("an expire event was not appended: %r (re-planned later)", fut)
        else:
            self.metrics.expires_sent += 1

    # ------------------------------------------------------------------ views

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
        for p in sorted(self._owned):
            tp = TP(self.source_topic, p)
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001, S112 - not fetched yet: no figure
                continue
            if high is None:
                continue
            out[p] = max(0, int(high) - self._positions.get(p, int(high)))
        return out

    def _add_views(self) -> None:
        engine = self
        # The shared bearer-token check (streams/webserver.py), on each data view.
        auth = HttpAuth.from_settings(self.settings)
        self._http_auth = auth

        def refused(view: View, request: Request) -> Response | None:
            if auth.allows(request.rel_url.path, request.headers.get("Authorization")):
                return None
            return view.json({"error": "unauthorized"}, status=401, headers=dict(UNAUTHORIZED))

        @self.app.page("/v1/aors/{aor}")
        async def aor(view: View, request: Request, aor: str) -> Response:
            return refused(view, request) or await engine._aor_view(view, request, aor)

        @self.app.page("/healthz")
        async def healthz(view: View, request: Request) -> Response:
            return view.json({"status": "ok", "worker": engine.settings.worker_id})

        @self.app.page("/readyz")
        async def readyz(view: View, request: Request) -> Response:
            ready = engine.ready()
            body = {
                "ready": ready,
                "worker": engine.settings.worker_id,
                "partitions": sorted(engine._owned),
            }
            return view.json(body, status=200 if ready else 503)

        @self.app.page("/v1/problems")
        async def problems(view: View, request: Request) -> Response:
            return refused(view, request) or await engine._problems_view(view, request)

        @self.app.page("/metrics")
        async def metrics(view: View, request: Request) -> Response:
            text = render(
                engine.metrics,
                worker=engine.settings.worker_id,
                lag=engine.lag(),
                bindings=engine.planner.bindings(),
                ready=engine.ready(),
                pending_expires=engine.planner.pending_sends(),
            )
            return view.text(text, content_type="text/plain; version=0.0.4")

    async def _aor_view(self, view: View, request: Request, aor: str) -> Response:
        """``GET /v1/aors/{aor}``: active contacts of one AOR, from whichever worker owns it."""
        try:
            canonical = canonical_aor(aor)
        except AorError as exc:
            return view.json({"error": "invalid_aor", "detail": str(exc)}, status=400)
        key = canonical.encode()
        partition = kafka_partition(key, self.settings.partitions)
        if not self.ready():
            return view.json({"error": "not_ready"}, status=503)
        distribution = self.app.assignor.changelog_distribution  # type: ignore[attr-defined]  # faust's PartitionAssignor
        owner = owner_of(distribution, self.table.changelog_topic_name, partition)
        if owner is None:
            return view.json({"error": "no_owner", "partition": partition}, status=503)
        if not same_worker(owner, str(self.app.conf.canonical_url)):
            if request.headers.get(ROUTED_HEADER):
                # The sender's assignment is newer or older than ours: don't ping-pong.
                return view.json({"error": "not_owner", "partition": partition}, status=503)
            return await self._forward(view, owner, canonical)
        if partition not in self._owned:
            return view.json({"error": "recovering", "partition": partition}, status=503)
        raw = self.table.get(key)
        state = None if raw is None else decode_state(raw)
        active = None if state is None else state.only_active(self.now_ms())
        if active is None or not active.contacts:
            # Issue 16 point 6: the 404 says why (the AOR's last health).
            return view.json(not_found_body(canonical, state), status=404)
        return view.bytes(
            encode_state(active, internal=False), content_type="application/json", status=200
        )

    async def _problems_view(self, view: View, request: Request) -> Response:
        """``GET /v1/problems?state=...&limit=N``: AORs of this worker's partitions by health.

        Each worker answers for the partitions it owns (``partitions`` in the
        body); a whole-cluster view asks every worker, or runs ``regstate problems``.
        """
        if not self.ready():
            return view.json({"error": "not_ready"}, status=503)
        owned = sorted(self._owned)
        states = (decode_state(raw) for p in owned for _, raw in self._table_items(p))
        status, body = problems_response(
            states,
            state_params=[v for k, v in request.query.items() if k == "state"],
            limit_param=request.query.get("limit"),
            now_ms=self.now_ms(),
        )
        body.update(worker=self.settings.worker_id, partitions=owned)
        return view.json(body, status=status)

    async def _forward(self, view: View, owner: str, aor: str) -> Response:
        from urllib.parse import quote

        url = f"{owner.rstrip('/')}/v1/aors/{quote(aor, safe=':@')}"
        try:
            async with self.app.http_client.get(
                url,
                headers={
                    ROUTED_HEADER: self.settings.worker_id,
                    **self._http_auth.client_headers(),
                },
            ) as resp:
                body = await resp.read()
                return view.bytes(body, content_type="application/json", status=resp.status)
        except Exception as exc:  # noqa: BLE001 - any transport error is "owner unreachable"
            return view.json({"error": "owner_unreachable", "detail": repr(exc)}, status=503)


def _public(state: AorState) -> bytes | None:
    """regstate.bindings value: the public AorState, or a tombstone when no contact is left."""
    return encode_state(state, internal=False) if state.contacts else None


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


def _first_expiry(raw: bytes) -> tuple[int | None, int]:
    """Earliest binding expiry and binding count of an internal AorState JSON."""
    try:
        contacts = orjson.loads(raw).get("contacts") or ()
        expiries = [c["expires_at"] for c in contacts]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None, 0
    return (min(expiries) if expiries else None), len(expiries)
