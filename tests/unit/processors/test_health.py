"""R12 health diagnosis as it exists now (processors/health.py), driven through the fold.

R12 Health: each AOR carries a diagnosis of the three ways registration fails in
the field: wrong password (repeated auth rejects, no success since), replies not
reaching the phone (the node keeps seeing retransmissions of the same request:
NAT or firewall), and a too-short expiry (granted expiry below a threshold, or
expire-then-register cycles). States: `registered`, `unregistered`,
`auth_failing`, `unreachable`, `flapping`.
"""

from __future__ import annotations

import pytest

from processors.fold import fold_event
from processors.outcomes import Outcome
from processors.policy import DEFAULT_POLICY, FoldPolicy
from schemas.state import AorState, Health
from tests.unit.builders import T0, Log, contact, fold_all

S = 1000
PHONE = "sip:1001@192.0.2.10:5060"


def test_new_aor_is_unregistered() -> None:
    assert AorState("sip:1001@pbx.example.com").health == Health(state="unregistered")


def test_successful_register_is_registered() -> None:
    log = Log()
    state, _ = fold_all([log.register(PHONE, ts=T0)])
    assert state.health.state == "registered"
    assert state.health.since == T0


@pytest.mark.parametrize("reason", ["auth_failed", "unauthorized", "forbidden"])
def test_three_auth_rejects_make_auth_failing(reason: str) -> None:
    assert DEFAULT_POLICY.auth_fail_threshold == 3
    log = Log()
    state, _ = fold_all([log.reject(401, reason, cseq=i, ts=T0 + i * S) for i in (1, 2)])
    assert state.health.auth_failures == 2
    assert state.health.state == "unregistered"
    third = fold_event(state, log.reject(401, reason, cseq=3, ts=T0 + 3 * S))
    assert third.outcome == Outcome.REJECTED
    h = third.state.health
    assert h.state == "auth_failing"
    assert h.auth_failures == 3
    assert h.since == T0 + 3 * S
    assert h.last_reject is not None
    assert (h.last_reject.status, h.last_reject.reason) == (401, reason)
    # More failures keep the state and its start time.
    fourth = fold_event(third.state, log.reject(401, reason, cseq=4, ts=T0 + 4 * S))
    assert fourth.state.health.state == "auth_failing"
    assert fourth.state.health.since == T0 + 3 * S
    assert fourth.state.health.auth_failures == 4


def test_auth_failing_keeps_the_bindings() -> None:
    """R10: rejects change no binding, even when the AOR becomes auth_failing."""
    log = Log()
    state, _ = fold_all(
        [log.register(PHONE)] + [log.reject(cseq=i, ts=T0 + i * S) for i in (2, 3, 4)]
    )
    assert state.health.state == "auth_failing"
    assert [b.uri for b in state.contacts] == [PHONE]


def test_other_rejects_do_not_count_as_auth_failures() -> None:
    log = Log()
    state, _ = fold_all(
        [log.reject(423, "interval_too_brief", cseq=i, ts=T0 + i * S) for i in (1, 2, 3, 4)]
    )
    assert state.health.auth_failures == 0
    assert state.health.state == "unregistered"
    assert state.health.last_reject is not None
    assert state.health.last_reject.status == 423


def test_success_resets_auth_failures() -> None:
    log = Log()
    state, _ = fold_all(
        [log.reject(cseq=1, ts=T0), log.reject(cseq=2, ts=T0 + S), log.register(PHONE, cseq=3)]
    )
    assert state.health.auth_failures == 0
    assert state.health.state == "registered"
    # The count starts again: two more failures are not yet auth_failing.
    state, _ = fold_all(
        [log.reject(cseq=4, ts=T0 + 5 * S), log.reject(cseq=5, ts=T0 + 6 * S)], state
    )
    assert state.health.auth_failures == 2
    assert state.health.state == "registered"


def test_success_after_auth_failing_is_registered_again() -> None:
    log = Log()
    rejects = [log.reject(cseq=i, ts=T0 + i * S) for i in (1, 2, 3)]
    state, _ = fold_all([*rejects, log.register(PHONE, cseq=4, ts=T0 + 10 * S)])
    assert state.health.state == "registered"
    assert state.health.since == T0 + 10 * S
    assert state.health.auth_failures == 0
    # The last reject stays as evidence.
    assert state.health.last_reject is not None
    assert state.health.last_reject.ts == T0 + 3 * S


