"""trunk_down (D55): a trunk pages once per outage, whatever it goes through meanwhile."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.alerting import AlertChange, Detector
from processors.fold import fold_event
from schemas import ContactEntry, RegistrationEvent, Source
from schemas.alerts import decode_alert, encode_alert
from schemas.state import AorState

TRUNK = "trunk:sip:dialer1@carrier.example"
PHONE = "sip:1001@pbx.example"
T0 = 1_796_130_000_000
SERVER = Source("192.0.2.1", 5060, "udp")


def register(aor: str, at: int, expires: int = 12, cseq: int = 1) -> RegistrationEvent:
    return RegistrationEvent(
        kind="register", id=f"hep-2002:{at * 1000}", node="hep-2002", seq=at * 1000, ts=at,
        aor=aor, call_id=f"c{at}", cseq=cseq, source=SERVER,
        contacts=(ContactEntry("sip:dialer1@192.0.2.1:5060", expires),),
    )  # fmt: skip


def reject(aor: str, at: int, status: int = 403, reason: str = "forbidden") -> RegistrationEvent:
    return RegistrationEvent(
        kind="reject", id=f"hep-2002:{at * 1000}", node="hep-2002", seq=at * 1000, ts=at,
        aor=aor, call_id=f"c{at}", cseq=1, source=SERVER, status=status, reason=reason,
    )  # fmt: skip


def expire(state: AorState, at: int) -> RegistrationEvent:
    b = state.contacts[0]
    return RegistrationEvent(
        kind="expire", id=f"engine:w1:{at}", node="engine:w1", seq=at, ts=at, aor=state.aor,
        call_id=b.call_id, cseq=b.cseq, contact=b.uri,
    )  # fmt: skip


class Engine:
    """The fold plus the detector fed as the alerting consumer is: states and binding events."""

    def __init__(self) -> None:
        self.detector = Detector()
        self.states: dict[str, AorState] = {}
        self.changes: list[AlertChange] = []

    def apply(self, e: RegistrationEvent) -> None:
        folded = fold_event(self.states.get(e.aor), e)
        self.states[e.aor] = folded.state
        self.detector.observe(e)
        for be in folded.events:
            self.detector.observe(be)
        self.detector.observe(folded.state)

    def tick(self, now: int) -> None:
        # The sweeper: bindings past expiry (plus 500 ms grace) get their expire event.
        for s in list(self.states.values()):
            if s.contacts and s.contacts[0].expires_at + 500 <= now:
                self.apply(expire(s, now))
        self.changes += self.detector.tick(now)


def test_registered_auth_failing_expired_pages_once() -> None:
    eng = Engine()
    eng.apply(register(TRUNK, T0))
    eng.apply(register(PHONE, T0, expires=3600))
    for t in range(T0, T0 + 3_000, 1_000):
        eng.tick(t)
    eng.apply(register(TRUNK, T0 + 2_000, cseq=2))  # refreshed: expires at T0 + 14 s
    for i, at in enumerate((T0 + 4_000, T0 + 6_000, T0 + 8_000)):
        eng.apply(reject(TRUNK, at))
        eng.tick(at)
        if i < 2:
            assert eng.changes == []  # two refusals are not yet auth_failing
    assert eng.states[TRUNK].health.state == "auth_failing"
    for t in range(T0 + 9_000, T0 + 60_000, 1_000):
        eng.tick(t)  # the binding lapses and is expired: the same outage
    assert not eng.states[TRUNK].contacts
    [fired] = [c for c in eng.changes if c.alert.kind == "trunk_down"]
    a = fired.alert
    assert fired.change == "fired" and a.group == TRUNK and a.group_type == "trunk"
    assert a.started_at == T0 + 8_000 and "refuses its credentials" in a.summary
    assert a.labels["alertname"] == "RegstateTrunkDown" and a.labels["severity"] == "page"
    assert decode_alert(encode_alert(a)) == a
    assert [x.key for x in eng.detector.open_alerts()] == [a.key]
    # The trunk is never one of the phones: no group counts it.
    assert all(TRUNK not in g.group for g in eng.detector.group_stats())
    # Back: the carrier accepts again, the incident resolves under the same key.
    eng.apply(register(TRUNK, T0 + 61_000, cseq=3))
    eng.tick(T0 + 61_000)
    assert [(c.change, c.alert.key) for c in eng.changes] == [("fired", a.key), ("resolved", a.key)]


def test_a_trunk_never_registered_pages_only_when_refused() -> None:
    eng = Engine()
    for i in range(3):
        eng.apply(reject(TRUNK, T0 + i * 1_000, 401, "auth_failed"))
    eng.tick(T0 + 3_000)
    assert [c.change for c in eng.changes] == ["fired"]
    quiet = Engine()
    quiet.apply(reject(TRUNK, T0, 500, "server_error"))
    quiet.tick(T0 + 100_000)
    assert quiet.changes == []


def test_a_restored_outage_is_not_paged_again() -> None:
    eng = Engine()
    eng.apply(register(TRUNK, T0))
    eng.tick(T0 + 60_000)
    [fired] = eng.changes
    again = Engine()
    again.detector.restore([fired.alert])
    again.apply(register(TRUNK, T0))
    again.tick(T0 + 60_000)
    assert again.changes == []


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["ok", "forbidden", "silence"]), st.integers(1, 20)),
        min_size=1,
        max_size=25,
    ),
    st.integers(200, 5_000),
)
def test_outages_page_once_and_resolve_once(steps: list[tuple[str, int]], tick_ms: int) -> None:
    """Whatever a carrier does, records alternate fired/resolved, one key per outage."""
    eng = Engine()
    t = T0
    cseq = 0
    for what, seconds in steps:
        end = t + seconds * 1_000
        while t < end:
            if what == "ok":
                cseq += 1
                eng.apply(register(TRUNK, t, cseq=cseq))
            elif what == "forbidden":
                eng.apply(reject(TRUNK, t))
            t += 2_000
            eng.tick(t - 2_000 + tick_ms)
    changes = [c for c in eng.changes if c.alert.kind == "trunk_down"]
    assert [c.change for c in changes] == ["fired", "resolved"] * (len(changes) // 2) + (
        ["fired"] if len(changes) % 2 else []
    )
    for fired, resolved in zip(changes[::2], changes[1::2], strict=False):
        assert fired.alert.key == resolved.alert.key
    assert len({c.alert.key for c in changes}) == (len(changes) + 1) // 2
    assert all(c.alert.kind == "trunk_down" for c in eng.changes)  # never a mass drop
