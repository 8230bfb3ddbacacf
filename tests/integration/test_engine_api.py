"""The query API: any worker answers for any AOR (issue 3, stage b)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processors.problems import PROBLEM_STATES
from processors.replay import replay
from tests.helpers import unique_name, wait_until
from tests.integration.engine_harness import (
    NO_SWEEP,
    Worker,
    assert_api_answers_replay,
    engine_env,
    ensure,
    free_port,
    generate,
    metric_sum,
    now_ms,
    publish,
    settings_of,
    wait_committed_to_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_two_workers_split_partitions_and_each_answers_for_every_aor(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Scenario: two workers share 4 partitions; every AOR is asked of both.

    Each worker owns some partitions (their union is all 4, no overlap), and each
    answers GET /v1/aors/{aor} for every AOR, routing to the owner when needed:
    the active contacts of the replayed state, or 404 when none is active.
    /healthz and /readyz answer 200; /metrics shows the folded events.
    """
    prefix = unique_name("api") + "."
    common = {"grace_ms": NO_SWEEP, "standby_replicas": 0}
    env_a = engine_env(
        kafka_bootstrap, prefix, tmp_path / "a", worker_id="ka", web_port=free_port(), **common
    )
    env_b = engine_env(
        kafka_bootstrap, prefix, tmp_path / "b", worker_id="kb", web_port=free_port(), **common
    )
    settings = settings_of(env_a)
    policy = settings.fold_policy()
    ensure(settings)
    events = generate(4_000, 400, seed=5, start_ts=now_ms() - 30 * 60_000)
    publish(settings, events)

    a = Worker(env_a, tmp_path / "a.log").start()
    b = Worker(env_b, tmp_path / "b.log").start()
    try:

        def split() -> tuple[list[int], list[int]] | None:
            owned = []
            for w in (a, b):
                status, body = w.get("/readyz")
                if status != 200:
                    return None
                owned.append(orjson.loads(body)["partitions"])
            if sorted(owned[0] + owned[1]) == [0, 1, 2, 3] and owned[0] and owned[1]:
                return owned[0], owned[1]
            return None

        wait_until(split, 120, 0.3, "both workers ready, partitions split between them")
        wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", settings.topic("registrations"))

        now = now_ms()
        states = replay(events, policy).states
        compared, found = assert_api_answers_replay((a, b), states, now)
        assert compared > 300 and found > 50, (compared, found)

        # GET /v1/problems: each worker lists the problem AORs of its partitions;
        # together they are exactly the replay's.
        want_problems = {aor for aor, st in states.items() if st.health.state in PROBLEM_STATES}
        got_problems: list[str] = []
        for w in (a, b):
            status, body = w.get("/v1/problems")
            assert status == 200, (w.url, status, body)
            got_problems += [p["aor"] for p in orjson.loads(body)["problems"]]
        assert want_problems, "the generated log has no wrong-password phone"
        assert sorted(got_problems) == sorted(want_problems)
        assert a.get("/v1/problems?state=bogus")[0] == 400

        for w in (a, b):
            assert w.get("/healthz")[0] == 200
            assert w.get("/v1/aors/not-a-uri")[0] == 400
        total = sum(metric_sum(w.metrics(), "regstate_events_folded_total") for w in (a, b))
        assert total == 4_000
    finally:
        a.stop()
        b.stop()
