"""processors/why.py: the "not registered: ..." line of the 404, ./dev run and where."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.why import not_found_body, not_registered_line, why_not_registered
from schemas.events import Source
from schemas.state import AorState, Health, Reject

T0 = 1_767_254_460_000  # 2026-01-01T08:01:00Z


def test_a_wrong_password_names_its_failed_attempts_and_since() -> None:
    h = Health(
        state="auth_failing",
        since=T0,
        auth_failures=3,
        last_reject=Reject(T0 + 60_000, 401, "auth_failed", "fe1", None),
    )
    assert not_registered_line(h) == "not registered: wrong password, 3 failed attempts since 08:01"


def test_each_diagnosis_names_its_evidence() -> None:
    unreachable = Health(state="unreachable", since=T0, request_retransmissions=4)
    assert why_not_registered(unreachable).startswith("unreachable, 4 retransmissions")
    flapping = Health(state="flapping", since=T0, short_cycles=3, last_grant_s=60)
    assert why_not_registered(flapping) == "flapping, 3 short grants since 08:01, last grant 60 s"
    expired = Health(state="unregistered", since=T0, last_expired_at=T0 + 120_000)
    assert why_not_registered(expired).startswith("binding expired at 08:03")
    forbidden = Health(
        state="unregistered",
        since=T0,
        last_reject=Reject(T0, 403, "forbidden", "fe1", Source("192.0.2.1", 5060, "udp")),
    )
    assert why_not_registered(forbidden) == "last REGISTER refused at 08:01: 403 forbidden"
    assert why_not_registered(Health(state="unregistered", since=T0)) == "unregistered since 08:01"
    assert why_not_registered(Health()) == "never registered"


def test_the_404_body_carries_the_health_or_says_there_is_no_record() -> None:
    state = AorState(aor="sip:1@x", health=Health(state="auth_failing", since=T0, auth_failures=5))
    body = not_found_body("sip:1@x", state)
    assert body["error"] == "not_found" and body["aor"] == "sip:1@x"
    assert body["health"]["state"] == "auth_failing" and body["health"]["auth_failures"] == 5
    assert body["why"] == "not registered: wrong password, 5 failed attempts since 08:01"
    assert not_found_body("sip:2@x", None) == {
        "error": "not_found",
        "aor": "sip:2@x",
        "why": "not registered: no record of this AOR",
    }


healths = st.builds(
    Health,
    state=st.sampled_from(
        ["registered", "unregistered", "auth_failing", "unreachable", "flapping"]
    ),
    since=st.integers(0, 4_000_000_000_000),
    auth_failures=st.integers(0, 10**6),
    last_reject=st.none()
    | st.builds(
        Reject,
        ts=st.integers(0, 4_000_000_000_000),
        status=st.integers(400, 699),
        reason=st.from_regex(r"[a-z_]{1,20}", fullmatch=True),  # machine words
        node=st.just("fe1"),
        source=st.none(),
    ),
    retransmissions=st.integers(0, 10**6),
    short_cycles=st.integers(0, 10**6),
    last_expired_at=st.none() | st.integers(0, 4_000_000_000_000),
    request_retransmissions=st.integers(0, 10**6),
    last_grant_s=st.none() | st.integers(0, 10**6),
)


@given(healths)
def test_every_health_gives_one_line_naming_its_state(h: Health) -> None:
    line = not_registered_line(h)
    assert line.startswith("not registered: ") and "\n" not in line
    word = {"auth_failing": "failed attempt", "unreachable": "unreachable", "flapping": "flapping"}
    if h.state in word:
        assert word[h.state] in line
