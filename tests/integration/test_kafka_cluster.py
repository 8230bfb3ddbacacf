"""The local 3-node Kafka: replication factor 3 with min.insync.replicas 2 takes
acks=all writes, also while one node is stopped (SIGTERM) or killed (SIGKILL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]  # aiokafka: no py.typed
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]  # aiokafka: no py.typed

from devkafka.local import LocalKafka
from tests.helpers import create_topic, unique_name, wait_until_async

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]


@pytest.fixture
async def replicated_topic(kafka_cluster: LocalKafka) -> AsyncIterator[str]:
    """A fresh topic: 3 partitions, replication factor 3, min.insync.replicas 2, full ISR."""
    topic = unique_name("cluster")
    await create_topic(kafka_cluster.bootstrap, topic, 3, 3, configs={"min.insync.replicas": "2"})
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap)
    await admin.start()
    try:
        brokers = (await admin.describe_cluster())["brokers"]
        assert sorted(b["node_id"] for b in brokers) == [1, 2, 3]

        async def full_isr() -> bool:
            (meta,) = await admin.describe_topics([topic])
            return all(len(p["isr"]) == 3 and len(p["replicas"]) == 3 for p in meta["partitions"])

        await wait_until_async(full_isr, 30, message="3 in-sync replicas per partition")
    finally:
        await admin.close()
    yield topic


async def _produce(bootstrap: str, topic: str, values: list[bytes], within: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with asyncio.timeout(within):
            for v in values:
                await producer.send_and_wait(topic, v, key=v)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[bytes] = []
    try:

        async def enough() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(r.value for r in records if r.value is not None)
            return len(got) >= count

        await wait_until_async(enough, 60, interval=0, message=f"{count} records")
    finally:
        await consumer.stop()
    return got


@pytest.mark.parametrize("fault", ["stop", "kill"])
async def test_acks_all_writes_survive_one_node_down(
    kafka_cluster: LocalKafka, replicated_topic: str, fault: str
) -> None:
    bootstrap, topic = kafka_cluster.bootstrap, replicated_topic
    before = [f"before-{i}".encode() for i in range(20)]
    during = [f"during-{i}".encode() for i in range(20)]
    await _produce(bootstrap, topic, before, within=60)

    # Node 2 leads some partitions; run the blocking process control off the event loop.
    down = kafka_cluster.stop_node if fault == "stop" else kafka_cluster.kill_node
    await asyncio.to_thread(down, 2)
    try:
        assert kafka_cluster.node_pid(2) is None
        # After SIGKILL the controller fences the node only after its session times
        # out (broker.session.timeout.ms, 9 s): writes wait, then succeed with ISR 2.
        await _produce(bootstrap, topic, during, within=120)
        got = await _read_all(bootstrap, topic, len(before) + len(during))
        assert sorted(got) == sorted(before + during)
    finally:
        await asyncio.to_thread(kafka_cluster.start_node, 2)
