"""Per-phone health (R12, issue 6) on simulated phones: fold output of realistic event streams.

The phones of bench/phonesim.py send what real ones do: a wrong password
retries forever, a phone behind a NAT that drops replies resends each REGISTER
(Timer E) and the node reports every resend as a ``retransmission`` reject, a
phone with a broken refresh timer lets its 20 s grant lapse every time.
"""

from __future__ import annotations

import orjson

from bench.phonesim import MINUTE, SECOND, Phone, PhoneSim
from processors.fold import fold_event
from processors.policy import DEFAULT_POLICY
from schemas.codec import decode_state, encode_state, state_to_dict
from schemas.state import AorState, Health
from tests.unit.builders import T0, Log, contact, fold_all

S = SECOND
PHONE = "sip:1001@192.0.2.10:5060"


def one_phone(**flags: object) -> tuple[PhoneSim, Phone]:
    sim = PhoneSim(seed=11)
    (phone,) = sim.add_phones(1, online_at=-1)
    for name, value in flags.items():
        setattr(phone, name, value)
    sim.login([phone], sim.start)
    return sim, phone


def test_a_wrong_password_is_auth_failing_within_three_attempts() -> None:
    sim, phone = one_phone(wrong_password=True)
    attempts = 0
    for step in sim.run(sim.start + 30 * MINUTE):
        assert step.event.kind == "reject"
        attempts += 1
        if step.folded.state.health.state == "auth_failing":
            break
    assert attempts <= 3
    h = sim.states[phone.aor].health
    assert h.state == "auth_failing"
    assert h.auth_failures == attempts
    assert h.last_reject is not None and h.last_reject.reason == "auth_failed"
    # It retries forever and stays auth_failing, with the same `since`.
    since = h.since
    steps = list(sim.run(sim.start + 60 * MINUTE))
    assert len(steps) > 10
    assert all(s.folded.state.health.state == "auth_failing" for s in steps)
    assert sim.states[phone.aor].health.since == since


def test_a_phone_whose_replies_are_dropped_is_unreachable() -> None:
    sim, phone = one_phone(replies_dropped=True)
    steps = list(sim.run(sim.start + 20 * SECOND))
    # The node accepted the REGISTER (a binding), then saw it again and again.
    assert steps[0].event.kind == "register"
    assert [s.event.reason for s in steps[1:4]] == ["retransmission"] * 3
    h = steps[3].folded.state.health
    assert h.state == "unreachable"
    assert h.request_retransmissions == 3
    assert h.reply_lost
    assert h.since == steps[3].event.ts
    assert h.retransmitted_request == f"{phone.call_id} {phone.cseq}"
    # Its next REGISTER succeeds at the node too, but the phone never saw the
    # previous 200: still unreachable, same `since`.
    for step in sim.run(sim.start + 30 * MINUTE):
        assert step.folded.state.health.state == "unreachable"
        assert step.folded.state.health.since == h.since
    assert sim.states[phone.aor].contacts  # bindings held all along (R10)


def test_unreachable_ends_after_a_clean_exchange() -> None:
    sim, phone = one_phone(replies_dropped=True)
    list(sim.run(sim.start + 5 * MINUTE))
    assert sim.states[phone.aor].health.state == "unreachable"
    phone.replies_dropped = False  # the firewall is fixed
    states = [s.folded.state.health.state for s in sim.run(sim.start + 30 * MINUTE)]
    # One more success carrying the old evidence, then a clean one: registered.
    assert states[0] == "unreachable"
    assert "registered" in states
    assert states[-1] == "registered"
    assert sim.states[phone.aor].health.retransmissions == 0


def test_a_phone_granted_20_s_that_keeps_lapsing_is_flapping() -> None:
    sim, phone = one_phone(grant_s=20, refresh_late_s=60)
    seen: list[str] = []
    flapping_at = None
    for step in sim.run(sim.start + 15 * MINUTE):
        seen.append(step.event.kind)
        h = step.folded.state.health
        if flapping_at is None and h.state == "flapping":
            flapping_at = step.event.ts
        if flapping_at is not None:
            # Its lapses are the flap: it stays flapping between registrations.
            assert h.state == "flapping"
            assert h.since == flapping_at
    assert flapping_at is not None
    assert flapping_at - sim.start <= 3 * 60 * SECOND
    assert seen.count("expire") >= 10  # the sweeper expired it again and again
    h = sim.states[phone.aor].health
    assert h.last_grant_s == 20
    assert h.short_cycles >= DEFAULT_POLICY.flap_threshold
    assert h.last_expired_at is not None


