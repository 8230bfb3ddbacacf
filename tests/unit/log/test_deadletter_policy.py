"""The dead-letter policy (streams/log/deadletter.py): what is folded, what is refused and why."""

from __future__ import annotations

import msgpack
import pytest

from schemas import RegistrationEvent, encode_event
from streams.log.deadletter import (
    HEADER_ERROR,
    HEADER_ERROR_DETAIL,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_WORKER,
    DeadLetter,
    DeadLetterPolicy,
    headers_dict,
)
from streams.log.routing import kafka_partition
from tests.unit.builders import AOR, Log, contact

TOPIC = "regstate.registrations"
N = 8


def _without(value: bytes, field: str) -> bytes:
    return msgpack.packb({k: v for k, v in msgpack.unpackb(value).items() if k != field})


def _with(value: bytes, **fields: object) -> bytes:
    return msgpack.packb({**msgpack.unpackb(value), **fields})


def _policy() -> DeadLetterPolicy:
    return DeadLetterPolicy(N, kafka_partition)


def _good() -> tuple[bytes, bytes, int]:
    event = Log().register(contact("sip:1001@192.0.2.10:5060"))
    key = AOR.encode()
    return key, encode_event(event), kafka_partition(key, N)


def _admit(key: bytes | None, value: bytes | None, partition: int | None = None) -> object:
    p = kafka_partition(key, N) if partition is None and key is not None else (partition or 0)
    return _policy().admit(TOPIC, p, 42, key, value, [("trace", b"abc")])


def test_a_good_record_is_admitted() -> None:
    key, value, partition = _good()
    admitted = _policy().admit(TOPIC, partition, 7, key, value)
    assert isinstance(admitted, RegistrationEvent) and admitted.aor == AOR


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("not_msgpack", lambda k, v: (k, v[: len(v) // 2])),
        ("not_msgpack", lambda k, v: (k, b"\xc1")),
        ("trailing_bytes", lambda k, v: (k, v + b"\x01")),
        ("unknown_version", lambda k, v: (k, msgpack.packb({**msgpack.unpackb(v), "v": 2}))),
        (
            "missing_field",
            lambda k, v: (
                k,
                msgpack.packb({x: y for x, y in msgpack.unpackb(v).items() if x != "ts"}),
            ),
        ),
        ("not_a_map", lambda k, v: (k, msgpack.packb([1, 2]))),
        ("empty", lambda k, v: (k, None)),
        ("missing_key", lambda k, v: (None, v)),
        ("key_mismatch", lambda k, v: (b"sip:1002@pbx.example.com", v)),
        (
            "non_canonical_aor",
            lambda k, v: (
                b"sip:1001@PBX.example.com",
                msgpack.packb({**msgpack.unpackb(v), "aor": "sip:1001@PBX.example.com"}),
            ),
        ),
        (
            "invalid_aor",
            lambda k, v: (
                b"mailto:x@y",
                msgpack.packb({**msgpack.unpackb(v), "aor": "mailto:x@y"}),
            ),
        ),
    ],
)
def test_bad_records_are_refused_with_their_reason(reason: str, make: object) -> None:
    key, value, _ = _good()
    bad_key, bad_value = make(key, value)  # type: ignore[operator]
    letter = _admit(bad_key, bad_value)
    assert isinstance(letter, DeadLetter), letter
    assert letter.reason == reason, letter.detail
    assert (letter.key, letter.value) == (bad_key, bad_value), "original bytes kept"
    assert letter.detail


def test_a_record_in_the_wrong_partition_is_refused() -> None:
    key, value, partition = _good()
    letter = _policy().admit(TOPIC, (partition + 1) % N, 3, key, value)
    assert isinstance(letter, DeadLetter) and letter.reason == "wrong_partition"


def test_dead_letter_headers_name_source_and_reason_then_keep_the_originals() -> None:
    key, value, partition = _good()
    letter = _policy().admit(TOPIC, partition, 99, key, value[:5], [("trace", b"abc")])
    assert isinstance(letter, DeadLetter)
    headers = letter.headers("w7")
    h = headers_dict(headers)
    assert h[HEADER_SOURCE_TOPIC] == TOPIC.encode()
    assert h[HEADER_SOURCE_PARTITION] == str(partition).encode()
    assert h[HEADER_SOURCE_OFFSET] == b"99"
    assert h[HEADER_ERROR] == b"not_msgpack"
    assert h[HEADER_ERROR_DETAIL]
    assert h[HEADER_WORKER] == b"w7"
    assert headers[-1] == ("trace", b"abc")


def test_detail_header_is_bounded() -> None:
    letter = DeadLetter(TOPIC, 0, 0, b"k", b"v", "fold_error", "x" * 10_000)
    assert len(headers_dict(letter.headers("w"))[HEADER_ERROR_DETAIL]) == 500


def test_fold_failure_becomes_a_dead_letter() -> None:
    key, value, partition = _good()
    letter = _policy().fold_failed(TOPIC, partition, 5, key, value, ValueError("boom"))
    assert letter.reason == "fold_error" and "ValueError: boom" in letter.detail


def test_admit_never_raises_on_arbitrary_bytes() -> None:
    import random

    rng = random.Random(1)
    key, _, _ = _good()
    for _ in range(2000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        result = _admit(key, blob)
        assert isinstance(result, DeadLetter | RegistrationEvent)


def test_a_ts_far_after_its_record_timestamp_is_refused() -> None:
    """D80: ts at most a day after the Kafka record's time, so a forged seq cannot pin R5."""
    from streams.log.deadletter import MAX_TS_AHEAD_OF_RECORD_MS, TS_AHEAD_OF_RECORD

    key, value, partition = _good()
    ts = msgpack.unpackb(value)["ts"]
    near = _policy().admit(TOPIC, partition, 1, key, value, (), ts - MAX_TS_AHEAD_OF_RECORD_MS)
    assert isinstance(near, RegistrationEvent)
    far = _policy().admit(TOPIC, partition, 1, key, value, (), ts - MAX_TS_AHEAD_OF_RECORD_MS - 1)
    assert isinstance(far, DeadLetter) and far.reason == TS_AHEAD_OF_RECORD
    # A file has no record time: no check.
    assert isinstance(_policy().admit(TOPIC, partition, 1, key, value), RegistrationEvent)
