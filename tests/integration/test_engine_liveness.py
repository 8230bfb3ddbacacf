"""Faust's liveness check sees the fold agent's partitions as live (D107).

The fold agent takes its records straight from the consumer, not through a
Faust stream; Faust's check (every 2.5 s) reads when each partition's stream
last took a record and logs an error for partitions that look stuck while the
consumer is behind the log.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import unique_name
from tests.integration.engine_harness import (
    NO_SWEEP,
    Worker,
    engine_env,
    ensure,
    free_port,
    generate,
    now_ms,
    publish,
    settings_of,
    wait_committed_to_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

STALL_SECONDS = 8
"""Faust's ``stream_processing_timeout`` for the test (its default is 5 minutes).

On a backlog aiokafka hands over one partition's fetched records after another
(2,000 at a time), so each partition waits its turn: up to 1.5 s here on a quiet
machine, and over 3 s once on a loaded CI run, where a 3 s timeout failed the test."""
EVENTS = 150_000
"""A backlog that outlasts a few checks past the timeout (about 30 s at 5,000 events/s)."""
FAUST_STALL_LINES = ("has not started processing", "Stream stopped processing")


def test_a_worker_folding_a_backlog_is_not_reported_stalled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A worker folds a backlog for several of Faust's check periods past its timeout
    (3 s here, 5 minutes by default); Faust logs no stalled partition."""
    prefix = unique_name("live") + "."
    env = engine_env(
        kafka_bootstrap,
        prefix,
        tmp_path,
        worker_id="lv",
        web_port=free_port(),
        grace_ms=NO_SWEEP,
    )
    env["STREAM_PROCESSING_TIMEOUT"] = str(STALL_SECONDS)  # read by Faust itself
    settings = settings_of(env)
    ensure(settings)
    assert publish(settings, generate(EVENTS, 10_000, seed=5, start_ts=now_ms())) == EVENTS

    log_path = tmp_path / "lv.log"
    worker = Worker(env, log_path).start()
    started = time.monotonic()
    try:
        worker.wait_ready()
        wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", settings.topic("registrations"))
        folding = time.monotonic() - started
    finally:
        worker.stop()
    log = log_path.read_text()
    # Faust checks every 2.5 s, the first time 2.5 s after start: the backlog must
    # outlast a few checks past the timeout for this test to mean anything.
    assert folding > 2.5 + STALL_SECONDS + 2 * 2.5, f"backlog folded in {folding:.1f} s only"
    stalled = [line for line in log.splitlines() if any(s in line for s in FAUST_STALL_LINES)]
    assert not stalled, "\n".join(stalled[:5])
