"""processors.explain and the timeline of ``regstate replay`` (issue 7): why each outcome."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from processors.explain import explain, iso_ms
from processors.fold import fold_event
from processors.outcomes import Outcome
from processors.policy import FoldPolicy
from schemas import AorState, RegistrationEvent
from streams.analysis.timeline import ReplayRun, TimelineWriter, parse_time, timeline_entry
from tests.unit.builders import AOR, T0, Log, contact, fold_all

URI = "sip:1001@192.0.2.10:5060"


def step(
    state: AorState | None, event: RegistrationEvent, policy: FoldPolicy | None = None
) -> tuple[AorState, Outcome, str, dict[str, Any]]:
    """Fold one event; return the new state, the outcome, the why and the timeline entry."""
    policy = policy or FoldPolicy()
    folded = fold_event(state, event, policy)
    entry = timeline_entry({"line": 1}, state, event, folded, policy)
    assert entry["why"] == explain(state, event, folded, policy)
    return folded.state, folded.outcome, entry["why"], entry


def test_stale_names_the_call_id_and_both_cseqs() -> None:
    log = Log()
    state, _ = fold_all([log.register(URI, call_id="abc", cseq=7)])
    _, outcome, why, entry = step(state, log.register(URI, call_id="abc", cseq=5, ts=T0 + 1000))
    assert outcome is Outcome.STALE
    assert "CSeq 5 <= stored 7 for Call-ID abc" in why
    assert URI in why
    assert entry["effects"] == []
    assert entry["version"] == 1


def test_stale_equal_cseq_and_the_binding_that_failed_a_multi_contact_request() -> None:
    log = Log()
    other = "sip:1001@198.51.100.7:5060"
    state, _ = fold_all(
        [log.register(URI, call_id="x", cseq=3), log.register(other, call_id="y", cseq=9)]
    )
    # The first Contact is new; the second hits the binding set by Call-ID y CSeq 9.
    event = log.register("sip:1001@203.0.113.1", other, call_id="y", cseq=9, ts=T0 + 5)
    _, outcome, why, _ = step(state, event)
    assert outcome is Outcome.STALE
    assert "CSeq 9 <= stored 9 for Call-ID y" in why
    assert other in why


def test_stale_wildcard() -> None:
    log = Log()
    state, _ = fold_all([log.register(URI, call_id="abc", cseq=7)])
    event = log.register(call_id="abc", cseq=6, wildcard=True, expires=0, ts=T0 + 10)
    _, outcome, why, _ = step(state, event)
    assert outcome is Outcome.STALE
    assert why.startswith("stale: Contact: * CSeq 6 <= stored 7 for Call-ID abc")


def test_duplicate_names_the_node_and_both_seq_marks() -> None:
    log = Log()
    first = log.register(URI)
    state, _ = fold_all([first, log.register(URI, cseq=2, ts=T0 + 1)])
    _, outcome, why, entry = step(state, first)
    assert outcome is Outcome.DUPLICATE
    assert why.startswith("duplicate: fe1 seq 1 <= 2 already applied")
    assert "R5" in why
    assert entry["effects"] == []


def test_noop_expire_not_due() -> None:
    log = Log()
    state, _ = fold_all([log.register(contact(URI, 60))])
    _, outcome, why, _ = step(state, log.expire(URI, ts=T0 + 45_000))
    assert outcome is Outcome.NOOP
    assert why == (
        f"noop: not due, the binding expires at {iso_ms(T0 + 60_000)}, "
        "15 s after this expire's ts (R6)"
    )


def test_noop_expire_of_a_binding_refreshed_since() -> None:
    log = Log()
    state, _ = fold_all([log.register(URI, cseq=1), log.register(URI, cseq=2, ts=T0 + 1000)])
    _, outcome, why, _ = step(state, log.expire(URI, cseq=1, ts=T0 + 4_000_000))
    assert outcome is Outcome.NOOP
    assert why == (
        f"noop: binding {URI} was set since by Call-ID call-1 CSeq 2; "
        "this expire names Call-ID call-1 CSeq 1"
    )


def test_noop_expire_of_a_binding_already_gone() -> None:
    log = Log()
    state, _ = fold_all([log.register(contact(URI, 60)), log.expire(URI, ts=T0 + 60_000)])
    assert state.contacts == ()
    _, outcome, why, _ = step(state, log.expire(URI, ts=T0 + 61_000))
    assert outcome is Outcome.NOOP
    assert why == f"noop: no binding {URI} (already gone, or never registered)"


def test_noop_unregister_of_unknown_binding_and_wildcard_on_empty_aor() -> None:
    log = Log()
    _, outcome, why, _ = step(None, log.register(contact(URI, 0)))
    assert (outcome, why) == (
        Outcome.NOOP,
        "noop: removes (expires 0) only bindings the AOR does not have",
    )
    _, outcome, why, _ = step(None, log.register(wildcard=True, expires=0, ts=T0 + 1))
    assert (outcome, why) == (Outcome.NOOP, "noop: Contact: * but the AOR has no binding")


def test_effects_are_the_binding_events_in_order() -> None:
    log = Log()
    state, outcome, why, entry = step(None, log.register(contact(URI, 3600)))
    assert outcome is Outcome.APPLIED
    assert entry["effects"] == [
        {
            "event": "registered",
            "key": URI,
            "uri": URI,
            "expires_at": T0 + 3_600_000,
            "version": 1,
        }
    ]
    assert why == f"registered {URI} until {iso_ms(T0 + 3_600_000)}"

    state, _, why, entry = step(state, log.register(contact(URI, 600), cseq=2, ts=T0 + 1000))
    assert [e["event"] for e in entry["effects"]] == ["shortened"]
    assert why.startswith(f"shortened {URI} until ")

    state, _, why, entry = step(state, log.expire(URI, cseq=2, ts=T0 + 601_000))
    assert entry["effects"][0]["event"] == "expired"
    assert entry["outcome"] == "applied"
    assert why == f"expired {URI}"
    assert entry["bindings"] == 0

    # Registered again after the lapse, and then both bindings unregistered by Contact: *.
    second = "sip:1001@198.51.100.7:5060"
    state, _, why, entry = step(state, log.register(URI, second, call_id="c2", ts=T0 + 700_000))
    assert [e["event"] for e in entry["effects"]] == ["registered", "registered"]
    state, _, why, entry = step(
        state, log.register(call_id="c2", cseq=2, wildcard=True, expires=0, ts=T0 + 800_000)
    )
    assert [(e["event"], e["key"]) for e in entry["effects"]] == [
        ("unregistered", URI),
        ("unregistered", second),
    ]
    assert [e["version"] for e in entry["effects"]] == [6, 7]
    assert entry["version"] == 7


def test_registered_again_over_a_lapsed_binding_says_so() -> None:
    log = Log()
    state, _ = fold_all([log.register(contact(URI, 60))])
    _, _, why, _ = step(state, log.register(URI, call_id="c9", ts=T0 + 120_000))
    assert why.endswith("(the previous binding had lapsed)")


def test_query_invalid_rejected_and_too_many_contacts() -> None:
    log = Log()
    assert (
        step(None, log.register())[2] == "query: REGISTER without Contact, bindings unchanged (R8)"
    )
    _, outcome, why, _ = step(None, log.register(wildcard=True, expires=30, ts=T0 + 1))
    assert outcome is Outcome.INVALID
    assert "Expires 0, got 30" in why
    _, outcome, why, entry = step(None, log.reject(401, "auth_failed", ts=T0 + 2))
    assert outcome is Outcome.REJECTED
    assert why == "fe1 answered 401 auth_failed (R10); bindings unchanged"
    assert [e["event"] for e in entry["effects"]] == ["rejected"]

    policy = FoldPolicy(max_contacts=1)
    state, _ = fold_all([log.register(URI, ts=T0 + 3)], policy=policy)
    _, outcome, why, entry = step(
        state, log.register("sip:1001@198.51.100.7", call_id="c2", ts=T0 + 4), policy
    )
    assert outcome is Outcome.TOO_MANY_CONTACTS
    assert "max_contacts=1" in why
    assert [e["event"] for e in entry["effects"]] == ["rejected"]


def test_timeline_entry_carries_position_event_and_outcome() -> None:
    log = Log()
    event = log.register(URI, call_id="abc", cseq=3)
    folded = fold_event(None, event)
    entry = timeline_entry({"partition": 2, "offset": 17}, None, event, folded)
    assert entry["partition"] == 2 and entry["offset"] == 17
    assert entry["time"] == iso_ms(T0)
    assert (entry["aor"], entry["id"], entry["kind"], entry["call_id"], entry["cseq"]) == (
        AOR,
        "fe1:1",
        "register",
        "abc",
        3,
    )
    assert entry["contacts"] == [{"uri": URI, "expires": 3600}]
    orjson.dumps(entry)  # JSON-serializable as is


def test_replay_run_filters_like_the_file_replay() -> None:
    a, b = Log(), Log(aor="sip:1002@pbx.example.com")
    events = [
        a.register(URI, ts=T0),
        b.register("sip:1002@192.0.2.20", ts=T0 + 10),
        a.register(URI, cseq=2, ts=T0 + 20),
        a.register(URI, cseq=3, ts=T0 + 30),
    ]
    entries: list[dict[str, Any]] = []
    run = ReplayRun(
        until_ms=T0 + 20, since_ms=T0 + 5, aors=frozenset({AOR}), on_entry=entries.append
    )
    for i, e in enumerate(events):
        run.feed({"line": i + 1}, e)
    assert [e["line"] for e in entries] == [3]  # ts >= since, <= until, selected AOR
    assert run.states[AOR].version == 2
    assert set(run.states) == {AOR}
    assert (run.after_until, run.not_selected, run.max_ts) == (1, 1, T0 + 20)
    assert run.snapshot_time() == T0 + 20


def test_table_format_has_a_header_and_one_line_per_event() -> None:
    log = Log()
    out = io.StringIO()
    writer = TimelineWriter(out, "table")
    run = ReplayRun(on_entry=writer)
    run.feed({"partition": 0, "offset": 5}, log.register(URI, call_id="abc", cseq=7))
    run.feed({"partition": 0, "offset": 6}, log.register(URI, call_id="abc", cseq=5, ts=T0 + 1))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("TIME (UTC)")
    assert len(lines) == 3
    assert "p0@6" in lines[2] and "stale" in lines[2]
    assert "CSeq 5 <= stored 7 for Call-ID abc" in lines[2]
    with pytest.raises(ValueError, match="format"):
        TimelineWriter(out, "xml")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1767254400000", 1_767_254_400_000),
        ("2026-01-01T08:00:00Z", 1_767_254_400_000),
        ("2026-01-01T09:00:00+01:00", 1_767_254_400_000),
        ("2026-01-01 08:00:00.250+00:00", 1_767_254_400_250),
        ("2026-01-01T08:00:00.999999Z", 1_767_254_400_999),
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize("text", ["2026-01-01T08:00:00", "yesterday", ""])
def test_parse_time_refuses_local_times_and_junk(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
