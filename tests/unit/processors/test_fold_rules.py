"""Example tests of the folding rules R1-R11 (docs/design.md section 5), RFC 3261 section 10.3."""

from __future__ import annotations

import pytest

from processors.fold import apply, fold_event
from processors.outcomes import Outcome
from processors.policy import FoldPolicy
from processors.sipuri import canonical_aor, flow_key
from schemas.state import AorState
from tests.unit.builders import AOR, SOURCE, T0, Log, contact, fold_all, keys, uris

S = 1000  # ms per second
PHONE = "sip:1001@192.0.2.10:5060"
PHONE_KEY = "sip:1001@192.0.2.10:5060"
DESK = "sip:1001@198.51.100.7:5062;transport=tcp"
SOFT = "sip:1001@203.0.113.5"
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"'
FLOW_KEY = "urn:uuid:00000000-0000-1000-8000-000a95a0e128;reg-id=1"


def registered(log: Log, *uris_: str, expires: int = 3600, **kw: object) -> AorState:
    """State after one REGISTER of ``uris_`` (call-1, CSeq 1 unless given)."""
    event = log.register(*(contact(u, expires) for u in uris_), **kw)  # type: ignore[arg-type]
    state, steps = fold_all([event])
    assert steps[0].outcome == Outcome.APPLIED
    return state


# --- R1 -------------------------------------------------------------------------------------------


def test_r1_aor_keys_the_state_and_binding_events() -> None:
    """R1 AOR: the To URI with every parameter removed, scheme and host lower-case,
    user part as sent. It is the Kafka key."""
    aor = canonical_aor('"Agent" <SIP:Agent1001@PBX.Example.com;transport=udp>;tag=9')
    assert aor == "sip:Agent1001@pbx.example.com"
    log = Log(aor=aor)
    folded = fold_event(None, log.register(PHONE))
    assert folded.state.aor == aor
    assert [e.aor for e in folded.events] == [aor]
    other = Log(aor="sip:agent1001@pbx.example.com").register(PHONE)
    with pytest.raises(ValueError, match="is for"):
        fold_event(folded.state, other)


# --- R11 vocabulary: registered / refreshed / shortened / unregistered ----------------------------


def test_r11_new_binding_is_registered() -> None:
    """R11: each change emits a BindingEvent whose `event` is `registered`, ..."""
    log = Log()
    event = log.register(contact(PHONE, 3600, q=0.8))
    folded = fold_event(None, event)
    assert folded.outcome == Outcome.APPLIED
    (b,) = folded.state.contacts
    assert (b.key, b.uri, b.expires_at) == (PHONE_KEY, PHONE, T0 + 3600 * S)
    assert (b.registered_at, b.refreshed_at) == (T0, T0)
    assert (b.call_id, b.cseq, b.q, b.node, b.source) == ("call-1", 1, 0.8, "fe1", SOURCE)
    (be,) = folded.events
    assert be.event == "registered"
    assert (be.aor, be.version, be.key, be.uri) == (AOR, 1, PHONE_KEY, PHONE)
    assert (be.ts, be.node, be.call_id, be.cseq) == (T0, "fe1", "call-1", 1)
    assert be.expires_at == T0 + 3600 * S
    assert be.cause == event.id
    assert folded.state.version == 1
    assert folded.state.updated_ts == T0


def test_r11_refresh_is_refreshed() -> None:
    """R11: ... `refreshed` ..."""
    log = Log()
    state = registered(log, PHONE)
    folded = fold_event(state, log.register(PHONE, cseq=2, ts=T0 + 60 * S))
    assert [e.event for e in folded.events] == ["refreshed"]
    (b,) = folded.state.contacts
    assert b.expires_at == T0 + 3660 * S
    assert b.registered_at == T0
    assert b.refreshed_at == T0 + 60 * S
    assert b.cseq == 2


def test_r11_shorter_expiry_is_shortened() -> None:
    """R11: ... `shortened` ..."""
    log = Log()
    state = registered(log, PHONE)
    folded = fold_event(state, log.register(contact(PHONE, 60), cseq=2, ts=T0 + 60 * S))
    assert [e.event for e in folded.events] == ["shortened"]
    assert folded.state.contacts[0].expires_at == T0 + 120 * S


def test_r11_zero_expiry_is_unregistered() -> None:
    """R6: A granted expiry of 0 removes the binding (`unregistered`)."""
    log = Log()
    state = registered(log, PHONE, DESK)
    folded = fold_event(state, log.register(contact(PHONE, 0), cseq=2, ts=T0 + S))
    assert folded.outcome == Outcome.APPLIED
    assert [(e.event, e.key) for e in folded.events] == [("unregistered", PHONE_KEY)]
    assert uris(folded.state) == [DESK]


