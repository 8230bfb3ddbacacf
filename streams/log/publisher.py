"""Appending RegistrationEvents to regstate.registrations (docs/design.md sections 3 and 7).

Every producer of that topic must behave the same way, so they all go through
:class:`EventPublisher` (``regstate publish``, front-end nodes via
:meth:`EventPublisher.append`, exports); its connection settings come from
:mod:`streams.log.kafka_config` like every Kafka client's:

* key = canonical AOR as UTF-8 bytes, value = :func:`schemas.encode_event` (msgpack);
* aiokafka's default partitioner, which is murmur2 over the key bytes exactly as
  the Java client's (``toPositive(murmur2(key)) % partitions``), so every client
  in any language puts one AOR in one partition;
* ``acks='all'`` and idempotence, so a retried batch is neither duplicated nor
  reordered: the events of one AOR stay in the order they were sent.

The record timestamp is left to the producer (send time), not set to the
event's ``ts``: the engine compares the two to measure node clock skew
(docs/design.md section 6), and a replayed old file must not be deleted on arrival by
time-based retention.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from processors.sipuri import AorError, canonical_aor
from schemas import RegistrationEvent, encode_event
from streams.log.kafka_config import client_config
from streams.log.topics import REGISTRATIONS
from streams.settings import Settings

DEFAULT_LINGER_MS: Final = 5
"""Waiting up to 5 ms fills batches under load and adds little latency to a live node."""
DEFAULT_MAX_IN_FLIGHT: Final = 10_000
"""Records sent but not yet acknowledged; bounds memory and the work lost to a failure."""
MAX_BATCH_BYTES: Final = 512 * 1024
"""Per-partition batch size. aiokafka's 16 KiB holds ~40 events and caps throughput."""
_YIELD_EVERY: Final = 256
"""Give the producer's sender task a turn every so many sends, so batches leave
while the next ones are being encoded (sends that fit a batch never yield)."""


class PublishError(RuntimeError):
    """The topic cannot be published to (missing, or the wrong partition count)."""


@dataclass
class PublishReport:
    """What a publish achieved. ``ok`` only when every event offered was acknowledged."""

    published: int = 0
    """Acknowledged by the broker with acks=all: durable on every in-sync replica."""
    failed: int = 0
    """Sent (or attempted) but not acknowledged."""
    invalid: int = 0
    """Not sent: the AOR is not canonicalizable (no valid key)."""
    not_sent: int = 0
    """Not attempted because an earlier record failed (sending stops at the first failure)."""
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    """The first few error messages, for the operator."""
    per_partition: Counter[int] = field(default_factory=Counter)
    """Acknowledged records per partition."""

    @property
    def ok(self) -> bool:
        """Every event offered was acknowledged."""
        return self.failed == 0 and self.invalid == 0 and self.not_sent == 0

    @property
    def rate(self) -> float:
        """Acknowledged events per second of wall time."""
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def note_error(self, message: str) -> None:
        """Keep the first few error messages (one failure often fails many records)."""
        if len(self.errors) < 5:
            self.errors.append(message)


def record_key(aor: str) -> bytes:
    """The Kafka key of an AOR: its canonical form (rule R1), UTF-8. Raises AorError."""
    return canonical_aor(aor).encode("utf-8")


