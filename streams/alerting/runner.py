"""The alerting runner: Kafka in, :class:`processors.alerting.Detector` in the middle, sinks out.

Inputs (one aiokafka consumer, no consumer group: the state is in memory and
rebuilt at every start):

* regstate.bindings from its first offset: every AOR's bindings with their
  source, user agent and node (the population and its groups);
* regstate.binding-events from ``lookback_ms`` before the start: endings
  (expired, deactivated, unregistered) and refreshes;
* regstate.registrations from ``lookback_ms`` before the start (unless
  ``REGSTATE_ALERTING_REGISTRATIONS=0``): which front-end nodes are alive, and rejects
  as evidence.

At start it reads the open incidents back from regstate.alerts
(:meth:`Detector.restore`; the two tails are then read from ``window_ms``
before the oldest one began, if that is earlier than the lookback, so its
losses are known), then reads every input up to its end offset as of the start
without ticking (the inputs are consumed at different speeds then,
so no watermark would be meaningful), then ticks and runs live.

Time: the watermark is the latest event ``ts`` seen, never later than the wall
clock (a node whose clock runs ahead cannot move time forward), never later
than the latest ``ts`` delivered by any active input partition (one with
records known to be unread, or that delivered within ``partition_idle_ms``:
:mod:`streams.alerting.watermark`; a lagging partition holds its phones'
refreshes, they must not turn overdue meanwhile), minus ``lateness_ms``.
Once live, a record waits until the watermark passes its time before the
detector sees it, so the detector takes the three inputs in event-time order
however Kafka interleaved their partitions (records stamped after the wall
clock are taken at once). When no record arrives the watermark moves on with
the wall clock, every ``idle_ms``, but at most ``max_idle_advance_ms`` past the
last record: if the engine stops publishing, every phone would otherwise go
overdue and page (``regstate_alerting_input_idle_seconds`` shows it instead).
The detector is ticked at every multiple of ``tick_ms`` the watermark passes.

Outputs: every alert change goes to regstate.alerts, to the webhook (when
``REGSTATE_ALERTING_WEBHOOK_URL`` is set) and to the log. ``GET /metrics``
(Prometheus), ``GET /alerts`` (open alerts, JSON) and ``GET /healthz`` are
served on ``REGSTATE_ALERTING_BIND:REGSTATE_ALERTING_PORT``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

import orjson
from aiohttp import web

from processors.alerting import AlertChange, Detector, DetectorConfig
from schemas.alerts import Alert, alert_to_dict, decode_alert
from schemas.codec import (
    MAX_TS_MS,
    Rejection,
    binding_event_from_dict,
    decode_event,
    decode_state,
)
from schemas.events import RegistrationEvent
from schemas.state import AorState, BindingEvent
from streams.alerting.sinks import KafkaAlertSink, WebhookSink, log_change
from streams.alerting.watermark import HOLD, InputClock
from streams.clock import Clock, now_ms
from streams.log.kafka_config import client_config
from streams.metrics import CONTENT_TYPE
from streams.metrics import alerting as alerting_metrics
from streams.settings import Settings, SettingsError
from streams.webserver import scheme, serve

log = logging.getLogger("regstate.alerting")

Item = AorState | BindingEvent | RegistrationEvent
"""What the detector observes."""
MAX_TICKS_PER_STEP: Final = 100_000
"""A watermark jump longer than this many ticks is ticked from its end part only."""


class _Skip(ValueError):
    """A record the runner cannot use, with a short reason for the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _time(value: object, name: str) -> int:
    """An event time the detector can compare and add to (an int in the codec's range)."""
    if type(value) is not int or not 0 <= value <= MAX_TS_MS:
        raise _Skip("bad_time", f"{name} {value!r:.40} is not a time in ms")
    return value


