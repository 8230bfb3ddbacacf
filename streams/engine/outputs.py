"""Outputs of one folded batch, sent as one record batch per topic-partition (D75).

A record sent with ``producer.send`` costs Faust's wrapper, aiokafka's
per-record partitioning and accumulator bookkeeping, and a future; with three
outputs per event that was most of the worker's time. Here the records of a
batch for one topic-partition are appended to an aiokafka ``BatchBuilder`` and
handed over with ``send_batch``: one future per topic-partition per batch, which
resolves when the brokers acknowledged every record of it (``acks=all``, the
producer's idempotence and ordering as for ``send``).

Partitions are explicit: the caller passes the partition each record belongs to
(the source record's, when the outputs are co-partitioned with it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

OnSent = Callable[[str, int, "asyncio.Future[Any]", int], None]

SENDER_HOPS: Final = 3
"""Event-loop turns between a batch handed to aiokafka (0.14) and its produce request
written to the socket: the accumulator's waiter wakes ``asyncio.wait`` in the sender,
which wakes the sender's task, which starts a task that writes the request. D116."""


class BatchOutputs:
    """Records for several topic-partitions, gathered and then sent batch by batch."""

    __slots__ = ("_builders", "_full", "_on_sent", "_producer")

    def __init__(self, producer: Any, on_sent: OnSent | None = None) -> None:
        """``producer``: the running aiokafka producer (``create_batch``/``send_batch``);
        ``on_sent(topic, partition, future, record_count)`` is called for each batch sent."""
        self._producer = producer
        self._on_sent = on_sent
        self._builders: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[str, int, Any]] = []  # full builders waiting for send()

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        """Append one record (a ``None`` value is a tombstone)."""
        tp = (topic, partition)
        builder = self._builders.get(tp)
        if builder is None:
            builder = self._builders[tp] = self._producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:
            # Full (the producer's max batch size): send it as it is, start another.
            self._full.append((topic, partition, builder))
            builder = self._builders[tp] = self._producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value) is None:
                raise ValueError(f"a record for {topic} is larger than the producer's batch size")

    async def send(self) -> list[asyncio.Future[Any]]:
        """Hand every batch to the producer; return their delivery futures.

        Awaiting enqueues (aiokafka waits while an earlier batch of the same
        partition has not been drained to the broker yet) and lets the producer write
        the request; the futures resolve when the brokers acknowledge.
        """
        batches = self._full + [(t, p, b) for (t, p), b in self._builders.items()]
        self._full = []
        self._builders = {}
        futures: list[asyncio.Future[Any]] = []
        send_batch = self._producer.send_batch
        on_sent = self._on_sent
        for topic, partition, builder in batches:
            count = builder.record_count()
            if not count:
                continue
            # Closed, the batch is ready at once: an open one waits the producer's
            # linger first, and producer.send() may append records of its own to it.
            builder.close()
            fut: asyncio.Future[Any] = await send_batch(builder, topic, partition=partition)
            if on_sent is not None:
                on_sent(topic, partition, fut, count)
            futures.append(fut)
        if futures:
            # Give the sender its turns now. Otherwise a fold that is ready to run (a
            # chunk the consumer thread handed over meanwhile) runs first, and these
            # records wait at the worker for its whole length (D116).
            for _ in range(SENDER_HOPS):
                await asyncio.sleep(0)
        return futures
