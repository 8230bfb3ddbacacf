"""The engine consumer's commit bookkeeping, run through Faust's own code (no broker).

``EngineConsumer`` keeps each partition's acknowledged offsets without repeats
(D115); Faust's ``_new_offset`` then commits the whole run of them at once.
"""

from __future__ import annotations

from pathlib import Path

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


def _chunk(tp: TP, first: int, last: int) -> Fetched:
    records = [
        ConsumerRecord(tp.topic, tp.partition, o, 0, 0, b"k", b"v", None, 1, 1, ())
        for o in range(first, last + 1)
    ]
    return Fetched(tp, records, generation=1)


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
