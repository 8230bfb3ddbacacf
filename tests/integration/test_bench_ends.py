"""bench/quix_peer.py on a real broker (D127): each contender is timed to two ends, its
commit of the log's end and its last record folded (the worker commits on its timer, the
peers at once); ``--rounds`` runs them again in reverse order and prints medians."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "quix_peer.py"
RATE = r"(\d+) events/s \((\d+) to the last folded\)"


def test_worker_and_client_floor_are_timed_to_both_ends(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--bootstrap",
            kafka_bootstrap,
            "--events",
            "3000",
            "--aors",
            "300",
            "--worker",
            "regstate:",
            "--no-quix",
            "--rounds",
            "2",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    stdout = out.stdout
    first, second = stdout.split("bench: round 2 of 2")
    for contender in (r"worker regstate: 3000 events folded", r"pipeline: 3000 records folded"):
        for rnd in (first, second):
            line = re.search(contender + r".*?: " + RATE, rnd)
            assert line is not None, stdout
            committed, folded = int(line.group(1)), int(line.group(2))
            # The last record is folded before the end is committed, never after.
            assert 0 < committed <= folded, line.group(0)
    # The second round runs the contenders in reverse order.
    assert first.index("worker regstate: published") < first.index("pipeline: published")
    assert second.index("pipeline: published") < second.index("worker regstate: published")
    for end in ("to the commit of the end", "to the last folded"):
        for rnd in (first, second):
            ratio = re.search(rf"RATIO worker regstate \({end}\): (\d+) events/s = \d+% of", rnd)
            assert ratio is not None, stdout
            assert int(ratio.group(1)) > 0
        median = re.search(
            rf"MEDIAN worker regstate \({end}\) over 2 rounds: (\d+)% of bare "
            r"\(rounds: (\d+)%, (\d+)%\)",
            stdout,
        )
        assert median is not None, stdout
        a, b = int(median.group(2)), int(median.group(3))
        assert int(median.group(1)) in range(min(a, b), max(a, b) + 1)
