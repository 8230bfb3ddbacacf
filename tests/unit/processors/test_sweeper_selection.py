"""The sweeper's selection logic (processors/expiry.py), with an injected clock; no Kafka."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.expiry import ExpiryIndex, SeqSource, SweepPlanner, is_due, sweeper_node
from processors.fold import fold_event
from processors.outcomes import Outcome
from schemas import AorState, Binding
from tests.unit.builders import AOR, T0, Log, contact

GRACE = 5_000
RESEND = 30_000


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _planner(clock: Clock) -> SweepPlanner:
    seqs = iter(range(1, 10**9))
    planner = SweepPlanner(
        sweeper_node("w1"),
        grace_ms=GRACE,
        resend_ms=RESEND,
        now=clock,
        seq=lambda: next(seqs),
    )
    planner.track(0)
    return planner


def _state(*expires: int, aor: str = AOR) -> AorState:
    """An AOR registered at T0 with one contact per expiry (seconds)."""
    log = Log(aor=aor)
    contacts = [contact(f"sip:u{i}@192.0.2.{i}:5060", e) for i, e in enumerate(expires)]
    return fold_event(None, log.register(*contacts, ts=T0)).state


def test_seq_is_strictly_increasing_and_starts_from_the_clock() -> None:
    clock = iter([1_000, 1_000, 999, 5_000])
    seq = SeqSource(lambda: next(clock))
    assert [seq(), seq(), seq(), seq()] == [1_000, 1_001, 1_002, 5_000]


def test_seq_of_a_restarted_sweeper_is_above_the_previous_run() -> None:
    # A run emitting a full sweep batch (5000) within one clock reading runs at
    # most 5 ms ahead of the clock; a restart takes seconds.
    first = SeqSource(lambda: 1_700_000_000_000_000)
    used = [first() for _ in range(5000)]
    restarted = SeqSource(lambda: 1_700_000_000_000_000 + 1_000_000)  # one second later
    assert restarted() > max(used)


def test_is_due_only_after_more_than_grace() -> None:
    b = _state(60).contacts[0]
    assert not is_due(b, b.expires_at, GRACE)
    assert not is_due(b, b.expires_at + GRACE, GRACE)
    assert is_due(b, b.expires_at + GRACE + 1, GRACE)


def test_nothing_is_planned_before_expiry_plus_grace() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    state = _state(60)
    planner.observe(0, AOR.encode(), state)
    clock.now = T0 + 60_000 + GRACE
    assert planner.plan(lambda p, k: state, 100) == []


def test_expire_event_names_the_binding_and_the_sweeper_node() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    state = _state(60)
    planner.observe(0, AOR.encode(), state)
    clock.now = T0 + 60_000 + GRACE + 1
    (planned,) = planner.plan(lambda p, k: state, 100)
    ev = planned.event
    b = state.contacts[0]
    assert planned.partition == 0 and planned.key == AOR.encode()
    assert (ev.kind, ev.node, ev.aor) == ("expire", "engine:w1", AOR)
    assert ev.id == f"engine:w1:{ev.seq}"
    assert (ev.call_id, ev.cseq, ev.contact, ev.ts) == (b.call_id, b.cseq, b.key, clock.now)
    # The fold applies it: the binding is expired.
    folded = fold_event(state, ev)
    assert folded.outcome is Outcome.APPLIED and not folded.state.contacts
    assert [e.event for e in folded.events] == ["expired"]


def test_the_same_expire_is_not_sent_every_tick_but_resent_after_resend_ms() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    state = _state(60)
    planner.observe(0, AOR.encode(), state)
    clock.now = T0 + 60_000 + GRACE + 1
    assert len(planner.plan(lambda p, k: state, 100)) == 1
    for _ in range(10):  # ten more ticks: the expire is in flight
        clock.now += 1000
        assert planner.plan(lambda p, k: state, 100) == []
    assert planner.pending_sends() == 1
    clock.now = T0 + 60_000 + GRACE + 1 + RESEND
    again = planner.plan(lambda p, k: state, 100)
    assert len(again) == 1, "lost: sent again, with a new seq"


def test_applied_expire_clears_the_mark_and_the_index() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    state = _state(60)
    planner.observe(0, AOR.encode(), state)
    clock.now = T0 + 60_000 + GRACE + 1
    (planned,) = planner.plan(lambda p, k: state, 100)
    after = fold_event(state, planned.event).state
    planner.observe(0, AOR.encode(), after)
    assert planner.pending_sends() == 0
    assert planner.index.due_at(0, AOR.encode()) is None
    assert planner.bindings() == {0: 0}


def test_refreshed_binding_is_not_expired() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    log = Log()
    state = fold_event(None, log.register(contact("sip:a@192.0.2.1", 60), ts=T0)).state
    planner.observe(0, AOR.encode(), state)
    refreshed = fold_event(
        state, log.register(contact("sip:a@192.0.2.1", 60), cseq=2, ts=T0 + 50_000)
    ).state
    planner.observe(0, AOR.encode(), refreshed)
    clock.now = T0 + 60_000 + GRACE + 1
    assert planner.plan(lambda p, k: refreshed, 100) == []
    clock.now = T0 + 110_000 + GRACE + 1
    assert len(planner.plan(lambda p, k: refreshed, 100)) == 1


def test_only_due_bindings_of_an_aor_are_expired() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    state = _state(60, 3600)
    planner.observe(0, AOR.encode(), state)
    clock.now = T0 + 60_000 + GRACE + 1
    (planned,) = planner.plan(lambda p, k: state, 100)
    assert planned.event.contact == next(b.key for b in state.contacts if b.expires_at < clock.now)
    # The other binding is looked at again when it becomes due.
    assert planner.index.due_at(0, AOR.encode()) == T0 + RESEND + 60_000 + GRACE + 1


def test_the_state_read_back_decides_not_the_index() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    planner.observe(0, AOR.encode(), _state(60))
    clock.now = T0 + 3_600_000
    # Meanwhile the AOR was unregistered (state read back has no contact).
    empty = AorState(aor=AOR)
    assert planner.plan(lambda p, k: empty, 100) == []
    assert planner.index.due_at(0, AOR.encode()) is None


def test_limit_per_sweep_and_the_rest_next_time() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    states = {}
    for i in range(25):
        aor = f"sip:{3000 + i}@pbx.example.com"
        states[aor.encode()] = _state(60, aor=aor)
        planner.observe(0, aor.encode(), states[aor.encode()])
    clock.now = T0 + 60_000 + GRACE + 1
    first = planner.plan(lambda p, k: states[k], 10)
    second = planner.plan(lambda p, k: states[k], 10)
    third = planner.plan(lambda p, k: states[k], 10)
    keys = [x.key for x in first + second + third]
    assert (len(first), len(second), len(third)) == (10, 10, 5)
    assert len(set(keys)) == 25


def test_untracked_or_forgotten_partitions_are_not_swept() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    state = _state(60)
    planner.observe(1, AOR.encode(), state)  # partition 1 not owned
    planner.observe(0, AOR.encode(), state)
    planner.forget(0)
    clock.now = T0 + 3_600_000
    assert planner.plan(lambda p, k: state, 100) == []
    assert planner.bindings() == {}


def test_rebuild_does_not_override_what_the_agent_wrote() -> None:
    clock = Clock(T0)
    planner = _planner(clock)
    fresh = _state(3600)
    planner.observe(0, AOR.encode(), fresh)
    planner.rebuild_raw(0, AOR.encode(), T0 + 1_000, 1)  # stale snapshot of the table
    assert planner.index.due_at(0, AOR.encode()) == fresh.contacts[0].expires_at + GRACE + 1
    planner.rebuild_raw(0, b"sip:other@pbx.example.com", T0 + 1_000, 2)
    assert planner.bindings() == {0: 3}


def test_index_pops_in_due_order_and_skips_stale_entries() -> None:
    index = ExpiryIndex()
    index.add_partition(0)
    index.schedule(0, b"a", 30, 1)
    index.schedule(0, b"b", 10, 1)
    index.schedule(0, b"c", 20, 1)
    index.schedule(0, b"b", 40, 1)  # re-scheduled: the entry at 10 is stale
    index.schedule(0, b"c", None)  # removed
    assert index.pop_due(35, 10) == [(0, b"a")]
    assert index.pop_due(100, 10) == [(0, b"b")]
    assert len(index) == 0 and index.bindings() == {0: 0}


def test_index_pops_due_entries_without_scanning_the_rest() -> None:
    # 200k AORs here (1M in production): popping 1000 due ones touches ~1000 entries.
    index = ExpiryIndex()
    index.add_partition(0)
    for i in range(200_000):
        index.schedule(0, b"%d" % i, T0 + i, 1)
    due = index.pop_due(T0 + 999, 10_000)
    assert len(due) == 1000
    assert len(index._heap) == 199_000, "only the due entries left the heap"
    assert index.bindings() == {0: 199_000}


def test_a_later_due_time_pushes_nothing_and_an_earlier_one_is_compacted() -> None:
    """Refreshes move due times later at every REGISTER: the heap keeps one entry per
    AOR; moving them earlier leaves stale entries, compacted past twice the live ones."""
    index = ExpiryIndex()
    index.add_partition(0)
    for round_ in range(20):
        for i in range(1000):
            index.schedule(0, b"%d" % i, T0 + round_ * 1000 + i, 1)
    assert len(index) == 1000
    assert len(index._heap) == 1000
    for round_ in range(20):
        for i in range(1000):
            index.schedule(0, b"%d" % i, T0 - round_ * 1000 - i, 1)
    assert len(index._heap) <= 2 * 1000 + 4096 + 1


def test_binding_helper_is_a_binding() -> None:
    assert isinstance(_state(60).contacts[0], Binding)


Op = tuple[str, int, int]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("schedule"), st.integers(0, 7), st.integers(0, 60)),
            st.tuples(st.just("clear"), st.integers(0, 7), st.just(0)),
            st.tuples(st.just("pop"), st.integers(0, 70), st.integers(1, 4)),
        ),
        max_size=80,
    )
)
def test_index_pops_exactly_what_is_due_in_due_order(ops: list[Op]) -> None:
    """Against a plain dict: each pop returns the AORs due at or before ``now``, earliest
    first (ties in any order), at most ``limit``, and each leaves the index."""
    index = ExpiryIndex()
    index.add_partition(0)
    model: dict[bytes, int] = {}
    for op, a, b in ops:
        aor = b"%d" % a
        if op == "schedule":
            index.schedule(0, aor, b, 1)
            model[aor] = b
        elif op == "clear":
            index.schedule(0, aor, None)
            model.pop(aor, None)
        else:
            now, limit = a, b
            got = index.pop_due(now, limit)
            due = sorted((d, k) for k, d in model.items() if d <= now)
            assert len(got) == min(limit, len(due))
            dues = [model[aor_] for _, aor_ in got]
            assert dues == sorted(dues)
            assert all(d <= now for d in dues)
            # The earliest ones: nothing left behind is due before the last one popped.
            for _, aor_ in got:
                del model[aor_]
            if got:
                assert all(d >= dues[-1] for d in model.values() if d <= now)
        assert len(index) == len(model)
        assert index.bindings() == {0: len(model)}
        for aor_, d in model.items():
            assert index.due_at(0, aor_) == d
