"""processors.alerting.Detector on simulated fleets (bench/phonesim.py): no Kafka, no clock.

Every scenario is real fold output: the simulator's RegistrationEvents are
folded with processors.fold.fold_event, and the detector sees the events, the
AorStates and the BindingEvents the engine would publish, ticked every 5 s of
event time.
"""

from __future__ import annotations

import pytest

from bench.phonesim import MINUTE, SECOND, Phone, PhoneSim, Timed, drive
from processors.alerting import (
    Detector,
    DetectorConfig,
    aor_domain,
    network_of,
    ua_family,
)
from schemas.alerts import Alert
from schemas.events import Source
from schemas.state import AorState, Binding, BindingEvent

NETWORKS = (("10.0.1", 250), ("10.0.2", 250), ("10.0.3", 300), ("10.0.4", 200))
"""1,000 phones across four /24 networks; 10.0.3.0/24 holds 300."""
CONFIG = DetectorConfig()
WARM_UP = 15 * MINUTE
"""Long enough for every phone to refresh twice (its refresh interval is learned)."""

pytestmark = pytest.mark.timeout(60)


def fleet(seed: int, scale: int = 1) -> tuple[PhoneSim, list[Phone]]:
    """The 1,000 phones of NETWORKS on two nodes (a ``scale``-th of them, for speed)."""
    sim = PhoneSim(seed=seed)
    phones: list[Phone] = []
    for net, n in NETWORKS:
        phones += sim.add_phones(n // scale, net=net, nodes=("fe1", "fe2"))
    return sim, phones


def pages(out: list[Timed]) -> list[Timed]:
    return [t for t in out if t.alert.kind in ("mass_drop", "node_down")]


def storms(out: list[Timed]) -> list[Timed]:
    return [t for t in out if t.alert.kind == "reregistration_storm"]


def keys(out: list[Timed]) -> set[str]:
    return {t.alert.key for t in out}


def last(out: list[Timed], key: str) -> Alert:
    return [t.alert for t in out if t.alert.key == key][-1]


# --------------------------------------------------------------------------- the scenarios


@pytest.fixture(scope="module")
def network_cut() -> tuple[int, int, list[Timed]]:
    """10.0.3.0/24 (300 of the 1,000 phones) cut for 20 minutes: (cut, back, alert changes)."""
    sim, _ = fleet(seed=1)
    cut = sim.start + WARM_UP
    back = cut + 20 * MINUTE
    sim.cut_network("10.0.3", cut, back)
    return cut, back, drive(sim, Detector(CONFIG), back + 10 * MINUTE)


def test_a_cut_network_gives_one_alert_naming_it_and_resolves_when_back(
    network_cut: tuple[int, int, list[Timed]],
) -> None:
    cut, back, out = network_cut

    (key,) = keys(pages(out))
    first = pages(out)[0]
    assert first.change == "fired"
    alert = first.alert
    assert (alert.kind, alert.group_type, alert.group) == ("mass_drop", "net", "10.0.3.0/24")
    assert alert.status == "firing"
    assert alert.labels["group"] == "10.0.3.0/24"
    assert alert.labels["severity"] == "page"
    # Detected within the window plus the hold, counting from the cut.
    assert cut < first.at <= cut + CONFIG.window_ms + CONFIG.hold_ms
    assert f"{alert.count} of 300 phones of network 10.0.3.0/24" in alert.summary
    assert alert.count >= CONFIG.min_ratio * 300
    # Updates under the same key while the rest of the /24 goes overdue.
    before_back = [t.alert for t in pages(out) if t.at < back]
    assert before_back[-1].count >= 0.9 * 300
    assert before_back[-1].still_down == before_back[-1].count

    final = last(out, key)
    assert final.count == 300
    assert "300 of 300 phones of network 10.0.3.0/24" in final.summary
    assert final.status == "resolved"
    assert final.resolved_at is not None
    assert back < final.resolved_at <= back + 5 * MINUTE
    assert final.started_at == alert.started_at
    assert final.still_down <= (1 - CONFIG.resolve_ratio) * 300


def test_the_comeback_is_reported_as_a_storm_of_its_own(
    network_cut: tuple[int, int, list[Timed]],
) -> None:
    _, back, out = network_cut

    (storm_key,) = keys(storms(out))
    fired = storms(out)[0]
    assert fired.change == "fired"
    assert (fired.alert.group_type, fired.alert.group) == ("net", "10.0.3.0/24")
    assert fired.alert.labels["severity"] == "info"
    assert back <= fired.at <= back + 3 * MINUTE
    final = last(out, storm_key)
    assert final.status == "resolved"
    assert final.count >= 0.9 * 300


def test_the_inputs_may_interleave_either_way() -> None:
    """BindingEvents before their AorState (another topic, another fetch): same alerts."""
    results = []
    for events_first in (False, True):
        sim, _ = fleet(seed=4, scale=4)
        cut = sim.start + WARM_UP
        sim.cut_network("10.0.2", cut, cut + 15 * MINUTE)
        out = drive(sim, Detector(CONFIG), cut + 25 * MINUTE, events_first=events_first)
        results.append([(t.at, t.change, t.alert.key, t.alert.count) for t in out])
    assert results[0] == results[1]
    assert any(key.startswith("mass_drop:net=10.0.2.0/24@") for _, _, key, _ in results[0])


def test_a_shift_that_unregisters_never_pages() -> None:
    sim, phones = fleet(seed=3)
    end = sim.start + WARM_UP
    sim.logout(phones[:500], end, spread_ms=5 * MINUTE)
    det = Detector(CONFIG)
    out = drive(sim, det, end + 30 * MINUTE)
    assert out == []
    assert sum(g.active for g in det.group_stats() if g.group_type == "domain") == 500
    assert sum(g.down for g in det.group_stats()) == 0


def test_a_silent_node_gives_one_node_down_alert() -> None:
    sim, _ = fleet(seed=2)
    cut = sim.start + WARM_UP
    back = cut + 15 * MINUTE
    sim.silence_node("fe2", cut, back)
    out = drive(sim, Detector(CONFIG), back + 10 * MINUTE)

    (key,) = keys(pages(out))
    first = pages(out)[0].alert
    assert (first.kind, first.group_type, first.group) == ("node_down", "node", "fe2")
    assert pages(out)[0].at <= cut + CONFIG.window_ms + CONFIG.hold_ms
    assert "front-end node fe2 silent since" in first.summary
    # The four networks each lost half their phones: explained by the node, not paged.
    assert [t for t in pages(out) if t.alert.group_type != "node"] == []
    final = last(out, key)
    assert final.count == 500
    assert final.status == "resolved"
    assert final.resolved_at is not None and final.resolved_at > back
    assert len(keys(storms(out))) <= 1


def test_the_processes_of_a_silent_node_give_one_node_down_alert_naming_the_node() -> None:
    """Two processes share each node's port (REGSTATE_SIP_PROCESSES=2): fe2#0 and fe2#1
    go silent with their machine, and the page names the machine."""
    sim = PhoneSim(seed=3)
    for net, n in NETWORKS:
        sim.add_phones(n // 2, net=net, nodes=("fe1#0", "fe1#1", "fe2#0", "fe2#1"))
    cut = sim.start + WARM_UP
    back = cut + 15 * MINUTE
    sim.silence_node("fe2#0", cut, back)
    sim.silence_node("fe2#1", cut, back)
    out = drive(sim, Detector(CONFIG), back + 10 * MINUTE)

    (key,) = keys(pages(out))
    first = pages(out)[0].alert
    assert (first.kind, first.group_type, first.group) == ("node_down", "node", "fe2")
    # fe2's 250 phones, but for the few whose refresh was not yet due when it came back.
    assert 240 <= last(out, key).count <= 250
    assert last(out, key).status == "resolved"


def test_a_short_blip_does_not_page() -> None:
    """A minute without replies: the phones retry before they are overdue."""
    sim, _ = fleet(seed=5, scale=4)
    cut = sim.start + WARM_UP
    sim.cut_network("10.0.3", cut, cut + 1 * MINUTE)
    out = drive(sim, Detector(CONFIG), cut + 20 * MINUTE)
    assert pages(out) == []


def test_a_few_phones_powered_off_do_not_page() -> None:
    sim, phones = fleet(seed=6, scale=4)
    off = sim.start + WARM_UP
    sim.power_off(phones[100:109], off)  # below min_count
    out = drive(sim, Detector(CONFIG), off + 20 * MINUTE)
    assert pages(out) == []


def test_a_reboot_behind_a_nat_is_not_a_loss() -> None:
    """New source port, new Contact: the old binding lapses, the phone is up."""
    sim, phones = fleet(seed=7, scale=4)
    at = sim.start + WARM_UP
    for p in phones[:40]:
        sim.reboot(p, at, 90 * SECOND, new_port=True)
    det = Detector(DetectorConfig(min_count=5, min_ratio=0.01))
    out = drive(sim, det, at + 20 * MINUTE)
    assert pages(out) == []
    assert sum(g.down for g in det.group_stats()) == 0


def test_restored_incident_keeps_its_key_and_resolves() -> None:
    sim, _ = fleet(seed=1)
    cut = sim.start + WARM_UP
    back = cut + 20 * MINUTE
    sim.cut_network("10.0.3", cut, back)
    first = Detector(CONFIG)
    out = drive(sim, first, cut + 10 * MINUTE)
    (open_alert,) = [a for a in first.open_alerts() if a.kind == "mass_drop"]

    # A new detector (a restarted runner) takes the open incident over.
    second = Detector(CONFIG)
    second.restore([open_alert])
    for phone_state in sim.states.values():
        second.observe(phone_state)
    out = drive(sim, second, back + 10 * MINUTE)
    assert keys(pages(out)) == {open_alert.key}
    assert last(out, open_alert.key).status == "resolved"


# --------------------------------------------------------------------------- small cases

T = 1_767_254_400_000


def state(aor: str, *bindings: Binding, ts: int = T) -> AorState:
    return AorState(aor, version=1, updated_ts=ts, contacts=bindings)


def binding(key: str, ip: str, *, at: int = T, expires_s: int = 600, node: str = "fe1") -> Binding:
    return Binding(
        key, key, at + expires_s * 1000, at, at, "c1", 1, None, None, None,
        Source(ip, 5060, "udp"), "Yealink SIP-T46U", node, (),
    )  # fmt: skip


def ending(aor: str, key: str, event: str, ts: int) -> BindingEvent:
    return BindingEvent(aor, 2, event, key, key, ts, "engine:w1", "c1", 1, None, f"x:{ts}")  # type: ignore[arg-type]


def test_planned_logout_of_an_overdue_phone_is_not_counted() -> None:
    cfg = DetectorConfig(min_count=1, min_ratio=0.01, hold_ms=0)
    det = Detector(cfg)
    aor = "sip:1@pbx.example.com"
    det.observe(state(aor, binding("sip:1@10.0.0.1", "10.0.0.1", expires_s=60)))
    assert det.tick(T + 59 * SECOND) != []  # overdue 2 s before expiry: lost
    det2 = Detector(cfg)
    det2.observe(state(aor, binding("sip:1@10.0.0.1", "10.0.0.1", expires_s=60)))
    ev = ending(aor, "sip:1@10.0.0.1", "unregistered", T + 30 * SECOND)
    det2.observe(ev._replace(node="fe1"))
    assert det2.tick(T + 120 * SECOND) == []
    assert list(det2.group_stats()) == []


def test_an_ending_older_than_the_refresh_held_is_ignored() -> None:
    cfg = DetectorConfig(min_count=1, min_ratio=0.01, hold_ms=0)
    det = Detector(cfg)
    aor = "sip:1@pbx.example.com"
    det.observe(state(aor, binding("k", "10.0.0.1", at=T + 100 * SECOND)))
    det.observe(ending(aor, "k", "expired", T + 50 * SECOND))
    assert det.tick(T + 200 * SECOND) == []
    det.observe(ending(aor, "k", "expired", T + 300 * SECOND))
    (change,) = det.tick(T + 300 * SECOND)
    assert change.change == "fired"
    assert change.alert.count == 1


def test_tick_never_goes_back() -> None:
    det = Detector()
    det.tick(T + 10_000)
    det.tick(T)
    assert det.now == T + 10_000


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="min_ratio"):
        DetectorConfig(min_ratio=0)
    with pytest.raises(ValueError, match="window_ms"):
        DetectorConfig(window_ms=0)
    with pytest.raises(ValueError, match="group_types"):
        DetectorConfig(group_types=("vlan",))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ip", "net"),
    [
        ("10.0.3.77", "10.0.3.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("[2001:db8::1]", "2001:db8::/64"),
        ("::ffff:192.0.2.9", "192.0.2.0/24"),
        ("not-an-ip", "unknown"),
    ],
)
def test_network_of(ip: str, net: str) -> None:
    assert network_of(Source(ip, 5060, "udp")) == net
    assert network_of(None) == "unknown"


@pytest.mark.parametrize(
    ("ua", "family"),
    [
        ("Yealink SIP-T46U 108.86.0.20", "yealink"),
        ("Cisco/SPA504G-7.6.2", "cisco"),
        ("Linphone/5.2.5 (belle-sip/5.2.0)", "linphone"),
        ("MicroSIP-3.21", "microsip"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_ua_family(ua: str | None, family: str) -> None:
    assert ua_family(ua) == family


def test_aor_domain() -> None:
    assert aor_domain("sip:1001@PBX.example.com") == "pbx.example.com"
    assert aor_domain("sip:1001@pbx.example.com:5080") == "pbx.example.com"
    assert aor_domain("sips:1001@[2001:db8::1]:5061") == "[2001:db8::1]"
    assert aor_domain("sip:pbx.example.com") == "pbx.example.com"
