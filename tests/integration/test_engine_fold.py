"""The engine folds the log into the table and publishes it (issue 3, stage a).

Every test runs real ``regstate worker`` subprocesses against the real broker,
with a topic prefix, data dir and web port of its own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from processors.replay import replay
from schemas import encode_state
from streams.log.routing import kafka_partition
from tests.helpers import unique_name
from tests.integration.engine_harness import (
    NO_SWEEP,
    Worker,
    binding_events_view,
    bindings_view,
    compacted,
    diff_views,
    engine_env,
    ensure,
    expected_binding_events,
    free_port,
    generate,
    metric_sum,
    now_ms,
    public_view,
    publish,
    read_topic,
    replay_records,
    settings_of,
    wait_committed_to_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_bindings_topic_equals_replay_of_the_log(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Scenario: 20k synthetic events are published, then one worker folds them.

    Once the worker's group has committed the whole source topic (it commits
    only offsets whose outputs were acknowledged), the compacted
    regstate.bindings equals the public state of ``processors.replay`` of the
    same log, key by key, and regstate.binding-events holds exactly the binding
    events the fold emits, per AOR in order.
    """
    prefix = unique_name("eq") + "."
    env = engine_env(
        kafka_bootstrap, prefix, tmp_path, worker_id="ta", web_port=free_port(), grace_ms=NO_SWEEP
    )
    settings = settings_of(env)
    policy = settings.fold_policy()
    ensure(settings)
    events = generate(20_000, 2_000, seed=11, start_ts=now_ms() - 40 * 60_000)
    assert publish(settings, events) == 20_000

    worker = Worker(env, tmp_path / "ta.log").start()
    try:
        worker.wait_ready()
        wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", settings.topic("registrations"))

        log = asyncio.run(read_topic(kafka_bootstrap, settings.topic("registrations")))
        assert len(log) == 20_000
        from_log = replay_records(log, policy)
        assert from_log.refused == 0
        # The log as published: Kafka kept each AOR's events in order.
        want = public_view(replay(events, policy).states)
        assert public_view(from_log.states) == want

        got = bindings_view(asyncio.run(read_topic(kafka_bootstrap, settings.topic("bindings"))))
        assert got == want, "\n".join(diff_views(got, want))

        got_events = binding_events_view(
            asyncio.run(read_topic(kafka_bootstrap, settings.topic("binding-events")))
        )
        want_events = expected_binding_events(from_log)
        assert got_events == want_events, "\n".join(diff_views(got_events, want_events, 2))

        # Batches write each AOR once to its own record's partition (D74,
        # faust-streaming #497): every changelog record sits in its key's
        # partition, and the last one per AOR is the replay's internal state.
        changelog = asyncio.run(read_topic(kafka_bootstrap, f"{prefix}engine-bindings-changelog"))
        misplaced = [
            r.key for r in changelog if r.partition != kafka_partition(r.key, settings.partitions)
        ]
        assert misplaced == []
        assert compacted(changelog) == {
            aor.encode(): encode_state(state, internal=True)
            for aor, state in from_log.states.items()
        }

        metrics = worker.metrics()
        assert metric_sum(metrics, "regstate_events_folded_total") == 20_000
        assert metric_sum(metrics, "regstate_deadletters_total") == 0
    finally:
        worker.stop()
    assert worker.exit_codes == [0], worker.log_tail()