# --- R2 -------------------------------------------------------------------------------------------


def test_r2_rfc5626_new_uri_of_same_instance_and_reg_id_replaces_binding() -> None:
    """R2 Binding key: `(instance, reg_id)` when both are present (RFC 5626: a new
    Contact URI from the same device and flow replaces the old binding), else the
    Contact URI compared per RFC 3261 section 19.1.4."""
    log = Log()
    first = log.register(contact("sip:1001@192.0.2.10:5060;ob", instance=INSTANCE, reg_id=1))
    # After a NAT rebinding the phone registers from a new address, new Call-ID even.
    moved = log.register(
        contact(
            "sip:1001@192.0.2.99:6000;ob",
            instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
            reg_id=1,
        ),
        call_id="call-2",
        ts=T0 + 10 * S,
    )
    state, steps = fold_all([first, moved])
    assert steps[1].outcome == Outcome.APPLIED
    assert keys(state) == [FLOW_KEY]
    assert uris(state) == ["sip:1001@192.0.2.99:6000;ob"]
    assert state.contacts[0].call_id == "call-2"


def test_r2_other_reg_id_of_same_instance_is_another_binding() -> None:
    """R2: the key is `(instance, reg_id)`: two flows of one device are two bindings."""
    log = Log()
    state, _ = fold_all(
        [
            log.register(
                contact("sip:1001@192.0.2.10:5060;ob", instance=INSTANCE, reg_id=1),
                contact("sip:1001@192.0.2.10:5070;ob", instance=INSTANCE, reg_id=2),
            )
        ]
    )
    assert keys(state) == [FLOW_KEY, flow_key(INSTANCE, 2)]


def test_r2_contact_without_reg_id_does_not_address_a_flow_binding() -> None:
    """R2: a Contact without instance and reg-id is keyed by its URI; RFC 5626 section 6:
    flow bindings are addressed by instance and reg-id only."""
    log = Log()
    flow = log.register(contact("sip:1001@192.0.2.10:5060;ob", instance=INSTANCE, reg_id=1))
    plain = log.register("sip:1001@192.0.2.10:5060;ob", cseq=2, ts=T0 + S)
    state, steps = fold_all([flow, plain])
    assert [e.event for e in steps[1].events] == ["registered"]
    assert sorted(keys(state)) == sorted([FLOW_KEY, "sip:1001@192.0.2.10:5060;ob"])


# --- R3 -------------------------------------------------------------------------------------------


def test_r3_request_with_one_stale_contact_changes_nothing() -> None:
    """R3 Atomicity: a REGISTER is applied whole or not at all."""
    log = Log()
    state = registered(log, PHONE, cseq=5)
    # The first contact is new, the second is stale (same Call-ID, lower CSeq).
    request = log.register(DESK, PHONE, cseq=4, ts=T0 + S)
    folded = fold_event(state, request)
    assert folded.outcome == Outcome.STALE
    assert folded.events == ()
    assert folded.state.contacts == state.contacts
    assert folded.state.version == state.version
    assert folded.state.updated_ts == state.updated_ts
    assert folded.state.health == state.health


def test_r3_request_failing_the_cap_leaves_every_contact_alone() -> None:
    """R3: a request whose unregister part is fine but whose new contacts break the cap
    (R9 reject) changes nothing at all."""
    log = Log()
    policy = FoldPolicy(max_contacts=2)
    state, _ = fold_all([log.register(PHONE, DESK)], policy=policy)
    request = log.register(contact(PHONE, 0), SOFT, "sip:1001@203.0.113.6", cseq=2, ts=T0 + S)
    folded = fold_event(state, request, policy)
    assert folded.outcome == Outcome.TOO_MANY_CONTACTS
    assert folded.state.contacts == state.contacts


# --- R4 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cseq", [4, 5])
def test_r4_same_call_id_with_lower_or_equal_cseq_fails(cseq: int) -> None:
    """R4 Ordering: for a binding with the same Call-ID, a CSeq lower than or equal
    to the stored one fails the whole request (no change; counted as stale)."""
    log = Log()
    state = registered(log, PHONE, cseq=5)
    folded = fold_event(state, log.register(contact(PHONE, 60), cseq=cseq, ts=T0 + S))
    assert folded.outcome == Outcome.STALE
    assert folded.events == ()
    assert folded.state.contacts == state.contacts
    assert folded.state.version == 1


