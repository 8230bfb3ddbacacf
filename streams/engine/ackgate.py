"""AckGate: a source offset is released for commit only after every output it caused."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from faust.types.tuples import Message

Release = Callable[[], None]
"""Acknowledges a held group's source records to the consumer (their offsets may be committed)."""


class _Held:
    """One partition's group of source records waiting for ``left`` outputs."""

    __slots__ = ("count", "left", "queue", "release")

    def __init__(self, count: int, release: Release, left: int, queue: deque[_Held]) -> None:
        self.count = count
        self.release = release
        self.left = left
        self.queue = queue


class AckGate:
    """Releases source records for commit only once their outputs are acknowledged.

    Faust commits the offsets of acked records (contiguous from the last
    commit). A held group's ``release`` acks its records; it is called when
    every output future of the group has succeeded and every earlier group of
    the same partition has been released. Releasing in offset order keeps the
    acked offsets contiguous. A failed future calls ``on_failure`` and releases
    nothing more for that partition.

    A group is the records of one partition in a folded batch (the batch's
    outputs for those records: the latest state of each AOR is written once per
    batch, so no record of the batch is released before all), or one record.
    """

    def __init__(self, consumer: Callable[[], Any], on_failure: Callable[[BaseException], None]):
        self._consumer = consumer
        self._on_failure = on_failure
        self._queues: dict[int, deque[_Held]] = {}

    def hold_messages(
        self, partition: int, messages: Sequence[Message], futures: list[asyncio.Future[Any]]
    ) -> None:
        """Faust messages a stream delivered: one extra reference each, so the stream's own
        ack does not complete them; dropped (acked) on release."""
        for message in messages:
            message.incref()

        def release() -> None:
            consumer = self._consumer()
            for message in messages:
                message.ack(consumer)

        self.hold_group(partition, len(messages), release, futures)

    def hold_group(
        self, partition: int, count: int, release: Release, futures: list[asyncio.Future[Any]]
    ) -> None:
        """Call ``release`` (for ``count`` records of ``partition``, in offset order) once
        ``futures`` succeed and every group held before on the partition is released."""
        queue = self._queues.get(partition)
        if queue is None:
            queue = self._queues[partition] = deque()
        if not futures and not queue:
            release()  # nothing in flight: released in order already
            return
        held = _Held(count, release, len(futures), queue)
        queue.append(held)
        if not futures:
            return  # released when the groups before it are
        done = self._done
        for fut in futures:
            fut.add_done_callback(lambda f, h=held: done(h, f))  # type: ignore[misc]

    def _done(self, held: _Held, fut: asyncio.Future[Any]) -> None:
        exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
        if exc is not None:
            self._on_failure(exc)
            return
        held.left -= 1
        if held.left == 0:
            queue = held.queue
            while queue and queue[0].left == 0:
                queue.popleft().release()

    def pending(self) -> int:
        """Records held, all partitions."""
        return sum(h.count for q in self._queues.values() for h in q)

    def forget(self, partitions: set[int]) -> None:
        """Drop held groups of revoked partitions: Faust will not commit them anyway."""
        for p in partitions:
            self._queues.pop(p, None)
