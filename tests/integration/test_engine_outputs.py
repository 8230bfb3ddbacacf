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
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from streams.engine.outputs import BatchOutputs
from tests.helpers import create_topic
from tests.integration.engine_harness import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LINGER_MS = 30_000


def test_a_batch_goes_out_whole_without_the_linger(kafka_bootstrap: str) -> None:
    topic = f"test-outputs-{uuid.uuid4().hex[:12]}"

    async def run() -> tuple[list[Any], list[tuple[str, int, int]]]:
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
        return await read_topic(kafka_bootstrap, topic), sent

    records, sent = asyncio.run(run())
    first = [(r.key, r.value) for r in records if r.partition == 0]
    second = [(r.key, r.value) for r in records if r.partition == 1]
    assert first == [(f"k{i}".encode(), f"v{i}".encode()) for i in range(5)]
    assert second == [(b"gone", None)]
    assert sorted(sent) == [(topic, 0, 5), (topic, 1, 1)]
