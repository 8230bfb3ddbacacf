"""RegistrationEvent, AorState and BindingEvent codecs (docs/design.md section 4).

Decoding must never raise: it returns the event or a ``schemas.Rejection`` whose
``reason`` names the problem, so a consumer can dead-letter the record.
"""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    AorState,
    Binding,
    BindingEvent,
    ContactEntry,
    Health,
    RegistrationEvent,
    Reject,
    Rejection,
    Source,
    decode_event,
    decode_event_json,
    decode_state,
    encode_binding_event,
    encode_event,
    encode_event_json,
    encode_state,
    encode_state_forms,
    ending_event,
    event_from_mapping,
    event_id,
)
from schemas.codec import (
    MAX_EVENT_CONTACTS,
    MAX_RAW_BYTES,
    MAX_SEQ_AHEAD_US,
    MAX_TS_MS,
    _checked_event,
    binding_event_from_dict,
)
from tests.strategies import events, wire_mutations

KINDS = ("register", "expire", "reject", "deactivate")

KNOWN_REASONS = frozenset(
    {
        "empty",
        "trailing_bytes",
        "not_msgpack",
        "not_json",
        "not_a_map",
        "missing_field",
        "unknown_version",
        "mistyped_field",
        "invalid_value",
        "out_of_range",
    }
)

COMMON: dict[str, Any] = {
    "v": 1,
    "id": "fe1:1700000000000001",
    "node": "fe1",
    "seq": 1700000000000001,
    "ts": 1700000000000,
    "aor": "sip:1001@pbx.example.com",
    "call_id": "a84b4c76e66710@pc33.example.com",
    "cseq": 314159,
    "source": {"ip": "192.0.2.10", "port": 5060, "transport": "udp"},
    "user_agent": "Yealink SIP-T46S",
    "path": ["<sip:edge1.example.com;lr>"],
    "raw": "REGISTER sip:pbx.example.com SIP/2.0\r\nCSeq: 314159 REGISTER\r\n",
}

WIRE: dict[str, dict[str, Any]] = {
    "register": {
        **COMMON,
        "kind": "register",
        "contacts": [
            {
                "uri": "sip:1001@192.0.2.10:5060",
                "expires": 3600,
                "q": 0.5,
                "instance": '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"',
                "reg_id": 1,
            },
            {"uri": "sip:1001@198.51.100.7", "expires": 60},
        ],
        "wildcard": False,
        "expires": 3600,
    },
    "expire": {
        **COMMON,
        "kind": "expire",
        "node": "engine:w1",
        "id": "engine:w1:1700000000000001",
        "contact": "sip:1001@192.0.2.10:5060",
    },
    "reject": {**COMMON, "kind": "reject", "status": 401, "reason": "auth_failed"},
    "deactivate": {
        **COMMON,
        "kind": "deactivate",
        "contact": "sip:1001@192.0.2.10:5060",
        "reason": "flow_lost",
    },
}

SOURCE = Source("192.0.2.10", 5060, "udp")
EXPECTED_COMMON: dict[str, Any] = {
    "id": "fe1:1700000000000001",
    "node": "fe1",
    "seq": 1700000000000001,
    "ts": 1700000000000,
    "aor": "sip:1001@pbx.example.com",
    "call_id": "a84b4c76e66710@pc33.example.com",
    "cseq": 314159,
    "source": SOURCE,
    "user_agent": "Yealink SIP-T46S",
    "path": ("<sip:edge1.example.com;lr>",),
    "raw": "REGISTER sip:pbx.example.com SIP/2.0\r\nCSeq: 314159 REGISTER\r\n",
}
EXPECTED: dict[str, RegistrationEvent] = {
    "register": RegistrationEvent(
        kind="register",
        **EXPECTED_COMMON,
        contacts=(
            ContactEntry(
                "sip:1001@192.0.2.10:5060",
                3600,
                0.5,
                '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"',
                1,
            ),
            ContactEntry("sip:1001@198.51.100.7", 60, None, None, None),
        ),
        wildcard=False,
        expires=3600,
    ),
    "expire": RegistrationEvent(
        kind="expire",
        **{**EXPECTED_COMMON, "node": "engine:w1", "id": "engine:w1:1700000000000001"},
        contact="sip:1001@192.0.2.10:5060",
    ),
    "reject": RegistrationEvent(kind="reject", **EXPECTED_COMMON, status=401, reason="auth_failed"),
    "deactivate": RegistrationEvent(
        kind="deactivate",
        **EXPECTED_COMMON,
        contact="sip:1001@192.0.2.10:5060",
        reason="flow_lost",
    ),
}