def test_r4_same_call_id_lower_cseq_cannot_unregister() -> None:
    """R4: a stale request fails also when it would remove the binding."""
    log = Log()
    state = registered(log, PHONE, cseq=5)
    folded = fold_event(state, log.register(contact(PHONE, 0), cseq=3, ts=T0 + S))
    assert folded.outcome == Outcome.STALE
    assert uris(folded.state) == [PHONE]


def test_r4_different_call_id_always_updates() -> None:
    """R4: A different Call-ID always updates (the phone rebooted). Each binding records
    the Call-ID and CSeq of the request that last set it."""
    log = Log()
    state = registered(log, PHONE, cseq=500)
    folded = fold_event(state, log.register(PHONE, call_id="call-2", cseq=1, ts=T0 + S))
    assert folded.outcome == Outcome.APPLIED
    assert [e.event for e in folded.events] == ["refreshed"]
    (b,) = folded.state.contacts
    assert (b.call_id, b.cseq) == ("call-2", 1)


def test_r4_higher_cseq_updates_and_is_recorded() -> None:
    """R4: Each binding records the Call-ID and CSeq of the request that last set it."""
    log = Log()
    state = registered(log, PHONE, cseq=5)
    folded = fold_event(state, log.register(PHONE, cseq=6, ts=T0 + S))
    assert folded.outcome == Outcome.APPLIED
    assert (folded.state.contacts[0].call_id, folded.state.contacts[0].cseq) == ("call-1", 6)


# --- R5 -------------------------------------------------------------------------------------------


def test_r5_duplicate_id_is_skipped() -> None:
    """R5 Duplicates: an event whose id was already applied to this AOR is skipped,
    wherever it reappears."""
    log = Log()
    event = log.register(PHONE)
    first = fold_event(None, event)
    again = fold_event(first.state, event)
    assert again.outcome == Outcome.DUPLICATE
    assert again.events == ()
    assert again.state == first.state


def test_r5_duplicate_reappearing_much_later_is_skipped() -> None:
    """R5: ... wherever it reappears (a crash makes Kafka deliver a suffix of the log
    again; a front-end may publish twice)."""
    log = Log()
    unregister = log.register(contact(PHONE, 0), cseq=2, ts=T0 + S)
    events = [
        log.register(PHONE),
        unregister,
        log.register(PHONE, call_id="call-2", ts=T0 + 3600 * S),
        log.register(DESK, call_id="call-3", ts=T0 + 7200 * S),
    ]
    state, _ = fold_all(events)
    folded = fold_event(state, unregister)
    assert folded.outcome == Outcome.DUPLICATE
    assert folded.state == state
    assert sorted(uris(state)) == sorted([PHONE, DESK])


def test_r5_every_redelivered_event_is_reported_as_duplicate() -> None:
    """R5: a redelivered log changes nothing; every skipped event is DUPLICATE."""
    log = Log()
    events = [
        log.register(PHONE),
        log.register(PHONE, cseq=1, ts=T0 + S),  # stale: seq still advances
        log.register(),  # query
        log.reject(ts=T0 + 2 * S),
        log.register(DESK, call_id="call-2", ts=T0 + 3 * S),
        log.expire(PHONE, ts=T0 + 3600 * S),
        log.deactivate(DESK, call_id="call-2", ts=T0 + 3601 * S),
    ]
    state, _ = fold_all(events)
    again, steps = fold_all(events, state)
    assert [s.outcome for s in steps] == [Outcome.DUPLICATE] * len(events)
    assert all(s.events == () for s in steps)
    assert again == state


def test_r5_a_failed_request_redelivered_after_a_change_stays_failed() -> None:
    """R5 must hold for every event, not only successful ones."""
    log = Log()
    ok = log.register(PHONE, cseq=5)
    stale = log.register(DESK, PHONE, cseq=4, ts=T0 + S)
    gone = log.expire(PHONE, cseq=5, ts=T0 + 3600 * S)
    state, steps = fold_all([ok, stale, gone])
    assert [s.outcome for s in steps] == [Outcome.APPLIED, Outcome.STALE, Outcome.APPLIED]
    redelivered = fold_event(state, stale)
    assert redelivered.outcome == Outcome.DUPLICATE
    assert redelivered.state.contacts == ()


