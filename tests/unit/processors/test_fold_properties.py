"""Properties of the fold over realistic logs (docs/design.md sections 5 and 7).

The logs come from ``tests.strategies.registration_logs``: few AORs and nodes,
per-node increasing seq, Call-IDs reused, CSeqs going up and sometimes down,
contacts from a small pool (RFC-equal spellings included), expiries in
{0, 1, 60, 3600}, wildcards, queries, expire/deactivate events that match or are
stale and are due or not, rejects, and exact duplicates re-inserted later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.fold import Folded, fold_event
from processors.outcomes import Outcome
from processors.policy import FoldPolicy
from processors.replay import replay, snapshot_at
from processors.sipuri import flow_key, uri_equal
from schemas.codec import decode_state, encode_state
from schemas.events import ContactEntry, RegistrationEvent
from schemas.state import AorState, Binding, BindingEvent
from tests.strategies import policies, registration_logs

PROPERTY = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Table = dict[str, AorState]


def fold_log(
    log: Sequence[RegistrationEvent], policy: FoldPolicy, table: Table | None = None
) -> tuple[Table, list[BindingEvent], list[Folded]]:
    """Fold a log into a table (a copy of ``table``); binding events and every step."""
    states = dict(table or {})
    emitted: list[BindingEvent] = []
    steps: list[Folded] = []
    for event in log:
        folded = fold_event(states.get(event.aor), event, policy)
        states[event.aor] = folded.state
        emitted.extend(folded.events)
        steps.append(folded)
    return states, emitted, steps


def addresses(entry: ContactEntry, b: Binding) -> bool:
    """Whether a request Contact addresses binding ``b`` (R2; the pool has no
    non-transitive spellings, so at most one binding matches)."""
    if entry.instance is not None and entry.reg_id is not None:
        return b.key == flow_key(entry.instance, entry.reg_id)
    return (b.instance is None or b.reg_id is None) and uri_equal(b.uri, entry.uri)


def has_binding_for(state: AorState, entry: ContactEntry, event: RegistrationEvent) -> bool:
    return any(
        addresses(entry, b)
        and b.uri == entry.uri
        and (b.call_id, b.cseq) == (event.call_id, event.cseq)
        and b.expires_at == event.ts + entry.expires * 1000
        for b in state.contacts
    )


@given(registration_logs(), policies)
@PROPERTY
def test_determinism(log: list[RegistrationEvent], policy: FoldPolicy) -> None:
    """Section 5: the same log always gives the same table and the same binding events."""
    first = fold_log(log, policy)
    second = fold_log(log, policy)
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert [s.outcome for s in first[2]] == [s.outcome for s in second[2]]


@given(registration_logs(), policies, st.data())
@PROPERTY
def test_redelivered_suffix_changes_nothing(
    log: list[RegistrationEvent], policy: FoldPolicy, data: st.DataObject
) -> None:
    """Section 7 / R5: after a crash Kafka delivers a suffix of the log again."""
    table, _, _ = fold_log(log, policy)
    start = data.draw(st.integers(min_value=0, max_value=len(log) - 1), label="suffix start")
    again, emitted, steps = fold_log(log[start:], policy, table)
    assert emitted == []
    assert all(s.outcome == Outcome.DUPLICATE for s in steps)
    assert again == table
    for aor, state in table.items():
        assert again[aor] == state


@given(registration_logs(), policies)
@PROPERTY
def test_register_is_atomic(log: list[RegistrationEvent], policy: FoldPolicy) -> None:
    """R3: after a REGISTER the bindings are either the old ones (not applied) or hold
    every non-zero-expiry Contact of the request, set by this request, and none of its
    zero-expiry Contacts."""
    table: Table = {}
    for event in log:
        before = table.get(event.aor)
        folded = fold_event(before, event, policy)
        table[event.aor] = folded.state
        if event.kind != "register":
            continue
        old = () if before is None else before.contacts
        if folded.outcome != Outcome.APPLIED:
            assert folded.state.contacts == old, folded.outcome
            continue
        if event.wildcard:
            assert folded.state.contacts == ()
            continue
        for entry in event.contacts:
            if entry.expires > 0:
                assert has_binding_for(folded.state, entry, event), entry
            else:
                assert not any(addresses(entry, b) for b in folded.state.contacts), entry


@given(registration_logs(), policies)
@PROPERTY
def test_stale_cseq_never_changes_bindings_or_version(
    log: list[RegistrationEvent], policy: FoldPolicy
) -> None:
    """R4 / R7: same Call-ID and a CSeq not above an addressed binding's fails the
    request whole; such a request changes no binding and no version."""
    table: Table = {}
    for event in log:
        before = table.get(event.aor) or AorState(event.aor)
        folded = fold_event(before, event, policy)
        table[event.aor] = folded.state
        if folded.outcome == Outcome.STALE:
            assert event.kind == "register"
            assert folded.state.contacts == before.contacts
            assert folded.state.version == before.version
            assert folded.events == ()
        if event.kind != "register" or folded.outcome == Outcome.DUPLICATE:
            continue
        valid_wildcard = event.wildcard and not event.contacts and event.expires == 0
        if event.wildcard and not valid_wildcard:
            assert folded.outcome == Outcome.INVALID
            continue
        if valid_wildcard:
            addressed = list(before.contacts)
        else:
            addressed = [b for e in event.contacts for b in before.contacts if addresses(e, b)]
        stale = [b for b in addressed if b.call_id == event.call_id and event.cseq <= b.cseq]
        if not stale:
            assert folded.outcome != Outcome.STALE
        elif any(b.expires_at > event.ts for b in stale):
            # A live binding set by a newer request of the same Call-ID: the request fails.
            assert folded.outcome == Outcome.STALE


@given(registration_logs(), policies, st.data())
@PROPERTY
def test_incremental_fold_through_serialized_state_equals_fold_from_scratch(
    log: list[RegistrationEvent], policy: FoldPolicy, data: st.DataObject
) -> None:
    """Section 9 trap 1 / R5: the table value (with `seen`) round-trips through the
    changelog encoding, and folding on from a saved state is folding from scratch."""
    split = data.draw(st.integers(min_value=0, max_value=len(log)), label="split")
    whole, whole_events, _ = fold_log(log, policy)
    head, head_events, _ = fold_log(log[:split], policy)
    saved = {aor: decode_state(encode_state(s, internal=True)) for aor, s in head.items()}
    assert saved == head
    resumed, tail_events, _ = fold_log(log[split:], policy, saved)
    assert resumed == whole
    assert head_events + tail_events == whole_events


@given(registration_logs(), policies)
@PROPERTY
def test_versions_per_aor_are_one_to_n(log: list[RegistrationEvent], policy: FoldPolicy) -> None:
    """R11: each change has the AOR's new version, one more per change."""
    table, emitted, _ = fold_log(log, policy)
    by_aor: dict[str, list[int]] = {}
    for e in emitted:
        by_aor.setdefault(e.aor, []).append(e.version)
    for aor, state in table.items():
        versions = by_aor.get(aor, [])
        assert versions == list(range(1, len(versions) + 1))
        assert state.version == len(versions)


