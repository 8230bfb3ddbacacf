"""aiokafka 0.14 and faust-streaming 0.15.3 against the pinned Kafka (kafka/pom.xml).

These tests are the evidence that the pinned Kafka version works with the clients:
admin, idempotent acks=all produce, group consume with manual commit and resume
from the committed offsets, and a Faust worker (agent + table changelog).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]  # aiokafka: no py.typed

from streams.settings import Settings
from tests.helpers import create_topic, unique_name, wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _replication_factor() -> int:
    # 1 on the local broker; an external cluster (CI) may ask for 3.
    return Settings.from_env().replication_factor


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def _consume(
    consumer: AIOKafkaConsumer,
    count: int,
    within: float = 30.0,
    alive: Callable[[], bool] = lambda: True,
) -> list[bytes]:
    """The values of the next ``count`` records; fails after ``within`` s or once not ``alive``."""
    got: list[bytes] = []

    async def enough() -> bool:
        assert alive(), "the producing process exited"
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            got.extend(r.value for r in records if r.value is not None)
        return len(got) >= count

    await wait_until_async(enough, within, interval=0, message=f"{count} records")
    return got


async def test_admin_produce_group_commit_resume(
    kafka_bootstrap: str, producer: AIOKafkaProducer
) -> None:
    topic = unique_name("compat")
    group = unique_name("compat-group")
    await create_topic(kafka_bootstrap, topic, 3, _replication_factor())

    first = [f"first-{i}".encode() for i in range(30)]
    metadata = [
        await producer.send_and_wait(topic, v, key=str(i).encode()) for i, v in enumerate(first)
    ]
    # Keys spread the records over the 3 partitions; the end offset of each is its count.
    end = {p: sum(1 for m in metadata if m.partition == p) for p in range(3)}
    assert sum(end.values()) == 30
    assert len([n for n in end.values() if n]) > 1

    c1 = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await c1.start()
    try:
        assert sorted(await _consume(c1, 30)) == sorted(first)
        await c1.commit()
        for p in range(3):
            assert await c1.committed(TopicPartition(topic, p)) == end[p]
    finally:
        await c1.stop()

    second = [f"second-{i}".encode() for i in range(9)]
    for i, v in enumerate(second):
        await producer.send_and_wait(topic, v, key=str(i).encode())

    c2 = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await c2.start()
    try:
        # Starts from the committed offsets: only the new records, none of the first 30.
        got = await _consume(c2, 9)
        assert sorted(got) == sorted(second)
        await c2.commit()
        for p in range(3):
            expected = end[p] + sum(1 for i in range(9) if _partition_of(metadata, i) == p)
            assert await c2.committed(TopicPartition(topic, p)) == expected
    finally:
        await c2.stop()


def _partition_of(metadata: list[object], i: int) -> int:
    # The same key went to the same partition in both batches (default partitioner).
    partition: int = metadata[i].partition  # type: ignore[attr-defined]
    return partition


FAUST_APP = textwrap.dedent(
    '''
    """A minimal Faust app: forwards each value with a per-value count kept in a table."""
    import os

    import faust

    app = faust.App(
        os.environ["COMPAT_APP_ID"],
        broker="kafka://" + os.environ["COMPAT_BOOTSTRAP"],
        store="memory://",
        web_enabled=False,
        topic_replication_factor=int(os.environ["COMPAT_RF"]),
        topic_partitions=1,
        producer_acks=-1,
    )
    raw = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    source = app.topic(os.environ["COMPAT_SOURCE"], schema=raw)
    sink = app.topic(os.environ["COMPAT_SINK"], schema=raw)
    # bytes keys end to end (docs/design.md section 9, trap 3).
    counts = app.Table(
        "counts",
        default=int,
        schema=faust.Schema(
            key_type=bytes, value_type=int, key_serializer="raw", value_serializer="json"
        ),
    )


    @app.agent(source)
    async def forward(stream):
        async for key, value in stream.items():
            counts[value] += 1
            await sink.send(key=key, value=b"seen:" + value + b":%d" % counts[value])


    if __name__ == "__main__":
        app.main()
    '''
)


async def test_faust_worker_consumes_and_produces(
    kafka_bootstrap: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    app_id = unique_name("compat-app")
    source, sink = unique_name("compat-src"), unique_name("compat-sink")
    rf = _replication_factor()
    await create_topic(kafka_bootstrap, source, 1, rf)
    await create_topic(kafka_bootstrap, sink, 1, rf)
    values = [f"v{i}".encode() for i in range(5)]
    for v in values:
        await producer.send_and_wait(source, v, key=b"k")

    (tmp_path / "compat_app.py").write_text(FAUST_APP)
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "COMPAT_APP_ID": app_id,
        "COMPAT_BOOTSTRAP": kafka_bootstrap,
        "COMPAT_RF": str(rf),
        "COMPAT_SOURCE": source,
        "COMPAT_SINK": sink,
    }
    # A subprocess, not in-process: the worker's signal handling, logging setup and
    # shutdown stay out of pytest (which turns any stray warning into an error).
    with log_path.open("wb") as log:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            str(tmp_path / "compat_app.py"),
            "--datadir",
            str(tmp_path / "faust-data"),
            "worker",
            # The worker command overrides App(web_enabled=False) unless told so.
            "--without-web",
            "--loglevel",
            "info",
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    consumer = AIOKafkaConsumer(
        sink, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got = await _consume(
            consumer, len(values), within=90.0, alive=lambda: worker.returncode is None
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{log_path.read_text()[-6000:]}") from exc
    finally:
        await consumer.stop()
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.wait(), 60)
        except TimeoutError:
            worker.kill()
            await worker.wait()
    assert got == [b"seen:" + v + b":1" for v in values]

    # The table's changelog topic was created by Faust itself (auto-create is off).
    changelog = TopicPartition(f"{app_id}-counts-changelog", 0)
    check = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await check.start()
    try:
        ends = await check.end_offsets([changelog])
        assert ends[changelog] >= len(values)
    finally:
        await check.stop()