def test_r5_same_seq_from_another_node_is_not_a_duplicate() -> None:
    """R5: the id is `<node>:<seq>`; marks are kept per node."""
    log = Log()
    a = log.register(PHONE, node="fe1")
    b = log.register(DESK, call_id="call-2", node="fe2")
    assert a.seq == b.seq == 1
    state, steps = fold_all([a, b])
    assert [s.outcome for s in steps] == [Outcome.APPLIED, Outcome.APPLIED]
    assert len(state.contacts) == 2
    assert dict(state.seen) == {"fe1": 1, "fe2": 1}


# --- R6 -------------------------------------------------------------------------------------------


def test_r6_binding_expires_at_ts_plus_expires() -> None:
    """R6 Expiry: a binding expires at `ts + expires * 1000` of the event that last set it."""
    log = Log()
    state, _ = fold_all(
        [log.register(contact(PHONE, 1)), log.register(contact(DESK, 3600), ts=T0 + 500)]
    )
    by_uri = {b.uri: b.expires_at for b in state.contacts}
    assert by_uri == {PHONE: T0 + 1000, DESK: T0 + 500 + 3_600_000}


def test_r6_expire_event_at_expiry_removes_binding() -> None:
    """R6: An `expire` event removes the binding only if its call_id and cseq still
    match and its ts is at or past the binding's expiry."""
    log = Log()
    state = registered(log, PHONE, DESK, expires=60, cseq=7)
    folded = fold_event(state, log.expire(PHONE_KEY, cseq=7, ts=T0 + 60 * S))
    assert folded.outcome == Outcome.APPLIED
    assert [(e.event, e.key, e.expires_at) for e in folded.events] == [
        ("expired", PHONE_KEY, T0 + 60 * S)
    ]
    assert uris(folded.state) == [DESK]
    assert folded.state.version == 3


def test_r6_expire_event_may_name_the_contact_uri() -> None:
    """R6 / section 4: `contact` names the binding by its key or its Contact URI."""
    log = Log()
    state = registered(log, PHONE, expires=60)
    folded = fold_event(state, log.expire("<sip:1001@192.0.2.10:5060>", ts=T0 + 61 * S))
    assert [e.event for e in folded.events] == ["expired"]
    assert folded.state.contacts == ()


def test_r6_expire_event_before_expiry_is_a_noop() -> None:
    """R6: ... otherwise it is a no-op (a clock-skewed node cannot expire a live binding)."""
    log = Log()
    state = registered(log, PHONE, expires=60)
    folded = fold_event(state, log.expire(PHONE_KEY, ts=T0 + 60 * S - 1))
    assert folded.outcome == Outcome.NOOP
    assert folded.events == ()
    assert folded.state.contacts == state.contacts
    assert folded.state.version == state.version


@pytest.mark.parametrize(("call_id", "cseq"), [("call-1", 1), ("call-2", 2), ("call-1", 3)])
def test_r6_expire_event_for_a_refreshed_binding_is_a_noop(call_id: str, cseq: int) -> None:
    """R6: an `expire` removes the binding only if its call_id and cseq still match."""
    log = Log()
    state, _ = fold_all(
        [log.register(contact(PHONE, 60)), log.register(contact(PHONE, 60), cseq=2, ts=T0 + S)]
    )
    folded = fold_event(state, log.expire(PHONE_KEY, call_id=call_id, cseq=cseq, ts=T0 + 99 * S))
    assert folded.outcome == Outcome.NOOP
    assert folded.state.contacts == state.contacts


def test_r6_expire_event_for_an_unknown_binding_is_a_noop() -> None:
    """R6: an `expire` for a binding that is gone changes nothing."""
    log = Log()
    state = registered(log, PHONE, expires=60)
    folded = fold_event(state, log.expire(DESK, ts=T0 + 3600 * S))
    assert folded.outcome == Outcome.NOOP
    assert folded.state.contacts == state.contacts
    # ... and for an AOR never seen.
    fresh = fold_event(None, Log().expire(PHONE, ts=T0))
    assert fresh.outcome == Outcome.NOOP
    assert fresh.state.contacts == ()


def test_r6_reader_at_t_counts_only_bindings_expiring_after_t() -> None:
    """R6: A reader at time T counts only bindings whose expiry is after T."""
    log = Log()
    state, _ = fold_all([log.register(contact(PHONE, 60), contact(DESK, 120))])
    assert len(state.active_contacts(T0)) == 2
    assert uris(AorState(AOR, contacts=state.active_contacts(T0 + 60 * S - 1))) == [PHONE, DESK]
    assert [b.uri for b in state.active_contacts(T0 + 60 * S)] == [DESK]
    assert state.active_contacts(T0 + 120 * S) == ()
    assert state.contacts[0].active_at(T0 + 60 * S - 1)
    assert not state.contacts[0].active_at(T0 + 60 * S)
    assert state.only_active(T0 + 60 * S).contacts == state.active_contacts(T0 + 60 * S)
    assert state.only_active(T0) is state