@given(registration_logs(), policies)
@PROPERTY
def test_binding_keys_are_unique(log: list[RegistrationEvent], policy: FoldPolicy) -> None:
    """R2: one binding per key, after every event."""
    table: Table = {}
    for event in log:
        folded = fold_event(table.get(event.aor), event, policy)
        table[event.aor] = folded.state
        found = Counter(b.key for b in folded.state.contacts)
        assert all(n == 1 for n in found.values()), found


@given(registration_logs(), policies)
@PROPERTY
def test_replay_equals_the_manual_fold(log: list[RegistrationEvent], policy: FoldPolicy) -> None:
    """`regstate replay` folds with the same function: same table, events and outcomes."""
    table, emitted, steps = fold_log(log, policy)
    replayed = replay(log, policy, keep_events=True)
    assert replayed.states == table
    assert replayed.events == emitted
    assert replayed.outcomes == Counter(s.outcome for s in steps)
    assert replay(log, policy).events == []


@given(registration_logs(), policies, st.data())
@PROPERTY
def test_replay_until_leaves_later_events_out(
    log: list[RegistrationEvent], policy: FoldPolicy, data: st.DataObject
) -> None:
    until = data.draw(st.sampled_from([e.ts for e in log]), label="until_ms")
    table, _, _ = fold_log([e for e in log if e.ts <= until], policy)
    assert replay(log, policy, until_ms=until).states == table


