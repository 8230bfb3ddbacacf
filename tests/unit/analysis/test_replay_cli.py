"""``regstate replay`` (issue item 5): fold a JSON Lines log, print the AORs active at MS."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli import main
from tests.helpers import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "samples" / "sample.jsonl"
SAMPLE_T0 = 1_767_254_400_000
"""ts of the sample's first event (2026-01-01T08:00:00Z); its last is T0 + 3405 s."""
SAMPLE_MAX_TS = SAMPLE_T0 + 3_405_000
DOMAIN = "pbx.example.com"


def aor(user: int | str) -> str:
    return f"sip:{user}@{DOMAIN}"


def run_replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    """``main(["replay", *args])``: (exit code, parsed stdout, stderr)."""
    code = main(["replay", *args])
    out, err = capsys.readouterr()
    return code, orjson.loads(out), err


def event(
    kind: str,
    node: str,
    seq: int,
    ts: int,
    aor_text: str,
    *,
    call_id: str = "call-1",
    cseq: int = 1,
    **fields: Any,
) -> dict[str, Any]:
    """One wire map (the .jsonl form) with ``id = node:seq``."""
    return {
        "v": 1,
        "kind": kind,
        "id": f"{node}:{seq}",
        "node": node,
        "seq": seq,
        "ts": ts,
        "aor": aor_text,
        "call_id": call_id,
        "cseq": cseq,
        **fields,
    }


def register(node: str, seq: int, ts: int, aor_text: str, uri: str, expires: int, **kw: Any) -> Any:
    return event(
        "register",
        node,
        seq,
        ts,
        aor_text,
        contacts=[{"uri": uri, "expires": expires}],
        expires=expires,
        **kw,
    )


def write_jsonl(path: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    """Write maps as JSON lines; a str is written as is (for bad or blank lines)."""
    with path.open("wb") as f:
        for line in lines:
            f.write((line.encode() if isinstance(line, str) else orjson.dumps(line)) + b"\n")
    return path


# A small hand-written log: A registers and unregisters, B stays, C registers last
# with a 10 s expiry.
A, B, C = aor("a"), aor("b"), aor("c")
SMALL = [
    register("fe1", 1, 1_000, A, "sip:a@192.0.2.1", 60, call_id="ca"),
    register("fe2", 1, 2_000, B, "sip:b@192.0.2.2", 3600, call_id="cb"),
    register("fe1", 2, 30_000, A, "sip:a@192.0.2.1", 0, call_id="ca", cseq=2),
    register("fe1", 3, 100_000, C, "sip:c@192.0.2.3", 10, call_id="cc"),
]


def test_sample_at_largest_ts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_replay(capsys, "--input", str(SAMPLE))
    assert (code, err) == (0, "")
    assert list(out) == [aor(u) for u in (1001, 1002, 1003, 1004, 1006, 1010)]
    for key, state in out.items():
        assert state["aor"] == key
        assert "seen" not in state  # dedup marks are internal
        assert len(state["contacts"]) == 1
        assert all(c["expires_at"] > SAMPLE_MAX_TS for c in state["contacts"])
    # 1003 rebooted: the binding now carries the new Call-ID.
    assert out[aor(1003)]["contacts"][0]["call_id"] == "c2-71b0@198.51.100.13"
    # 1004: the stale CSeq changed nothing; the last refresh (cseq 3, fe2) holds.
    c1004 = out[aor(1004)]["contacts"][0]
    assert (c1004["cseq"], c1004["node"], c1004["refreshed_at"]) == (
        3,
        "fe2",
        SAMPLE_T0 + 3_402_000,
    )
    # 1006: an RFC 5626 flow, keyed by instance and reg-id.
    assert out[aor(1006)]["contacts"][0]["key"] == (
        "urn:uuid:6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d;reg-id=1"
    )
    # 1002 was published twice once (same id): one refresh counted, not two.
    assert out[aor(1002)]["version"] == 3
    # 1010's first line names it with a display name, other case and parameters.
    assert out[aor(1010)]["contacts"][0]["cseq"] == 3
    assert out[aor(1010)]["contacts"][0]["registered_at"] == SAMPLE_T0 + 15_000


def test_sample_at_an_earlier_time(capsys: pytest.CaptureFixture[str]) -> None:
    at = SAMPLE_T0 + 600_000
    code, out, err = run_replay(capsys, "--input", str(SAMPLE), "--at", str(at))
    assert (code, err) == (0, "")
    # 1005 (unregistered at +900 s) and 1009 (Contact: * at +1200 s) still active;
    # 1008's 60 s binding from +360 s has lapsed; 1007 never registered.
    expected = (1001, 1002, 1003, 1004, 1005, 1006, 1009, 1010)
    assert list(out) == [aor(u) for u in expected]
    assert out[aor(1003)]["contacts"][0]["call_id"] == "c1-0d4a@198.51.100.13"
    # Events after --at are not folded: 1006's refresh at +608 s is not there yet.
    assert out[aor(1006)]["contacts"][0]["refreshed_at"] == SAMPLE_T0 + 308_000
    assert all(s["updated_ts"] <= at for s in out.values())


def test_sample_all_includes_aors_without_contacts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_replay(capsys, "--input", str(SAMPLE), "--all")
    assert code == 0
    assert list(out) == [aor(u) for u in range(1001, 1011)]
    assert out[aor(1007)]["contacts"] == []
    assert out[aor(1007)]["health"]["state"] == "auth_failing"
    assert out[aor(1007)]["health"]["last_reject"]["status"] == 401
    assert out[aor(1008)]["contacts"] == []  # lapsed, never expired by an event
    assert out[aor(1008)]["health"]["state"] == "flapping"
    assert out[aor(1005)]["health"]["state"] == "unregistered"
    assert out[aor(1009)]["contacts"] == []


def test_small_file_at_default_and_earlier_times(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "small.jsonl", SMALL)

    code, out, _ = run_replay(capsys, "--input", str(path))
    assert code == 0
    assert list(out) == [B, C]  # MS = 100_000: C's 10 s binding is still active
    assert out[C]["contacts"][0]["expires_at"] == 110_000

    _, out, _ = run_replay(capsys, "--input", str(path), "--at", "20000")
    assert list(out) == [A, B]  # C's event (ts 100_000) is not folded
    assert out[A]["contacts"][0]["uri"] == "sip:a@192.0.2.1"

    _, out, _ = run_replay(capsys, "--input", str(path), "--at", "70000")
    assert list(out) == [B]  # A unregistered at 30_000

    # Readers count only bindings whose expiry is after MS (R6), expire event or not.
    _, out, _ = run_replay(capsys, "--input", str(path), "--at", "200000")
    assert list(out) == [B]


def test_aors_are_canonicalized(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "edited.jsonl",
        [
            register("fe1", 1, 1_000, "sip:x@PBX.Example.COM;transport=tcp", "sip:x@h", 3600),
            register("fe1", 2, 2_000, '"X" <sip:x@pbx.example.com>', "sip:x@h", 3600, cseq=2),
        ],
    )
    code, out, _ = run_replay(capsys, "--input", str(path))
    assert code == 0
    assert list(out) == [aor("x")]
    assert out[aor("x")]["contacts"][0]["cseq"] == 2  # one AOR, refreshed


def test_bad_lines_are_reported_and_skipped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing_call_id = register("fe1", 9, 5_000, aor("d"), "sip:d@h", 3600)
    del missing_call_id["call_id"]
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            SMALL[0],
            '{"v": 1, "kind": "register", oops',
            {**SMALL[1], "v": 2},
            missing_call_id,
            "",
            SMALL[3],
            register("fe1", 4, 101_000, "mailto:someone@example.com", "sip:z@h", 60),
            "   ",
        ],
    )
    code, out, err = run_replay(capsys, "--input", str(path))
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 4, err
    assert lines[0].startswith(f"regstate replay: {path}:2: not_json: ")
    assert lines[1].startswith(f"regstate replay: {path}:3: unknown_version: ")
    assert lines[2] == f"regstate replay: {path}:4: missing_field: call_id is required"
    assert lines[3].startswith(f"regstate replay: {path}:7: invalid_aor: ")
    # The good lines (1 and 6) are still folded; MS is the largest ts among them,
    # when A's 60 s binding has lapsed.
    assert list(out) == [C]
    code, out, _ = run_replay(capsys, "--input", str(path), "--at", "50000")
    assert code == 1
    assert list(out) == [A]


