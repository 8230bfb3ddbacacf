"""One data directory, two topic prefixes: each log gets a table of its own (D123)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from processors.replay import replay
from schemas import RegistrationEvent
from tests.helpers import unique_name
from tests.integration.engine_harness import (
    BOUNDARY_MS,
    NO_SWEEP,
    Worker,
    assert_api_answers_replay,
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


def _elsewhere(events: list[RegistrationEvent]) -> list[RegistrationEvent]:
    """The same log for phones of another domain: AORs no other log of the test has."""
    return [e._replace(aor=e.aor.replace("@pbx.example.com", "@test.example.com")) for e in events]


def _fold(env: dict[str, str], log: Path, bootstrap: str) -> None:
    """Run a worker with ``env`` until its group committed the end of its log; stop it."""
    settings = settings_of(env)
    worker = Worker(env, log).start()
    try:
        worker.wait_ready()
        wait_committed_to_end(bootstrap, settings.engine_group(), settings.topic("registrations"))
    finally:
        worker.stop()
    assert worker.exit_codes == [0], worker.log_tail()


def test_a_worker_never_resumes_another_prefixs_table(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Scenario: a host ran a test deployment (its own topic prefix) in the data dir its
    production worker then uses, with the same worker id; production's changelog
    already holds more records than the test's (other workers wrote it).

    The production worker's table is production's changelog and nothing else: the
    test's phones are unknown to it (404, no phantom binding) and every production
    AOR answers the replay's state (none of its changelog records skipped).
    """
    start = now_ms() - 30 * 60_000
    common: dict[str, str | int] = {"grace_ms": NO_SWEEP, "standby_replicas": 0, "worker_id": "w"}
    shared = tmp_path / "shared"

    prod_prefix = unique_name("prod") + "."
    prod_env = engine_env(
        kafka_bootstrap, prod_prefix, tmp_path / "other", web_port=free_port(), **common
    )
    prod = settings_of(prod_env)
    ensure(prod)
    prod_events = generate(4_000, 400, seed=7, start_ts=start)
    assert publish(prod, prod_events) == len(prod_events)
    _fold(prod_env, tmp_path / "prod-other.log", kafka_bootstrap)  # another worker's run

    test_prefix = unique_name("test") + "."
    test_env = engine_env(kafka_bootstrap, test_prefix, shared, web_port=free_port(), **common)
    test = settings_of(test_env)
    ensure(test)
    test_events = _elsewhere(generate(600, 60, seed=8, start_ts=start))
    assert publish(test, test_events) == len(test_events)
    _fold(test_env, tmp_path / "test.log", kafka_bootstrap)

    policy = prod.fold_policy()
    now = now_ms()
    test_states = replay(test_events, policy).states
    test_active = [
        aor
        for aor, s in sorted(test_states.items())
        if s.only_active(now).contacts
        and not any(abs(c.expires_at - now) < BOUNDARY_MS for c in s.contacts)
    ]
    assert len(test_active) > 10, "the test log leaves too few active phones to check"

    here = engine_env(kafka_bootstrap, prod_prefix, shared, web_port=free_port(), **common)
    worker = Worker(here, tmp_path / "prod-here.log").start()
    try:
        worker.wait_ready()
        now = now_ms()
        for aor in test_active:
            status, body = worker.get(f"/v1/aors/{quote(aor, safe=':@')}")
            assert status == 404, (aor, status, body[:200])
        prod_states = replay(prod_events, policy).states
        compared, _ = assert_api_answers_replay([worker], prod_states, now)
        assert compared > 300, compared
    finally:
        worker.stop()
    assert worker.exit_codes == [0], worker.log_tail()
    # Both tables are in the shared data dir, each in the directory of its own log.
    prod_here, test_here = settings_of(here).engine_dir(), test.engine_dir()
    assert prod_here.parent.parent == test_here.parent.parent == shared / "engine"
    assert prod_here != test_here and (prod_here / "v1" / "tables").is_dir()
