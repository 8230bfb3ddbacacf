"""``regstate kafka up|status`` against the running local broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from devkafka.local import layout

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SINGLE = layout(1).bootstrap


def _regstate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.fixture
def local_single(kafka_bootstrap: str) -> str:
    if os.environ.get("REGSTATE_BOOTSTRAP_SERVERS", SINGLE) != SINGLE:
        pytest.skip("REGSTATE_BOOTSTRAP_SERVERS names another broker than the local one")
    return kafka_bootstrap


def test_up_reuses_the_running_broker(local_single: str) -> None:
    started = time.monotonic()
    done = _regstate("kafka", "up")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{SINGLE}\n"
    assert "starting" not in done.stderr  # reused, not restarted
    assert elapsed < 15  # a JVM start alone takes longer than a reuse check


def test_status_prints_the_bootstrap(local_single: str) -> None:
    done = _regstate("kafka", "status", "--nodes", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{SINGLE}\n"
    both = _regstate("kafka", "status")
    assert both.returncode == 0
    assert both.stdout.splitlines()[0] == SINGLE