def test_stdin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_jsonl(tmp_path / "small.jsonl", SMALL).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run_replay(capsys, "--input", "-", "--at", "20000")
    assert (code, err) == (0, "")
    assert list(out) == [A, B]


def test_stdin_bad_line_is_named_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n[1, 2]\n")))
    code, out, err = run_replay(capsys, "--input", "-")
    assert (code, out) == (1, {})
    assert err.startswith("regstate replay: <stdin>:2: not_a_map: ")


@pytest.mark.parametrize("content", [b"", b"\n\n   \n"])
def test_empty_file_prints_empty_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    assert main(["replay", "--input", str(path)]) == 0
    assert capsys.readouterr() == ("{}\n", "")


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["replay", "--input", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_compact_and_pretty_hold_the_same_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--input", str(SAMPLE), "--compact"]) == 0
    compact = capsys.readouterr().out
    assert main(["replay", "--input", str(SAMPLE)]) == 0
    pretty = capsys.readouterr().out
    assert compact.count("\n") == 1
    assert pretty.count("\n") > 100
    assert orjson.loads(compact) == orjson.loads(pretty)


def test_subprocess_stdin_and_file_agree() -> None:
    """The installed entry point, run as ``python -m streams``: file and stdin give the same."""
    cmd = [sys.executable, "-m", "streams", "replay", "--compact", "--input"]
    from_file = subprocess.run(
        [*cmd, str(SAMPLE)], capture_output=True, check=False, cwd=PROJECT_ROOT, timeout=60
    )
    from_stdin = subprocess.run(
        [*cmd, "-"],
        input=SAMPLE.read_bytes(),
        capture_output=True,
        check=False,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert from_file.returncode == 0, from_file.stderr
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_file.stdout == from_stdin.stdout
    assert list(orjson.loads(from_file.stdout)) == [
        aor(u) for u in (1001, 1002, 1003, 1004, 1006, 1010)
    ]


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "regstate"
    if not script.exists():
        pytest.skip("the regstate console script is not installed in this environment")
    path = write_jsonl(tmp_path / "bad.jsonl", [SMALL[1], "not json"])
    done = subprocess.run(
        [str(script), "replay", "--input", str(path), "--compact"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert list(orjson.loads(done.stdout)) == [B]
    assert f"{path}:2: not_json" in done.stderr.decode()
