"""AckGate: a source offset is released for commit only after every output it caused."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from faust.types.tuples import Message


class _Held:
    """Source messages of one partition waiting for ``left`` outputs before they may be acked."""

    __slots__ = ("left", "messages", "queue")

    def __init__(self, messages: Sequence[Message], left: int, queue: deque[_Held]) -> None:
        self.messages = messages
        self.left = left
        self.queue = queue


class AckGate:
    """Releases source messages for commit only once their outputs are acknowledged.

    Faust commits the offsets of acked messages (contiguous from the last
    commit). :meth:`hold` takes one extra reference on each message, so the
    stream's own ack does not complete it; when every output future of the
    held group has succeeded, and every earlier group of the same partition has
    been released, the references are dropped and the messages acked. Releasing
    in offset order keeps the acked offsets contiguous. A failed future calls
    ``on_failure`` and releases nothing more for that partition.

    A group is one record, or the records of one partition in a folded batch
    (the batch's outputs for those records: the latest state of each AOR is
    written once per batch, so no record of the batch is released before all).
    """

    def __init__(self, consumer: Callable[[], Any], on_failure: Callable[[BaseException], None]):
        self._consumer = consumer
        self._on_failure = on_failure
        self._queues: dict[int, deque[_Held]] = {}

    def hold(self, message: Message, futures: list[asyncio.Future[Any]]) -> None:
        """Keep ``message`` from being committed until ``futures`` succeed (and those before)."""
        self.hold_group(message.partition, (message,), futures)

    def hold_group(
        self, partition: int, messages: Sequence[Message], futures: list[asyncio.Future[Any]]
    ) -> None:
        """Keep ``messages`` (of ``partition``, in offset order) until ``futures`` succeed."""
        queue = self._queues.get(partition)
        if queue is None:
            queue = self._queues[partition] = deque()
        if not futures and not queue:
            return  # nothing in flight: the stream's own acks are already in order
        for message in messages:
            message.incref()
        held = _Held(messages, len(futures), queue)
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
            consumer = self._consumer()
            while queue and queue[0].left == 0:
                for message in queue.popleft().messages:
                    message.ack(consumer)

    def pending(self) -> int:
        """Messages held, all partitions."""
        return sum(len(h.messages) for q in self._queues.values() for h in q)

    def forget(self, partitions: set[int]) -> None:
        """Drop held messages of revoked partitions: Faust will not commit them anyway."""
        for p in partitions:
            self._queues.pop(p, None)
