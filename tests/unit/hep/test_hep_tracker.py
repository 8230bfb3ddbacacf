"""The REGISTER transaction tracker and the duplicate filter: examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.fold import apply
from processors.policy import DEFAULT_POLICY
from schemas import RegistrationEvent, Source, decode_event, encode_event
from schemas.state import AorState
from streams.hep.decode import HepPacket
from streams.hep.dedup import DuplicateFilter
from streams.hep.tracker import TIMEOUT_US, Tracker, agent_nodes, node_of
from tests.unit.hep_builders import PBX, capture, register, response

PHONE = ("203.0.113.9", 41000)
T0 = 1_796_130_000_000_000
CONTACT = "<sip:1001@10.0.0.5:5062>"
CHALLENGE = 'WWW-Authenticate: Digest realm="r", nonce="n"'
PROXY_CHALLENGE = 'Proxy-Authenticate: Digest realm="r", nonce="n"'


def fold(events: list[RegistrationEvent]) -> dict[str, AorState]:
    table: dict[str, AorState] = {}
    for e in events:
        table[e.aor], _ = apply(table.get(e.aor), e, DEFAULT_POLICY)
    return table


def feed(tracker: Tracker, packets: list[HepPacket]) -> list[RegistrationEvent]:
    out: list[RegistrationEvent] = []
    for p in packets:
        out += tracker.observe(p)
    return out


def login(user: str, t: int, *, cseq: int = 1, granted: int = 120) -> list[HepPacket]:
    """REGISTER, 401, REGISTER with Digest, 200: the 4 captures of one authenticated login."""
    r1 = register(user, branch=f"b{user}{cseq}a", cseq=cseq)
    r2 = register(user, branch=f"b{user}{cseq}b", cseq=cseq + 1, auth=True)
    ok = response(r2, 200, contacts=[f"<sip:{user}@10.0.0.5:5062>;expires={granted}"])
    return [
        capture(r1, PHONE, PBX, t),
        capture(response(r1, 401, extra=[CHALLENGE]), PBX, PHONE, t + 500),
        capture(r2, PHONE, PBX, t + 10_000),
        capture(ok, PBX, PHONE, t + 10_700),
    ]  # fmt: skip


def test_an_authenticated_login_is_one_register_with_the_registrars_grant() -> None:
    tracker = Tracker()
    events = feed(tracker, login("1001", T0, granted=120))
    assert len(events) == 1
    e = events[0]
    assert e.kind == "register" and e.aor == "sip:1001@pbx.example"
    assert e.node == "hep-2001" and e.seq == T0 + 10_700 and e.id == f"hep-2001:{T0 + 10_700}"
    assert e.ts == (T0 + 10_700) // 1000
    assert e.source == Source(*PHONE, "udp")
    assert [(c.uri, c.expires) for c in e.contacts] == [("sip:1001@10.0.0.5:5062", 120)]
    assert e.cseq == 2 and e.call_id == "call-1001"
    assert e.raw is not None and "Authorization" not in e.raw
    assert tracker.stats.challenges == 1


def test_the_challenge_alone_never_counts() -> None:
    tracker = Tracker()
    events = feed(tracker, login("1001", T0)[:2])
    events += tracker.expire(T0 + 10 * TIMEOUT_US)
    assert events == []


def test_the_200s_expires_header_is_the_grant_without_a_contact_parameter() -> None:
    r = register("1001", branch="b1", cseq=1, expires=3600)
    ok = response(r, 200, contacts=[CONTACT, "<sip:1001@192.0.2.99>;expires=50"], expires=600)
    [e] = feed(Tracker(), [capture(r, PHONE, PBX, T0), capture(ok, PBX, PHONE, T0 + 1)])
    # Only the request's own Contact: the other binding belongs to another device.
    assert [(c.uri, c.expires) for c in e.contacts] == [("sip:1001@10.0.0.5:5062", 600)]


def test_a_registrar_that_rewrote_the_contact_is_believed() -> None:
    r = register("1001", branch="b1", cseq=1)
    ok = response(r, 200, contacts=["<sip:1001@203.0.113.9:41000>;expires=90"])
    [e] = feed(Tracker(), [capture(r, PHONE, PBX, T0), capture(ok, PBX, PHONE, T0 + 1)])
    assert [(c.uri, c.expires) for c in e.contacts] == [("sip:1001@203.0.113.9:41000", 90)]


def test_unregister_and_wildcard() -> None:
    tracker = Tracker()
    events = feed(tracker, login("1001", T0))
    r = register("1001", branch="bu", cseq=3, expires=0)
    events += feed(
        tracker,
        [
            capture(r, PHONE, PBX, T0 + 1_000_000),
            capture(response(r, 200), PBX, PHONE, T0 + 1_000_500),
        ],
    )
    assert [(c.uri, c.expires) for c in events[-1].contacts] == [("sip:1001@10.0.0.5:5062", 0)]
    assert fold(events)["sip:1001@pbx.example"].contacts == ()
    w = register("1001", branch="bw", cseq=4, contact="*", expires=0)
    events += feed(
        tracker,
        [
            capture(w, PHONE, PBX, T0 + 2_000_000),
            capture(response(w, 200), PBX, PHONE, T0 + 2_000_500),
        ],
    )
    assert events[-1].wildcard and events[-1].contacts == () and events[-1].expires == 0


def test_wrong_password_is_auth_failed_and_the_phone_auth_failing() -> None:
    tracker = Tracker()
    events: list[RegistrationEvent] = []
    for i in range(3):
        t = T0 + i * 1_000_000
        r1 = register("1002", branch=f"a{i}", cseq=2 * i + 1)
        r2 = register("1002", branch=f"b{i}", cseq=2 * i + 2, auth=True)
        challenge = ['WWW-Authenticate: Digest realm="r", nonce="n"']
        events += feed(tracker, [
            capture(r1, PHONE, PBX, t),
            capture(response(r1, 401, extra=challenge), PBX, PHONE, t + 1),
            capture(r2, PHONE, PBX, t + 2),
            capture(response(r2, 401, extra=challenge), PBX, PHONE, t + 3),
        ])  # fmt: skip
    assert [(e.kind, e.status, e.reason) for e in events] == [("reject", 401, "auth_failed")] * 3
    state = fold(events)["sip:1002@pbx.example"]
    assert state.health.state == "auth_failing" and state.contacts == ()


@pytest.mark.parametrize(
    ("status", "auth", "extra", "expected"),
    [
        (403, True, [], ("reject", 403, "auth_failed")),
        (403, False, [], ("reject", 403, "forbidden")),
        (407, True, [PROXY_CHALLENGE], ("reject", 407, "auth_failed")),
        (401, True, ['WWW-Authenticate: Digest realm="r", nonce="n2", stale=true'], None),
        (407, False, [PROXY_CHALLENGE], None),
        (423, False, ["Min-Expires: 60"], ("reject", 423, "interval_too_brief")),
        (500, False, [], ("reject", 500, "server_error")),
        (486, False, [], ("reject", 486, "rejected")),
    ],
)  # fmt: skip
def test_final_failures(
    status: int, auth: bool, extra: list[str], expected: tuple[str, int, str] | None
) -> None:
    r = register("1003", branch="b", cseq=1, auth=auth)
    resp = response(r, status, extra=extra)
    events = feed(Tracker(), [capture(r, PHONE, PBX, T0), capture(resp, PBX, PHONE, T0 + 1)])
    assert [(e.kind, e.status, e.reason) for e in events] == ([expected] if expected else [])


def test_retransmissions_make_the_silent_phone_unreachable() -> None:
    tracker = Tracker()
    r = register("1004", branch="silent", cseq=1)
    packets = [capture(r, PHONE, PBX, T0 + i * 500_000) for i in range(4)]
    events = feed(tracker, packets)
    assert [(e.reason, e.status) for e in events] == [("retransmission", 0)] * 3
    assert [e.seq for e in events] == [T0 + i * 500_000 for i in (1, 2, 3)]
    assert fold(events)["sip:1004@pbx.example"].health.state == "unreachable"
    [timeout] = tracker.expire(T0 + TIMEOUT_US)
    assert (timeout.reason, timeout.status, timeout.seq) == ("timeout", 408, T0 + TIMEOUT_US)
    assert len(tracker) == 0


def test_a_timeout_is_reported_before_a_later_capture() -> None:
    tracker = Tracker()
    r = register("1005", branch="x", cseq=1)
    assert tracker.observe(capture(r, PHONE, PBX, T0)) == []
    later = register("1006", branch="y", cseq=1)
    events = tracker.observe(capture(later, PHONE, PBX, T0 + TIMEOUT_US + 1))
    assert [(e.aor, e.reason) for e in events] == [("sip:1005@pbx.example", "timeout")]


def test_a_duplicated_200_and_a_late_second_answer_change_nothing() -> None:
    tracker = Tracker()
    packets = login("1007", T0)
    events = feed(tracker, [*packets, packets[-1]._replace(ts_usec=packets[-1].ts_usec + 1)])
    assert len(events) == 1 and tracker.stats.duplicate_finals == 1


def test_a_200_whose_register_was_lost_still_registers_from_the_wire() -> None:
    [e] = feed(Tracker(), login("1008", T0)[3:])
    assert e.kind == "register" and e.source == Source(*PHONE, "udp")
    assert [c.expires for c in e.contacts] == [120]


def test_trunks_are_registers_a_monitored_server_sends() -> None:
    tracker = Tracker(servers=frozenset({PBX[0]}))
    carrier = ("198.51.100.50", 5060)
    r = register("acct", branch="t1", cseq=1, domain="carrier.example", auth=True)
    ok = response(r, 200, contacts=["<sip:acct@10.0.0.5:5062>;expires=600"])
    [e] = feed(tracker, [capture(r, PBX, carrier, T0), capture(ok, carrier, PBX, T0 + 1)])
    assert e.aor == "trunk:sip:acct@carrier.example" and e.source == Source(*PBX, "udp")
    # ip:port entries: a phone on the server's own host is still a phone.
    by_port = Tracker(servers=frozenset({f"{PBX[0]}:{PBX[1]}"}))
    [e] = feed(by_port, [capture(r, PBX, carrier, T0), capture(ok, carrier, PBX, T0 + 1)])
    assert e.aor == "trunk:sip:acct@carrier.example"
    [e] = feed(by_port, login("1001", T0 + 10**6))
    assert e.aor == "sip:1001@pbx.example"


def test_node_names() -> None:
    nodes = agent_nodes(" 2001=ast1, 2002=kam1 ")
    assert nodes == {2001: "ast1", 2002: "kam1"}
    assert node_of(2001, nodes) == "ast1" and node_of(7, nodes) == "hep-7"
    for bad in ("2001", "x=ast1", "2001=a:b", "2001="):
        with pytest.raises(ValueError):
            agent_nodes(bad)
    [e] = feed(Tracker(nodes), login("1001", T0, granted=60))[-1:]
    assert e.node == "ast1"


def test_duplicate_filter_window() -> None:
    f = DuplicateFilter(window_us=200_000)
    p = login("1001", T0)[0]
    assert not f.seen(p)
    assert f.seen(p._replace(agent_id=9, ts_usec=p.ts_usec + 150_000))  # another capture point
    assert not f.seen(p._replace(ts_sec=p.ts_sec + 1))  # a retransmission a second later
    assert f.duplicates == 1


# ---- properties: lossy, duplicated mirrors and two listeners


@st.composite
def mirrors(draw: st.DrawFn) -> list[HepPacket]:
    """Captures of several phones' logins, wrong passwords and silent retransmissions."""
    packets: list[HepPacket] = []
    for n in range(draw(st.integers(1, 5))):
        user = f"20{n}"
        t = T0 + n * 7_000_000
        for round_ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["login", "wrong", "silent"]))
            base = t + round_ * 40_000_000
            if kind == "login":
                packets += login(user, base, cseq=10 * round_ + 1)
            elif kind == "wrong":
                r = register(user, branch=f"w{user}{round_}", cseq=10 * round_ + 1, auth=True)
                packets += [
                    capture(r, PHONE, PBX, base),
                    capture(response(r, 403), PBX, PHONE, base + 5),
                ]
            else:
                r = register(user, branch=f"s{user}{round_}", cseq=10 * round_ + 1)
                packets += [capture(r, PHONE, PBX, base + i * 600_000) for i in range(3)]
    return sorted(packets, key=lambda p: p.capture_us)  # fmt: skip


