"""BatchOutputs against a real Kafka: what a batch of the fold agent's outputs becomes.

The producer here lingers 30 s. A batch the engine hands over is complete, so
it must go out at once (D75): were its builder left open, aiokafka would hold it
for the linger and let ``producer.send`` records join it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]

from streams.engine.outputs import BatchOutputs
from tests.helpers import create_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LINGER_MS = 30_000


async def _read(bootstrap: str, topic: str, partition: int, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[Any] = []
        async with asyncio.timeout(30):
            while len(records) < count:
                got = await consumer.getmany(tp, timeout_ms=500)
                records.extend(got.get(tp, []))
        return records
    finally:
        await consumer.stop()


def test_a_batch_goes_out_whole_without_the_linger(kafka_bootstrap: str) -> None:
    topic = f"test-outputs-{uuid.uuid4().hex[:12]}"

    async def run() -> tuple[list[Any], list[Any], list[tuple[str, int, int]]]:
        await create_topic(kafka_bootstrap, topic, 2)
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
        )
        await producer.start()
        sent: list[tuple[str, int, int]] = []
        try:
            outputs = BatchOutputs(producer, lambda t, p, fut, n: sent.append((t, p, n)))
            for i in range(5):
                outputs.add(topic, 0, f"k{i}".encode(), f"v{i}".encode())
            outputs.add(topic, 1, b"gone", None)  # a tombstone
            futures = await outputs.send()
            # Well inside the producer's linger: only a closed batch is sent this soon.
            async with asyncio.timeout(LINGER_MS / 3000):
                await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return (
            await _read(kafka_bootstrap, topic, 0, 5),
            await _read(kafka_bootstrap, topic, 1, 1),
            sent,
        )

    first, second, sent = asyncio.run(run())
    assert [(r.key, r.value) for r in first] == [
        (f"k{i}".encode(), f"v{i}".encode()) for i in range(5)
    ]
    assert [(r.key, r.value) for r in second] == [(b"gone", None)]
    assert sorted(sent) == [(topic, 0, 5), (topic, 1, 1)]
