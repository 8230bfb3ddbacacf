"""Crashes and broker failures lose nothing and invent nothing (issue 3, stage e).

Both tests compare, after catch-up, the compacted regstate.bindings, the
table's compacted changelog and the query API with the replay of the whole log
as Kafka holds it (partition by partition, in offset order): zero lost
bindings, zero phantom bindings.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from processors.policy import FoldPolicy
from schemas import encode_state
from tests.helpers import unique_name, wait_until
from tests.integration.engine_harness import (
    NO_SWEEP,
    BackgroundPublisher,
    LogReplay,
    Worker,
    assert_api_answers_replay,
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
    read_topic,
    replay_records,
    settings_of,
    wait_committed_to_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]


def _check_against_log(
    bootstrap: str, prefix: str, policy: FoldPolicy, published: int, workers: list[Worker]
) -> LogReplay:
    """The outputs equal the replay of the log; the API agrees; no phantom binding event."""
    topic = f"{prefix}registrations"
    wait_committed_to_end(bootstrap, f"{prefix}engine", topic, timeout=600)
    log = asyncio.run(read_topic(bootstrap, topic))
    assert len(log) == published, "every acknowledged event is in the log"
    replayed = replay_records(log, policy)
    want = public_view(replayed.states)

    got = bindings_view(asyncio.run(read_topic(bootstrap, f"{prefix}bindings")))
    lost = sorted(set(want) - set(got))
    phantom = sorted(set(got) - set(want))
    assert not lost and not phantom, (lost[:5], phantom[:5])
    assert got == want, "\n".join(diff_views(got, want))

    # What a standby or a partition's next owner rebuilds the table from: the replay's
    # state of every AOR, even where a kill came between a table write and its
    # changelog record (D114).
    changelog = compacted(asyncio.run(read_topic(bootstrap, f"{prefix}engine-bindings-changelog")))
    want_table = {a.encode(): encode_state(s, internal=True) for a, s in replayed.states.items()}
    stale = sorted(k for k in want_table if changelog.get(k) != want_table[k])
    assert not stale, ("changelog behind the log", len(stale), stale[:5])

    # Binding events are at-least-once: repeats are allowed, inventions are not.
    expected = {
        (aor, e["version"]): e
        for aor, evs in expected_binding_events(replayed).items()
        for e in evs
    }
    received = binding_events_view(asyncio.run(read_topic(bootstrap, f"{prefix}binding-events")))
    for aor, evs in received.items():
        for e in evs:
            assert expected.get((aor, e["version"])) == e, ("phantom binding event", e)

    # The API, asked of every worker, for a sample of AORs: what the replay says.
    assert_api_answers_replay(workers, replayed.states, now_ms(), step=25)
    return replayed


def test_sigkill_a_worker_under_load_three_times(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Scenario: two workers fold a log being published; one is SIGKILLed three times.

    Each time it is killed while folding (its table and outputs possibly ahead
    of its committed offsets) and restarted at once. After catch-up,
    regstate.bindings and both workers' API equal the replay of the whole log.
    """
    prefix = unique_name("kill") + "."
    common = {"grace_ms": NO_SWEEP, "standby_replicas": 1}
    env_a = engine_env(
        kafka_bootstrap, prefix, tmp_path / "a", worker_id="va", web_port=free_port(), **common
    )
    env_b = engine_env(
        kafka_bootstrap, prefix, tmp_path / "b", worker_id="vb", web_port=free_port(), **common
    )
    settings = settings_of(env_a)
    policy = settings.fold_policy()
    ensure(settings)
    events = generate(16_000, 1_500, seed=23, start_ts=now_ms() - 40 * 60_000)

    a = Worker(env_a, tmp_path / "a.log").start()
    b = Worker(env_b, tmp_path / "b.log").start()
    publisher = BackgroundPublisher(settings, events, rate=250).start()
    try:
        a.wait_ready()
        b.wait_ready()
        for round_ in range(3):
            target = metric_sum(a.metrics(), "regstate_events_folded_total") + 500

            def folding(target: float = target) -> bool:
                return metric_sum(a.metrics(), "regstate_events_folded_total") >= target

            wait_until(folding, 180, 0.2, f"worker a folding (round {round_})")
            a.kill()
            assert a.exit_codes[-1] == -9
            a.start()
            a.wait_ready(180)
        publisher.join(600)
        assert a.starts == 4
        _check_against_log(kafka_bootstrap, prefix, policy, len(events), [a, b])
        for w in (a, b):  # how much redelivery the kills caused (shown with -s)
            m = w.metrics()
            print(
                w.env["REGSTATE_WORKER_ID"],
                "duplicates",
                sum(v for k, v in m.items() if 'outcome="duplicate"' in k),
                "republished",
                metric_sum(m, "regstate_republished_total"),
            )
    finally:
        a.stop()
        b.stop()


def test_cluster_broker_dies_under_load_no_acknowledged_event_is_lost(
    kafka_cluster: object, tmp_path: Path
) -> None:
    """Scenario: 3 brokers, replication 3, min.insync.replicas 2; one broker is SIGKILLed.

    Events are published with acks=all while two workers fold them; midway one
    broker dies. Every acknowledged event is in the log and folded, and
    regstate.bindings equals the replay of the log. The broker is started again
    at the end.
    """
    cluster = kafka_cluster
    bootstrap: str = cluster.bootstrap  # type: ignore[attr-defined]
    prefix = unique_name("clu") + "."
    common = {"grace_ms": NO_SWEEP, "replication_factor": 3, "standby_replicas": 1}
    env_a = engine_env(
        bootstrap, prefix, tmp_path / "a", worker_id="ca", web_port=free_port(), **common
    )
    env_b = engine_env(
        bootstrap, prefix, tmp_path / "b", worker_id="cb", web_port=free_port(), **common
    )
    settings = settings_of(env_a)
    policy = settings.fold_policy()
    ensure(settings)
    events = generate(8_000, 1_000, seed=31, start_ts=now_ms() - 40 * 60_000)

    a = Worker(env_a, tmp_path / "a.log").start()
    b = Worker(env_b, tmp_path / "b.log").start()
    try:
        a.wait_ready(180)
        b.wait_ready(180)
        publisher = BackgroundPublisher(settings, events, rate=200).start()
        wait_until(lambda: publisher.acked >= 2_000, 120, 0.2, "2000 events acknowledged")
        killed_at = time.monotonic()
        cluster.kill_node(2)  # type: ignore[attr-defined]
        publisher.join(900)
        assert time.monotonic() - killed_at > 5, "the broker was down while publishing"
        assert a.alive() and b.alive(), "workers survive a broker loss"
        _check_against_log(bootstrap, prefix, policy, len(events), [a, b])
    finally:
        a.stop()
        b.stop()
        cluster.start_node(2)  # type: ignore[attr-defined]