# --- R7 -------------------------------------------------------------------------------------------


def test_r7_wildcard_with_expires_zero_removes_all() -> None:
    """R7 Wildcard: `Contact: *` is valid only with Expires 0 and no other contact;
    each existing binding is removed unless it has the same Call-ID and a CSeq
    greater than or equal to the request's, in which case the whole request fails."""
    log = Log()
    state, _ = fold_all([log.register(PHONE, DESK), log.register(SOFT, call_id="call-2")])
    folded = fold_event(state, log.register(wildcard=True, expires=0, cseq=2, ts=T0 + S))
    assert folded.outcome == Outcome.APPLIED
    assert [e.event for e in folded.events] == ["unregistered"] * 3
    assert sorted(e.uri or "" for e in folded.events) == sorted([PHONE, DESK, SOFT])
    assert [e.version for e in folded.events] == [4, 5, 6]
    assert folded.state.contacts == ()
    assert folded.state.version == 6


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [((PHONE,), 0), ((), 3600), ((), None), ((), 1), ((contact(PHONE, 0),), 0)],
)
def test_r7_wildcard_with_contacts_or_nonzero_expires_is_invalid(
    contacts: tuple[str, ...], expires: int | None
) -> None:
    """R7: `Contact: *` is valid only with Expires 0 and no other contact."""
    log = Log()
    state = registered(log, DESK)
    folded = fold_event(
        state, log.register(*contacts, wildcard=True, expires=expires, cseq=2, ts=T0 + S)
    )
    assert folded.outcome == Outcome.INVALID
    assert folded.events == ()
    assert folded.state.contacts == state.contacts
    assert folded.state.version == state.version


@pytest.mark.parametrize("stored_cseq", [5, 6])
def test_r7_wildcard_with_same_call_id_and_not_higher_cseq_fails_whole(stored_cseq: int) -> None:
    """R7: ... unless it has the same Call-ID and a CSeq greater than or equal to the
    request's, in which case the whole request fails."""
    log = Log()
    state, _ = fold_all(
        [
            log.register(DESK, call_id="call-2"),  # would be removed, but the request fails
            log.register(PHONE, cseq=stored_cseq),
        ]
    )
    folded = fold_event(state, log.register(wildcard=True, expires=0, cseq=5, ts=T0 + S))
    assert folded.outcome == Outcome.STALE
    assert folded.events == ()
    assert folded.state.contacts == state.contacts


def test_r7_wildcard_on_an_aor_without_bindings_changes_nothing() -> None:
    """R7: nothing to remove, nothing emitted."""
    folded = fold_event(None, Log().register(wildcard=True, expires=0))
    assert folded.events == ()
    assert folded.state.contacts == ()
    assert folded.state.version == 0


# --- R8 -------------------------------------------------------------------------------------------


def test_r8_query_changes_nothing() -> None:
    """R8 Query: a REGISTER without contacts changes nothing."""
    log = Log()
    state = registered(log, PHONE)
    folded = fold_event(state, log.register(cseq=2, ts=T0 + S))
    assert folded.outcome == Outcome.QUERY
    assert folded.events == ()
    assert folded.state.contacts == state.contacts
    assert folded.state.version == state.version
    assert folded.state.updated_ts == state.updated_ts
    # A query with an older CSeq is no stale request either: it touches no binding.
    older = fold_event(folded.state, log.register(cseq=1, ts=T0 + 2 * S))
    assert older.outcome == Outcome.QUERY


# --- R9 -------------------------------------------------------------------------------------------


def test_r9_cap_with_policy_reject_fails_the_request_whole() -> None:
    """R9 Contact cap: at most `max_contacts` bindings per AOR (configurable). Policy
    `reject` (default: the request fails, no change) ..."""
    log = Log()
    policy = FoldPolicy(max_contacts=2)
    assert policy.max_contacts_policy == "reject"
    state, _ = fold_all([log.register(PHONE, DESK)], policy=policy)
    request = log.register(SOFT, call_id="call-2", ts=T0 + S)
    folded = fold_event(state, request, policy)
    assert folded.outcome == Outcome.TOO_MANY_CONTACTS
    assert [(e.event, e.key, e.version, e.cause) for e in folded.events] == [
        ("rejected", None, 3, request.id)
    ]
    assert folded.state.contacts == state.contacts
    assert folded.state.version == 3


