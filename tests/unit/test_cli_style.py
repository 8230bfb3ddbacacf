"""One CLI style (issue 16): time flags, --format, help, pipes, no silent fallbacks.

The commands run for real on the sample log (no broker: the file forms), and
the parser is walked so that a flag added later without help, or a time flag
that takes only ms, fails here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from processors.replay import replay
from schemas.codec import decode_event_json
from streams.cli import build_parser, main
from streams.cliutil import time_arg
from streams.dialer.store import SqliteBindingStore, record_from_state
from tests.helpers import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "samples" / "sample.jsonl"
T_MS = "1767256200000"
T_ISO = "2026-01-01T08:30:00Z"  # the same instant
TIME_DESTS = {"at", "since", "until"}


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((name, sub))
                out += [(f"{name} {n}", s) for n, s in _subparsers(sub)]
    return out


def _commands() -> list[tuple[str, argparse.ArgumentParser]]:
    return _subparsers(build_parser())


def test_every_flag_of_every_command_has_help() -> None:
    missing = [
        f"{name} {'/'.join(a.option_strings) or a.dest}"
        for name, sub in _commands()
        for a in sub._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and (a.help is None or not a.help.strip())
    ]
    assert missing == []


def test_every_time_flag_takes_ms_and_iso_8601() -> None:
    """Every --at/--since/--until uses the one parser; both forms give the same ms."""
    found = []
    for name, sub in _commands():
        for a in sub._actions:
            if a.dest in TIME_DESTS and a.option_strings:
                found.append(f"{name} {a.option_strings[0]}")
                assert a.type is time_arg, found[-1]
                assert a.metavar == "TIME", found[-1]
                assert "ISO 8601" in (a.help or ""), found[-1]
    assert {"replay --at", "replay --until", "replay --since", "where --at", "audit --at"} <= set(
        found
    ), found
    assert time_arg(T_MS) == time_arg(T_ISO) == int(T_MS)
    with pytest.raises(argparse.ArgumentTypeError, match="timezone"):
        time_arg("2026-01-01T08:30:00")


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--input", str(SAMPLE), "--at", "{t}"],
        ["replay", "--input", str(SAMPLE), "--until", "{t}"],
        ["replay", "--input", str(SAMPLE), "--timeline", "--since", "{t}"],
        ["replay", "--input", str(SAMPLE), "--timeline", "--until", "{t}", "--format", "table"],
    ],
)
def test_time_flags_run_with_both_forms_and_agree(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    by_ms = _run(capsys, [a.format(t=T_MS) for a in argv])
    by_iso = _run(capsys, [a.format(t=T_ISO) for a in argv])
    assert by_ms[0] == 0 and by_ms[1].strip()
    assert by_ms == by_iso


@pytest.fixture
def where_db(tmp_path: Path) -> Path:
    """A dialer view SQLite store holding the sample's states, as `regstate where` reads it."""
    events = [decode_event_json(line) for line in SAMPLE.read_text().splitlines()]
    states = replay(events).states  # type: ignore[arg-type]
    db = tmp_path / "view.sqlite3"
    store = SqliteBindingStore(str(db))
    store.apply_batch([record_from_state(s, 0) for s in states.values()], {})
    store.close()
    return db


def test_where_time_flag_and_json_format(
    where_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["where", "1001", "--db", str(where_db), "--at"]
    assert _run(capsys, [*argv, T_MS]) == _run(capsys, [*argv, T_ISO])
    code, out = _run(capsys, [*argv, T_ISO, "--format", "json"])
    doc = orjson.loads(out)
    assert code == 0 and doc["now"] == int(T_MS) and doc["aors"][0]["aor"].startswith("sip:1001@")
    # Not registered: the same "why" line as the worker's 404 and ./dev run.
    code, out = _run(capsys, ["where", "1007", "--db", str(where_db), "--at", T_ISO])
    assert code == 1 and "not registered: wrong password, 4 failed attempts since 08:00" in out


def test_where_with_a_missing_db_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.sqlite3"
    code = main(["where", "1001", "--db", str(missing)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert str(missing) in captured.err and "--from-topic" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["problems", "--input", str(SAMPLE)],
        ["replay", "--input", str(SAMPLE), "--timeline"],
    ],
)
def test_every_table_output_has_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, table = _run(capsys, [*argv, "--format", "table"])
    assert code == 0 and table.strip()
    code, out = _run(capsys, [*argv, "--format", "json"])
    doc = orjson.loads(out)
    assert code == 0 and isinstance(doc, list) and doc
    code, out = _run(capsys, [*argv, "--format", "jsonl"])
    assert code == 0 and [orjson.loads(line) for line in out.splitlines()] == doc
    # Tables print AORs in full and times in the one format (ISO 8601 UTC with ms).
    aor = doc[0]["aor"]
    assert aor in table
    assert "2026-01-01T08:" in table and ".000Z" in table


def test_the_timeline_table_keeps_long_aors_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_aor = "sip:agent-with-a-rather-long-name-0001@callcentre.example.com"
    line = SAMPLE.read_text().splitlines()[0].replace("sip:1001@pbx.example.com", long_aor)
    log = tmp_path / "long.jsonl"
    log.write_text(line + "\n")
    code, out = _run(capsys, ["replay", "--input", str(log), "--timeline", "--format", "table"])
    assert code == 0 and long_aor in out


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`regstate replay --timeline | head -1`: exit 0, nothing on stderr."""
    big = tmp_path / "big.jsonl"
    lines = SAMPLE.read_text().splitlines()
    big.write_text("\n".join(lines * 200) + "\n")  # more than a pipe buffer of output
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "replay", "--input", str(big), "--timeline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"{")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 0, err
    assert err == ""
