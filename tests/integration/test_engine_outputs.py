"""BatchOutputs against a real Kafka: what a batch of the fold agent's outputs becomes.

The producer here lingers 30 s. A batch the engine hands over is complete, so
it must go out at once (D75): were its builder left open, aiokafka would hold it
for the linger and let ``producer.send`` records join it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from streams.engine import outputs as outputs_module
from streams.engine.outputs import SENDER_HOPS, BatchOutputs
from tests.helpers import create_topic
from tests.integration.engine_harness import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LINGER_MS = 30_000


def _lingering_producer(bootstrap: str) -> AIOKafkaProducer:
    """The worker's producer settings, but a linger no batch of the tests may wait out."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=LINGER_MS
    )


def test_a_batch_goes_out_whole_without_the_linger(kafka_bootstrap: str) -> None:
    topic = f"test-outputs-{uuid.uuid4().hex[:12]}"

    async def run() -> tuple[list[Any], list[tuple[str, int, int]]]:
        await create_topic(kafka_bootstrap, topic, 2)
        producer = _lingering_producer(kafka_bootstrap)
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


FOLD_SECONDS = 1.0


@pytest.mark.parametrize("hops", [SENDER_HOPS, 0])
def test_the_request_is_written_before_the_next_fold(
    kafka_bootstrap: str, hops: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``send()`` the fold agent may start its next fold at once, blocking the loop
    (D116). The batch's request must already be on its way: the broker stamps it
    (LogAppendTime) while the fold runs, not after. With no turns given to the sender
    (``hops`` 0), the request waits for the fold; that case shows the test can fail."""
    monkeypatch.setattr(outputs_module, "SENDER_HOPS", hops)
    topic = f"test-outputs-hops-{uuid.uuid4().hex[:12]}"

    async def run() -> tuple[float, float, int]:
        await create_topic(
            kafka_bootstrap, topic, 1, configs={"message.timestamp.type": "LogAppendTime"}
        )
        producer = _lingering_producer(kafka_bootstrap)
        await producer.start()
        try:
            warm = BatchOutputs(producer)  # connection, metadata and producer id first
            warm.add(topic, 0, b"warm", b"up")
            await asyncio.gather(*await warm.send())
            outputs = BatchOutputs(producer)
            outputs.add(topic, 0, b"k", b"v")
            futures = await outputs.send()
            fold_started = time.time()
            # Blocking on purpose: a fold holds the loop, and nothing else runs meanwhile.
            time.sleep(FOLD_SECONDS)  # noqa: ASYNC251
            fold_ended = time.time()
            (metadata,) = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return fold_started, fold_ended, metadata.timestamp

    fold_started, fold_ended, appended_ms = asyncio.run(run())
    appended = appended_ms / 1000
    if hops:
        assert appended < fold_started + FOLD_SECONDS / 2, (appended, fold_started)
    else:
        assert appended >= fold_ended - 0.002, (appended, fold_ended)