def _checked_binding_event(d: Any) -> BindingEvent:
    be = binding_event_from_dict(d)
    _time(be.ts, "ts")
    if type(be.aor) is not str or type(be.node) is not str or type(be.event) is not str:
        raise _Skip("mistyped_field", "aor, node and event must be strings")
    if be.key is not None and type(be.key) is not str:
        raise _Skip("mistyped_field", "key must be a string")
    if type(be.version) is not int or (
        be.expires_at is not None and type(be.expires_at) is not int
    ):
        raise _Skip("mistyped_field", "version and expires_at must be integers")
    return be


def _checked_state(value: bytes) -> AorState:
    state = decode_state(value)
    _time(state.updated_ts, "updated_ts")
    if type(state.aor) is not str:
        raise _Skip("mistyped_field", "aor must be a string")
    for b in state.contacts:
        _time(b.expires_at, "expires_at")
        _time(b.refreshed_at, "refreshed_at")
        _time(b.registered_at, "registered_at")
        if type(b.node) is not str or type(b.key) is not str:
            raise _Skip("mistyped_field", "contact key and node must be strings")
        if b.user_agent is not None and type(b.user_agent) is not str:
            raise _Skip("mistyped_field", "contact user_agent must be a string")
    return state


@dataclass(frozen=True)
class AlertingSettings(Settings):
    """Settings of ``regstate alerting``: every :class:`Settings` field plus these.

    Each reads ``REGSTATE_<NAME>`` like the others (e.g. ``REGSTATE_ALERTING_PORT``).
    Ratios are whole percents, because settings are integers or strings.
    """

    alerting_port: int = 6067
    """HTTP port of /metrics, /alerts and /healthz."""
    alerting_bind: str = "127.0.0.1"
    """Address the HTTP server listens on."""
    alerting_webhook_url: str = ""
    """Alertmanager base URL (``/api/v2/alerts`` is added), or several, comma-separated:
    each gets every alert on its own retry schedule (an Alertmanager HA pair expects
    clients to post to every member). Empty: no webhook."""
    alerting_webhook_username: str = ""
    """Alertmanager basic auth user (with ``alerting_webhook_password_file``), or empty."""
    alerting_webhook_password_file: str = ""
    """File holding the Alertmanager basic auth password (first line)."""
    alerting_webhook_token_file: str = ""
    """File holding an Alertmanager bearer token (instead of basic auth), or empty."""
    alerting_webhook_resend_ms: int = 60_000
    """Open alerts are posted again this often."""
    alerting_window_ms: int = 600_000
    """Losses are counted over this sliding event-time window."""
    alerting_hold_ms: int = 60_000
    """A condition must hold this long before it fires."""
    alerting_min_count: int = 10
    """N_min: fewest lost phones (an AOR at one network) that page."""
    alerting_min_percent: int = 20
    """p: smallest share (%) of a group lost within the window that pages."""
    alerting_resolve_percent: int = 80
    """Share (%) of an incident's lost phones back before it resolves."""
    alerting_explain_percent: int = 80
    """A group whose losses are this share (%) of a better-ranked group's is not paged."""
    alerting_node_silence_ms: int = 120_000
    """A node that sent nothing this long is silent (node_down)."""
    alerting_overdue_margin_ms: int = 2_000
    """A binding is overdue at the latest this long before it expires."""
    alerting_refresh_tolerance_percent: int = 125
    """Overdue after this share (%) of the learned refresh interval, plus the slack."""
    alerting_refresh_slack_ms: int = 30_000
    """Added to the learned refresh interval."""
    alerting_storm_window_ms: int = 60_000
    """Window of the re-registration storm count."""
    alerting_storm_min_count: int = 10
    """Fewest phones back within the storm window that make a storm."""
    alerting_storm_min_percent: int = 20
    """Smallest share (%) of a group back within the storm window that makes a storm."""
    alerting_forget_ms: int = 6 * 3600 * 1000
    """A phone down this long leaves its groups (unless an open incident holds it)."""
    alerting_lateness_ms: int = 5_000
    """Watermark: the latest event time minus this."""
    alerting_tick_ms: int = 1_000
    """The detector is ticked at every multiple of this the watermark passes."""
    alerting_idle_ms: int = 1_000
    """Without records, the watermark follows the wall clock every this long..."""
    alerting_max_idle_advance_ms: int = 30_000
    """... but at most this far past the last record."""
    alerting_partition_idle_ms: int = 5_000
    """An input partition that delivered nothing this long (and has nothing unread) stops
    holding the watermark back."""
    alerting_lookback_ms: int = 900_000
    """At start, binding-events and registrations are read from this long ago."""
    alerting_registrations: int = 1
    """1: also read regstate.registrations (node liveness, rejects); 0: not."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertingSettings:
        """Settings.from_env for these fields too (``REGSTATE_ALERTING_*``)."""
        settings = super().from_env(env)
        assert isinstance(settings, AlertingSettings)
        return settings

    def validate(self) -> None:
        """Settings.validate, plus the alerting fields (the detector checks its own)."""
        super().validate()
        for f in fields(self):
            numeric = f.name.startswith("alerting_") and f.type in ("int", int)
            if numeric and getattr(self, f.name) < 0:
                raise SettingsError(f"REGSTATE_{f.name.upper()} must not be negative")
        if bool(self.alerting_webhook_username) != bool(self.alerting_webhook_password_file):
            raise SettingsError(
                "REGSTATE_ALERTING_WEBHOOK_USERNAME and REGSTATE_ALERTING_WEBHOOK_PASSWORD_FILE "
                "go together"
            )
        if self.alerting_webhook_username and self.alerting_webhook_token_file:
            raise SettingsError(
                "REGSTATE_ALERTING_WEBHOOK_TOKEN_FILE and basic auth "
                "(REGSTATE_ALERTING_WEBHOOK_USERNAME): choose one"
            )
        for name in ("alerting_tick_ms", "alerting_idle_ms"):
            if getattr(self, name) < 1:
                raise SettingsError(f"REGSTATE_{name.upper()} must be at least 1")
        try:
            self.detector_config()
        except ValueError as exc:
            raise SettingsError(f"alerting thresholds: {exc}") from None

    def webhook_urls(self) -> list[str]:
        """The Alertmanager URLs, in the order given."""
        return [u.strip() for u in self.alerting_webhook_url.split(",") if u.strip()]

    def webhook_headers(self) -> dict[str, str]:
        """The Authorization header of the webhook POSTs (secrets read from their files)."""
        from streams.log.kafka_config import read_secret

        if self.alerting_webhook_token_file:
            token = read_secret(
                self.alerting_webhook_token_file, "REGSTATE_ALERTING_WEBHOOK_TOKEN_FILE"
            )
            return {"Authorization": f"Bearer {token}"}
        if self.alerting_webhook_username:
            import base64

            password = read_secret(
                self.alerting_webhook_password_file, "REGSTATE_ALERTING_WEBHOOK_PASSWORD_FILE"
            )
            pair = f"{self.alerting_webhook_username}:{password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def detector_config(self) -> DetectorConfig:
        """The detector's thresholds from these settings."""
        return DetectorConfig(
            window_ms=self.alerting_window_ms,
            hold_ms=self.alerting_hold_ms,
            min_count=self.alerting_min_count,
            min_ratio=self.alerting_min_percent / 100,
            resolve_ratio=self.alerting_resolve_percent / 100,
            explain_ratio=self.alerting_explain_percent / 100,
            node_silence_ms=self.alerting_node_silence_ms,
            overdue_margin_ms=self.alerting_overdue_margin_ms,
            refresh_tolerance=self.alerting_refresh_tolerance_percent / 100,
            refresh_slack_ms=self.alerting_refresh_slack_ms,
            storm_window_ms=self.alerting_storm_window_ms,
            storm_min_count=self.alerting_storm_min_count,
            storm_min_ratio=self.alerting_storm_min_percent / 100,
            forget_ms=self.alerting_forget_ms,
        )


