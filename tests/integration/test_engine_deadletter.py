"""Bad records go to regstate.deadletter while folding goes on (issue 3, stage a)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from schemas import encode_event
from streams.log.deadletter import headers_dict
from streams.log.routing import kafka_partition
from tests.helpers import unique_name, wait_until
from tests.integration.engine_harness import (
    NO_SWEEP,
    Worker,
    bindings_view,
    engine_env,
    ensure,
    free_port,
    generate,
    metric_sum,
    now_ms,
    read_topic,
    settings_of,
    wait_committed_to_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _bad_records(good_key: bytes, good_value: bytes) -> list[tuple[str, bytes | None, Any]]:
    """``(expected reason, key, value)`` of each kind of bad record."""
    event = msgpack.unpackb(good_value)
    return [
        ("not_msgpack", good_key, good_value[: len(good_value) // 2]),
        ("unknown_version", good_key, msgpack.packb({**event, "v": 99})),
        ("missing_field", good_key, msgpack.packb({k: v for k, v in event.items() if k != "ts"})),
        ("not_a_map", good_key, msgpack.packb([1, 2, 3])),
        ("empty", good_key, None),
        ("key_mismatch", b"sip:someone-else@pbx.example.com", good_value),
        ("missing_key", None, good_value),
    ]


def test_bad_records_are_dead_lettered_and_folding_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Scenario: bad records of every kind are interleaved with good ones.

    Each bad record lands on regstate.deadletter with its original key and bytes
    and headers naming source topic, partition, offset and reason; the good
    events around them are all folded; the worker never restarts its agent.
    """
    prefix = unique_name("dl") + "."
    env = engine_env(
        kafka_bootstrap, prefix, tmp_path, worker_id="da", web_port=free_port(), grace_ms=NO_SWEEP
    )
    settings = settings_of(env)
    ensure(settings)
    good = generate(300, 30, seed=3, start_ts=now_ms())
    topic = settings.topic("registrations")
    sample_key, sample_value = good[0].aor.encode(), encode_event(good[0])
    bad = _bad_records(sample_key, sample_value)
    # A valid event put in a partition its key does not hash to.
    wrong = (kafka_partition(sample_key, settings.partitions) + 1) % settings.partitions

    async def produce() -> dict[str, tuple[int, int]]:
        where: dict[str, tuple[int, int]] = {}
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            for i, ev in enumerate(good):
                await producer.send_and_wait(topic, encode_event(ev), key=ev.aor.encode())
                if i % 40 == 0 and bad:
                    reason, key, value = bad.pop()
                    meta = await producer.send_and_wait(topic, value, key=key)
                    where[reason] = (meta.partition, meta.offset)
            meta = await producer.send_and_wait(
                topic, sample_value, key=sample_key, partition=wrong
            )
            where["wrong_partition"] = (meta.partition, meta.offset)
        finally:
            await producer.stop()
        return where

    where = asyncio.run(produce())
    assert not bad and len(where) == 8
    worker = Worker(env, tmp_path / "da.log").start()
    try:
        worker.wait_ready()
        wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", topic)

        letters = asyncio.run(read_topic(kafka_bootstrap, settings.topic("deadletter")))
        got: dict[str, tuple[int, int]] = {}
        for r in letters:
            h = headers_dict(r.headers)
            reason = h["regstate-error"].decode()
            assert h["regstate-source-topic"].decode() == topic
            assert h["regstate-error-detail"]
            got[reason] = (int(h["regstate-source-partition"]), int(h["regstate-source-offset"]))
            partition, offset = got[reason]
            originals = {p_o: (k, v) for p_o, k, v in _originals(kafka_bootstrap, topic)}
            assert originals[(partition, offset)] == (r.key, r.value), reason
        assert got == where

        metrics = worker.metrics()
        assert metric_sum(metrics, "regstate_deadletters_total") == 8
        assert metric_sum(metrics, "regstate_events_folded_total") == len(good)
        bindings = bindings_view(
            asyncio.run(read_topic(kafka_bootstrap, settings.topic("bindings")))
        )
        assert bindings, "good events were folded and published"
        assert all(orjson.dumps(v) for v in bindings.values())
        log = (tmp_path / "da.log").read_text()
        assert "Restarting dead" not in log and "Crashed reason" not in log
    finally:
        worker.stop()
    wait_until(lambda: not worker.alive(), 30)


_CACHE: dict[str, list[tuple[tuple[int, int], bytes | None, bytes | None]]] = {}


def _originals(
    bootstrap: str, topic: str
) -> list[tuple[tuple[int, int], bytes | None, bytes | None]]:
    if topic not in _CACHE:
        records = asyncio.run(read_topic(bootstrap, topic))
        _CACHE[topic] = [((r.partition, r.offset), r.key, r.value) for r in records]
    return _CACHE[topic]