def listen(packets: list[HepPacket]) -> list[RegistrationEvent]:
    """One listener: filter, tracker, and the final timeouts."""
    tracker, dedup = Tracker(), DuplicateFilter()
    events = feed(tracker, [p for p in packets if not dedup.seen(p)])
    events += tracker.expire(T0 + 10**12)
    # Every event is valid on the wire (the engine would dead-letter it otherwise).
    assert [decode_event(encode_event(e)) for e in events] == events
    return events


@settings(max_examples=60, deadline=None)
@given(mirrors(), st.data())
def test_duplicated_captures_give_the_same_events(
    packets: list[HepPacket], data: st.DataObject
) -> None:
    doubled: list[HepPacket] = []
    for p in packets:
        doubled.append(p)
        if data.draw(st.booleans()):
            # The same packet from a second capture point, a few µs later.
            doubled.append(p._replace(agent_id=p.agent_id + 1, ts_usec=p.ts_usec + 3))
    assert listen(doubled) == listen(packets)


@settings(max_examples=60, deadline=None)
@given(mirrors(), st.data())
def test_two_listeners_on_one_mirror_give_the_table_of_one(
    packets: list[HepPacket], data: st.DataObject
) -> None:
    one = listen(packets)
    a, b = listen(packets), listen(packets)
    assert a == b == one  # deterministic ids: the same events, byte for byte
    # Their appends interleave on the topic in any order that keeps each one's order.
    merged: list[RegistrationEvent] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and data.draw(st.booleans())):
            merged.append(a[i])
            i += 1
        else:
            merged.append(b[j])
            j += 1
    assert fold(merged) == fold(one)


