"""bench/quix_peer.py's empty Faust agent, on a real broker: the peer counts every record
of the log it was given, and reports one that has not taken them all in time instead of
hanging."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "quix_peer.py"


def _bench(bootstrap: str, work: Path, *extra: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--bootstrap",
            bootstrap,
            "--events",
            "2000",
            "--aors",
            "200",
            "--no-worker",
            "--no-quix",
            "--no-pipeline",
            "--data-dir",
            str(work),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def test_empty_faust_agent_takes_the_whole_log(kafka_bootstrap: str, tmp_path: Path) -> None:
    stdout = _bench(kafka_bootstrap, tmp_path, "--faust", "aiokafka")
    line = re.search(r"RESULT faust-aiokafka: (\d+) records taken .*: (\d+) events/s", stdout)
    assert line is not None, stdout
    assert int(line.group(1)) == 2000
    assert int(line.group(2)) > 0


def test_a_transport_that_takes_nothing_is_reported(kafka_bootstrap: str, tmp_path: Path) -> None:
    # Too short for Faust to start at all: the child is stopped and the bench says so.
    stdout = _bench(kafka_bootstrap, tmp_path, "--faust", "aiokafka", "--faust-timeout", "0.5")
    want = r"RESULT faust-aiokafka: had not taken all 2000 records after 0.5 s; see "
    assert re.search(want, stdout), stdout
