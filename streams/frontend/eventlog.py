"""The front-end's path to regstate.registrations: ordered appends with per-event acks.

:class:`KafkaEventLog` appends through :class:`streams.log.publisher.EventPublisher`,
the one producer of the project's contract (docs/design.md section 3, D12): key = canonical
AOR bytes, Kafka's default murmur2 partitioner, ``acks='all'``, idempotence, the
connection settings of :mod:`streams.log.kafka_config`. Events are
handed to the producer in the order :meth:`append` is called (one sender task
drains a queue), so one node's events of one AOR reach the log in ``seq``
order. Each append returns a future that resolves when the broker acknowledged
the record with acks=all, or fails; the node sends a 200 only after that.

While Kafka cannot be reached at start, :attr:`ready` is false and the node
answers 503; the producer is retried in the background. :attr:`healthy` (what
``/readyz`` reports, D88) is also false after a record failed, or while the
oldest record in flight has waited longer than the ack timeout, until the next
acknowledgement: the node keeps trying (that is how it notices Kafka is back),
and a load balancer sends phones elsewhere meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from typing import Any, Final, Protocol

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from schemas import RegistrationEvent
from streams.aio import cancel_and_wait
from streams.log.kafka_config import describe_failure
from streams.log.publisher import EventPublisher, PublishError
from streams.log.topics import REGISTRATIONS
from streams.settings import Settings, SettingsError

log = logging.getLogger("regstate.frontend")

RETRY_START_S: Final = 1.0
MAX_QUEUED: Final = 10_000
"""Events waiting for the producer; past it an append fails at once (the node answers
503) instead of the queue growing while Kafka is slow (D86)."""
REQUEST_TIMEOUT_MS: Final = 10_000
"""A record not acknowledged within this fails (the node has long answered 503 by then)."""


class EventLog(Protocol):
    """Where a node's RegistrationEvents go."""

    @property
    def ready(self) -> bool:
        """Appends can currently succeed (a producer is connected)."""
        ...

    @property
    def healthy(self) -> bool:
        """Ready, and the last record was acknowledged with none stuck since (``/readyz``)."""
        ...

    def append(self, event: RegistrationEvent) -> asyncio.Future[None]:
        """Queue ``event``; the future resolves once it is durable in the log."""
        ...


class KafkaEventLog:
    """An :class:`EventLog` on regstate.registrations (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        client_id: str = "regstate-frontend",
        stall_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.stall_s = settings.sip_ack_timeout_ms / 1000 if stall_s is None else stall_s
        self._failing = False
        self._inflight: deque[float] = deque()
        self.topic = settings.topic(REGISTRATIONS)
        self._client_id = client_id
        self._producer: EventPublisher | None = None
        self._queue: asyncio.Queue[tuple[RegistrationEvent, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.acked = 0
        self.failed = 0
        self.last_error = ""

    @property
    def ready(self) -> bool:
        """A producer is started and the topic has the table's partition count."""
        return self._producer is not None

    @property
    def healthy(self) -> bool:
        """See the module docstring: flips on a failure or a stall, back on the next ack."""
        if self._producer is None or self._failing:
            return False
        return not self._inflight or time.monotonic() - self._inflight[0] <= self.stall_s

    def append(self, event: RegistrationEvent) -> asyncio.Future[None]:
        """Queue one event in order; see the module docstring."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._queue.qsize() >= MAX_QUEUED:
            self.failed += 1
            future.set_exception(ConnectionError(f"{MAX_QUEUED} events already queued"))
            return future
        self._queue.put_nowait((event, future))
        return future

    async def start(self) -> None:
        """Start the sender task; it connects (retrying) in the background."""
        self._task = asyncio.create_task(self._run(), name="regstate-frontend-eventlog")

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until connected, at most ``timeout_s``; whether it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self.ready

    async def stop(self) -> None:
        """Flush what was handed to the producer and close it."""
        await cancel_and_wait(self._task)
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(KafkaError):
                await producer.stop()
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(ConnectionError("event log stopped"))

    async def _connect(self) -> None:
        while True:
            producer = EventPublisher(
                self.settings,
                linger_ms=1,
                client_id=self._client_id,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
            )
            try:
                await producer.start()
            except (KafkaError, OSError, PublishError, SettingsError) as exc:
                if isinstance(exc, PublishError | SettingsError):
                    self.last_error = str(exc)
                else:
                    # Names the REGSTATE_KAFKA_* setting when access is the cause.
                    self.last_error = await describe_failure(self.settings, exc)
                log.warning("event log not ready (%s); retrying", self.last_error)
                await asyncio.sleep(RETRY_START_S)
                continue
            self._producer = producer
            self._connected.set()
            log.info("event log ready: %s", self.topic)
            return

    async def _run(self) -> None:
        await self._connect()
        producer = self._producer
        assert producer is not None
        while True:
            event, future = await self._queue.get()
            if future.cancelled():
                continue
            try:
                delivery = await producer.append(event)
            except (KafkaError, ValueError) as exc:
                self._failing = True
                self._settle(future, exc)
                continue
            self._inflight.append(time.monotonic())
            delivery.add_done_callback(functools.partial(self._delivered, future=future))

    def _delivered(self, delivery: asyncio.Future[Any], *, future: asyncio.Future[None]) -> None:
        exc = delivery.exception() if not delivery.cancelled() else ConnectionError("cancelled")
        if self._inflight:
            self._inflight.popleft()  # acks come in order per partition: close enough
        if exc is None:
            if self._failing:
                log.info("event log acknowledged again: ready")
            self._failing = False
        elif not self._failing:
            self._failing = True
            log.warning("event log failing (%s): not ready", exc)
        self._settle(future, exc)

    def _settle(self, future: asyncio.Future[None], exc: BaseException | None) -> None:
        if exc is None:
            self.acked += 1
            if not future.done():
                future.set_result(None)
            return
        self.failed += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not future.done():
            future.set_exception(exc)
        else:
            log.warning("event not logged: %s", self.last_error)
