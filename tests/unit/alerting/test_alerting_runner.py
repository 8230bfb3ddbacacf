"""streams.alerting.runner without Kafka: settings, flags, decoding, watermark, ticks, metrics."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from bench.phonesim import MINUTE, PhoneSim
from schemas.alerts import Alert
from schemas.codec import encode_binding_event, encode_event, encode_state
from schemas.state import AorState
from streams.alerting.cli import settings_from
from streams.alerting.runner import AlertingRunner, AlertingSettings
from streams.cli import build_parser
from streams.settings import SettingsError

pytestmark = pytest.mark.timeout(30)


@dataclass
class FakeKafkaSink:
    alerts: list[Alert] = field(default_factory=list)
    errors: int = 0

    async def submit(self, alert: Alert) -> None:
        self.alerts.append(alert)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_settings_come_from_regstate_alerting_variables() -> None:
    s = AlertingSettings.from_env(
        {
            "REGSTATE_ALERTING_WINDOW_MS": "300000",
            "REGSTATE_ALERTING_MIN_PERCENT": "30",
            "REGSTATE_ALERTING_WEBHOOK_URL": "http://127.0.0.1:9093",
            "REGSTATE_TOPIC_PREFIX": "x.",
        }
    )
    assert s.alerting_window_ms == 300_000
    assert s.alerting_webhook_url == "http://127.0.0.1:9093"
    assert s.topic("alerts") == "x.alerts"
    cfg = s.detector_config()
    assert cfg.window_ms == 300_000
    assert cfg.min_ratio == pytest.approx(0.3)
    assert cfg.refresh_tolerance == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("REGSTATE_ALERTING_MIN_PERCENT", "0", "min_ratio"),
        ("REGSTATE_ALERTING_HOLD_MS", "-1", "HOLD_MS"),
        ("REGSTATE_ALERTING_TICK_MS", "0", "TICK_MS"),
        ("REGSTATE_ALERTING_WINDOW_MS", "soon", "not an integer"),
    ],
)
def test_bad_settings_are_refused(name: str, value: str, match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        AlertingSettings.from_env({name: value})


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGSTATE_ALERTING_HOLD_MS", "1000")
    monkeypatch.setenv("REGSTATE_ALERTING_MIN_COUNT", "7")
    args = build_parser().parse_args(["alerting", "--hold-ms", "2000", "--port", "0"])
    s = settings_from(args)
    assert (s.alerting_hold_ms, s.alerting_min_count, s.alerting_port) == (2000, 7, 0)
    bad = argparse.Namespace(**{**vars(args), "alerting_min_percent": 101})
    with pytest.raises(SettingsError):
        settings_from(bad)


def test_the_watermark_follows_events_never_passes_the_clock_and_stops_when_idle() -> None:
    clock = Clock(1_000_000)
    runner = AlertingRunner(AlertingSettings(alerting_lateness_ms=5000), clock=clock)
    assert runner.current_watermark() is None
    runner._observe("bindings", b"sip:1@x", encode_state(AorState("sip:1@x", updated_ts=900_000)))
    runner._last_input_wall = clock.now
    assert runner.current_watermark() == 895_000
    # A node clock ahead of ours does not move time forward.
    runner._observe("bindings", b"sip:1@x", encode_state(AorState("sip:1@x", updated_ts=2_000_000)))
    assert runner.current_watermark() == 995_000
    # Idle: the wall clock carries it on, at most max_idle_advance past the last record.
    runner2 = AlertingRunner(AlertingSettings(alerting_lateness_ms=0), clock=clock)
    runner2._observe("bindings", b"sip:1@x", encode_state(AorState("sip:1@x", updated_ts=900_000)))
    runner2._last_input_wall = clock.now
    clock.now += 10_000
    assert runner2.current_watermark() == 910_000
    clock.now += 3_600_000
    assert runner2.current_watermark() == 930_000


def test_bad_records_are_counted_and_skipped() -> None:
    runner = AlertingRunner(AlertingSettings())
    runner._observe("bindings", None, b"{}")
    runner._observe("bindings", b"sip:1@x", b"not json")
    runner._observe("binding-events", b"sip:1@x", b'{"aor": "sip:1@x"}')
    runner._observe("registrations", b"sip:1@x", b"\xc1")
    runner._observe("bindings", b"sip:1@x", None)  # a tombstone is fine
    assert runner.decode_errors == {"bindings": 2, "binding-events": 1, "registrations": 1}
    assert runner.records["bindings"] == 3


async def test_records_in_ticks_out_metrics_shown() -> None:
    """The simulated fleet's outputs as Kafka would carry them, through the runner's decoder."""
    sim = PhoneSim(seed=31)
    sim.add_phones(30, net="10.9.1")
    sim.add_phones(30, net="10.9.2")
    cut = sim.start + 15 * MINUTE
    sim.cut_network("10.9.2", cut, cut + 15 * MINUTE)
    clock = Clock(sim.start + 3600 * 60_000)  # the wall clock: a day later (a replay)
    settings = AlertingSettings(alerting_min_count=5, alerting_lateness_ms=0)
    runner = AlertingRunner(settings, clock=clock)
    fake = FakeKafkaSink()
    runner.kafka_sink = fake  # type: ignore[assignment]
    for step in sim.run(cut + 40 * MINUTE):
        key = step.event.aor.encode()
        runner._observe("registrations", key, encode_event(step.event))
        if step.folded.events:
            state = step.folded.state
            runner._observe("bindings", key, encode_state(state) if state.contacts else None)
            for be in step.folded.events:
                runner._observe("binding-events", key, encode_binding_event(be))
        runner._last_input_wall = clock.now
        await runner._advance()
    assert runner.decode_errors == {}
    pages = [a for a in fake.alerts if a.kind == "mass_drop"]
    assert {a.key for a in pages} == {pages[0].key}
    assert pages[0].group == "10.9.2.0/24"
    assert pages[-1].status == "resolved"
    text = runner.render_metrics()
    assert 'regstate_alerting_open_alerts{kind="mass_drop"} 0' in text
    assert (
        'regstate_alerting_group_active_bindings{group="10.9.1.0/24",group_type="net"} 30' in text
    )
    assert 'regstate_alerting_alert_changes_total{change="fired",kind="mass_drop"} 1' in text
    assert 'regstate_alerting_records_total{input="registrations"}' in text


async def test_live_records_wait_until_the_watermark_passes_them() -> None:
    """Live, the detector sees records in event-time order: one read early from a fast
    partition waits while a slower partition holds the watermark back."""
    from schemas import RegistrationEvent

    def event(seq: int, ts: int) -> bytes:
        return encode_event(
            RegistrationEvent(
                "reject", f"fe1:{seq}", "fe1", seq, ts, "sip:1@x", "c", seq,
                status=401, reason="auth_failed",
            )
        )  # fmt: skip

    clock = Clock(2_000_000)
    runner = AlertingRunner(AlertingSettings(alerting_lateness_ms=0), clock=clock)
    runner.kafka_sink = FakeKafkaSink()  # type: ignore[assignment]
    runner._live = True
    runner._last_input_wall = clock.now
    assert runner._observe("registrations", b"sip:1@x", event(1, 1_000_000)) == 1_000_000
    assert runner._observe("registrations", b"sip:1@x", event(2, 1_300_000)) == 1_300_000
    assert runner.detector.max_event_ts is None  # both held: no tick yet
    runner._floor = 1_000_000  # a slower partition has delivered up to here only
    await runner._advance()
    assert runner.detector.max_event_ts == 1_000_000
    runner._floor = None
    await runner._advance()
    assert runner.detector.max_event_ts == 1_300_000
    # Stamped after the wall clock (a node clock ahead): taken at once, not held.
    runner._observe("registrations", b"sip:1@x", event(3, 2_500_000))
    assert runner.detector.max_event_ts == 2_500_000


def test_binding_events_with_a_bad_time_are_skipped_with_a_reason() -> None:
    """`ts: "x"` or null stopped `regstate alerting`, again after each restart (D82)."""
    import orjson

    runner = AlertingRunner(AlertingSettings())
    good = {
        "aor": "sip:1@x", "version": 1, "event": "registered", "key": "k", "uri": "sip:k@1",
        "ts": 1_000, "node": "fe1", "call_id": "c", "cseq": 1, "expires_at": 61_000,
        "cause": "fe1:1",
    }  # fmt: skip
    for bad in ({"ts": "x"}, {"ts": None}, {"ts": 2**64 - 1}, {"node": 5}, {"key": ["k"]}):
        runner._observe("binding-events", b"sip:1@x", orjson.dumps(good | bad))
    assert runner._observe("binding-events", b"sip:1@x", orjson.dumps(good)) == 1_000
    assert runner.decode_errors == {"binding-events": 5}
    assert runner.skip_reasons[("binding-events", "bad_time")] == 3
    assert 'reason="bad_time"' in runner.render_metrics()
