"""``regstate dialer-view``: a dialer server's materialized copy of regstate.bindings.

Reads regstate.bindings (never Faust's changelog, never a GlobalTable: docs/design.md
section 9 trap 7) with a group-less consumer whose partitions are assigned by
hand and sought to the offsets stored in the local store, so offsets live in
exactly one place and advance in the same transaction as the rows. Serves
lookups over HTTP, and pushes regstate.binding-events as server-sent events.

Guarantees:

* each fetched batch is applied with its offsets in one transaction
  (:meth:`BindingStore.apply_batch`); a restart resumes from the stored offsets;
* ``GET /readyz`` answers 200 only once every partition was read up to the end
  offset seen at start, and the push consumer has its start position;
* lookups answer only contacts active at the view's clock (R6).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from tqdm import tqdm

from processors.dialer import EMPTY_SERVER_MAP, ServerMap, extension_of, is_aor
from schemas.codec import binding_event_from_dict, binding_event_to_dict
from streams.clock import Clock, now_ms
from streams.dialer.phones import is_dsn, load_phones, read_errors
from streams.dialer.report import build_reports, placements
from streams.dialer.store import (
    NO_EXTRA_TABLES,
    BindingStore,
    ExtraTables,
    SqliteBindingStore,
    StoreRecord,
    record_from_json,
    tombstone,
)
from streams.log.kafka_config import client_config
from streams.log.snapshot import partitions_of
from streams.log.topics import BINDING_EVENTS, BINDINGS
from streams.metrics import CONTENT_TYPE
from streams.metrics.dialer import DialerMetrics, render_metrics
from streams.settings import Settings
from streams.webserver import serve

log = logging.getLogger(__name__)

SSE_QUEUE = 1000
"""Events buffered per SSE client; a client that falls further behind is disconnected
(it reconnects and re-reads the snapshot) rather than growing memory without bound."""
SSE_KEEPALIVE_S = 15.0
SSE_MAX_SUBSCRIBERS = 256
"""Open SSE streams per view; more get 503 (each holds a queue of up to SSE_QUEUE events)."""
SSE_WRITE_TIMEOUT_S = 10.0
"""A client that does not take a write within this long is disconnected (a stalled
reader would otherwise pin its socket buffers and queue)."""


@dataclass(frozen=True, slots=True)
class _Subscriber:
    ext: str | None
    aor: str | None
    queue: asyncio.Queue[bytes | None]

    def wants(self, aor: str) -> bool:
        if self.aor is not None:
            return aor == self.aor
        if self.ext is not None:
            return extension_of(aor) == self.ext
        return True


StoreOpener = Callable[[bool], BindingStore]
"""Opens the store: ``True`` for the writer, ``False`` for the reader. Each is opened and
used in a thread of its own, never on the event loop (MariaDB's driver blocks)."""


def sqlite_opener(
    path: str, clock: Clock = now_ms, tables: ExtraTables = NO_EXTRA_TABLES
) -> StoreOpener:
    """A :data:`StoreOpener` for the SQLite file at ``path``."""

    def open_store(writer: bool) -> BindingStore:
        if writer:
            return SqliteBindingStore(path, clock=clock, check_same_thread=False, tables=tables)
        return SqliteBindingStore(path, read_only=True, clock=clock, check_same_thread=False)

    return open_store


class DialerViewService:
    """The consumer loop, the push consumer and the HTTP API of one dialer view."""

    def __init__(
        self,
        settings: Settings,
        open_store: StoreOpener,
        *,
        server_map: ServerMap = EMPTY_SERVER_MAP,
        clock: Clock = now_ms,
        progress: bool | None = None,
        batch_records: int | None = None,
        phones_source: str = "",
    ) -> None:
        self.settings = settings
        self.phones_source = phones_source
        self.open_store = open_store
        self.server_map = server_map
        self.clock = clock
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.batch_records = (
            settings.dialer_batch_records if batch_records is None else batch_records
        )
        self.metrics = DialerMetrics(phones_expected=len(server_map.phones))
        self.topic = settings.topic(BINDINGS)
        self.events_topic = settings.topic(BINDING_EVENTS)
        self.caught_up = asyncio.Event()
        self.events_ready = asyncio.Event()
        # One thread owns the writer connection, one the reader's: neither SQLite writes
        # nor a MariaDB round trip ever blocks the loop (and each connection stays in
        # the thread that opened it). Lookups queue behind each other, not behind writes.
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dialer-store")
        self._reader_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dialer-read")
        # Phones are read from their source (a database, a file) off the loop too.
        self._phones_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dialer-phones")
        self._writer: BindingStore | None = None
        self._reader: BindingStore | None = None
        self._subscribers: set[_Subscriber] = set()
        self._web: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def ready(self) -> bool:
        """Caught up with the end offsets seen at start, and the push consumer positioned."""
        return self.caught_up.is_set() and self.events_ready.is_set()

    async def _in_writer(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, fn)

    async def _in_reader(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._reader_pool, fn)

    # -- lifecycle -----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then stop the consumers and close the store."""
        self._writer = await self._in_writer(lambda: self.open_store(True))
        self._reader = await self._in_reader(lambda: self.open_store(False))
        try:
            writer, current = self._writer, self.server_map
            await self._in_writer(lambda: writer.replace_phones(current.phones, current.nodes))
            await self.start_web()
            tasks = [
                asyncio.create_task(self._consume_bindings(), name="dialer-bindings"),
                asyncio.create_task(self._consume_events(), name="dialer-events"),
            ]
            if self.phones_source:
                tasks.append(asyncio.create_task(self._refresh_phones(), name="dialer-phones"))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in [*tasks, stopper]:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            for t in done:
                if t is not stopper and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for sub in list(self._subscribers):
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(None)
            if self._web is not None:
                await self._web.cleanup()
            reader = self._reader
            if reader is not None:
                await self._in_reader(reader.close)
            writer = self._writer
            if writer is not None:
                await self._in_writer(writer.close)
            self._writer_pool.shutdown(wait=True)
            self._reader_pool.shutdown(wait=True)
            self._phones_pool.shutdown(wait=True)

    async def _refresh_phones(self) -> None:
        """Read the phones source every ``dialer_phones_refresh_s`` in its thread; swap the map
        (one assignment: a lookup sees the old map or the new, never half) and rewrite
        ``regstate_phones`` in the writer thread. A failed read keeps the last map."""
        loop = asyncio.get_running_loop()
        errors = read_errors()
        writer = self._writer
        assert writer is not None
        while True:
            await asyncio.sleep(self.settings.dialer_phones_refresh_s)
            try:
                phones = await loop.run_in_executor(
                    self._phones_pool, load_phones, self.phones_source
                )
            except errors as exc:  # a database or file error: keep serving the old map
                self.metrics.phones_refresh_errors += 1
                log.warning("phones refresh from %s failed: %s", self._phones_origin(), exc)
                continue
            new_map = ServerMap(phones, self.server_map.nodes)
            await self._in_writer(
                functools.partial(writer.replace_phones, new_map.phones, new_map.nodes)
            )
            self.server_map = new_map
            self.metrics.phones_refreshes += 1
            self.metrics.phones_expected = len(phones)

    def _phones_origin(self) -> str:
        """The phones source without a password (for logs)."""
        if is_dsn(self.phones_source):
            return self.phones_source.split("@", 1)[-1]
        return self.phones_source

    async def start_web(self) -> None:
        """Start the HTTP API on ``dialer_web_port`` (0: any free port, kept in ``port``)."""
        app = web.Application()
        app.router.add_get("/v1/extensions/{ext}", self.h_extension)
        app.router.add_get("/v1/aors/{aor}", self.h_aor)
        app.router.add_get("/v1/events", self.h_events)
        app.router.add_get("/metrics", self.h_metrics)
        app.router.add_get("/healthz", self.h_healthz)
        app.router.add_get("/readyz", self.h_readyz)
        self._web, self.port = await serve(
            app, self.settings.web_bind, self.settings.dialer_web_port, self.settings
        )
        log.info("dialer view listening on %s:%s", self.settings.web_bind, self.port)

    def _consumer(self) -> Any:
        return AIOKafkaConsumer(
            **client_config(self.settings, "regstate-dialer-view"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    # -- regstate.bindings -> store ------------------------------------------

    async def _consume_bindings(self) -> None:
        assert self._writer is not None
        writer = self._writer
        consumer = self._consumer()
        await consumer.start()
        bar: tqdm[Any] | None = None
        try:
            tps = await partitions_of(consumer, self.topic, 60.0)
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)
            ends = {tp.partition: end[tp] for tp in tps}
            dropped = await self._in_writer(lambda: writer.keep_only(self.topic, ends))
            if dropped is not None:
                log.warning(
                    "dialer view: %s; dropped it, reading %s from the start", dropped, self.topic
                )
            stored = await self._in_writer(lambda: writer.offsets(self.topic))
            for tp in tps:
                if tp.partition in stored:
                    consumer.seek(tp, stored[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            next_off = {tp: stored.get(tp.partition, 0) for tp in tps}
            self.metrics.resumed_from = {tp.partition: next_off[tp] for tp in tps}
            self.metrics.bootstrap_target = ends
            behind = sum(max(0, end[tp] - next_off[tp]) for tp in tps)
            if self.progress and behind:
                bar = tqdm(total=behind, unit="rec", desc="dialer-view bootstrap", file=sys.stderr)
            started = time.monotonic()

            async def check_caught_up() -> None:
                if self.caught_up.is_set():
                    return
                for tp in tps:
                    # Compaction leaves gaps: the fetch position, not the last record, counts.
                    if max(next_off[tp], await consumer.position(tp)) < end[tp]:
                        return
                self.caught_up.set()
                if bar is not None:
                    bar.close()
                log.info(
                    "dialer view caught up: %d records applied in %.1f s",
                    self.metrics.records_applied,
                    time.monotonic() - started,
                )

            await check_caught_up()
            # One write in flight while the next batch is fetched and decoded: SQLite
            # releases the GIL while it writes, so the two overlap on two cores.
            in_flight: asyncio.Future[Any] | None = None
            in_flight_count = 0
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=self.batch_records)
                records: list[StoreRecord] = []
                new_offsets: dict[tuple[str, int], int] = {}
                for tp, msgs in batches.items():
                    for m in msgs:
                        if m.offset < next_off[tp]:
                            self.metrics.records_reread += 1
                            continue
                        next_off[tp] = m.offset + 1
                        new_offsets[(tp.topic, tp.partition)] = m.offset + 1
                        rec = self._decode(m, writer.tables)
                        if rec is not None:
                            records.append(rec)
                if in_flight is not None:
                    await in_flight
                    if bar is not None and not self.caught_up.is_set():
                        bar.update(in_flight_count)
                    in_flight = None
                if new_offsets:
                    # Batches are applied in fetch order: the next one is submitted only
                    # after the previous committed, so stored offsets never skip ahead.
                    # Readers see a batch as soon as the thread commits it.
                    in_flight = asyncio.get_running_loop().run_in_executor(
                        self._writer_pool, functools.partial(self._apply, records, new_offsets)
                    )
                    in_flight_count = len(records)
                if in_flight is None:
                    # Ready only once what was fetched is committed, not merely fetched.
                    await check_caught_up()
        finally:
            if bar is not None:
                bar.close()
            await consumer.stop()

    def _apply(self, records: list[StoreRecord], offsets: dict[tuple[str, int], int]) -> None:
        """In the writer thread: one transaction, then the counters (so they never run
        ahead of what is committed)."""
        assert self._writer is not None
        self._writer.apply_batch(records, offsets)
        self.metrics.batches += 1
        self.metrics.records_applied += len(records)
        now, lag = now_ms(), self.metrics.apply_lag
        for rec in records:
            lag.observe(max(0, now - rec.ts) / 1000)

    def _decode(self, m: Any, tables: ExtraTables) -> StoreRecord | None:
        if m.key is None:
            self.metrics.decode_errors += 1
            return None
        try:
            aor = m.key.decode("utf-8")
            ts = int(m.timestamp)
            if m.value is None:
                return tombstone(aor, ts)
            return record_from_json(aor, m.value, ts, tables)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # The engine dead-letters bad input; a bad record here is counted and skipped
            # (the next record of the AOR replaces it).
            self.metrics.decode_errors += 1
            log.warning("undecodable record %s/%s@%s: %s", m.topic, m.partition, m.offset, exc)
            return None

    # -- regstate.binding-events -> SSE --------------------------------------

    async def _consume_events(self) -> None:
        consumer = self._consumer()
        await consumer.start()
        try:
            tps = await partitions_of(consumer, self.events_topic, 60.0)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                # Resolve the lazy seek now: events appended after readiness are pushed.
                await consumer.position(tp)
            self.events_ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for msgs in batches.values():
                    for m in msgs:
                        self._push(m.value)
        finally:
            await consumer.stop()

    def _push(self, value: bytes | None) -> None:
        if value is None or not self._subscribers:
            return
        try:
            be = binding_event_from_dict(orjson.loads(value))
            if type(be.aor) is not str or type(be.version) is not int or type(be.node) is not str:
                raise TypeError("aor/node must be strings, version an integer")
        except (ValueError, KeyError, TypeError, AttributeError):
            # A record the engine did not write: counted and skipped, never fatal (D82).
            self.metrics.decode_errors += 1
            return
        payload: bytes | None = None
        for sub in list(self._subscribers):
            if not sub.wants(be.aor):
                continue
            if payload is None:
                d = binding_event_to_dict(be)
                ext = extension_of(be.aor)
                check = self.server_map.check(ext, be.node)
                d["extension"] = ext
                d["expected_server"] = check.expected_server
                d["node_server"] = check.node_server
                d["mismatch"] = check.mismatch
                payload = (
                    f"id: {be.version}\nevent: {be.event}\ndata: ".encode()
                    + orjson.dumps(d)
                    + b"\n\n"
                )
            try:
                sub.queue.put_nowait(payload)
                self.metrics.events_pushed += 1
            except asyncio.QueueFull:
                self._subscribers.discard(sub)
                self.metrics.sse_dropped += 1
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.get_nowait()
                    sub.queue.put_nowait(None)

    # -- HTTP ----------------------------------------------------------------

    def _json(self, body: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    async def h_extension(self, request: web.Request) -> web.Response:
        """All AORs with that extension and their active contacts; 404 when none is active."""
        assert self._reader is not None
        reader = self._reader
        ext = request.match_info["ext"]
        now = self.clock()
        rows = await self._in_reader(lambda: reader.lookup_extension(ext, now))
        by_aor: dict[str, list[dict[str, Any]]] = {}
        for p in placements(rows, self.server_map, now):
            by_aor.setdefault(p.row.aor, []).append(p.as_dict())
        body = {
            "extension": ext,
            "now": now,
            "aors": [{"aor": a, "contacts": c} for a, c in by_aor.items()],
        }
        return self._json(body, 200 if by_aor else 404)

    async def h_aor(self, request: web.Request) -> web.Response:
        """The AOR's active contacts and last-known health; 404 when no contact is active."""
        assert self._reader is not None
        reader = self._reader
        aor = request.match_info["aor"]
        now = self.clock()
        server_map = self.server_map
        reports = (
            await self._in_reader(lambda: build_reports(reader, aor, server_map, now))
            if is_aor(aor)
            else []
        )
        body: dict[str, Any] = reports[0].as_dict() if reports else {"aor": aor, "contacts": []}
        body["now"] = now
        return self._json(body, 200 if reports and reports[0].active else 404)

    async def h_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events of regstate.binding-events, filtered by ``ext`` or ``aor``.

        The first bytes are the comment ``: subscribed``: events appended after the
        client read it are delivered (at most once; a gap in ``version`` tells the
        client to re-read ``/v1/aors/{aor}``).
        """
        ext = request.query.get("ext")
        aor = request.query.get("aor")
        if len(self._subscribers) >= SSE_MAX_SUBSCRIBERS:
            self.metrics.sse_refused += 1
            return self._json({"error": "too many event streams"}, 503)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        sub = _Subscriber(ext, aor, asyncio.Queue(SSE_QUEUE))
        self._subscribers.add(sub)
        self.metrics.sse_clients += 1
        try:
            await resp.write(b": subscribed\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), SSE_KEEPALIVE_S)
                except TimeoutError:
                    item = b": keepalive\n\n"
                if item is None:
                    break
                await asyncio.wait_for(resp.write(item), SSE_WRITE_TIMEOUT_S)
        except ConnectionResetError:
            pass  # the client went away
        except TimeoutError:
            self.metrics.sse_dropped += 1  # a client that stopped reading
        finally:
            self._subscribers.discard(sub)
            self.metrics.sse_clients -= 1
        return resp

    async def h_metrics(self, request: web.Request) -> web.Response:
        """Prometheus text."""
        reader = self._reader
        rows = await self._in_reader(reader.count_rows) if reader is not None else 0
        text = render_metrics(self.metrics, ready=self.ready, rows=rows)
        return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE})

    async def h_healthz(self, request: web.Request) -> web.Response:
        """200 while the process serves."""
        return web.Response(text="ok\n")

    async def h_readyz(self, request: web.Request) -> web.Response:
        """200 once caught up (see :attr:`ready`), 503 before."""
        if self.ready:
            return web.Response(text="ready\n")
        return web.Response(text="bootstrapping\n", status=503)
