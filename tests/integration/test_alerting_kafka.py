"""The alerting runner on the real broker: Kafka in, regstate.alerts and a webhook out.

A simulated fleet (bench/phonesim.py: events folded with the real fold) is
published as the engine would publish it (regstate.registrations,
regstate.bindings, regstate.binding-events) under a topic prefix of this test
only. One /24 is cut; the runner must page once, keep the incident's key across
a restart (it takes the open alert back from regstate.alerts), and resolve it
when the phones are back. The webhook receiver is an aiohttp server on
127.0.0.1. Every wait polls until a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from bench.phonesim import MINUTE, PhoneSim, Step
from schemas.alerts import Alert, decode_alert
from schemas.codec import encode_binding_event, encode_event, encode_state
from streams.alerting.runner import AlertingRunner, AlertingSettings
from streams.alerting.sinks import rfc3339
from streams.log.snapshot import read_latest
from streams.log.topics import ensure_topics, topic_specs
from tests.helpers import wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CUT_NET = "10.8.2"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An Alertmanager stand-in on 127.0.0.1 (random port): (base URL, alerts posted)."""
    posted: list[dict[str, Any]] = []

    async def post(request: web.Request) -> web.Response:
        posted.extend(orjson.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/api/v2/alerts", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", posted
    await runner.cleanup()


@pytest.fixture
def settings(kafka_bootstrap: str, receiver: tuple[str, list[Any]]) -> Iterator[AlertingSettings]:
    s = AlertingSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"test-alerting-{uuid.uuid4().hex[:12]}.",
        partitions=2,
        replication_factor=1,
        alerting_port=0,
        alerting_webhook_url=receiver[0],
        alerting_min_count=5,
        alerting_idle_ms=100,
        alerting_lateness_ms=2000,
    )
    yield s
    asyncio.run(_delete_topics(s))


