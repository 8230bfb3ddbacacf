"""The sweeper expires bindings with no front-end alive (issue 3, stage c)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from schemas import ContactEntry, RegistrationEvent, Source, decode_event
from tests.helpers import unique_name, wait_until
from tests.integration.engine_harness import (
    Worker,
    engine_env,
    ensure,
    free_port,
    metric_sum,
    now_ms,
    publish,
    read_topic,
    settings_of,
    wait_committed_to_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _register(aor: str, uri: str, expires: int, seq: int, ts: int) -> RegistrationEvent:
    return RegistrationEvent(
        kind="register",
        id=f"fe-gone:{seq}",
        node="fe-gone",
        seq=seq,
        ts=ts,
        aor=aor,
        call_id=f"call-{seq}@phone",
        cseq=seq,
        contacts=(ContactEntry(uri=uri, expires=expires),),
        expires=expires,
        source=Source("192.0.2.10", 5060, "udp"),
    )


def test_binding_granted_two_seconds_expires_without_any_front_end(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Scenario: a front-end grants 2 s, publishes the register, and is never heard of again.

    The worker's sweeper appends one ``expire`` event (node ``engine:<worker>``);
    the fold applies it: the AOR disappears from the API (404), regstate.bindings
    gets a tombstone for it, and regstate.binding-events an ``expired`` event
    caused by the sweeper's event. A binding granted an hour stays. The expire
    is sent once, not on every sweep.
    """
    prefix = unique_name("exp") + "."
    env = engine_env(
        kafka_bootstrap,
        prefix,
        tmp_path,
        worker_id="xa",
        web_port=free_port(),
        grace_ms=300,
        sweep_interval_ms=200,
    )
    settings = settings_of(env)
    ensure(settings)
    worker = Worker(env, tmp_path / "xa.log").start()
    try:
        worker.wait_ready()
        short, long_ = "sip:2001@pbx.example.com", "sip:2002@pbx.example.com"
        ts = now_ms()
        publish(
            settings,
            [
                _register(short, "sip:2001@192.0.2.10:5060", 2, 1, ts),
                _register(long_, "sip:2002@192.0.2.11:5060", 3600, 2, ts),
            ],
        )
        # Both are visible at first (the short one for ~2 s).
        wait_until(lambda: worker.get(f"/v1/aors/{long_}")[0] == 200, 30, 0.1, "long visible")
        wait_until(
            lambda: worker.get(f"/v1/aors/{short}")[0] == 404, 30, 0.1, "short gone from the API"
        )
        wait_until(
            lambda: metric_sum(worker.metrics(), "regstate_expires_sent_total") >= 1, 30, 0.1
        )
        topic = settings.topic("registrations")
        wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", topic)

        bindings = asyncio.run(read_topic(kafka_bootstrap, settings.topic("bindings")))
        last = {r.key: r.value for r in bindings}
        assert last[short.encode()] is None, "a tombstone for the expired AOR"
        assert last[long_.encode()] is not None

        events = [
            orjson.loads(r.value)
            for r in asyncio.run(read_topic(kafka_bootstrap, settings.topic("binding-events")))
        ]
        expired = [e for e in events if e["event"] == "expired"]
        assert len(expired) == 1 and expired[0]["aor"] == short
        assert expired[0]["node"] == "engine:xa"

        # Let a few more sweeps pass: the expire is not sent again.
        before = metric_sum(worker.metrics(), "regstate_events_folded_total")
        wait_until(
            lambda: metric_sum(worker.metrics(), "regstate_events_folded_total") == before, 5
        )
        sweeps = [decode_event(r.value) for r in asyncio.run(read_topic(kafka_bootstrap, topic))]
        by_engine = [e for e in sweeps if isinstance(e, RegistrationEvent) and e.kind == "expire"]
        assert len(by_engine) == 1, by_engine
        assert by_engine[0].node == "engine:xa" and by_engine[0].aor == short
        assert by_engine[0].id == f"engine:xa:{by_engine[0].seq}"
        assert worker.get(f"/v1/aors/{long_}")[0] == 200
    finally:
        worker.stop()
