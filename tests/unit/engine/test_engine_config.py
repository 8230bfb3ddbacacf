"""The engine's Faust configuration as docs/design.md sections 7 and 9 ask (no broker)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumerDriver
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport

from streams.engine.faust_edge import rocksdb_options
from streams.engine.worker import Engine
from streams.settings import Settings


def _engine(tmp_path: Path, **env: str) -> Engine:
    values = {
        "REGSTATE_DATA_DIR": str(tmp_path),
        "REGSTATE_PARTITIONS": "6",
        "REGSTATE_TOPIC_PREFIX": "cfg.",
        **{f"REGSTATE_{k.upper()}": v for k, v in env.items()},
    }
    return Engine(Settings.from_env(values))


def test_at_least_once_replication_and_no_table_dumps(tmp_path: Path) -> None:
    conf = _engine(tmp_path, replication_factor="3").app.conf
    assert str(conf.processing_guarantee) in ("at_least_once", "ProcessingGuarantee.AT_LEAST_ONCE")
    assert conf.topic_replication_factor == 3
    assert conf.producer_acks == -1
    assert not conf.web_tables_enabled
    assert not conf.web_router_enabled
    assert not conf.stream_publish_on_commit
    assert conf.consumer_auto_offset_reset == "earliest"


def test_table_is_bytes_keyed_with_the_source_partition_count(tmp_path: Path) -> None:
    engine = _engine(tmp_path, replication_factor="3")
    table = engine.table
    assert table.partitions == 6
    assert table.key_serializer == "raw" and table.value_serializer == "raw"
    assert table.changelog_topic.partitions == 6
    assert table.extra_topic_configs == {"min.insync.replicas": "2"}
    assert engine.source.get_topic_name() == "cfg.registrations"
    assert engine.source.partitions == 6


def test_rocksdb_caches_are_sized_from_settings(tmp_path: Path) -> None:
    engine = _engine(tmp_path, rocksdb_block_cache_bytes=str(32 << 20))
    assert engine.table.options == rocksdb_options(engine.settings)
    assert engine.table.options["block_cache_size"] == 32 << 20
    memory = _engine(tmp_path / "m", store="memory")
    assert memory.table.options is None
    assert str(memory.app.conf.store).startswith("memory:")


async def test_producer_is_idempotent_with_acks_all(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    producer: Any = engine.app.producer  # the aiokafka driver, not the ProducerT ABC
    client = producer._new_producer()
    try:
        # aiokafka keeps a transaction manager only for idempotent producers.
        assert client._txn_manager is not None, "idempotence on"
        assert client._sender._acks == -1, "acks=all"
    finally:
        await client.stop()


def test_hot_path_settings_reach_faust_and_the_consumer(tmp_path: Path) -> None:
    """D72: poll size, stream buffer and fetch wait come from settings; source records
    go to the fold agent as batches unless the Faust stream path is asked for."""
    engine = _engine(
        tmp_path,
        engine_max_poll_records="1500",
        engine_stream_buffer="5000",
        engine_fetch_max_wait_ms="40",
    )
    conf = engine.app.conf
    assert conf.broker_max_poll_records == 1500
    assert conf.stream_buffer_maxsize == 5000
    assert engine.app.regstate_fetch_max_wait_ms == 40
    assert engine.app.regstate_direct_topic == "cfg.registrations"
    assert engine.app.regstate_batches is not None
    for off in ({"engine_direct_batches": "0"}, {"engine_fast_handoff": "0"}):
        app = _engine(tmp_path / next(iter(off)), **off).app
        assert app.regstate_direct_topic is None and app.regstate_batches is None


async def test_fetch_wait_and_min_bytes_reach_the_aiokafka_consumer(tmp_path: Path) -> None:
    """D110: the consumer thread's aiokafka consumer fetches with regstate's wait and
    minimum, not Faust's hard-coded 1500 ms and aiokafka's 1 byte."""
    engine = _engine(tmp_path, engine_fetch_max_wait_ms="35", engine_fetch_min_bytes="4096")
    driver = engine.app.consumer
    # Faust types the app's consumer and transport as its abstract ConsumerT and TransportT.
    assert isinstance(driver, AIOKafkaConsumerDriver)
    assert isinstance(driver.transport, AIOKafkaTransport)
    consumer = driver._new_consumer_thread()._create_worker_consumer(driver.transport)
    try:
        assert consumer._fetch_max_wait_ms == 35
        assert consumer._fetch_min_bytes == 4096
    finally:
        await consumer.stop()
    defaults = Settings()
    assert (defaults.engine_fetch_max_wait_ms, defaults.engine_fetch_min_bytes) == (25, 1 << 20)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("store", "lmdb"),
        ("engine_batch_max", "0"),
        ("engine_fetch_max_wait_ms", "-1"),
        ("engine_fetch_min_bytes", "0"),
        ("sweep_interval_ms", "0"),
        ("log_level", "loud"),
        ("grace_ms", "-1"),
        ("health_flap_threshold", "0"),
        ("health_short_expiry_ms", "-5"),
    ],
)
def test_bad_settings_are_refused(name: str, value: str) -> None:
    from streams.settings import SettingsError

    with pytest.raises(SettingsError):
        Settings.from_env({f"REGSTATE_{name.upper()}": value})


def test_health_thresholds_reach_the_fold_policy_every_reader_uses() -> None:
    policy = Settings.from_env(
        {
            "REGSTATE_HEALTH_AUTH_FAIL_THRESHOLD": "5",
            "REGSTATE_HEALTH_RETRANSMISSION_THRESHOLD": "4",
            "REGSTATE_HEALTH_SHORT_EXPIRY_MS": "20000",
            "REGSTATE_HEALTH_FLAP_WINDOW_MS": "300000",
            "REGSTATE_HEALTH_FLAP_THRESHOLD": "2",
        }
    ).fold_policy()
    assert (
        policy.auth_fail_threshold,
        policy.retransmission_threshold,
        policy.short_expiry_ms,
        policy.flap_window_ms,
        policy.flap_threshold,
    ) == (5, 4, 20_000, 300_000, 2)


def test_the_worker_collects_young_objects_less_often_and_freezes_its_start_up() -> None:
    from streams.engine.cli import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before, "0 keeps Python's settings"
        tune_gc(Settings().engine_gc_gen0)
        assert gc.get_threshold() == (100_000, before[1], before[2])
        assert gc.get_freeze_count() > 0, "start-up objects are out of later collections"
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_table_lives_under_its_topic_prefix(tmp_path: Path) -> None:
    conf = _engine(tmp_path, worker_id="w7").app.conf
    assert Path(conf.datadir) == tmp_path / "engine" / "cfg.engine" / "w7"
    assert conf.id == "cfg.engine"


def test_a_table_of_the_old_layout_is_named_for_deletion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "engine" / "w7" / "v1" / "tables").mkdir(parents=True)
    with caplog.at_level("WARNING", logger="streams.engine.faust_edge"):
        _engine(tmp_path, worker_id="w7")
    [message] = [r.getMessage() for r in caplog.records if "D123" in r.getMessage()]
    assert f"Delete {tmp_path / 'engine' / 'w7'} once" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="streams.engine.faust_edge"):
        _engine(tmp_path / "fresh", worker_id="w7")
    assert not [r for r in caplog.records if "D123" in r.getMessage()]
