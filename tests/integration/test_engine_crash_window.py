"""A crash between the table write and the changelog send loses nothing (issue 13).

The agent writes a batch's states to its local RocksDB table before the batch's
outputs (the changelog records among them) are acknowledged, and commits the
source offsets only after. A SIGKILL in between leaves the local table holding
states whose changelog records never reached Kafka; on restart the source
records are redelivered and fold as duplicates. The test builds exactly that
state by hand, deterministically: it folds one more event into the stopped
worker's own table, as the crashed batch would have, then publishes the event.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import rocksdict

from processors.fold import fold_event
from processors.outcomes import Outcome
from processors.replay import replay
from schemas import decode_state, encode_state
from streams.log.routing import kafka_partition
from tests.helpers import unique_name
from tests.integration.engine_harness import (
    NO_SWEEP,
    Worker,
    bindings_view,
    compacted,
    engine_env,
    ensure,
    free_port,
    generate,
    now_ms,
    public_view,
    publish,
    read_topic,
    settings_of,
    wait_committed_to_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_a_state_the_table_holds_ahead_of_its_changelog_reaches_the_changelog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Scenario: the worker's table holds an event's state, the changelog and the
    committed offsets do not (a crash after the table write); the event is delivered.

    After catch-up the compacted changelog (what a standby or the partition's next
    owner rebuilds the table from) and regstate.bindings both hold the replay's state
    of the whole log for that AOR.
    """
    prefix = unique_name("window") + "."
    env = engine_env(
        kafka_bootstrap, prefix, tmp_path, worker_id="cw", web_port=free_port(), grace_ms=NO_SWEEP
    )
    settings = settings_of(env)
    policy = settings.fold_policy()
    ensure(settings)
    events = generate(2_050, 300, seed=5, start_ts=now_ms() - 40 * 60_000)
    head, tail = events[:2_000], events[2_000:]
    before = replay(head, policy).states
    # The crashed batch's event: one that changes its AOR's state (to ``ahead``).
    event, ahead = next(
        (e, folded.state)
        for e in tail
        if (folded := fold_event(before.get(e.aor), e, policy)).outcome is not Outcome.DUPLICATE
        and folded.events
    )
    key = event.aor.encode()
    partition = kafka_partition(key, settings.partitions)
    changelog_topic = f"{prefix}engine-bindings-changelog"

    worker = Worker(env, tmp_path / "cw.log").start()
    try:
        assert publish(settings, head) == len(head)
        worker.wait_ready()
        wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", settings.topic("registrations"))
    finally:
        worker.stop()
    assert worker.exit_codes == [0], worker.log_tail()

    # What the crashed batch left: the event folded into the local table only.
    path = settings.engine_dir() / "v1" / "tables" / f"bindings-{partition}.db"
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    try:
        raw = db.get(key)
        assert raw is not None and decode_state(raw) == before[event.aor]
        db.put(key, encode_state(ahead, internal=True))
    finally:
        db.close()
    changelog = compacted(asyncio.run(read_topic(kafka_bootstrap, changelog_topic)))
    assert changelog[key] == encode_state(before[event.aor], internal=True)

    assert publish(settings, [event]) == 1  # its redelivery
    worker.start()
    try:
        worker.wait_ready()
        wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", settings.topic("registrations"))
    finally:
        worker.stop()
    assert worker.exit_codes == [0, 0], worker.log_tail()

    want = replay([*head, event], policy).states[event.aor]
    assert want == ahead
    changelog = compacted(asyncio.run(read_topic(kafka_bootstrap, changelog_topic)))
    assert changelog[key] == encode_state(want, internal=True), "the changelog missed the state"
    bindings = bindings_view(asyncio.run(read_topic(kafka_bootstrap, settings.topic("bindings"))))
    assert bindings[event.aor] == public_view({event.aor: want})[event.aor]