def test_successful_unregister_ends_auth_failing() -> None:
    log = Log()
    events = [
        log.register(PHONE, cseq=1),
        *(log.reject(cseq=i, ts=T0 + i * S) for i in (2, 3, 4)),
        log.register(contact(PHONE, 0), cseq=5, ts=T0 + 10 * S),
    ]
    state, steps = fold_all(events)
    assert steps[-1].outcome == Outcome.APPLIED
    assert state.contacts == ()
    assert state.health.auth_failures == 0
    assert state.health.state == "unregistered"


def test_retransmission_rejects_make_unreachable() -> None:
    assert DEFAULT_POLICY.retransmission_threshold == 3
    log = Log()
    state, _ = fold_all([log.register(PHONE, cseq=1)])
    state, _ = fold_all(
        [log.reject(408, "retransmission", cseq=2, ts=T0 + i * S) for i in (1, 2)], state
    )
    assert state.health.retransmissions == 2
    assert state.health.state == "registered"
    state, _ = fold_all([log.reject(408, "retransmission", cseq=2, ts=T0 + 3 * S)], state)
    assert state.health.state == "unreachable"
    assert state.health.retransmissions == 3
    assert state.health.since == T0 + 3 * S
    # A successful register clears it.
    state, _ = fold_all([log.register(PHONE, cseq=3, ts=T0 + 4 * S)], state)
    assert state.health.state == "registered"
    assert state.health.retransmissions == 0


def test_auth_failing_wins_over_unreachable() -> None:
    log = Log()
    events = [log.reject(408, "retransmission", cseq=1, ts=T0 + i * S) for i in (1, 2, 3)]
    events += [log.reject(401, "auth_failed", cseq=i, ts=T0 + i * S) for i in (4, 5, 6)]
    state, _ = fold_all(events)
    assert state.health.state == "auth_failing"


def test_repeated_short_expiries_make_flapping() -> None:
    assert DEFAULT_POLICY.short_expiry_ms == 30_000
    assert DEFAULT_POLICY.flap_threshold == 3
    log = Log()
    short = [log.register(contact(PHONE, 20), cseq=i, ts=T0 + i * 15 * S) for i in (1, 2, 3)]
    state, _ = fold_all(short[:2])
    assert state.health.short_cycles == 2
    assert state.health.state == "registered"
    state, _ = fold_all(short[2:], state)
    assert state.health.short_cycles == 3
    assert state.health.state == "flapping"
    assert state.health.since == T0 + 45 * S


def test_a_normal_expiry_resets_the_short_count() -> None:
    log = Log()
    events = [
        log.register(contact(PHONE, 20), cseq=1, ts=T0),
        log.register(contact(PHONE, 20), cseq=2, ts=T0 + 15 * S),
        log.register(contact(PHONE, 3600), cseq=3, ts=T0 + 30 * S),
        log.register(contact(PHONE, 20), cseq=4, ts=T0 + 45 * S),
    ]
    state, _ = fold_all(events)
    assert state.health.short_cycles == 1
    assert state.health.state == "registered"


def test_expire_then_register_cycles_make_flapping() -> None:
    """R12: ... or expire-then-register cycles."""
    log = Log()
    events = []
    ts = T0
    for cseq in (1, 2, 3):
        events.append(log.register(contact(PHONE, 60), cseq=cseq, ts=ts))
        events.append(log.expire(PHONE, cseq=cseq, ts=ts + 60 * S))
        ts += 90 * S
    events.append(log.register(contact(PHONE, 60), cseq=4, ts=ts))
    state, steps = fold_all(events)
    assert [s.outcome for s in steps] == [Outcome.APPLIED] * len(events)
    assert state.health.short_cycles == 3
    assert state.health.state == "flapping"


def test_flap_threshold_is_configurable() -> None:
    log = Log()
    policy = FoldPolicy(flap_threshold=1)
    state, _ = fold_all([log.register(contact(PHONE, 5))], policy=policy)
    assert state.health.state == "flapping"


def test_all_bindings_gone_is_unregistered() -> None:
    log = Log()
    state, _ = fold_all([log.register(contact(PHONE, 60)), log.expire(PHONE, ts=T0 + 60 * S)])
    assert state.contacts == ()
    assert state.health.state == "unregistered"
    assert state.health.last_expired_at == T0 + 60 * S