def wire(kind: str, /, **changes: Any) -> dict[str, Any]:
    """A deep copy of the valid wire map of ``kind`` with top-level ``changes``."""
    m = copy.deepcopy(WIRE[kind])
    m.update(changes)
    return m


def without(kind: str, field: str) -> dict[str, Any]:
    m = wire(kind)
    del m[field]
    return m


def packb(m: object) -> bytes:
    data: bytes = msgpack.packb(m, use_bin_type=True)
    return data


def decode_both(m: object) -> tuple[RegistrationEvent | Rejection, RegistrationEvent | Rejection]:
    """Decode a wire map through msgpack and through JSON Lines."""
    return decode_event(packb(m)), decode_event_json(orjson.dumps(m))


def assert_rejected(m: object, reason: str) -> None:
    for result in decode_both(m):
        assert isinstance(result, Rejection), result
        assert result.reason == reason, result
        assert result.detail


def same_result(a: RegistrationEvent | Rejection, b: RegistrationEvent | Rejection) -> bool:
    """Same event, or both a Rejection (the reason may differ: the fast path names none)."""
    if isinstance(a, Rejection) or isinstance(b, Rejection):
        return isinstance(a, Rejection) and isinstance(b, Rejection)
    return a == b


# --- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_decode_valid_record_of_every_kind(kind: str) -> None:
    msgpack_result, json_result = decode_both(WIRE[kind])
    assert msgpack_result == EXPECTED[kind]
    assert json_result == EXPECTED[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_msgpack_round_trip_of_every_kind(kind: str) -> None:
    event = EXPECTED[kind]
    data = encode_event(event)
    assert isinstance(data, bytes)
    assert decode_event(data) == event
    # The wire map carries only the fields of its kind.
    m = msgpack.unpackb(data)
    assert m["v"] == 1
    assert m["kind"] == kind
    assert ("contacts" in m) == (kind == "register")
    assert ("status" in m) == (kind == "reject")
    assert ("contact" in m) == (kind in ("expire", "deactivate"))


@pytest.mark.parametrize("kind", KINDS)
def test_json_round_trip_of_every_kind(kind: str) -> None:
    event = EXPECTED[kind]
    line = encode_event_json(event)
    assert b"\n" not in line
    assert decode_event_json(line) == event
    assert decode_event_json(line.decode()) == event


@given(events())
@settings(max_examples=300)
def test_any_valid_event_round_trips(event: RegistrationEvent) -> None:
    assert decode_event(encode_event(event)) == event
    assert decode_event_json(encode_event_json(event)) == event


# --- never raise ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_truncated_prefix_is_rejected_as_not_msgpack(kind: str) -> None:
    data = encode_event(EXPECTED[kind])
    for n in range(len(data)):
        result = decode_event(data[:n])
        assert isinstance(result, Rejection), n
        assert result.reason == "not_msgpack", (n, result)


def test_null_record_value_is_rejected_as_empty() -> None:
    result = decode_event(None)
    assert isinstance(result, Rejection)
    assert result.reason == "empty"


def test_bytes_after_the_map_are_rejected() -> None:
    result = decode_event(packb(WIRE["register"]) + b"\xc0")
    assert isinstance(result, Rejection)
    assert result.reason == "trailing_bytes"


@pytest.mark.parametrize("line", [b"", b"{", b"not json", b'{"v": 1,}', b"\xff\xfe"])
def test_broken_json_is_rejected_as_not_json(line: bytes) -> None:
    result = decode_event_json(line)
    assert isinstance(result, Rejection)
    assert result.reason == "not_json"


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_never_raise(data: bytes) -> None:
    result = decode_event(data)
    assert isinstance(result, RegistrationEvent | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in KNOWN_REASONS


@given(st.sampled_from(KINDS), st.data())
@settings(max_examples=300)
def test_corrupted_valid_records_never_raise(kind: str, data: st.DataObject) -> None:
    record = bytearray(packb(WIRE[kind]))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        i = data.draw(st.integers(min_value=0, max_value=len(record) - 1))
        record[i] = data.draw(st.integers(min_value=0, max_value=255))
    result = decode_event(bytes(record))
    assert isinstance(result, RegistrationEvent | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in KNOWN_REASONS


@given(st.text(max_size=200) | st.binary(max_size=200))
@settings(max_examples=300)
def test_random_json_lines_never_raise(line: str | bytes) -> None:
    result = decode_event_json(line)
    assert isinstance(result, RegistrationEvent | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in KNOWN_REASONS


@pytest.mark.parametrize(
    "value", [[1, 2], ["v", 1], "register", 5, 1.5, None, True, b"\x81\xa1v\x01"]
)
def test_a_record_that_is_not_a_map_is_rejected(value: object) -> None:
    result = decode_event(packb(value))
    assert isinstance(result, Rejection)
    assert result.reason == "not_a_map"
    if not isinstance(value, bytes):
        json_result = decode_event_json(orjson.dumps(value))
        assert isinstance(json_result, Rejection)
        assert json_result.reason == "not_a_map"


@pytest.mark.parametrize(
    "data",
    [
        b"\x91" * 100_000 + b"\xc0",  # arrays nested 100 000 deep
        b"\xdd\xff\xff\xff\xff",  # an array claiming 2**32 - 1 items
        b"\xdf\xff\xff\xff\xff",  # a map claiming 2**32 - 1 entries
        b"\xc1",  # the one byte msgpack never uses
    ],
    ids=["deep", "huge-array", "huge-map", "never-used"],
)
def test_pathological_msgpack_is_rejected_as_not_msgpack(data: bytes) -> None:
    result = decode_event(data)
    assert isinstance(result, Rejection)
    assert result.reason == "not_msgpack"


def test_deeply_nested_json_is_rejected() -> None:
    result = decode_event_json(b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(result, Rejection)
    assert result.reason == "not_json"


def test_map_with_non_string_keys_is_rejected_as_not_msgpack() -> None:
    result = decode_event(packb({1: "register"}))
    assert isinstance(result, Rejection)
    assert result.reason == "not_msgpack"


# --- schema version ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("v", [0, 2, "1", None, -1, [1]])
def test_unknown_schema_version_is_rejected(kind: str, v: object) -> None:
    assert_rejected(wire(kind, v=v), "unknown_version")


@pytest.mark.parametrize("kind", KINDS)
def test_missing_schema_version_is_rejected(kind: str) -> None:
    assert_rejected(without(kind, "v"), "missing_field")


@pytest.mark.parametrize("v", [True, 1.0])
def test_version_of_the_wrong_type_is_rejected(v: object) -> None:
    assert_rejected(wire("register", v=v), "unknown_version")


def test_version_of_the_wrong_type_is_rejected_by_the_detailed_validator() -> None:
    for v in (True, 1.0):
        result = _checked_event(wire("register", v=v))
        assert isinstance(result, Rejection)
        assert result.reason == "unknown_version"


# --- missing fields ------------------------------------------------------------------

REQUIRED_COMMON = ("kind", "id", "node", "seq", "ts", "aor", "call_id", "cseq")
REQUIRED_BY_KIND = {
    "register": ("contacts",),
    "expire": ("contact",),
    "deactivate": ("contact",),
    "reject": ("status", "reason"),
}
REQUIRED = [(kind, f) for kind in KINDS for f in REQUIRED_COMMON + REQUIRED_BY_KIND[kind]]


@pytest.mark.parametrize(("kind", "field"), REQUIRED)
def test_missing_required_field_is_rejected(kind: str, field: str) -> None:
    assert_rejected(without(kind, field), "missing_field")


@pytest.mark.parametrize(("kind", "field"), REQUIRED)
def test_null_required_field_is_rejected(kind: str, field: str) -> None:
    assert_rejected(wire(kind, **{field: None}), "missing_field")


@pytest.mark.parametrize("field", ["uri", "expires"])
def test_contact_entry_without_required_field_is_rejected(field: str) -> None:
    m = wire("register", expires=None)  # no Expires header to fall back on (D8)
    del m["contacts"][1][field]
    assert_rejected(m, "missing_field")


@pytest.mark.parametrize("field", ["ip", "port", "transport"])
def test_source_without_required_field_is_rejected(field: str) -> None:
    m = wire("register")
    del m["source"][field]
    assert_rejected(m, "missing_field")


@pytest.mark.parametrize("kind", ["register", "reject"])
def test_optional_fields_may_be_absent(kind: str) -> None:
    m = wire(kind)
    for optional in ("source", "user_agent", "path", "raw"):
        del m[optional]
    if kind == "register":
        del m["wildcard"], m["expires"]
        for c in m["contacts"]:
            for optional_in_contact in ("q", "instance", "reg_id"):
                c.pop(optional_in_contact, None)
    for result in decode_both(m):
        assert isinstance(result, RegistrationEvent), result
        assert result.source is None
        assert result.user_agent is None
        assert result.path == ()
        assert result.raw is None
        if kind == "register":
            assert result.wildcard is False
            assert result.expires is None
            assert result.contacts[0] == ContactEntry("sip:1001@192.0.2.10:5060", 3600)


# --- mistyped and invalid fields -------------------------------------------------


def _set(m: dict[str, Any], path: tuple[Any, ...], value: object) -> dict[str, Any]:
    target: Any = m
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return m


MISTYPED: list[tuple[str, tuple[Any, ...], object]] = [
    # bool where an int is expected
    ("register", ("seq",), True),
    ("register", ("ts",), False),
    ("register", ("cseq",), True),
    ("register", ("expires",), True),
    ("register", ("contacts", 0, "expires"), True),
    ("register", ("contacts", 0, "reg_id"), False),
    ("register", ("source", "port"), True),
    ("reject", ("status",), True),
    ("expire", ("cseq",), True),
    # int where a str is expected
    ("register", ("kind",), 1),
    ("register", ("id",), 1),
    ("register", ("node",), 1),
    ("register", ("aor",), 1),
    ("register", ("call_id",), 1),
    ("register", ("user_agent",), 1),
    ("register", ("raw",), 1),
    ("register", ("contacts", 0, "uri"), 1),
    ("register", ("contacts", 0, "instance"), 1),
    ("register", ("source", "ip"), 1),
    ("register", ("source", "transport"), 1),
    ("reject", ("reason",), 1),
    ("expire", ("contact",), 1),
    ("deactivate", ("reason",), 1),
    # other shapes
    ("register", ("seq",), "1700000000000001"),
    ("register", ("ts",), 1.5),
    ("register", ("contacts", 0, "q"), "0.5"),
    ("register", ("contacts", 0, "q"), True),
    ("register", ("wildcard",), "yes"),
    ("register", ("wildcard",), 1),
    ("register", ("path",), "<sip:edge1.example.com;lr>"),
    ("register", ("path",), [1]),
    ("register", ("source",), "192.0.2.10:5060"),
    ("register", ("source",), [1]),
    # contacts not a list
    ("register", ("contacts",), {"uri": "sip:1001@192.0.2.10", "expires": 60}),
    ("register", ("contacts",), "sip:1001@192.0.2.10"),
    ("register", ("contacts",), 5),
    # contact entry not a map
    ("register", ("contacts", 0), ["sip:1001@192.0.2.10", 60]),
    ("register", ("contacts", 0), "sip:1001@192.0.2.10"),
    ("register", ("contacts", 1), 5),
]


@pytest.mark.parametrize(("kind", "path", "value"), MISTYPED)
def test_mistyped_field_is_rejected(kind: str, path: tuple[Any, ...], value: object) -> None:
    assert_rejected(_set(wire(kind), path, value), "mistyped_field")


@pytest.mark.parametrize("value", [{}, ""])
def test_empty_contacts_that_is_not_a_list_is_rejected(value: object) -> None:
    assert_rejected(wire("register", contacts=value), "mistyped_field")


@pytest.mark.parametrize("index", [0, 1])
def test_negative_granted_expiry_is_rejected(index: int) -> None:
    assert_rejected(_set(wire("register"), ("contacts", index, "expires"), -1), "invalid_value")


def test_negative_expires_header_is_rejected() -> None:
    assert_rejected(wire("register", expires=-1), "invalid_value")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("event_id", ["fe1:1", "fe2:1700000000000001", "1700000000000001", ""])
def test_id_other_than_node_colon_seq_is_rejected(kind: str, event_id: str) -> None:
    assert_rejected(wire(kind, id=event_id), "invalid_value")


@pytest.mark.parametrize("kind_value", ["refresh", "REGISTER", ""])
def test_unknown_kind_is_rejected(kind_value: str) -> None:
    assert_rejected(wire("register", kind=kind_value), "invalid_value")


def test_aor_that_is_no_uri_is_rejected() -> None:
    assert_rejected(wire("register", aor="1001"), "invalid_value")


def test_rejection_names_the_field() -> None:
    result = decode_event(packb(_set(wire("register"), ("contacts", 1, "expires"), "60")))
    assert isinstance(result, Rejection)
    assert "contacts[1].expires" in result.detail
    assert str(result).startswith("mistyped_field: ")


# --- leniency -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_extra_fields_are_accepted(kind: str) -> None:
    m = wire(kind, x_trace="abc", x_nested={"a": [1, 2]}, future_flag=True)
    m["source"]["x_nat"] = "full-cone"
    if kind == "register":
        m["contacts"][0]["x_pub_gruu"] = "sip:gruu@example.com"
    for result in decode_both(m):
        assert result == EXPECTED[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_raw_longer_than_8_kib_is_cut_to_8_kib(kind: str) -> None:
    long_raw = "REGISTER sip:pbx.example.com SIP/2.0\r\n" + "X-Pad: " + "a" * 20_000
    for result in decode_both(wire(kind, raw=long_raw)):
        assert isinstance(result, RegistrationEvent), result
        assert result.raw == long_raw[:MAX_RAW_BYTES]
        assert len(result.raw) == 8192


def test_raw_of_exactly_8_kib_is_kept() -> None:
    raw = "r" * 8192
    for result in decode_both(wire("register", raw=raw)):
        assert isinstance(result, RegistrationEvent)
        assert result.raw == raw


def test_non_ascii_raw_is_cut_to_8_kib_of_utf8() -> None:
    raw = 'From: "Jos\u00e9 M\u00fcller" <sip:1001@pbx.example.com>\r\n' + "\u00e9" * 6000
    for result in decode_both(wire("register", raw=raw)):
        assert isinstance(result, RegistrationEvent)
        assert result.raw is not None
        assert len(result.raw.encode("utf-8")) <= 8192
        assert raw.startswith(result.raw)


@pytest.mark.parametrize("q", [1, 0])
def test_q_given_as_int_is_accepted_as_float(q: int) -> None:
    m = _set(wire("register"), ("contacts", 0, "q"), q)
    for result in decode_both(m):
        assert isinstance(result, RegistrationEvent), result
        assert result.contacts[0].q == float(q)
        assert type(result.contacts[0].q) is float


# --- fast path vs detailed validator -----------------------------------------------


@given(wire_mutations())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_fast_path_and_detailed_validator_agree(m: dict[str, Any]) -> None:
    fast = event_from_mapping(copy.deepcopy(m))
    detailed = _checked_event(copy.deepcopy(m))
    assert same_result(fast, detailed), (fast, detailed)
    if isinstance(detailed, Rejection):
        assert detailed.reason in KNOWN_REASONS


@given(events())
@settings(max_examples=200)
def test_fast_path_and_detailed_validator_agree_on_valid_maps(event: RegistrationEvent) -> None:
    m = orjson.loads(encode_event_json(event))
    assert event_from_mapping(m) == event
    assert _checked_event(m) == event


@pytest.mark.parametrize(
    "m",
    [
        wire("register", v=True),
        wire("register", v=1.0),
        wire("register", contacts={}),
        wire("register", contacts=""),
    ],
    ids=["v-true", "v-1.0", "contacts-empty-map", "contacts-empty-string"],
)
def test_fast_path_and_detailed_validator_agree_on_known_cases(m: dict[str, Any]) -> None:
    assert same_result(event_from_mapping(copy.deepcopy(m)), _checked_event(m))


# --- AorState and BindingEvent ---------------------------------------------------------

STATE = AorState(
    aor="sip:1001@pbx.example.com",
    version=7,
    updated_ts=1_700_000_060_000,
    contacts=(
        Binding(
            key="sip:1001@192.0.2.10:5060",
            uri="<sip:1001@192.0.2.10:5060>",
            expires_at=1_700_003_600_000,
            registered_at=1_700_000_000_000,
            refreshed_at=1_700_000_060_000,
            call_id="c1",
            cseq=3,
            q=0.5,
            instance=None,
            reg_id=None,
            source=SOURCE,
            user_agent="Yealink SIP-T46S",
            node="fe1",
            path=("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>"),
        ),
        Binding(
            key="urn:uuid:00000000-0000-1000-8000-000a95a0e128;reg-id=1",
            uri="sip:1001@198.51.100.7:6000;ob",
            expires_at=1_700_000_120_000,
            registered_at=1_700_000_000_000,
            refreshed_at=1_700_000_000_000,
            call_id="c2",
            cseq=1,
            q=None,
            instance='"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"',
            reg_id=1,
            source=None,
            user_agent=None,
            node="fe2",
            path=(),
        ),
    ),
    health=Health(
        state="auth_failing",
        since=1_700_000_030_000,
        auth_failures=3,
        last_reject=Reject(1_700_000_030_000, 401, "auth_failed", "fe1", SOURCE),
        retransmissions=1,
        short_cycles=2,
        last_expired_at=1_699_999_000_000,
    ),
    seen={"fe1": 17, "fe2": 4, "engine:w1": 1_700_000_000_000_001},
)


def test_state_round_trips_with_seen_when_internal() -> None:
    data = encode_state(STATE, internal=True)
    assert orjson.loads(data)["seen"] == {"fe1": 17, "fe2": 4, "engine:w1": 1_700_000_000_000_001}
    decoded = decode_state(data)
    assert decoded == STATE
    assert dict(decoded.seen) == dict(STATE.seen)


def test_public_state_omits_seen() -> None:
    data = encode_state(STATE)
    m = orjson.loads(data)
    assert "seen" not in m
    assert set(m) == {"aor", "version", "updated_ts", "contacts", "health"}
    assert set(m["contacts"][0]) == {
        "key", "uri", "expires_at", "registered_at", "refreshed_at", "call_id", "cseq",
        "q", "instance", "reg_id", "source", "user_agent", "node", "path",
    }  # fmt: skip
    assert {"state", "since", "auth_failures", "last_reject"} <= set(m["health"])
    decoded = decode_state(data)
    assert dict(decoded.seen) == {}
    assert decoded._replace(seen=STATE.seen) == STATE


def test_empty_state_round_trips() -> None:
    empty = AorState("sip:1002@pbx.example.com")
    assert decode_state(encode_state(empty, internal=True)) == empty
    assert decode_state(encode_state(empty)) == empty


bindings = st.builds(
    Binding,
    key=st.text(max_size=10),
    uri=st.text(max_size=10),
    expires_at=st.integers(min_value=0, max_value=2**53),
    registered_at=st.integers(min_value=0, max_value=2**53),
    refreshed_at=st.integers(min_value=0, max_value=2**53),
    call_id=st.text(max_size=10),
    cseq=st.integers(min_value=0, max_value=2**31),
    q=st.none() | st.floats(min_value=0, max_value=1),
    instance=st.none() | st.text(max_size=10),
    reg_id=st.none() | st.integers(min_value=0, max_value=2**31),
    source=st.none() | st.builds(Source, st.text(max_size=5), st.integers(0, 65535), st.text()),
    user_agent=st.none() | st.text(max_size=10),
    node=st.text(max_size=5),
    path=st.lists(st.text(max_size=5), max_size=2).map(tuple),
)
health = st.builds(
    Health,
    state=st.sampled_from(
        ["registered", "unregistered", "auth_failing", "unreachable", "flapping"]
    ),
    since=st.integers(min_value=0, max_value=2**53),
    auth_failures=st.integers(min_value=0, max_value=100),
    last_reject=st.none()
    | st.builds(
        Reject, st.integers(0, 2**53), st.integers(100, 699), st.text(), st.text(), st.none()
    ),
    retransmissions=st.integers(min_value=0, max_value=100),
    short_cycles=st.integers(min_value=0, max_value=100),
    last_expired_at=st.none() | st.integers(min_value=0, max_value=2**53),
    # Issue 6 evidence fields: bounded like the others (JSON integers are 64-bit).
    request_retransmissions=st.integers(min_value=0, max_value=100),
    retransmitted_request=st.none() | st.text(max_size=12),
    reply_lost=st.booleans(),
    last_grant_s=st.none() | st.integers(min_value=0, max_value=2**31),
)


@given(
    st.builds(
        AorState,
        aor=st.text(max_size=20),
        version=st.integers(min_value=0, max_value=2**53),
        updated_ts=st.integers(min_value=0, max_value=2**53),
        contacts=st.lists(bindings, max_size=3).map(tuple),
        health=health,
        seen=st.dictionaries(st.text(max_size=8), st.integers(0, 2**63 - 1), max_size=3),
    )
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_any_state_round_trips(state: AorState) -> None:
    assert decode_state(encode_state(state, internal=True)) == state
    assert decode_state(encode_state(state)) == state._replace(seen={})
    # The worker's one-pass encoding writes exactly the same two values.
    assert encode_state_forms(state) == (encode_state(state, internal=True), encode_state(state))


BINDING_EVENT = BindingEvent(
    aor="sip:1001@pbx.example.com",
    version=8,
    event="refreshed",
    key="sip:1001@192.0.2.10:5060",
    uri="<sip:1001@192.0.2.10:5060>",
    ts=1_700_000_060_000,
    node="fe1",
    call_id="c1",
    cseq=4,
    expires_at=1_700_003_660_000,
    cause="fe1:18",
)


@pytest.mark.parametrize(
    "event",
    [
        BINDING_EVENT,
        BINDING_EVENT._replace(event="rejected", key=None, uri=None, expires_at=None),
    ],
    ids=["refreshed", "rejected"],
)
def test_binding_event_round_trips(event: BindingEvent) -> None:
    data = encode_binding_event(event)
    m = orjson.loads(data)
    assert set(m) == {
        "aor", "version", "event", "key", "uri", "ts", "node", "call_id", "cseq",
        "expires_at", "cause",
    }  # fmt: skip
    assert m["event"] == event.event
    assert m["cause"] == "fe1:18"
    assert binding_event_from_dict(m) == event


def test_contact_without_expires_takes_the_expires_header() -> None:
    """D8: "contact parameter, else Expires header", as in a REGISTER."""
    m = wire("register", expires=120)
    for c in m["contacts"]:
        del c["expires"]
    result = event_from_mapping(m)
    assert isinstance(result, RegistrationEvent), result
    assert [c.expires for c in result.contacts] == [120] * len(m["contacts"])


def test_contact_without_expires_and_no_header_is_refused() -> None:
    m = wire("register", expires=None)
    del m["contacts"][0]["expires"]
    assert_rejected(m, "missing_field")


@pytest.mark.parametrize(
    ("node", "front_end"),
    [("fe1", "fe1"), ("fe1#0", "fe1"), ("fe1#12", "fe1"), ("engine:w1", "engine:w1")],
)
def test_front_end_of_names_the_machine_of_a_process(node: str, front_end: str) -> None:
    from schemas.events import front_end_of

    assert front_end_of(node) == front_end


@pytest.mark.parametrize("kind", ["expire", "deactivate"])
def test_an_ending_event_carries_the_one_id_format_and_round_trips(kind: str) -> None:
    ev = ending_event(
        kind,  # type: ignore[arg-type]
        node="engine:w1",
        seq=17,
        ts=1_700_000_000_000,
        aor="sip:1001@example.com",
        call_id="c1",
        cseq=4,
        contact="sip:1001@10.0.0.7:5060",
        reason="expired",
    )
    assert ev.id == event_id("engine:w1", 17) == "engine:w1:17"
    assert decode_event(encode_event(ev)) == ev
    assert isinstance(
        decode_event(encode_event(ev._replace(id=event_id("engine:w1", 18)))), Rejection
    )


# --- ranges (D80): a record that decodes can be folded, encoded and stored -------------

OUT_OF_RANGE: list[tuple[str, dict[str, Any]]] = [
    ("ts", {"ts": 2**64 - 1}),
    ("ts", {"ts": -1}),
    ("ts", {"ts": MAX_TS_MS + 1}),
    ("seq", {"seq": 2**63, "id": f"fe1:{2**63}"}),
    ("seq", {"seq": -5, "id": "fe1:-5"}),
    ("cseq", {"cseq": 2**32}),
    ("cseq", {"cseq": -1}),
    ("aor", {"aor": "sip:" + "a" * 2000 + "@example.com"}),
    ("call_id", {"call_id": "c" * 5000}),
    ("node", {"node": "n" * 300, "id": "n" * 300 + ":42"}),
    ("user_agent", {"user_agent": "u" * 9000}),
    ("path", {"path": ["<sip:p@example.com>"] * 33}),
    ("source", {"source": {"ip": "192.0.2.1", "port": 2**63, "transport": "udp"}}),
    ("source", {"source": {"ip": "192.0.2.1", "port": 65536, "transport": "udp"}}),
]


@pytest.mark.parametrize(("field", "changes"), OUT_OF_RANGE)
@pytest.mark.parametrize("kind", KINDS)
def test_numbers_and_lengths_out_of_range_are_refused(
    kind: str, field: str, changes: dict[str, Any]
) -> None:
    m = wire(kind, **changes)
    for result in decode_both(m):
        assert isinstance(result, Rejection), result
        assert result.reason in {"out_of_range", "mistyped_field"}, result
    # The detailed validator names the field.
    checked = _checked_event(m)
    assert isinstance(checked, Rejection)
    assert checked.reason == "out_of_range"
    assert field in checked.detail


CONTACT_OUT_OF_RANGE: list[dict[str, Any]] = [
    {"expires": 2**64 - 1},
    {"expires": 2**32},
    {"reg_id": 2**31},
    {"reg_id": -1},
    {"q": 1.5},
    {"uri": "sip:" + "x" * 9000},
    {"instance": "i" * 9000},
]


@pytest.mark.parametrize("changes", CONTACT_OUT_OF_RANGE)
def test_contact_fields_out_of_range_are_refused(changes: dict[str, Any]) -> None:
    m = wire("register")
    m["contacts"][0].update(changes)
    assert_rejected(m, "out_of_range")


def test_too_many_contacts_or_a_huge_header_expires_are_refused() -> None:
    m = wire("register")
    m["contacts"] = [
        dict(m["contacts"][0], uri=f"sip:{i}@x") for i in range(MAX_EVENT_CONTACTS + 1)
    ]
    assert_rejected(m, "out_of_range")
    assert_rejected(wire("register", expires=2**32), "out_of_range")
    assert_rejected(wire("reject", status=2**40), "out_of_range")


@pytest.mark.parametrize("status", [1, 99, 700])
def test_a_reject_status_outside_sip_is_refused(status: int) -> None:
    assert_rejected(wire("reject", status=status), "out_of_range")


def test_a_reject_with_no_final_response_seen_decodes() -> None:
    """Status 0: a HEP capture saw the REGISTER retransmitted but never answered (D54)."""
    for result in decode_both(wire("reject", status=0, reason="retransmission")):
        assert isinstance(result, RegistrationEvent) and result.status == 0


def test_seq_at_its_bound_decodes_and_one_past_is_refused() -> None:
    """A seq may run ahead of ts in µs by at most 2**32 (D80): the forged 2**63 cannot pin."""
    ts = 1_700_000_000_000
    top = ts * 1000 + MAX_SEQ_AHEAD_US
    ok = decode_event(packb(wire("register", ts=ts, seq=top, id=f"fe1:{top}")))
    assert isinstance(ok, RegistrationEvent)
    assert_rejected(wire("register", ts=ts, seq=top + 1, id=f"fe1:{top + 1}"), "out_of_range")


@given(events())
@settings(max_examples=200, deadline=None)
def test_every_decoded_event_encodes_folds_and_stores(event: RegistrationEvent) -> None:
    """Whatever decodes folds and encodes without raising (the worker's encode_state)."""
    from processors.fold import fold_event
    from schemas import encode_state

    decoded = decode_event(encode_event(event))
    assert isinstance(decoded, RegistrationEvent)
    folded = fold_event(None, decoded)
    encode_state(folded.state, internal=True)
