"""A commit decided before a rebalance and sent after it, on a real broker (D124).

Two aiokafka group consumers, as two workers: ``first`` owns both partitions and
decides a commit; the commit waits on aiokafka's commit lock (held here, as a commit
still in flight holds it) while ``second`` joins and commits the end of the partition
it takes over. Then the lock is released.

Without the fence aiokafka sends the stale commit with the new generation and the
broker takes it: the moved partition's committed offset goes back. That case is run
too, so the test shows the hazard is real on this broker and client, not assumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import CommitFailedError  # type: ignore[import-untyped]

from streams.engine.commit_fence import CommitFence
from streams.engine.faust_edge import EngineConsumerThread, build_app
from tests.helpers import create_topic, unique_name, wait_until_async
from tests.integration.engine_harness import engine_env, settings_of

STALE = 3
"""The offset ``first`` acknowledged before the rebalance, on both partitions."""
END = 10
"""The offset the new owner of a partition commits after the rebalance."""


def consumer(bootstrap: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        # A rejoin is noticed at the next heartbeat: keep the rebalance short.
        heartbeat_interval_ms=200,
        session_timeout_ms=10_000,
    )


async def committed(member: AIOKafkaConsumer, tps: list[Any]) -> dict[int, int | None]:
    return {tp.partition: await member.committed(tp) for tp in tps}


async def join(second: AIOKafkaConsumer, first: AIOKafkaConsumer, topic: str) -> None:
    """Start ``second`` in ``first``'s group; return once each owns one partition."""
    await second.start()
    second.subscribe([topic])
    await wait_until_async(
        lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1,
        60,
        message="the two consumers split the partitions",
    )


@dataclass
class Group:
    """Two consumers of one group on a new two-partition topic; ``first`` owns both."""

    topic: str
    tps: list[Any]
    first: AIOKafkaConsumer
    second: AIOKafkaConsumer
    fence: CommitFence | None


@asynccontextmanager
async def group_of_two(bootstrap: str, *, fenced: bool) -> AsyncIterator[Group]:
    """``first`` started (fenced or not) and owning both partitions; ``second`` not yet
    started (:func:`join` starts it). Both stopped on the way out."""
    topic, group = unique_name("fence"), unique_name("fence-group")
    await create_topic(bootstrap, topic, partitions=2)
    first, second = consumer(bootstrap, group), consumer(bootstrap, group)
    await first.start()
    fence = CommitFence.install(first) if fenced else None
    try:
        first.subscribe([topic])
        await wait_until_async(
            lambda: len(first.assignment()) == 2, 30, message="first owns both partitions"
        )
        yield Group(topic, [TopicPartition(topic, p) for p in (0, 1)], first, second, fence)
    finally:
        await second.stop()
        await first.stop()


async def stale_commit_after_rebalance(
    bootstrap: str, *, fenced: bool
) -> tuple[BaseException | None, dict[int, int | None], int, CommitFence | None]:
    """Run the race; return the stale commit's error, the committed offsets afterwards,
    the partition that moved to ``second``, and ``first``'s fence."""
    async with group_of_two(bootstrap, fenced=fenced) as g:
        lock = g.first._coordinator._commit_lock
        await lock.acquire()
        # Checked against the two-partition assignment now, sent once the lock is free.
        stale = asyncio.ensure_future(g.first.commit({tp: STALE for tp in g.tps}))
        await join(g.second, g.first, g.topic)
        (moved,) = g.second.assignment()
        await g.second.commit({moved: END})
        lock.release()
        error: BaseException | None = None
        try:
            await stale
        except CommitFailedError as exc:
            error = exc
        return error, await committed(g.second, g.tps), moved.partition, g.fence


@pytest.mark.parametrize("fenced", [False, True], ids=["aiokafka-alone", "fenced"])
async def test_a_stale_commit_does_not_move_a_partition_back(
    kafka_bootstrap: str, fenced: bool
) -> None:
    error, offsets, moved, fence = await stale_commit_after_rebalance(
        kafka_bootstrap, fenced=fenced
    )
    if not fenced:
        # The hazard the fence exists for: sent with the new generation and accepted.
        assert error is None
        assert offsets[moved] == STALE
        return
    assert fence is not None
    assert isinstance(error, CommitFailedError)
    assert "already rebalanced" in str(error)
    assert fence.refused == 1
    assert offsets[moved] == END
    # The partition first kept was not touched by the refused commit either.
    assert offsets[1 - moved] is None


async def test_a_commit_in_the_same_generation_goes_through(kafka_bootstrap: str) -> None:
    """The fence passes commits of the current assignment, including after a rebalance."""
    async with group_of_two(kafka_bootstrap, fenced=True) as g:
        await g.first.commit({tp: 4 for tp in g.tps})
        assert await committed(g.first, g.tps) == {0: 4, 1: 4}
        await join(g.second, g.first, g.topic)
        (kept,) = g.first.assignment()
        await g.first.commit({kept: 7})
        assert (await committed(g.first, [kept]))[kept.partition] == 7
        assert g.fence is not None and g.fence.refused == 0


async def test_the_workers_consumer_is_fenced(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The worker's own consumer thread installs the fence when its consumer starts."""
    settings = settings_of(engine_env(kafka_bootstrap, unique_name("fence") + ".", tmp_path))
    thread = build_app(settings).consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, EngineConsumerThread)
    await thread.on_start()
    consumer = thread._consumer
    assert consumer is not None
    try:
        fence = thread.commit_fence
        assert fence is not None
        assert fence._coordinator is consumer._coordinator
        assert consumer._coordinator._do_commit_offsets.__qualname__.startswith(
            "CommitFence.install"
        )
    finally:
        await consumer.stop()
        # The thread's own loop, made with the app and never run here.
        thread.thread_loop.close()
