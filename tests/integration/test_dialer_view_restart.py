"""SIGKILL a dialer view (``python -m streams dialer-view``) mid-bootstrap and restart it.

It must resume from the offsets stored in its SQLite file at the kill: the second
process applies only what the first had not committed plus what was appended while
it was down (its counters show no full re-read), and ends on the same rows as
``processors.replay`` of the log.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from streams.dialer.store import SqliteBindingStore
from streams.log.topics import BINDINGS
from tests.helpers import PROJECT_ROOT, wait_until_async
from tests.integration.dialer_support import History, as_set, publish, view_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(text: str, name: str) -> int:
    total = 0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\d+)(?:\.0)?$", text, re.M):
        total += int(m.group(1))
    return total


async def scrape(port: int) -> str | None:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as ready,
        ):
            if ready.status != 200:
                return None
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                return await r.text()
    except aiohttp.ClientError:
        return None


async def test_sigkill_then_resume_without_full_reread(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = view_settings(kafka_bootstrap)
    hist = History(n_events=4000, n_aors=400, seed=11)
    first = hist.chunk(3000)
    await publish(settings, first)
    db = tmp_path / "dialer.sqlite3"
    port = free_port()
    env = {
        **os.environ,
        "REGSTATE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REGSTATE_TOPIC_PREFIX": settings.topic_prefix,
        "REGSTATE_PARTITIONS": str(settings.partitions),
        "REGSTATE_DIALER_DB": str(db),
        "REGSTATE_DIALER_WEB_PORT": str(port),
        "REGSTATE_LOG_LEVEL": "warning",
        # Small transactions, so the kill lands in the middle of the bootstrap.
        "REGSTATE_DIALER_BATCH_RECORDS": "50",
    }

    log = tmp_path / "dialer.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "streams", "dialer-view"],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    topic = settings.topic(BINDINGS)

    def stored_offsets() -> dict[int, int]:
        if not db.exists():
            return {}
        try:
            store = SqliteBindingStore(db, read_only=True)
        except sqlite3.OperationalError:
            return {}  # created but schema not yet committed
        try:
            return store.offsets(topic)
        except sqlite3.OperationalError:
            return {}
        finally:
            store.close()

    proc = start()
    try:
        # Kill it as soon as some, ideally not all, batches are committed.
        await wait_until_async(lambda: sum(stored_offsets().values()) > 0, 90, 0.005, "a batch")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    at_kill = stored_offsets()
    assert 0 < sum(at_kill.values()) <= len(first)

    more = hist.chunk(1000)
    await publish(settings, more)
    proc = start()
    try:
        text = await wait_until_async(lambda: scrape(port), 90, 0.2, "restarted view ready")
        # It resumed at the stored offsets: only what it had not committed is read.
        resumed = sum(at_kill.values())
        assert metric(text, "regstate_dialer_resumed_from_offset") == resumed
        assert metric(text, "regstate_dialer_records_applied_total") == (
            len(first) + len(more) - resumed
        )
        assert metric(text, "regstate_dialer_records_reread_total") == 0
        now = hist.now
        store = SqliteBindingStore(db, read_only=True)
        rows = as_set(store.all_rows(now))
        store.close()
        assert rows == hist.expected(now)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
