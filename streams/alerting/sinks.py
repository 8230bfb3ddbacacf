"""Where alert changes go: regstate.alerts, an Alertmanager-compatible webhook, the log.

:class:`WebhookSink` never blocks its caller: :meth:`WebhookSink.submit` only
records the alert's newest state; a background task posts what is pending,
retries failures with exponential backoff, and re-posts open alerts every
``resend_ms`` (Alertmanager resolves an alert it has not heard of for its
``resolve_timeout``). While the receiver is down, pending alerts are coalesced
per key, so memory stays bounded by the number of incidents.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import orjson

from processors.alerting import AlertChange
from processors.explain import iso_ms
from schemas.alerts import Alert, encode_alert
from streams.aio import cancel_and_wait
from streams.clock import Clock, now_ms
from streams.settings import Settings

log = logging.getLogger("regstate.alerting")

ALERTMANAGER_PATH: Final = "/api/v2/alerts"


def rfc3339(ms: int) -> str:
    """``2026-01-01T08:00:00.000Z`` (Alertmanager's time format, the project's one ISO form)."""
    return iso_ms(ms)


def alertmanager_url(url: str) -> str:
    """The endpoint to POST to: ``url`` itself if it names the path, else ``url`` + the path."""
    url = url.rstrip("/")
    return url if url.endswith(ALERTMANAGER_PATH) else url + ALERTMANAGER_PATH


def to_alertmanager(
    alert: Alert, *, generator_url: str, now_ms: int, resend_ms: int
) -> dict[str, Any]:
    """One entry of Alertmanager's ``POST /api/v2/alerts`` body.

    A firing alert carries ``endsAt`` four resend periods after ``now_ms`` (wall
    clock), as Prometheus does: if the runner dies, Alertmanager resolves it
    after that instead of keeping it forever. A resolved one carries its
    resolution time.
    """
    ends = alert.resolved_at if alert.resolved_at is not None else now_ms + 4 * resend_ms
    return {
        "labels": dict(alert.labels),
        "annotations": {
            "summary": alert.summary,
            "description": (
                f"{alert.kind} of {alert.group_type} {alert.group}: {alert.count} bindings "
                f"({alert.ratio:.0%}), {alert.still_down} still down, {alert.active} active"
            ),
            "alert_key": alert.key,
        },
        "startsAt": rfc3339(alert.started_at),
        "endsAt": rfc3339(ends),
        "generatorURL": f"{generator_url.rstrip('/')}/alerts",
    }


class WebhookSink:
    """Posts alerts to an Alertmanager-compatible receiver (module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        generator_url: str,
        resend_ms: int = 60_000,
        timeout_s: float = 5.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        wall_ms: Clock = now_ms,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = alertmanager_url(url)
        self._headers = dict(headers or {})
        """Sent with every POST (the receiver's basic or bearer auth); never logged."""
        self.generator_url = generator_url
        self.resend_ms = resend_ms
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.wall_ms = wall_ms
        self._pending: dict[str, Alert] = {}
        self._open: dict[str, Alert] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()  # noqa: S311 - retry jitter, not a secret
        self.sent = 0
        """Alerts accepted by the receiver."""
        self.failures = 0
        """Failed POSTs (each retried, unless the receiver refused the body: 4xx)."""
        self.dropped = 0
        """Alerts given up on because the receiver refused them (4xx other than 429)."""

    @property
    def pending(self) -> int:
        """Alerts waiting to be posted."""
        return len(self._pending)

    def submit(self, alert: Alert) -> None:
        """Queue the newest state of an alert; returns at once."""
        self._pending[alert.key] = alert
        if alert.status == "firing":
            self._open[alert.key] = alert
        else:
            self._open.pop(alert.key, None)
        self._wake.set()

    def start(self) -> None:
        """Start the background sender."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=self._headers,
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        self._task = asyncio.create_task(self._run(), name="regstate-webhook")

    async def close(self, drain_s: float = 2.0) -> None:
        """Give the pending alerts up to ``drain_s`` to go out, then stop."""
        deadline = time.monotonic() + drain_s
        running = self._task is not None and not self._task.done()
        while self._pending and running and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.05)
        await cancel_and_wait(self._task)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        delay = self.backoff_s[0]
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.resend_ms / 1000)
            except TimeoutError:
                # Resend what is open, so the receiver does not time it out.
                for key, alert in self._open.items():
                    self._pending.setdefault(key, alert)
            self._wake.clear()
            while self._pending:
                batch = dict(self._pending)
                outcome = await self._post(list(batch.values()))
                if outcome == "retry":
                    self.failures += 1
                    # Full jitter: many runners restarting together do not retry in step.
                    await asyncio.sleep(self._rng.uniform(0, delay))
                    delay = min(delay * 2, self.backoff_s[1])
                    continue
                delay = self.backoff_s[0]
                if outcome == "ok":
                    self.sent += len(batch)
                else:
                    self.failures += 1
                    self.dropped += len(batch)
                for key, alert in batch.items():
                    # A newer state submitted meanwhile stays pending.
                    if self._pending.get(key) is alert:
                        del self._pending[key]

    async def _post(self, alerts: list[Alert]) -> str:
        """``ok``, ``retry`` (connection error, 5xx, 429) or ``refused`` (other 4xx)."""
        assert self._session is not None
        now = self.wall_ms()
        body = [
            to_alertmanager(
                a, generator_url=self.generator_url, now_ms=now, resend_ms=self.resend_ms
            )
            for a in alerts
        ]
        try:
            async with self._session.post(self.url, json=body) as resp:
                text = await resp.text()
                if 200 <= resp.status < 300:
                    return "ok"
                if resp.status == 429 or resp.status >= 500:
                    log.warning(
                        "webhook %s answered %s: %s (retrying)", self.url, resp.status, text[:200]
                    )
                    return "retry"
                log.error(
                    "webhook %s refused the alerts (%s): %s", self.url, resp.status, text[:200]
                )
                return "refused"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("webhook %s unreachable: %r (retrying)", self.url, exc)
            return "retry"


class KafkaAlertSink:
    """Appends every alert change to regstate.alerts (key = alert key), acks=all, idempotent."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.settings = settings
        self._producer: Any = None
        self.sent = 0
        self.errors = 0

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

        from streams.log.kafka_config import client_config

        self._producer = AIOKafkaProducer(
            **client_config(self.settings, "regstate-alerting"),
            acks="all",
            enable_idempotence=True,
        )
        await self._producer.start()

    async def submit(self, alert: Alert) -> None:
        """Hand the record to the producer (returns once it is queued, not when acked)."""
        try:
            fut = await self._producer.send(self.topic, encode_alert(alert), key=alert.key.encode())
        except Exception as exc:  # noqa: BLE001 - a sink failure must not stop detection
            self.errors += 1
            log.error("cannot append alert %s to %s: %r", alert.key, self.topic, exc)
            return
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.errors += 1
            log.error("alert not appended to %s: %r", self.topic, fut)
        else:
            self.sent += 1

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # flushes what is queued


def log_change(change: AlertChange) -> None:
    """The log sink: a warning when an incident fires, info for updates and resolutions."""
    a = change.alert
    level = (
        logging.WARNING
        if change.change == "fired" and a.labels.get("severity") == "page"
        else logging.INFO
    )
    log.log(level, "alert %s %s [%s]: %s", change.change, a.key, a.status, a.summary)