def test_r9_refresh_at_the_cap_is_allowed() -> None:
    """R9: refreshing existing bindings does not add to the count."""
    log = Log()
    policy = FoldPolicy(max_contacts=2)
    state, _ = fold_all([log.register(PHONE, DESK)], policy=policy)
    folded = fold_event(state, log.register(PHONE, DESK, cseq=2, ts=T0 + S), policy)
    assert folded.outcome == Outcome.APPLIED
    assert [e.event for e in folded.events] == ["refreshed", "refreshed"]


def test_r9_cap_with_evict_oldest_deactivates_the_least_recently_refreshed() -> None:
    """R9: ... or `evict_oldest` (the binding refreshed longest ago goes, as an explicit
    `deactivated` event)."""
    log = Log()
    policy = FoldPolicy(max_contacts=2, max_contacts_policy="evict_oldest")
    state, _ = fold_all(
        [
            log.register(PHONE, ts=T0),
            log.register(DESK, call_id="call-2", ts=T0 + S),
            log.register(PHONE, cseq=2, ts=T0 + 2 * S),  # PHONE is now the fresher one
        ],
        policy=policy,
    )
    folded = fold_event(state, log.register(SOFT, call_id="call-3", ts=T0 + 3 * S), policy)
    assert folded.outcome == Outcome.APPLIED
    assert [(e.event, e.uri) for e in folded.events] == [
        ("registered", SOFT),
        ("deactivated", DESK),
    ]
    assert [e.version for e in folded.events] == [4, 5]
    assert sorted(uris(folded.state)) == sorted([PHONE, SOFT])


def test_r9_evict_oldest_refuses_a_request_alone_above_the_cap() -> None:
    """R9: a request with more new contacts than the cap cannot be applied whole."""
    log = Log()
    policy = FoldPolicy(max_contacts=1, max_contacts_policy="evict_oldest")
    folded = fold_event(None, log.register(PHONE, DESK), policy)
    assert folded.outcome == Outcome.TOO_MANY_CONTACTS
    assert [e.event for e in folded.events] == ["rejected"]
    assert folded.state.contacts == ()


def test_r9_lapsed_bindings_do_not_count() -> None:
    """R9: lapsed bindings (expiry passed, not yet expired by the sweeper) are not counted."""
    log = Log()
    policy = FoldPolicy(max_contacts=2)
    state, _ = fold_all([log.register(contact(PHONE, 1), contact(DESK, 3600))], policy=policy)
    folded = fold_event(state, log.register(SOFT, call_id="call-2", ts=T0 + 2 * S), policy)
    assert folded.outcome == Outcome.APPLIED
    assert [e.event for e in folded.events] == ["registered"]
    assert len(folded.state.active_contacts(T0 + 2 * S)) == 2


# --- R10 ------------------------------------------------------------------------------------------


def test_r10_reject_changes_no_binding_and_feeds_health() -> None:
    """R10 Rejects: a `reject` event changes no binding; it feeds the AOR's health."""
    log = Log()
    state = registered(log, PHONE)
    reject = log.reject(401, "auth_failed", cseq=2, ts=T0 + 5 * S)
    folded = fold_event(state, reject)
    assert folded.outcome == Outcome.REJECTED
    assert folded.state.contacts == state.contacts
    (be,) = folded.events
    assert (be.event, be.key, be.uri, be.expires_at) == ("rejected", None, None, None)
    assert (be.version, be.cause, be.ts) == (2, reject.id, T0 + 5 * S)
    h = folded.state.health
    assert h.auth_failures == 1
    assert h.last_reject is not None
    assert (h.last_reject.status, h.last_reject.reason) == (401, "auth_failed")
    assert (h.last_reject.ts, h.last_reject.node, h.last_reject.source) == (
        T0 + 5 * S,
        "fe1",
        SOURCE,
    )


# --- R11 ------------------------------------------------------------------------------------------


