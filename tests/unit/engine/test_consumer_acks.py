"""The engine consumer's commit bookkeeping, run through Faust's own code (no broker).

``EngineConsumer`` keeps each partition's acknowledged offsets without repeats
(D115); Faust's ``_new_offset`` then commits the whole run of them at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord  # type: ignore[import-untyped]
from faust.types import TP

from streams.engine.faust_edge import AckedOffsets, EngineConsumer, Fetched
from streams.engine.worker import Engine
from streams.settings import Settings


def _consumer(tmp_path: Path) -> EngineConsumer:
    settings = Settings.from_env(
        {"REGSTATE_DATA_DIR": str(tmp_path), "REGSTATE_TOPIC_PREFIX": "acks."}
    )
    consumer = Engine(settings).app.consumer
    assert isinstance(consumer, EngineConsumer)
    return consumer


def _records(tp: TP, offsets: list[int]) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(tp.topic, tp.partition, o, 0, 0, b"k", b"v", None, 1, 1, ()) for o in offsets
    ]


def _chunk(tp: TP, first: int, last: int) -> Fetched:
    return Fetched(tp, _records(tp, list(range(first, last + 1))), generation=1)


def _gaps(consumer: EngineConsumer, tp: TP) -> list[tuple[int, int]]:
    """The partition's noted gaps as Faust keeps them: intervals, end excluded."""
    return sorted((i.begin, i.end) for i in consumer._gap[tp])


def _ack(consumer: EngineConsumer, chunk: Fetched) -> None:
    consumer.track_fetched(chunk)
    consumer.ack_fetched(chunk)


async def test_a_gap_noted_over_acked_offsets_does_not_slow_the_commit(tmp_path: Path) -> None:
    """Records 100-199 were acked; a later fetch noted a gap over 101-199 (records handed
    over before recovery's seek, D115). One commit covers all of it, not one offset."""
    consumer = _consumer(tmp_path)
    tp = TP("acks.registrations", 0)
    consumer._committed_offset[tp] = 100
    _ack(consumer, _chunk(tp, 100, 199))
    await consumer._add_gap(tp, 101, 200)
    _ack(consumer, _chunk(tp, 200, 249))
    assert consumer._new_offset(tp) == 250
    assert list(consumer._acked[tp]) == []


def test_acked_offsets_sort_without_repeats() -> None:
    offsets = AckedOffsets([7, 5, 6, 5, 7, 9])
    offsets.sort()
    assert offsets == [5, 6, 7, 9]


async def test_a_gap_in_a_source_fetch_is_noted_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Offsets 103-109 missing from a fetch of the source topic: noted as Faust notes a
    gap (so the commit can pass it), and warned about (D115); a contiguous fetch
    after it notes nothing."""
    consumer = _consumer(tmp_path)
    tp = TP("acks.registrations", 0)
    consumer.app.topics._acking_topics.add(tp.topic)  # type: ignore[attr-defined]
    consumer._read_offset[tp] = 99
    chunk = await consumer._take_fetched(tp, _records(tp, [100, 101, 102, 110, 111]), 1)
    assert chunk is not None and [r.offset for r in chunk.records] == [100, 101, 102, 110, 111]
    assert _gaps(consumer, tp) == [(103, 111)]  # Faust's rule: up to the record after it
    assert "offsets 103-109 missing from a fetch" in caplog.text
    assert consumer._read_offset[tp] == 111

    caplog.clear()
    await consumer._take_fetched(tp, _records(tp, [112, 113]), 1)
    assert _gaps(consumer, tp) == [(103, 111)]
    assert "missing from a fetch" not in caplog.text


async def test_gaps_of_other_topics_are_noted_quietly_and_only_where_acked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = _consumer(tmp_path)
    acked, unacked = TP("acks.other", 0), TP("acks.unacked", 0)
    consumer.app.topics._acking_topics.add(acked.topic)  # type: ignore[attr-defined]
    await consumer._note_gap(acked, 5, 9, source=False)
    await consumer._note_gap(acked, 9, 10, source=False)  # contiguous: no gap
    await consumer._note_gap(acked, None, 20, source=False)  # nothing read before
    await consumer._note_gap(unacked, 5, 9, source=False)
    assert _gaps(consumer, acked) == [(6, 10)]
    assert _gaps(consumer, unacked) == []
    assert "missing from a fetch" not in caplog.text


def _client_answers(
    monkeypatch: pytest.MonkeyPatch, consumer: EngineConsumer, tp: TP, answer: bool
) -> list[dict[TP, int]]:
    """``consumer`` owns ``tp`` and every commit gets ``answer`` from the client (Faust's
    driver answers False for "already rebalanced"); no broker here. The commits asked."""
    answered: list[dict[TP, int]] = []

    async def commit(offsets: dict[TP, int]) -> bool:
        answered.append(dict(offsets))
        return answer

    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    monkeypatch.setattr(consumer._thread, "commit", commit)
    return answered


@pytest.mark.parametrize("answer", [True, False], ids=["committed", "already-rebalanced"])
async def test_a_commit_that_failed_is_not_recorded_as_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: bool
) -> None:
    """D126: a commit the client answers "already rebalanced" (Faust's driver then returns
    False) leaves the partition's committed offset as it was. Faust records it as done
    either way; then a worker that kept the partition never acknowledged the records it
    fetched again from the broker's committed offset, and never committed it (a CI run
    showed a partition with no commit while its owner sat idle)."""
    consumer = _consumer(tmp_path)
    tp = TP("acks.registrations", 3)
    answered = _client_answers(monkeypatch, consumer, tp, answer)
    _ack(consumer, _chunk(tp, 0, 1040))
    assert await consumer.commit() is answer
    assert answered == [{tp: 1041}]
    if answer:
        assert consumer._committed_offset[tp] == 1041
        return
    assert consumer._committed_offset.get(tp) is None
    # The rebalance that failed it then seeks the partition back to the broker's
    # committed offset (none): the records fetched again are acknowledged and their
    # commit is tried again.
    _ack(consumer, _chunk(tp, 0, 1040))
    await consumer.commit()
    assert answered == [{tp: 1041}, {tp: 1041}]


async def test_a_failed_commit_keeps_the_offset_committed_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition committed up to 500 stays at 500 when the commit of 600 fails."""
    consumer = _consumer(tmp_path)
    tp = TP("acks.registrations", 0)
    _client_answers(monkeypatch, consumer, tp, False)
    consumer._committed_offset[tp] = 500
    _ack(consumer, _chunk(tp, 500, 599))
    await consumer.commit()
    assert consumer._committed_offset[tp] == 500
