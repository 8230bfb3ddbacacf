"""The Alertmanager webhook sink against a local HTTP receiver (aiohttp on 127.0.0.1, random port).

No fixed sleeps: every wait polls a condition until a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

from schemas.alerts import Alert
from streams.alerting.sinks import WebhookSink, alertmanager_url, rfc3339, to_alertmanager
from tests.helpers import wait_until_async

pytestmark = pytest.mark.timeout(30)

T = 1_767_254_400_000
ALERT = Alert(
    key=f"mass_drop:net=10.0.3.0/24@{T}",
    kind="mass_drop",
    group_type="net",
    group="10.0.3.0/24",
    status="firing",
    started_at=T,
    resolved_at=None,
    count=120,
    active=180,
    ratio=0.4,
    summary="120 of 300 phones of network 10.0.3.0/24 stopped refreshing or expired",
    labels={
        "alertname": "RegstateMassDeregistration",
        "kind": "mass_drop",
        "group_type": "net",
        "group": "10.0.3.0/24",
        "severity": "page",
    },
    updated_at=T + 60_000,
    still_down=120,
)


@dataclass
class Receiver:
    """An Alertmanager stand-in: records every POST body; answers from ``statuses`` first."""

    url: str = ""
    bodies: list[list[dict[str, Any]]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def alerts(self) -> list[dict[str, Any]]:
        return [a for body in self.bodies for a in body]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    rec.gate.set()

    async def post(request: web.Request) -> web.Response:
        await rec.gate.wait()
        rec.bodies.append(orjson.loads(await request.read()))
        status = rec.statuses.pop(0) if rec.statuses else 200
        return web.Response(status=status, text="ok" if status == 200 else "no")

    app = web.Application()
    app.router.add_post("/api/v2/alerts", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    rec.gate.set()
    await runner.cleanup()


def sink(url: str, **kw: Any) -> WebhookSink:
    kw.setdefault("backoff_s", (0.01, 0.05))
    return WebhookSink(url, generator_url="http://127.0.0.1:6067", wall_ms=lambda: T + 90_000, **kw)


async def test_a_firing_alert_is_posted_in_alertmanager_form(receiver: Receiver) -> None:
    s = sink(receiver.url)
    s.start()
    try:
        s.submit(ALERT)
        await wait_until_async(lambda: receiver.bodies, 10, 0.01, "a POST")
    finally:
        await s.close()
    (entry,) = receiver.alerts()
    assert set(entry) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert entry["labels"] == dict(ALERT.labels)
    assert entry["annotations"]["summary"] == ALERT.summary
    assert entry["annotations"]["alert_key"] == ALERT.key
    assert entry["startsAt"] == "2026-01-01T08:00:00.000Z"
    # Firing: ends four resend periods after now, so a dead runner's alert lapses.
    ends = datetime.fromisoformat(entry["endsAt"].replace("Z", "+00:00"))
    assert int(ends.timestamp() * 1000) == T + 90_000 + 4 * 60_000
    assert entry["generatorURL"] == "http://127.0.0.1:6067/alerts"
    assert s.sent == 1 and s.failures == 0


async def test_failures_are_retried_with_backoff_and_never_block(receiver: Receiver) -> None:
    receiver.statuses = [503, 503, 500]
    s = sink(receiver.url)
    s.start()
    try:
        started = time.monotonic()
        s.submit(ALERT)
        assert time.monotonic() - started < 0.05  # submit only records the alert
        await wait_until_async(lambda: s.sent == 1, 10, 0.01, "delivery after retries")
    finally:
        await s.close()
    assert len(receiver.bodies) == 4
    assert s.failures == 3


async def test_a_slow_or_unreachable_receiver_is_waited_for(receiver: Receiver) -> None:
    # A receiver that does not answer yet: alerts wait, submit does not.
    s = sink(receiver.url)
    receiver.gate.clear()
    s.start()
    try:
        s.submit(ALERT)
        s.submit(replace(ALERT, key="other", labels={**ALERT.labels, "group": "x"}))
        assert s.pending == 2
    finally:
        receiver.gate.set()
    await wait_until_async(lambda: s.sent == 2, 10, 0.01, "both delivered")
    await s.close()

    dead = sink("http://127.0.0.1:9")  # discard port: connection refused
    dead.start()
    dead.submit(ALERT)
    await wait_until_async(lambda: dead.failures >= 2, 10, 0.01, "retries")
    assert dead.sent == 0 and dead.pending == 1
    await dead.close(drain_s=0)


async def test_newer_states_replace_pending_ones(receiver: Receiver) -> None:
    receiver.statuses = [503]
    s = sink(receiver.url)
    s.start()
    try:
        s.submit(ALERT)
        await wait_until_async(lambda: s.failures == 1, 10, 0.01, "first attempt failed")
        resolved = replace(ALERT, status="resolved", resolved_at=T + 600_000)
        s.submit(resolved)
        await wait_until_async(lambda: s.pending == 0, 10, 0.01, "drained")
    finally:
        await s.close()
    last = receiver.alerts()[-1]
    assert last["endsAt"] == rfc3339(T + 600_000)
    assert [a["endsAt"] for a in receiver.alerts()].count(rfc3339(T + 600_000)) == 1


async def test_open_alerts_are_resent_resolved_ones_are_not(receiver: Receiver) -> None:
    s = sink(receiver.url, resend_ms=50)
    s.start()
    try:
        s.submit(ALERT)
        await wait_until_async(lambda: len(receiver.bodies) >= 3, 10, 0.01, "resends")
        s.submit(replace(ALERT, status="resolved", resolved_at=T + 1))
        await wait_until_async(
            lambda: receiver.alerts()[-1]["endsAt"] == rfc3339(T + 1), 10, 0.01, "resolution"
        )
        count = len(receiver.bodies)
        # Two more resend periods pass (polled, not slept): nothing is open, nothing is sent.
        deadline = time.monotonic() + 0.2
        await wait_until_async(lambda: time.monotonic() >= deadline, 5, 0.02)
        assert len(receiver.bodies) == count
    finally:
        await s.close()


async def test_a_refused_body_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    s = sink(receiver.url)
    s.start()
    try:
        s.submit(ALERT)
        await wait_until_async(lambda: s.dropped == 1, 10, 0.01, "refusal")
    finally:
        await s.close()
    assert len(receiver.bodies) == 1
    assert s.pending == 0


def test_the_endpoint_and_times() -> None:
    assert alertmanager_url("http://am:9093") == "http://am:9093/api/v2/alerts"
    assert alertmanager_url("http://am:9093/api/v2/alerts/") == "http://am:9093/api/v2/alerts"
    assert rfc3339(T + 5) == "2026-01-01T08:00:00.005Z"
    resolved = replace(ALERT, status="resolved", resolved_at=T + 1000)
    body = to_alertmanager(resolved, generator_url="http://x/", now_ms=0, resend_ms=1)
    assert body["endsAt"] == "2026-01-01T08:00:01.000Z"
    assert body["generatorURL"] == "http://x/alerts"