def test_a_healthy_phone_stays_registered() -> None:
    sim, phone = one_phone()
    steps = list(sim.run(sim.start + 2 * 60 * MINUTE))
    assert len(steps) > 20
    assert all(s.folded.state.health.state == "registered" for s in steps)
    h = sim.states[phone.aor].health
    assert h.since == sim.start
    assert (h.auth_failures, h.retransmissions, h.short_cycles) == (0, 0, 0)


# --------------------------------------------------------------------------- the rules


def test_retransmissions_of_different_requests_do_not_add_up() -> None:
    """Occasional loss (one resend per request) is not a phone that cannot be reached."""
    log = Log()
    events = [log.register(PHONE, cseq=1)]
    for cseq in (2, 3, 4):
        events.append(log.reject(200, "retransmission", cseq=cseq, ts=T0 + cseq * S))
    state, _ = fold_all(events)
    assert state.health.retransmissions == 3
    assert state.health.request_retransmissions == 1
    assert state.health.state == "registered"


def test_a_retransmitted_request_that_was_never_accepted_does_not_set_reply_lost() -> None:
    log = Log()
    events = [log.register(PHONE, cseq=1)]
    events += [log.reject(401, "retransmission", cseq=2, ts=T0 + i * S) for i in (1, 2, 3)]
    state, _ = fold_all(events)
    assert state.health.state == "unreachable"
    assert not state.health.reply_lost
    # The challenge got through in the end: a success proves the phone reachable.
    state, _ = fold_all([log.register(PHONE, cseq=3, ts=T0 + 60 * S)], state)
    assert state.health.state == "registered"


def test_rejects_never_clear_a_diagnosis() -> None:
    log = Log()
    events = [log.reject(200, "retransmission", cseq=1, ts=T0 + i * S) for i in (1, 2, 3)]
    events.append(log.reject(503, "overloaded", cseq=2, ts=T0 + 10 * S))
    state, _ = fold_all(events)
    assert state.health.state == "unreachable"


def test_an_expiry_keeps_auth_failing_even_with_contacts_left() -> None:
    log = Log()
    desk, soft = "sip:1001@192.0.2.10:5060", "sip:1001@192.0.2.11:5060"
    events = [log.register(contact(desk, 60), contact(soft, 3600), cseq=1)]
    events += [log.reject(cseq=i, ts=T0 + i * S) for i in (2, 3, 4)]
    events.append(log.expire(desk, ts=T0 + 60 * S))
    state, _ = fold_all(events)
    assert len(state.contacts) == 1
    assert state.health.state == "auth_failing"


def test_the_steady_refresh_keeps_the_same_health_object() -> None:
    """The fold's hot path: a refresh with nothing to diagnose allocates no new Health."""
    log = Log()
    state, _ = fold_all([log.register(PHONE, cseq=1)])
    again = fold_event(state, log.register(PHONE, cseq=2, ts=T0 + 1800 * S))
    assert again.state.health is state.health


def test_health_written_before_issue_6_still_decodes() -> None:
    log = Log()
    state, _ = fold_all([log.register(PHONE, cseq=1)])
    old = state_to_dict(state)
    for name in ("request_retransmissions", "retransmitted_request", "reply_lost", "last_grant_s"):
        del old["health"][name]
    decoded = decode_state(orjson.dumps(old))
    assert decoded.health == state.health._replace(last_grant_s=None)
    assert decode_state(encode_state(state)).health == state.health


def test_new_health_fields_have_defaults() -> None:
    h = AorState("sip:1@pbx.example.com").health
    assert h == Health()
    assert (h.request_retransmissions, h.retransmitted_request, h.reply_lost) == (0, None, False)
    assert h.last_grant_s is None