class EventPublisher:
    """A started producer for regstate.registrations, with a bounded window of unacked sends.

    Use as ``async with EventPublisher(settings) as pub: await pub.send(e) ...;
    report = await pub.flush()``. ``send`` returns once the record is queued;
    when ``max_in_flight`` records are unacknowledged it first waits until a
    quarter of them are settled. Each record is counted (and ``on_ack(1)``
    called) as soon as its acknowledgement arrives. After the first failed
    record, ``send`` refuses further records (returns False): continuing could
    put a later event of an AOR in the log before an earlier one that failed,
    and the fold would then skip the earlier one as a duplicate when it is
    published again (R5).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        linger_ms: int = DEFAULT_LINGER_MS,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        on_ack: Callable[[int], None] | None = None,
        client_id: str = "regstate-publisher",
        check_partitions: bool = True,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic(REGISTRATIONS)
        self.report = PublishReport()
        self._max_in_flight = max(1, max_in_flight)
        self._on_ack = on_ack
        self._check_partitions = check_partitions
        self._unsettled = 0
        """Records handed to the producer whose future has not completed yet."""
        self._room: asyncio.Future[None] | None = None
        self._room_at = 0
        self._since_yield = 0
        self._started_at = 0.0
        self._linger_ms = linger_ms
        self._client_id = client_id
        self._request_timeout_ms = request_timeout_ms
        self._producer: Any = None

    async def start(self) -> None:
        """Connect, and check that the topic exists with ``settings.partitions`` partitions.

        Raises PublishError on a missing topic or another partition count (the
        keys would hash to other partitions than the table's), and aiokafka's
        KafkaError when Kafka is unreachable.
        """
        self._producer = AIOKafkaProducer(
            **client_config(self.settings, self._client_id),
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_batch_size=MAX_BATCH_BYTES,
            request_timeout_ms=self._request_timeout_ms,
        )
        # The default partitioner is relied on (murmur2, as Java's): never pass one.
        try:
            await self._producer.start()
        except BaseException:
            # A producer that failed to bootstrap still holds its client's tasks.
            producer, self._producer = self._producer, None
            await producer.stop()
            raise
        self._started_at = time.monotonic()
        try:
            partitions = await self._producer.partitions_for(self.topic)
        except KafkaError as exc:
            await self.stop()
            raise PublishError(
                f"topic {self.topic} not found ({type(exc).__name__}); "
                "run `regstate topics ensure` first"
            ) from exc
        if self._check_partitions and len(partitions) != self.settings.partitions:
            await self.stop()
            raise PublishError(
                f"topic {self.topic} has {len(partitions)} partitions but "
                f"REGSTATE_PARTITIONS is {self.settings.partitions}: events would be "
                "keyed to other partitions than the table's"
            )

    async def append(self, event: RegistrationEvent) -> asyncio.Future[Any]:
        """Hand one event to the producer in call order; its future is the broker's ack.

        The front-end's path (streams/frontend/eventlog.py): each event has its own
        outcome (a phone's 200 or 503), so unlike :meth:`send` a failure neither
        stops later appends nor counts in :attr:`report`. ``event.aor`` must be
        canonical already (the registrar canonicalized it). Raises KafkaError or
        AorError when the record cannot even be queued.
        """
        future: asyncio.Future[Any] = await self._producer.send(
            self.topic, encode_event(event), key=record_key(event.aor)
        )
        return future

    async def stop(self) -> None:
        """Flush what is queued and close the connections (idempotent)."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def failed(self) -> bool:
        """A record has failed; further sends are refused."""
        return self.report.failed > 0

    async def send(self, event: RegistrationEvent) -> bool:
        """Queue one event (its AOR canonicalized). False if refused (invalid AOR, or failed).

        The key is the canonical AOR and the value's ``aor`` is rewritten to it
        when it differs, so key and value always agree.
        """
        if self.failed:
            self.report.not_sent += 1
            return False
        try:
            key = record_key(event.aor)
        except AorError as exc:
            self.report.invalid += 1
            self.report.note_error(f"{event.id}: {exc}")
            return False
        aor = key.decode("utf-8")
        if aor != event.aor:
            event = event._replace(aor=aor)
        if self._unsettled >= self._max_in_flight:
            # Wake up once a quarter of the window is settled, not at every
            # acknowledgement: each wake-up is a loop turn, and loop turns make the
            # sender ship smaller, more numerous produce requests.
            await self._wait_until_at_most(self._max_in_flight * 3 // 4)
        if self.failed:
            self.report.not_sent += 1
            return False
        try:
            future = await self._producer.send(self.topic, encode_event(event), key=key)
        except KafkaError as exc:
            self._fail(f"{event.id}: {type(exc).__name__}: {exc}")
            return False
        self._unsettled += 1
        future.add_done_callback(self._settle)
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            await asyncio.sleep(0)
        return not self.failed

    async def flush(self) -> PublishReport:
        """Wait for every queued record's acknowledgement; return the report so far.

        When it returns, each event offered since start is counted exactly once
        in published, failed, invalid or not_sent.
        """
        if self._producer is not None:
            await self._producer.flush()
        await self._wait_until_at_most(0)
        self.report.elapsed_s = time.monotonic() - self._started_at
        return self.report

    async def _wait_until_at_most(self, limit: int) -> None:
        """Return once at most ``limit`` records are unsettled (``_settle`` wakes it)."""
        while self._unsettled > limit:
            self._room_at = limit
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def _settle(self, future: asyncio.Future[Any]) -> None:
        """Count one record as it is acknowledged or fails (a done callback: runs promptly)."""
        self._unsettled -= 1
        room = self._room
        if room is not None and self._unsettled <= self._room_at:
            self._room = None
            if not room.done():
                room.set_result(None)
        if future.cancelled():
            self._fail("send cancelled")
            return
        exc = future.exception()
        if exc is not None:
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self.report.published += 1
        self.report.per_partition[future.result().partition] += 1
        if self._on_ack is not None:
            self._on_ack(1)

    def _fail(self, message: str) -> None:
        self.report.failed += 1
        self.report.note_error(message)


async def publish_events(
    settings: Settings,
    events: Iterable[RegistrationEvent],
    *,
    linger_ms: int = DEFAULT_LINGER_MS,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    on_ack: Callable[[int], None] | None = None,
) -> PublishReport:
    """Append ``events`` in order to regstate.registrations; return once all are settled.

    The topic must exist (see :func:`streams.log.topics.ensure_topics`) with
    ``settings.partitions`` partitions, else PublishError. ``events`` is consumed
    lazily and entirely, also after a failure (those count as ``not_sent``).
    ``report.ok`` is true only when every event was acknowledged with acks=all.
    ``on_ack(n)`` is called as each acknowledgement arrives (for a progress bar).
    """
    async with EventPublisher(
        settings, linger_ms=linger_ms, max_in_flight=max_in_flight, on_ack=on_ack
    ) as publisher:
        for event in events:
            await publisher.send(event)
        return await publisher.flush()