def test_r11_versions_increase_by_one_per_binding_event_across_events() -> None:
    """R11 Output vocabulary (RFC 3680): each change emits a BindingEvent ... with the
    AOR's new `version` (one more per change), so a reader can detect a gap."""
    log = Log()
    events = [
        log.register(PHONE, DESK),  # 2 registered
        log.register(PHONE, cseq=2, ts=T0 + S),  # 1 refreshed
        log.register(cseq=3, ts=T0 + 2 * S),  # query: none
        log.reject(ts=T0 + 3 * S),  # 1 rejected
        log.register(PHONE, cseq=1, ts=T0 + 4 * S),  # stale: none
        log.register(contact(DESK, 60), cseq=4, ts=T0 + 5 * S),  # 1 shortened
        log.expire(DESK, cseq=4, ts=T0 + 65 * S),  # 1 expired
        log.register(wildcard=True, expires=0, cseq=5, ts=T0 + 70 * S),  # 1 unregistered
    ]
    state, steps = fold_all(events)
    emitted = [e for s in steps for e in s.events]
    assert [e.event for e in emitted] == [
        "registered",
        "registered",
        "refreshed",
        "rejected",
        "shortened",
        "expired",
        "unregistered",
    ]
    assert [e.version for e in emitted] == list(range(1, 8))
    assert state.version == 7
    for step, event in zip(steps, events, strict=True):
        assert all(e.cause == event.id and e.ts == event.ts for e in step.events)


def test_r11_apply_returns_state_and_events() -> None:
    """R11: `apply` is the (state, binding events) form of the fold."""
    log = Log()
    event = log.register(PHONE)
    state, events = apply(None, event)
    assert state == fold_event(None, event).state
    assert [e.event for e in events] == ["registered"]


# --- deactivate -----------------------------------------------------------------------------------


def test_deactivate_ends_a_live_binding_whose_call_id_and_cseq_match() -> None:
    """Section 4: `deactivate` names the binding that was cut (flow failure, RFC 5626);
    unlike `expire` it needs no expiry to have passed."""
    log = Log()
    state, _ = fold_all(
        [
            log.register(
                contact("sip:1001@192.0.2.10:5060;ob", instance=INSTANCE, reg_id=1),
                contact(DESK),
                cseq=3,
            )
        ]
    )
    folded = fold_event(state, log.deactivate(FLOW_KEY, cseq=3, ts=T0 + S))
    assert folded.outcome == Outcome.APPLIED
    assert [(e.event, e.key) for e in folded.events] == [("deactivated", FLOW_KEY)]
    assert uris(folded.state) == [DESK]
    assert folded.state.version == 3


@pytest.mark.parametrize(("call_id", "cseq"), [("call-1", 2), ("call-9", 3)])
def test_deactivate_of_a_binding_set_since_is_a_noop(call_id: str, cseq: int) -> None:
    """Section 4 / R6: a binding refreshed since the event is left alone."""
    log = Log()
    state = registered(log, PHONE, cseq=3)
    folded = fold_event(state, log.deactivate(PHONE, call_id=call_id, cseq=cseq, ts=T0 + S))
    assert folded.outcome == Outcome.NOOP
    assert folded.state.contacts == state.contacts


# --- RFC 3261 section 10.3 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "same",
    [
        "sip:1001@192.0.2.10:5060",
        "sip:1001@192.0.2.10:5060;x-unknown=1",  # a parameter present in only one is ignored
        "SIP:1001@192.0.2.10:5060",
        "<sip:%31001@192.0.2.10:5060>",  # %-escaped unreserved character
        '"Desk phone" <sip:1001@192.0.2.10:5060;ob>',
    ],
)
def test_rfc3261_10_3_equivalent_contact_refreshes_the_binding(same: str) -> None:
    """RFC 3261 10.3 step 7: a Contact URI equal (19.1.4) to a binding's updates it."""
    log = Log()
    state = registered(log, "sip:1001@192.0.2.10:5060")
    folded = fold_event(state, log.register(same, cseq=2, ts=T0 + S))
    assert folded.outcome == Outcome.APPLIED
    assert [e.event for e in folded.events] == ["refreshed"]
    (b,) = folded.state.contacts
    assert b.uri == same
    assert b.cseq == 2
    assert b.registered_at == T0


def test_rfc3261_10_3_equivalent_host_case_refreshes_the_binding() -> None:
    """RFC 3261 19.1.4: host comparison ignores case."""
    log = Log()
    state = registered(log, "sip:1001@pbx-phone.example.com")
    folded = fold_event(state, log.register("sip:1001@PBX-Phone.Example.COM", cseq=2, ts=T0 + S))
    assert [e.event for e in folded.events] == ["refreshed"]
    assert len(folded.state.contacts) == 1


def test_rfc3261_10_3_refresh_by_equivalent_contact_keeps_the_binding_key() -> None:
    """R2 / R11: a refresh changes the binding, not its identity."""
    log = Log()
    state = registered(log, "sip:1001@192.0.2.10:5060")
    folded = fold_event(state, log.register("sip:1001@192.0.2.10:5060;ob", cseq=2, ts=T0 + S))
    assert keys(folded.state) == [PHONE_KEY]
    assert [e.key for e in folded.events] == [PHONE_KEY]