@given(registration_logs(), policies, st.data())
@PROPERTY
def test_snapshot_only_holds_active_contacts(
    log: list[RegistrationEvent], policy: FoldPolicy, data: st.DataObject
) -> None:
    """R6: a reader at time T counts only bindings whose expiry is after T."""
    table, _, _ = fold_log(log, policy)
    times = sorted({e.ts for e in log} | {b.expires_at for s in table.values() for b in s.contacts})
    at = data.draw(st.sampled_from(times) | st.sampled_from(times).map(lambda t: t - 1), label="T")
    snapshot = snapshot_at(table, at)
    assert list(snapshot) == sorted(snapshot)
    for aor, state in table.items():
        active = tuple(b for b in state.contacts if b.expires_at > at)
        if active:
            assert snapshot[aor].contacts == active
            assert snapshot[aor].version == state.version
        else:
            assert aor not in snapshot
    full = snapshot_at(table, at, include_empty=True)
    assert set(full) == set(table)
    assert all(b.expires_at > at for s in full.values() for b in s.contacts)


# --- the request-size cap (R9 before any binding is built; D83, D84) -------------------

_POOL = [f"sip:1001@192.0.2.{i}:5060" for i in range(16)]
_cap_entries = st.lists(
    st.builds(ContactEntry, uri=st.sampled_from(_POOL), expires=st.sampled_from([0, 60, 3600])),
    min_size=1,
    max_size=20,
)
_cap_policies = st.builds(
    FoldPolicy,
    max_contacts=st.integers(min_value=1, max_value=12),
    max_contacts_policy=st.sampled_from(["reject", "evict_oldest"]),
)


def _request(entries: list[ContactEntry], seq: int, cseq: int, ts: int) -> RegistrationEvent:
    return RegistrationEvent(
        "register", f"fe1:{seq}", "fe1", seq, ts, "sip:1001@pbx.example.com", "cap-call", cseq,
        tuple(entries),
    )  # fmt: skip


@given(_cap_entries, _cap_entries, _cap_policies)
@PROPERTY
def test_a_request_over_the_cap_is_refused_whatever_the_state(
    first: list[ContactEntry], second: list[ContactEntry], policy: FoldPolicy
) -> None:
    """More distinct non-zero Contacts than the cap: refused against any state, with no
    binding change; at or under the cap against an empty state: never TOO_MANY_CONTACTS.
    `bindings_requested` (what the front-end answers with) agrees with the fold."""
    from processors.fold import bindings_requested

    states: list[AorState | None] = [None]
    grown = fold_event(None, _request(first, 1, 1, 1_000), FoldPolicy(max_contacts=100)).state
    states.append(grown)
    for state in states:
        folded = fold_event(state, _request(second, 2, 2, 2_000), policy)
        before = () if state is None else state.contacts
        if bindings_requested(tuple(second)) > policy.max_contacts:
            assert folded.outcome == Outcome.TOO_MANY_CONTACTS
            assert folded.state.contacts == before
            assert [e.event for e in folded.events] == ["rejected"]
        elif state is None:
            assert folded.outcome != Outcome.TOO_MANY_CONTACTS


@given(_cap_entries, _cap_policies)
@PROPERTY
def test_a_stale_request_over_the_cap_stays_stale(
    entries: list[ContactEntry], policy: FoldPolicy
) -> None:
    """R4 before R9: a resent older request fails as STALE, changing nothing, at any size."""
    bound = fold_event(None, _request(entries, 1, 5, 1_000), FoldPolicy(max_contacts=100)).state
    if not bound.contacts:
        return
    folded = fold_event(bound, _request(entries, 2, 5, 2_000), policy)
    assert folded.outcome == Outcome.STALE
    assert folded.state.contacts == bound.contacts and folded.events == ()
