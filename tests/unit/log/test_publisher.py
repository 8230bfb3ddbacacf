"""EventPublisher bookkeeping without a broker: keys, window, acknowledgements, failures.

The producer is replaced by a fake whose record futures the test resolves, so
every path (ack, failure, full window) is driven deterministically.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import pytest
from aiokafka.errors import KafkaTimeoutError  # type: ignore[import-untyped]

from schemas import RegistrationEvent, decode_event
from streams.log.publisher import EventPublisher
from streams.settings import Settings


class Meta(NamedTuple):
    partition: int


class FakeProducer:
    """Stands in for AIOKafkaProducer: records what is sent, futures resolved by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value))
        self.futures.append(future)
        return future

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def event(seq: int, aor: str = "sip:1001@pbx.example.com") -> RegistrationEvent:
    return RegistrationEvent(
        "reject", f"fe1:{seq}", "fe1", seq, 1_000 + seq, aor, "c", seq, status=401, reason="x"
    )


def publisher(max_in_flight: int = 100, acks: list[int] | None = None) -> EventPublisher:
    pub = EventPublisher(
        Settings(topic_prefix="t."),
        max_in_flight=max_in_flight,
        on_ack=None if acks is None else acks.append,
    )
    pub._producer = FakeProducer()
    return pub


def fake(pub: EventPublisher) -> FakeProducer:
    producer: FakeProducer = pub._producer
    return producer


async def settle_all(pub: EventPublisher, partition: int = 0) -> None:
    for future in fake(pub).futures:
        if not future.done():
            future.set_result(Meta(partition))


async def test_key_is_canonical_and_value_agrees() -> None:
    pub = publisher()
    assert await pub.send(event(1, '"A" <sip:1001@PBX.example.com;transport=udp>'))
    ((topic, key, value),) = fake(pub).sent
    assert topic == "t.registrations"
    assert key == b"sip:1001@pbx.example.com"
    decoded = decode_event(value)
    assert isinstance(decoded, RegistrationEvent)
    assert decoded.aor == "sip:1001@pbx.example.com"


async def test_every_ack_is_counted_and_reported() -> None:
    acks: list[int] = []
    pub = publisher(acks=acks)
    for seq in range(5):
        assert await pub.send(event(seq))
    for i, future in enumerate(fake(pub).futures):
        future.set_result(Meta(i % 2))
    report = await pub.flush()
    assert (report.published, report.failed, report.not_sent, report.invalid) == (5, 0, 0, 0)
    assert report.ok
    assert report.per_partition == {0: 3, 1: 2}
    assert sum(acks) == 5


async def test_full_window_waits_for_acknowledgements() -> None:
    pub = publisher(max_in_flight=4)
    for seq in range(4):
        assert await pub.send(event(seq))
    blocked = asyncio.ensure_future(pub.send(event(4)))
    for _ in range(5):
        await asyncio.sleep(0)  # let it run up to its wait
    assert not blocked.done()
    assert len(fake(pub).sent) == 4
    fake(pub).futures[0].set_result(Meta(0))  # 3 unsettled: room again
    assert await asyncio.wait_for(blocked, timeout=5)
    assert len(fake(pub).sent) == 5
    await settle_all(pub)
    assert (await pub.flush()).published == 5


async def test_sending_stops_at_the_first_failure() -> None:
    pub = publisher()
    assert await pub.send(event(1))
    assert await pub.send(event(2))
    fake(pub).futures[0].set_exception(KafkaTimeoutError())
    fake(pub).futures[1].set_result(Meta(0))
    await asyncio.sleep(0)  # the done callbacks run
    assert not await pub.send(event(3))
    assert not await pub.send(event(4))
    report = await pub.flush()
    assert (report.published, report.failed, report.not_sent) == (1, 1, 2)
    assert not report.ok
    assert "KafkaTimeoutError" in report.errors[0]
    assert len(fake(pub).sent) == 2


async def test_invalid_aor_is_not_sent() -> None:
    pub = publisher()
    assert not await pub.send(event(1, "mailto:someone@example.com"))
    assert await pub.send(event(2))
    await settle_all(pub)
    report = await pub.flush()
    assert (report.published, report.invalid) == (1, 1)
    assert not report.ok
    assert report.errors[0].startswith("fe1:1: ")


@pytest.mark.parametrize("max_in_flight", [1, 3])
async def test_small_windows_still_deliver_everything(max_in_flight: int) -> None:
    pub = publisher(max_in_flight=max_in_flight)

    async def acker() -> None:
        # Acknowledge whatever is outstanding until all 20 records were sent and settled.
        while len(fake(pub).sent) < 20 or not all(f.done() for f in fake(pub).futures):
            await settle_all(pub)
            await asyncio.sleep(0)

    task = asyncio.ensure_future(acker())
    for seq in range(20):
        assert await pub.send(event(seq))
    report = await pub.flush()
    await asyncio.wait_for(task, timeout=5)
    assert report.published == 20
