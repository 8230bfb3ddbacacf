"""``regstate replay --input FILE`` with the analyst options of issue 7 (no Kafka needed)."""

from __future__ import annotations

import orjson
import pytest

from processors.explain import iso_ms
from streams.cli import main
from tests.helpers import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "samples" / "sample.jsonl"
T0 = 1_767_254_400_000
"""ts of the sample's first event (2026-01-01T08:00:00Z)."""
AOR_1004 = "sip:1004@pbx.example.com"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["replay", "--input", str(SAMPLE), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_until_in_iso_is_the_same_as_at(capsys: pytest.CaptureFixture[str]) -> None:
    at = T0 + 1_800_000
    code, by_at, _ = run(capsys, "--at", str(at))
    assert code == 0
    code, by_until, _ = run(capsys, "--until", "2026-01-01T09:30:00+01:00")
    assert code == 0
    assert by_until == by_at
    code, _, err = run(capsys, "--at", str(at), "--until", str(at + 1))
    assert code == 2
    assert "--at and --until differ" in err


def test_aor_selects_a_canonicalized_aor(capsys: pytest.CaptureFixture[str]) -> None:
    code, everything, _ = run(capsys, "--all")
    code, one, _ = run(capsys, "--all", "--aor", '"Front desk" <sip:1004@PBX.example.com;x=1>')
    assert code == 0
    assert orjson.loads(one) == {AOR_1004: orjson.loads(everything)[AOR_1004]}
    code, _, err = run(capsys, "--aor", "mailto:someone")
    assert code == 2
    assert "--aor" in err


def test_timeline_of_one_aor(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--timeline", "--aor", AOR_1004)
    assert code == 0, err
    entries = [orjson.loads(line) for line in out.splitlines()]
    assert {e["aor"] for e in entries} == {AOR_1004}
    assert [e["line"] for e in entries] == sorted(e["line"] for e in entries)
    stale = [e for e in entries if e["outcome"] == "stale"]
    assert len(stale) == 1
    assert "CSeq 1 <= stored 2 for Call-ID d1-88e1@10.0.0.14" in stale[0]["why"]
    assert entries[0]["effects"][0]["event"] == "registered"
    assert entries[0]["time"] == iso_ms(entries[0]["ts"])

    since = T0 + 1_800_000
    code, out, _ = run(capsys, "--timeline", "--aor", AOR_1004, "--since", str(since))
    later = [orjson.loads(line) for line in out.splitlines()]
    assert later == [e for e in entries if e["ts"] >= since]


def test_timeline_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--timeline", "--format", "table")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["TIME", "(UTC)", "AT"]
    assert len(lines) == 1 + 44
    assert any("duplicate: fe1 seq" in line for line in lines)