async def _delete_topics(s: AlertingSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [t.name for t in topic_specs(s) if t.name in existing]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def publish(producer: Any, s: AlertingSettings, steps: list[Step]) -> None:
    """What the front-ends and the engine would append for these folded events."""
    for step in steps:
        key = step.event.aor.encode()
        await producer.send(s.topic("registrations"), encode_event(step.event), key=key)
        if step.folded.events:
            state = step.folded.state
            value = encode_state(state) if state.contacts else None
            await producer.send(s.topic("bindings"), value, key=key)
            for be in step.folded.events:
                await producer.send(s.topic("binding-events"), encode_binding_event(be), key=key)
    await producer.flush()


async def start(s: AlertingSettings) -> tuple[AlertingRunner, asyncio.Event, asyncio.Task[None]]:
    runner = AlertingRunner(s)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await wait_until_async(lambda: runner.ready.is_set() or task.done(), 60, 0.05, "ready")
    assert not task.done(), task
    return runner, stop, task


async def test_the_runner_pages_once_survives_a_restart_and_resolves(
    settings: AlertingSettings, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    _, posted = receiver
    await ensure_topics(settings)
    # Event time two hours ago: a replay of history as fast as Kafka delivers it.
    sim = PhoneSim(seed=41, start=(time.time_ns() // 1_000_000 // 1000) * 1000 - 2 * 3600_000)
    sim.add_phones(40, net="10.8.1", nodes=("fe1", "fe2"))
    sim.add_phones(40, net=CUT_NET, nodes=("fe1", "fe2"))
    cut = sim.start + 15 * MINUTE
    back = cut + 15 * MINUTE
    sim.cut_network(CUT_NET, cut, back)
    first_half = list(sim.run(cut + 12 * MINUTE))
    second_half = list(sim.run(back + 15 * MINUTE))

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        runner, stop, task = await start(settings)
        await publish(producer, settings, first_half)

        def fired() -> list[dict[str, Any]]:
            return [a for a in posted if a["labels"].get("kind") == "mass_drop"]

        await wait_until_async(fired, 60, 0.1, "a mass_drop alert at the webhook")
        (key,) = {a["annotations"]["alert_key"] for a in fired()}
        assert fired()[0]["labels"]["group"] == f"{CUT_NET}.0/24"
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{runner.port}/metrics") as resp,
        ):
            text = await resp.text()
        assert 'regstate_alerting_open_alerts{kind="mass_drop"} 1' in text
        assert "regstate_alerting_group_active_bindings" in text

        # A restart while the incident is open: the new runner keeps its key. Its
        # lookback is 1 ms, so only the incident taken over makes it read the
        # losses of the first half (they began long before any lookback).
        stop.set()
        await asyncio.wait_for(task, 30)
        latest = await read_latest(settings, settings.topic("alerts"), timeout_s=30)
        alert = decode_alert(latest[key.encode()])
        assert isinstance(alert, Alert) and alert.status == "firing"

        runner, stop, task = await start(dataclasses.replace(settings, alerting_lookback_ms=1))
        assert runner.records["binding-events"] > 0
        await publish(producer, settings, second_half)

        async def resolved() -> Alert | None:
            latest = await read_latest(settings, settings.topic("alerts"), timeout_s=30)
            got = decode_alert(latest.get(key.encode()))
            return got if isinstance(got, Alert) and got.status == "resolved" else None

        final = await wait_until_async(resolved, 90, 0.5, "the incident resolved")
        assert final is not None
        assert final.key == key
        assert final.group == f"{CUT_NET}.0/24"
        assert final.resolved_at is not None and final.resolved_at > back
        latest = await read_latest(settings, settings.topic("alerts"), timeout_s=30)
        pages = {
            a.key
            for v in latest.values()
            if isinstance(a := decode_alert(v), Alert) and a.kind != "reregistration_storm"
        }
        assert pages == {key}
        ends = rfc3339(final.resolved_at)
        await wait_until_async(
            lambda: any(
                a["annotations"]["alert_key"] == key and a["endsAt"] == ends for a in posted
            ),
            30,
            0.1,
            "the resolution at the webhook",
        )
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        await producer.stop()


def test_problems_reads_the_bindings_topic(
    settings: AlertingSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``regstate problems`` lists what regstate.bindings holds (last value per key);
    ``--log`` folds regstate.registrations and also finds AORs without a binding."""
    from streams.cli import main

    asyncio.run(ensure_topics(settings))
    sim = PhoneSim(seed=43)
    healthy = sim.add_phones(3, net="10.7.1")
    odd = sim.add_phones(3, net="10.7.2", online_at=-1)
    odd[0].replies_dropped = True
    odd[1].grant_s, odd[1].refresh_late_s = 20, 60
    odd[2].wrong_password = True
    sim.login(odd, sim.start)
    steps = list(sim.run(sim.start + 10 * MINUTE))

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        await producer.start()
        try:
            await publish(producer, settings, steps)
        finally:
            await producer.stop()

    asyncio.run(go())
    monkeypatch.setenv("REGSTATE_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("REGSTATE_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("REGSTATE_PARTITIONS", str(settings.partitions))
    assert main(["problems", "--json", "--timeout", "30"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    # The flapping phone lapses (a tombstone when it has no contact left) and
    # registers again: listed only while its last value is not a tombstone.
    states = {p["aor"]: p["state"] for p in listed}
    assert states.get(odd[0].aor) == "unreachable"
    assert all(p.aor not in states for p in healthy)
    assert main(["problems", "--state", "registered", "--timeout", "30"]) == 0
    table = capsys.readouterr().out
    assert all(p.aor in table for p in healthy)
    # The wrong-password phone never had a binding: a tombstone at most on
    # regstate.bindings, so only folding the log (--log) finds it.
    assert odd[2].aor not in states
    assert main(["problems", "--log", "--json"]) == 0
    folded = {p["aor"]: p["state"] for p in orjson.loads(capsys.readouterr().out)}
    assert folded.get(odd[2].aor) == "auth_failing"
    assert folded.get(odd[0].aor) == "unreachable"
    assert all(p.aor not in folded for p in healthy)