# --------------------------------------------------------------------------- the runner


class AlertingRunner:
    """Consumes the engine's outputs, ticks the detector, feeds the sinks (module docstring)."""

    def __init__(
        self,
        settings: AlertingSettings,
        *,
        clock: Clock = now_ms,
        detector: Detector | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.detector = detector or Detector(settings.detector_config())
        self.topics = {
            "bindings": settings.topic("bindings"),
            "binding-events": settings.topic("binding-events"),
            "registrations": settings.topic("registrations"),
            "alerts": settings.topic("alerts"),
        }
        self.kafka_sink = KafkaAlertSink(settings, self.topics["alerts"])
        generator = f"{scheme(settings)}://{settings.alerting_bind}:{settings.alerting_port}"
        headers = settings.webhook_headers()
        self.webhooks: list[WebhookSink] = [
            WebhookSink(
                url,
                generator_url=generator,
                resend_ms=settings.alerting_webhook_resend_ms,
                wall_ms=clock,
                headers=headers,
            )
            for url in settings.webhook_urls()
        ]
        """One sink per Alertmanager: a receiver that is down delays no other."""
        self.ready = asyncio.Event()
        """Set once the inputs were read to their end offsets as of the start."""
        self.records: Counter[str] = Counter()
        self.decode_errors: Counter[str] = Counter()
        self.skip_reasons: Counter[tuple[str, str]] = Counter()
        """(input, reason) of every skipped record (D82)."""
        self.changes: Counter[tuple[str, str]] = Counter()
        self.watermark: int | None = None
        self._next_tick: int | None = None
        self._last_input_wall = clock()
        self.inputs = InputClock(settings.alerting_partition_idle_ms)
        self._latest: int | None = None
        """The latest event time delivered (held records included)."""
        self._live = False
        self._held: list[tuple[int, int, Item]] = []
        self._arrivals = itertools.count()
        self._floor: int | None = None
        self._restored_since: int | None = None
        self._web: web.AppRunner | None = None
        self.port: int | None = None
        """The port the HTTP server listens on (useful when configured as 0)."""

    # ------------------------------------------------------------------ decoding

    def _decode(self, role: str, key: bytes | None, value: bytes | None) -> Item | None:
        """One record as the detector takes it; None (counted, logged) when it is bad."""
        self.records[role] += 1
        try:
            if role == "bindings":
                if key is None:
                    raise ValueError("record without a key")
                return AorState(key.decode()) if value is None else _checked_state(value)
            if role == "binding-events":
                if value is None:
                    raise ValueError("null value")
                return _checked_binding_event(orjson.loads(value))
            event = decode_event(value)
            if isinstance(event, Rejection):
                raise _Skip(event.reason, str(event))
            return event
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            # The engine wrote these (or dead-lettered the bad ones itself): count, never stop.
            # A record that stops the runner would stop it again after each restart, since
            # it re-reads its lookback (D82).
            reason = exc.reason if isinstance(exc, _Skip) else type(exc).__name__
            self.skip_reasons[(role, reason)] += 1
            self.decode_errors[role] += 1
            if self.decode_errors[role] <= 10:
                log.warning("skipping a bad %s record: %r", role, exc)
            return None

    def _observe(self, role: str, key: bytes | None, value: bytes | None) -> int | None:
        """Decode one record and hand it on; return its event time (None: bad, or a tombstone).

        Until the runner is live (reading up to the end offsets as of the start) the
        detector takes it at once. Live, a record waits until the watermark passes
        its time (:meth:`_release`), so the detector sees the inputs in event-time
        order whatever the order Kafka delivered the partitions in: a phone's
        comeback read early from a fast partition must not resolve an incident at
        a tick before the phone came back. A record stamped later than the wall
        clock (a node clock running ahead) is taken at once: waiting would hold it
        for as long as the clock is off.
        """
        item = self._decode(role, key, value)
        if item is None:
            return None
        ts: int | None = item.updated_ts if isinstance(item, AorState) else item.ts
        if value is None:
            ts = None  # a tombstone has no time of its own (and changes nothing)
        if ts is not None and (self._latest is None or ts > self._latest):
            self._latest = ts
        if self._live and ts is not None and ts <= self.clock():
            heapq.heappush(self._held, (ts, next(self._arrivals), item))
        else:
            self.detector.observe(item)
        return ts

    def _release(self, upto: int) -> None:
        """Give the detector every held record stamped at or before ``upto``, oldest first."""
        held = self._held
        while held and held[0][0] <= upto:
            self.detector.observe(heapq.heappop(held)[2])

    # ------------------------------------------------------------------ time

    def current_watermark(self) -> int | None:
        """The event-time watermark now (module docstring); None before any event."""
        latest = self._latest
        if latest is None or self._floor == HOLD:
            return self.watermark
        now = self.clock()
        idle = min(max(0, now - self._last_input_wall), self.settings.alerting_max_idle_advance_ms)
        wm = min(latest + idle, now)
        if self._floor is not None:
            # A partition with unread records holds time back to what it has delivered.
            wm = min(wm, self._floor)
        return wm - self.settings.alerting_lateness_ms

    async def _advance(self) -> None:
        """Tick the detector at every tick boundary up to the watermark; publish the changes."""
        wm = self.current_watermark()
        if wm is None:
            return
        # Shown as a metric; ticks never go back anyway (a partition may start lagging).
        self.watermark = wm if self.watermark is None else max(self.watermark, wm)
        step = self.settings.alerting_tick_ms
        if self._next_tick is None:
            self._next_tick = wm
        if (wm - self._next_tick) // step > MAX_TICKS_PER_STEP:
            self._next_tick = wm - MAX_TICKS_PER_STEP * step
        while self._next_tick <= wm:
            self._release(self._next_tick)
            for change in self.detector.tick(self._next_tick):
                await self._publish(change)
            self._next_tick += step

    async def _publish(self, change: AlertChange) -> None:
        self.changes[(change.alert.kind, change.change)] += 1
        log_change(change)
        await self.kafka_sink.submit(change.alert)
        for webhook in self.webhooks:
            webhook.submit(change.alert)

    # ------------------------------------------------------------------ Kafka

    async def _restore(self) -> None:
        from streams.log.snapshot import SnapshotError, read_latest

        try:
            latest = await read_latest(self.settings, self.topics["alerts"], timeout_s=60)
        except SnapshotError as exc:
            log.warning("no open alerts restored: %s", exc)
            return
        alerts = [a for a in map(decode_alert, latest.values()) if isinstance(a, Alert)]
        firing = [a for a in alerts if a.status == "firing"]
        self.detector.restore(firing)
        if firing:
            # Read the losses of every incident taken over, however long ago it began:
            # an incident whose phones are unknown would resolve at the first tick.
            oldest = min(a.started_at for a in firing) - self.settings.alerting_window_ms
            self._restored_since = oldest
            log.info("took over %d open alerts from %s", len(firing), self.topics["alerts"])

    async def _assign(self, consumer: Any) -> tuple[dict[Any, str], dict[Any, int]]:
        """Assign and position every input partition; return each one's role and end offset."""
        from streams.log.snapshot import partitions_of

        roles: dict[Any, str] = {}
        names = ["bindings", "binding-events"]
        if self.settings.alerting_registrations:
            names.append("registrations")
        for role in names:
            for tp in await partitions_of(consumer, self.topics[role], 60):
                roles[tp] = role
        consumer.assign(list(roles))
        since = self.clock() - self.settings.alerting_lookback_ms
        if self._restored_since is not None:
            since = min(since, self._restored_since)
        tails = [tp for tp, role in roles.items() if role != "bindings"]
        offsets = await consumer.offsets_for_times(dict.fromkeys(tails, since)) if tails else {}
        for tp, role in roles.items():
            found = offsets.get(tp)
            if role == "bindings":
                await consumer.seek_to_beginning(tp)
            elif found is None:
                await consumer.seek_to_end(tp)  # nothing that recent: only what comes next
            else:
                consumer.seek(tp, found.offset)
        end = await consumer.end_offsets(list(roles))
        return roles, end

    async def _unread(self, consumer: Any, roles: dict[Any, str]) -> list[Any]:
        """The partitions whose position is behind their last known high watermark."""
        out = []
        for tp in roles:
            high = consumer.highwater(tp)
            if high is not None and await consumer.position(tp) < high:
                out.append(tp)
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; the sinks are flushed on the way out."""
        from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

        await self.start_http()
        await self.kafka_sink.start()
        for webhook in self.webhooks:
            webhook.start()
        consumer = AIOKafkaConsumer(
            **client_config(self.settings, "regstate-alerting"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await self._restore()
            await consumer.start()
            roles, end = await self._assign(consumer)
            behind = {tp for tp, off in end.items() if off > 0}
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=self.settings.alerting_idle_ms, max_records=5000
                )
                wall = self.clock()
                for tp, records in batches.items():
                    role = roles[tp]
                    for r in records:
                        ts = self._observe(role, r.key, r.value)
                        if ts is not None:
                            self.inputs.delivered(tp, ts, wall)
                if batches:
                    self._last_input_wall = wall
                self._floor = self.inputs.floor(wall, await self._unread(consumer, roles))
                if behind:
                    for tp in list(behind):
                        if await consumer.position(tp) >= end[tp]:
                            behind.discard(tp)
                    if behind:
                        continue  # catching up: no ticks yet
                if not self.ready.is_set():
                    log.info("inputs read to their end; alerting is live")
                    self._live = True
                    self.ready.set()
                await self._advance()
        finally:
            await consumer.stop()
            for webhook in self.webhooks:
                await webhook.close()
            await self.kafka_sink.stop()
            await self.stop_http()

    # ------------------------------------------------------------------ HTTP

    def render_metrics(self) -> str:
        """Prometheus text of the runner and the detector."""
        return alerting_metrics.render(
            alerting_metrics.Snapshot(
                open_alerts=self.detector.open_alerts(),
                changes=self.changes,
                groups=list(self.detector.group_stats()),
                records=self.records,
                decode_errors=self.decode_errors,
                watermark_ms=self.watermark or 0,
                idle_s=(self.clock() - self._last_input_wall) / 1000,
                kafka_sink_errors=self.kafka_sink.errors,
                # Summed over the Alertmanagers: labels by URL could expose credentials.
                webhook_failures=sum(w.failures for w in self.webhooks),
                webhook_pending=sum(w.pending for w in self.webhooks),
                ready=self.ready.is_set(),
                skipped=self.skip_reasons,
            )
        )

    async def start_http(self) -> None:
        """Serve /metrics, /alerts and /healthz."""

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text=self.render_metrics(), headers={"Content-Type": CONTENT_TYPE})

        async def alerts(request: web.Request) -> web.Response:
            body = orjson.dumps([alert_to_dict(a) for a in self.detector.open_alerts()])
            return web.Response(body=body, content_type="application/json")

        async def healthz(request: web.Request) -> web.Response:
            body = {"status": "ok", "ready": self.ready.is_set(), "watermark": self.watermark}
            return web.Response(body=orjson.dumps(body), content_type="application/json")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/alerts", alerts)
        app.router.add_get("/healthz", healthz)
        self._web, self.port = await serve(
            app, self.settings.alerting_bind, self.settings.alerting_port, self.settings
        )

    async def stop_http(self) -> None:
        if self._web is not None:
            await self._web.cleanup()