@settings(max_examples=60, deadline=None)
@given(mirrors(), st.data())
def test_a_lost_challenge_changes_nothing(packets: list[HepPacket], data: st.DataObject) -> None:
    lossy = [
        p for p in packets
        if not (p.payload.startswith(b"SIP/2.0 401") and data.draw(st.booleans()))
    ]  # fmt: skip
    assert fold(listen(lossy)) == fold(listen(packets))


def test_other_traffic_is_skipped_before_parsing() -> None:
    tracker = Tracker()
    r = register("1009", branch="b9", cseq=1)
    invite = r.replace(b"REGISTER sip:", b"INVITE sip:").replace(b"1 REGISTER", b"1 INVITE")
    trying = response(r, 100)
    options_ok = response(invite, 200).replace(b"1 INVITE", b"1 OPTIONS")
    events = feed(tracker, [
        capture(invite, PHONE, PBX, T0),
        capture(options_ok, PBX, PHONE, T0 + 1),
        capture(r, PHONE, PBX, T0 + 2),
        capture(trying, PBX, PHONE, T0 + 3),
        capture(response(r, 200, contacts=[CONTACT + ";expires=60"]), PBX, PHONE, T0 + 4),
    ])  # fmt: skip
    assert [e.kind for e in events] == ["register"]
    assert tracker.stats.other_methods == 3 and tracker.stats.unparsable == 0


