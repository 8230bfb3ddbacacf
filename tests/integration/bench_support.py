"""Running a bench script of ``bench/`` on the test broker, as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *args: str) -> str:
    """``bench/<script> <args>``'s stdout; fails the test (with the output's tail) on a
    non-zero exit."""
    out = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def search_line(pattern: str, stdout: str) -> re.Match[str]:
    """The first match of ``pattern`` in a bench's ``stdout``; fails the test, showing the
    output, when there is none."""
    found = re.search(pattern, stdout)
    assert found is not None, f"no line matching {pattern!r} in:\n{stdout}"
    return found
