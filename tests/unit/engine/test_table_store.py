"""BindingsTable's own reads and writes of its local store, per partition, and the
readers on top of it (no broker)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.types import TP

from schemas import encode_state
from streams.engine.faust_edge import BindingsTable
from streams.engine.worker import Engine
from streams.settings import Settings
from tests.unit.builders import AOR, Log, fold_all


def _engine(tmp_path: Path, store: str = "rocksdb") -> Engine:
    settings = Settings.from_env(
        {
            "REGSTATE_DATA_DIR": str(tmp_path),
            "REGSTATE_PARTITIONS": "4",
            "REGSTATE_TOPIC_PREFIX": "store.",
            "REGSTATE_STORE": store,
        }
    )
    return Engine(settings)


def _table(tmp_path: Path, store: str) -> BindingsTable:
    return _engine(tmp_path, store).table


def _changelog_record(topic: str, partition: int, offset: int, key: bytes, value: bytes) -> object:
    """What Faust's recovery hands ``apply_changelog_batch``: an event with its message."""
    tp = TP(topic, partition)
    message = SimpleNamespace(tp=tp, partition=partition, offset=offset, key=key, value=value)
    return SimpleNamespace(message=message)


def test_rocksdb_reads_each_partition_and_what_recovery_wrote(tmp_path: Path) -> None:
    table = _table(tmp_path, "rocksdb")
    table.store_many(1, [(b"sip:1001@a", b"one"), (b"sip:1002@a", b"two")])
    assert table.stored(1, b"sip:1001@a") == b"one"
    assert table.stored(1, b"sip:1002@a") == b"two"
    assert table.stored(1, b"sip:1003@a") is None
    # A key is looked up in the partition named, never in another partition's database.
    assert table.stored(2, b"sip:1001@a") is None

    # What a restart recovers from the changelog is what the agent reads back.
    topic = table.changelog_topic_name
    records = [
        _changelog_record(topic, 3, 0, b"sip:2001@a", b"old"),
        _changelog_record(topic, 3, 1, b"sip:2001@a", b"new"),
    ]
    table.data.apply_changelog_batch(records, lambda k: k, lambda v: v)  # type: ignore[arg-type]
    assert table.stored(3, b"sip:2001@a") == b"new"

    # Writes replace, per partition.
    table.store_many(1, [(b"sip:1001@a", b"one again")])
    assert table.stored(1, b"sip:1001@a") == b"one again"
    assert table.stored(1, b"sip:1002@a") == b"two"


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_what_store_many_writes_faust_reads_too(tmp_path: Path, store: str) -> None:
    """The views of other code paths (Faust's own lookups) see the agent's writes."""
    table = _table(tmp_path, store)
    table.store_many(0, [(b"sip:3001@a", b"state")])
    assert table.stored(0, b"sip:3001@a") == b"state"
    assert table.get(b"sip:3001@a") == b"state"
    assert table.get(b"sip:3002@a") is None


def test_the_agent_caches_what_it_reads_and_the_sweep_does_not(tmp_path: Path) -> None:
    """The fold's reads keep a state read from the table in the agent's cache; the
    sweep's (``remember=False``) read the same state and leave the cache alone."""
    engine = _engine(tmp_path)
    state, _ = fold_all([Log().register("sip:1001@192.0.2.10")])
    key = AOR.encode()
    engine.table.store_many(2, [(key, encode_state(state, internal=True))])
    agent = engine.agent

    assert agent.read(2, key, remember=False) == state
    assert key not in agent.cache
    assert engine._read_for_sweep(2, key) is None  # partition 2 is not owned yet
    engine.owned.add(2)
    assert engine._read_for_sweep(2, key) == state
    assert key not in agent.cache

    assert agent.read(2, key) == state
    assert agent.cache[key] == state
