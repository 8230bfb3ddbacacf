"""The shared JSON Lines reader (streams/log/jsonl.py) used by replay and publish."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from schemas import RegistrationEvent
from streams.log.jsonl import count_lines, iter_lines, parse_line, read_events

GOOD = {
    "v": 1,
    "kind": "expire",
    "id": "engine:w1:7",
    "node": "engine:w1",
    "seq": 7,
    "ts": 1_000,
    "aor": "<sips:Agent@Example.COM:5061;transport=tls>",
    "call_id": "c",
    "cseq": 1,
    "contact": "sip:agent@192.0.2.1",
    "future_field": {"ignored": True},
}


def test_good_line_is_decoded_and_its_aor_canonicalized() -> None:
    event = parse_line(orjson.dumps(GOOD))
    assert isinstance(event, RegistrationEvent)
    assert event.aor == "sips:Agent@example.com:5061"  # user part as sent (R1)
    assert event.kind == "expire"


def test_canonical_aor_is_left_untouched() -> None:
    event = parse_line(orjson.dumps({**GOOD, "aor": "sip:a@b"}))
    assert isinstance(event, RegistrationEvent)
    assert event.aor == "sip:a@b"


def test_bad_lines_give_the_reason() -> None:
    assert str(parse_line(b"{")).startswith("not_json: ")
    assert parse_line(orjson.dumps({**GOOD, "v": 9})) == (
        "unknown_version: schema version 9 is not known (this reader: 1)"
    )
    assert str(parse_line(orjson.dumps({**GOOD, "aor": "http://x"}))).startswith("invalid_aor: ")
    assert str(parse_line(b"\xff\xfe")).startswith("not_json: ")


def test_line_numbers_count_blank_lines() -> None:
    data = b"\n" + orjson.dumps(GOOD) + b"\n  \n{oops\n" + orjson.dumps(GOOD)  # no final \n
    got = [(n, isinstance(x, RegistrationEvent)) for n, x in iter_lines(io.BytesIO(data))]
    assert got == [(2, True), (4, False), (5, True)]


def test_read_events_streams_a_file(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({**GOOD, "seq": i, "id": f"n:{i}"}) for i in range(3)))
    items = list(read_events(path))
    assert [n for n, _ in items] == [1, 2, 3]
    assert all(isinstance(x, str) for _, x in items)  # id/node mismatch: n:i vs engine:w1
    assert "invalid_value" in str(items[0][1])


def test_count_lines(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_bytes(b"a\nb\n")
    assert count_lines(path) == 2
    path.write_bytes(b"a\nb")
    assert count_lines(path) == 2
    path.write_bytes(b"")
    assert count_lines(path) == 0
    assert count_lines("-") is None
