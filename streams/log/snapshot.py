"""Read a compacted topic (regstate.bindings, regstate.alerts) once: the last value of every key.

Used by ``regstate problems`` and by the alerting runner at start. The end of
the topic is taken when reading starts, so a busy topic still ends; what is
appended after that is not included.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from streams.log.kafka_config import client_config
from streams.settings import Settings


class SnapshotError(RuntimeError):
    """The topic does not exist, or could not be read to its end in time."""


async def partitions_of(consumer: Any, topic: str, timeout_s: float) -> list[TopicPartition]:
    """Every partition of ``topic``; SnapshotError if it does not exist within ``timeout_s``.

    Asks for the metadata of all topics: a request naming a missing topic would
    auto-create it where ``auto.create.topics.enable`` is on (D11).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        # aiokafka's public topics() fetches the same all-topics metadata but
        # returns only the names; the partitions are in the cluster it fetched.
        cluster = await consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if time.monotonic() >= deadline:
            raise SnapshotError(f"topic {topic} does not exist (run `regstate topics ensure`)")
        await asyncio.sleep(0.2)


async def read_latest(
    settings: Settings, topic: str, *, timeout_s: float = 60.0
) -> dict[bytes, bytes]:
    """``{key: last value}`` of ``topic`` from its first offset to its end as of now.

    A key whose last record is a tombstone (null value) is left out; records
    without a key are skipped. Raises SnapshotError when the topic is missing or
    its end is not reached within ``timeout_s``.
    """
    consumer = AIOKafkaConsumer(
        **client_config(settings, "regstate-snapshot"),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Small records, but many: big fetches make the snapshot quick.
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic, timeout_s)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        latest: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout_s
        left = {tp for tp in tps if end[tp] > 0}
        while left:
            if time.monotonic() >= deadline:
                raise SnapshotError(f"{topic} not read to its end within {timeout_s:.0f} s")
            batches = await consumer.getmany(*left, timeout_ms=200, max_records=10_000)
            for tp, records in batches.items():
                for r in records:
                    if r.offset >= end[tp] or r.key is None:
                        continue
                    if r.value is None:
                        latest.pop(r.key, None)
                    else:
                        latest[r.key] = r.value
            for tp in list(left):
                if await consumer.position(tp) >= end[tp]:
                    left.discard(tp)
        return latest
    finally:
        await consumer.stop()
