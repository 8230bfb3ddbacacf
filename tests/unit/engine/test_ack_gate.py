"""AckGate (streams/engine): a source offset is released for commit only after its outputs."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.engine.ackgate import AckGate


class FakeMessage:
    """The part of faust's Message the gate uses: a refcount, ack() and the partition."""

    def __init__(self, partition: int, offset: int, acked: list[tuple[int, int]]) -> None:
        self.partition = partition
        self.offset = offset
        self.refcount = 1  # the stream's reference
        self._acked = acked

    def incref(self) -> None:
        self.refcount += 1

    def ack(self, consumer: Any) -> bool:
        self.refcount -= 1
        if self.refcount == 0:
            self._acked.append((self.partition, self.offset))
            return True
        return False


def _hold(gate: AckGate, m: FakeMessage, futures: list[asyncio.Future[Any]]) -> None:
    """One message held on ``futures``, as the agent holds a batch's messages of a partition."""
    gate.hold_messages(m.partition, [m], futures)  # type: ignore[list-item]


def _stream_ack(m: FakeMessage) -> None:
    """What Faust's stream does after the agent's iteration."""
    m.ack(None)


async def test_offsets_are_released_only_after_all_outputs_and_in_order() -> None:
    loop = asyncio.get_running_loop()
    acked: list[tuple[int, int]] = []
    failures: list[BaseException] = []
    gate = AckGate(lambda: None, failures.append)
    m0, m1, m2 = (FakeMessage(0, i, acked) for i in range(3))
    f0 = [loop.create_future(), loop.create_future()]
    f1 = [loop.create_future()]
    _hold(gate, m0, f0)
    _hold(gate, m1, f1)
    _hold(gate, m2, [])  # no outputs, but after m1
    for m in (m0, m1, m2):
        _stream_ack(m)
    f1[0].set_result(None)  # m1's output first: m0 still holds
    await asyncio.sleep(0)
    assert acked == []
    f0[0].set_result(None)
    await asyncio.sleep(0)
    assert acked == []
    f0[1].set_result(None)
    await asyncio.sleep(0)
    assert acked == [(0, 0), (0, 1), (0, 2)]
    assert gate.pending() == 0 and not failures


async def test_partitions_are_independent() -> None:
    loop = asyncio.get_running_loop()
    acked: list[tuple[int, int]] = []
    gate = AckGate(lambda: None, lambda exc: None)
    slow, fast = FakeMessage(0, 0, acked), FakeMessage(1, 0, acked)
    fs, ff = loop.create_future(), loop.create_future()
    _hold(gate, slow, [fs])
    _hold(gate, fast, [ff])
    _stream_ack(slow)
    _stream_ack(fast)
    ff.set_result(None)
    await asyncio.sleep(0)
    assert acked == [(1, 0)]


async def test_nothing_in_flight_leaves_the_ack_to_the_stream() -> None:
    acked: list[tuple[int, int]] = []
    gate = AckGate(lambda: None, lambda exc: None)
    m = FakeMessage(0, 0, acked)
    _hold(gate, m, [])
    assert m.refcount == 1 and gate.pending() == 0
    _stream_ack(m)
    assert acked == [(0, 0)]


async def test_a_failed_output_releases_nothing_after_it() -> None:
    loop = asyncio.get_running_loop()
    acked: list[tuple[int, int]] = []
    failures: list[BaseException] = []
    gate = AckGate(lambda: None, failures.append)
    m0, m1 = FakeMessage(0, 0, acked), FakeMessage(0, 1, acked)
    f0, f1 = loop.create_future(), loop.create_future()
    _hold(gate, m0, [f0])
    _hold(gate, m1, [f1])
    _stream_ack(m0)
    _stream_ack(m1)
    f0.set_exception(RuntimeError("broker refused"))
    f1.set_result(None)
    await asyncio.sleep(0)
    assert acked == [] and len(failures) == 1


async def test_revoked_partitions_are_forgotten() -> None:
    loop = asyncio.get_running_loop()
    acked: list[tuple[int, int]] = []
    gate = AckGate(lambda: None, lambda exc: None)
    m = FakeMessage(3, 0, acked)
    _hold(gate, m, [loop.create_future()])
    gate.forget({3})
    assert gate.pending() == 0
    later = FakeMessage(3, 1, acked)
    _hold(gate, later, [])
    _stream_ack(later)
    assert acked == [(3, 1)], "a new assignment is not blocked by the old queue"


async def test_a_batch_group_is_released_only_when_all_its_outputs_are_acked() -> None:
    """A folded batch holds all its records of a partition on the batch's outputs:
    the latest state of an AOR written once covers every record of it in the batch."""
    loop = asyncio.get_running_loop()
    acked: list[tuple[int, int]] = []
    gate = AckGate(lambda: None, lambda exc: None)
    first = [FakeMessage(0, i, acked) for i in range(3)]
    second = [FakeMessage(0, i, acked) for i in range(3, 5)]
    f1 = [loop.create_future() for _ in range(2)]
    f2 = [loop.create_future()]
    gate.hold_messages(0, first, f1)  # type: ignore[arg-type]
    gate.hold_messages(0, second, f2)  # type: ignore[arg-type]
    for m in first + second:
        _stream_ack(m)
    assert gate.pending() == 5
    f2[0].set_result(None)
    f1[0].set_result(None)
    await asyncio.sleep(0)
    assert acked == [], "one output of the first batch is still in flight"
    f1[1].set_result(None)
    await asyncio.sleep(0)
    assert acked == [(0, i) for i in range(5)]
    assert gate.pending() == 0


async def test_a_group_without_outputs_waits_for_the_groups_before_it() -> None:
    loop = asyncio.get_running_loop()
    acked: list[tuple[int, int]] = []
    gate = AckGate(lambda: None, lambda exc: None)
    m0, m1 = FakeMessage(2, 0, acked), FakeMessage(2, 1, acked)
    fut = loop.create_future()
    _hold(gate, m0, [fut])
    _hold(gate, m1, [])  # all duplicates: no output
    _stream_ack(m0)
    _stream_ack(m1)
    assert acked == []
    fut.set_result(None)
    await asyncio.sleep(0)
    assert acked == [(2, 0), (2, 1)]


async def test_fetched_chunks_are_released_by_their_callbacks_in_offset_order() -> None:
    """The direct path holds whole fetched chunks: ``release`` acks all of a chunk's
    records at once, only after its outputs and after every chunk before it."""
    loop = asyncio.get_running_loop()
    released: list[str] = []
    gate = AckGate(lambda: None, lambda exc: None)
    gate.hold_group(1, 3, lambda: released.append("idle"), [])
    assert released == ["idle"], "nothing in flight: released at once"
    slow, fast = loop.create_future(), loop.create_future()
    gate.hold_group(1, 500, lambda: released.append("first"), [slow])
    gate.hold_group(1, 200, lambda: released.append("second"), [fast])
    gate.hold_group(4, 7, lambda: released.append("other partition"), [loop.create_future()])
    assert gate.pending() == 707
    fast.set_result(None)
    await asyncio.sleep(0)
    assert released == ["idle"], "the first chunk's output is still in flight"
    slow.set_result(None)
    await asyncio.sleep(0)
    assert released == ["idle", "first", "second"]
    assert gate.pending() == 7