def test_rfc3261_10_3_user_case_makes_another_binding() -> None:
    """RFC 3261 19.1.4: comparison of the userinfo is case-sensitive."""
    log = Log()
    state = registered(log, "sip:alice@203.0.113.5")
    folded = fold_event(state, log.register("sip:Alice@203.0.113.5", cseq=2, ts=T0 + S))
    assert [e.event for e in folded.events] == ["registered"]
    assert sorted(uris(folded.state)) == ["sip:Alice@203.0.113.5", "sip:alice@203.0.113.5"]


def test_rfc3261_10_3_removing_a_binding_that_does_not_exist_changes_nothing() -> None:
    """RFC 3261 10.3 step 8: an expiry of 0 for an unknown contact removes nothing."""
    log = Log()
    state = registered(log, PHONE)
    folded = fold_event(state, log.register(contact(DESK, 0), cseq=2, ts=T0 + S))
    assert folded.events == ()
    assert folded.state.contacts == state.contacts
    assert folded.state.version == state.version
    assert folded.state.updated_ts == state.updated_ts


def test_rfc3261_10_3_registering_again_after_lapse_is_registered() -> None:
    """R6/R11: once ts is past a binding's expiry it is no longer active: a new
    REGISTER of that contact is a new registration."""
    log = Log()
    state = registered(log, PHONE, expires=60)
    later = T0 + 61 * S
    folded = fold_event(state, log.register(PHONE, cseq=2, ts=later))
    assert [e.event for e in folded.events] == ["registered"]
    (b,) = folded.state.contacts
    assert (b.registered_at, b.refreshed_at, b.expires_at) == (later, later, later + 3600 * S)


def test_rfc3261_10_3_refresh_at_the_exact_expiry_is_a_registration() -> None:
    """R6: a binding whose expiry equals ts is no longer active at ts."""
    log = Log()
    state = registered(log, PHONE, expires=60)
    folded = fold_event(state, log.register(PHONE, cseq=2, ts=T0 + 60 * S))
    assert [e.event for e in folded.events] == ["registered"]


def _non_transitive_state(log: Log) -> AorState:
    """Two bindings RFC-equal to a third URI: keys `sip:a@h;x=1` and `sip:a@h;x=2`.

    19.1.4 equality is not transitive (`;x=1` and `;x=2` differ, both equal `sip:a@h`).
    `sip:a@h` (call-C) refreshes the first in key order, which keeps its key.
    """
    state, steps = fold_all(
        [
            log.register("sip:1001@192.0.2.10;x=2", call_id="call-A"),
            log.register("sip:1001@192.0.2.10;x=1", call_id="call-B", ts=T0 + S),
            log.register("sip:1001@192.0.2.10", call_id="call-C", ts=T0 + 2 * S),
        ]
    )
    assert all(s.outcome == Outcome.APPLIED for s in steps)
    assert keys(state) == ["sip:1001@192.0.2.10;x=1", "sip:1001@192.0.2.10;x=2"]
    assert [b.call_id for b in state.contacts] == ["call-C", "call-A"]
    return state


def test_exact_key_match_wins_over_rfc_equal_binding() -> None:
    """R2: the Contact addresses its own binding; keys stay unique."""
    log = Log()
    state = _non_transitive_state(log)
    folded = fold_event(
        state, log.register("sip:1001@192.0.2.10;x=2", call_id="call-D", ts=T0 + 3 * S)
    )
    assert sorted(keys(folded.state)) == ["sip:1001@192.0.2.10;x=1", "sip:1001@192.0.2.10;x=2"]
    by_key = {b.key: b.call_id for b in folded.state.contacts}
    assert by_key == {"sip:1001@192.0.2.10;x=1": "call-C", "sip:1001@192.0.2.10;x=2": "call-D"}


def test_expire_by_key_targets_that_binding() -> None:
    """R6 / section 4: `contact` names the binding by its key (as AorState shows it)."""
    log = Log()
    state = _non_transitive_state(log)
    target = next(b for b in state.contacts if b.key == "sip:1001@192.0.2.10;x=2")
    folded = fold_event(
        state, log.expire(target.key, call_id="call-A", cseq=1, ts=target.expires_at)
    )
    assert folded.outcome == Outcome.APPLIED
    assert keys(folded.state) == ["sip:1001@192.0.2.10;x=1"]
