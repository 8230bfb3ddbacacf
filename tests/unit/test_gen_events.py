"""bench/gen_events.py: deterministic, valid, realistic synthetic logs."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from processors.outcomes import Outcome
from processors.replay import replay
from processors.sipuri import canonical_aor
from schemas import RegistrationEvent, decode_event, decode_event_json, encode_event
from tests.helpers import PROJECT_ROOT

GEN = PROJECT_ROOT / "bench" / "gen_events.py"


Generator = Callable[..., Iterator[RegistrationEvent]]


@pytest.fixture(scope="module")
def generate() -> Generator:
    from bench.gen_events import generate_events

    gen: Generator = generate_events
    return gen


def test_deterministic_and_valid(generate: Generator) -> None:
    events = list(generate(5000, 200, 3, 42))
    assert events == list(generate(5000, 200, 3, 42))
    assert events != list(generate(5000, 200, 3, 43))
    last_ts: dict[str, int] = {}
    last_seq: dict[str, int] = {}
    for e in events:
        assert isinstance(e, RegistrationEvent)
        assert decode_event(encode_event(e)) == e
        assert canonical_aor(e.aor) == e.aor
        # Per node: seq increases (a duplicate repeats the previous event) and ts never decreases.
        assert e.seq >= last_seq.get(e.node, 0)
        assert e.ts >= last_ts.get(e.node, 0)
        last_seq[e.node], last_ts[e.node] = e.seq, e.ts


def test_realistic_mix(generate: Generator) -> None:
    events = list(generate(20_000, 500, 4, 1))
    kinds = Counter(e.kind for e in events)
    assert kinds["register"] > 0.8 * len(events)
    assert kinds["expire"] > 0 and kinds["reject"] > 0
    outcomes = replay(events).outcomes
    for outcome in ("applied", "duplicate", "stale", "rejected"):
        assert outcomes[Outcome(outcome)] > 0, outcomes
    assert {e.node for e in events} >= {"fe1", "fe2", "fe3", "fe4", "engine:w1"}
    assert any(e.wildcard for e in events)
    assert any(c.expires == 0 for e in events for c in e.contacts)


def test_cli_writes_jsonl_and_msgpack(tmp_path: Path) -> None:
    jsonl, packed = tmp_path / "e.jsonl", tmp_path / "e.msgpack"
    done = subprocess.run(
        [
            *(sys.executable, str(GEN), "--events", "300", "--aors", "20", "--seed", "3"),
            *("--output", str(jsonl), "--msgpack", str(packed)),
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    from_json = [decode_event_json(line) for line in jsonl.read_bytes().splitlines()]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(packed.read_bytes())
    from_mp = [decode_event(msgpack.packb(m)) for m in unpacker]
    assert len(from_json) == 300
    assert from_json == from_mp
