"""Helpers shared by the tests.

Tests never sleep a fixed time: they poll a condition until a deadline with
:func:`wait_until` (sync) or :func:`wait_until_async` (in a coroutine).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, overload

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout: samples/, bench/, scripts/ and tests/sipp/ are read from here."""


def unique_name(prefix: str) -> str:
    """A topic, group or app id that no other test (or earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "",
) -> T:
    """Call ``predicate`` every ``interval`` s until it returns a truthy value; return it.

    Raises AssertionError (naming ``message`` and the last value) once ``timeout``
    seconds have passed; the predicate is always called at least once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {message or predicate!r}; "
                f"last value {value!r}"
            )
        time.sleep(interval)


@overload
async def wait_until_async(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str = ...,
) -> T: ...


@overload
async def wait_until_async(
    predicate: Callable[[], T | None],
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    message: str = ...,
) -> T: ...


async def wait_until_async(
    predicate: Callable[[], Any],
    timeout: float = 30.0,  # noqa: ASYNC109 - a polling deadline, same signature as wait_until
    interval: float = 0.1,
    message: str = "",
) -> Any:
    """Like :func:`wait_until`, in a coroutine; ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {message or predicate!r}; "
                f"last value {value!r}"
            )
        await asyncio.sleep(interval)


async def create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
    within: float = 30.0,
) -> None:
    """Create a topic with aiokafka's admin client; return once every partition has a leader.

    Raises AssertionError if the broker reports an error for the topic.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]  # aiokafka: no py.typed

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor, topic_configs=configs or {})]
        )
        errors = [e for e in response.topic_errors if e[1] != 0]
        assert not errors, f"CreateTopics {name}: {errors}"

        async def ready() -> bool:
            (topic,) = await admin.describe_topics([name])
            parts = topic["partitions"]
            return (
                topic["error_code"] == 0
                and len(parts) == partitions
                and all(p["leader"] >= 0 for p in parts)
            )

        await wait_until_async(ready, within, message=f"leaders of {name}")
    finally:
        await admin.close()