class FullParse(Tracker):
    """The tracker without its fast path: every message parsed."""

    def _known(self, packet: HepPacket) -> None:
        return None


@settings(max_examples=60, deadline=None)
@given(mirrors())
def test_the_fast_path_changes_no_event(packets: list[HepPacket]) -> None:
    fast, full = Tracker(), FullParse()
    assert feed(fast, packets) == feed(full, packets)
    assert fast.expire(T0 + 10**12) == full.expire(T0 + 10**12)
    assert fast.stats.challenges == full.stats.challenges
    assert fast.stats.retransmissions == full.stats.retransmissions


@settings(max_examples=60, deadline=None)
@given(mirrors(), st.data())
def test_captures_arriving_out_of_order_give_the_events_of_capture_order(
    packets: list[HepPacket], data: st.DataObject
) -> None:
    """A registrar's processes send their captures in any order within 250 ms (D57)."""
    from streams.hep.reorder import CaptureOrder

    jitter = [
        (p.capture_us + data.draw(st.integers(0, 200_000)), i, p) for i, p in enumerate(packets)
    ]
    arrived = [p for _, _, p in sorted(jitter, key=lambda x: (x[0], x[1]))]
    order, tracker = CaptureOrder(), Tracker()
    events: list[RegistrationEvent] = []
    for p in arrived:
        for ready in order.push(p):
            events += tracker.observe(ready)
    for ready in order.release(T0 + 10**12):
        events += tracker.observe(ready)
    events += tracker.expire(T0 + 10**12)
    assert order.late == 0
    assert events == listen(packets)
    assert [e.seq for e in events if e.reason != "timeout"] == sorted(
        e.seq for e in events if e.reason != "timeout"
    )


def test_a_capture_later_than_the_window_still_goes_through() -> None:
    from streams.hep.reorder import CaptureOrder

    order = CaptureOrder(window_us=100)
    a, b, c = (capture(b"x", PHONE, PBX, T0 + d) for d in (0, 1_000, -10))
    assert order.push(a) == []
    assert order.push(b) == [a]
    assert order.push(c) == [c] and order.late == 1
