"""A captured Digest response is refused everywhere but once (issue 15, D95).

Three real ``regstate frontend`` processes share one data dir, so one nonce key and
one user file: node ``fe-a`` process 0, the same node's process 1 (started as its
supervisor starts it, ``--process-index 1``, here on a port of its own so the test
can address it), and a second node ``fe-b``. A phone registers at fe-a#0; an
attacker replays its Authorization, with a new Call-ID and his own Contact, to
fe-a#1, to fe-b and to fe-a#0 itself: each answers 401 with ``stale=true``, and
the attacker's contact is never logged.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from streams.frontend.users import add_user
from streams.log.topics import ensure_topics
from streams.settings import Settings
from tests.helpers import PROJECT_ROOT, unique_name, wait_until
from tests.integration.engine_harness import free_port, read_events
from tests.sip_client import Phone, UdpClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REALM = "pbx.example"


@contextmanager
def frontend_process(env: dict[str, str], node: str, log: Path, index: int | None) -> Iterator[int]:
    """One ``regstate frontend`` process of ``node``; yields its SIP port."""
    port = free_port()
    full = {**os.environ, **env, "REGSTATE_NODE_ID": node}
    command = [sys.executable, "-m", "streams", "frontend", "--port", str(port)]
    if index is not None:
        command += ["--process-index", str(index)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=full, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
        )
    try:
        wait_until(lambda: b"event log ready" in log.read_bytes(), 30, 0.1, f"{node} ready")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def _register(port: int) -> tuple[str, Phone]:
    """A phone registers at ``port``; returns the Authorization it sent (captured)."""
    client = await UdpClient.open(port)
    try:
        phone = Phone("4001", "Pw-4001-Zq8!", local_port=client.port)
        challenge = await client.request(phone.register())
        assert challenge.status == 401
        authorization = phone.answer(challenge.all("www-authenticate"))
        ok = await client.request(phone.register(authorization=authorization))
        assert ok.status == 200, ok.raw
        return authorization, phone
    finally:
        client.close()


async def _replay(port: int, authorization: str) -> tuple[int, str]:
    """The attacker: same credentials, new Call-ID, his own Contact."""
    client = await UdpClient.open(port)
    try:
        attacker = Phone("4001", "unknown", local_port=client.port)
        contact = f"<sip:4001@127.0.0.1:{client.port};evil=1>"
        r = await client.request(attacker.register(contacts=[contact], authorization=authorization))
        return r.status, " ".join(r.all("www-authenticate"))
    finally:
        client.close()


def test_replayed_digest_is_stale_at_another_process_and_node(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {
        "REGSTATE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REGSTATE_TOPIC_PREFIX": unique_name("replay") + ".",
        "REGSTATE_PARTITIONS": "4",
        "REGSTATE_DATA_DIR": str(tmp_path),
        "REGSTATE_SIP_REALM": REALM,
        "REGSTATE_FRONTEND_WEB_PORT": "0",
        "REGSTATE_LOG_LEVEL": "debug",
    }
    asyncio.run(ensure_topics(Settings.from_env(env)))
    add_user(tmp_path / "sip-users.json", REALM, "4001", "Pw-4001-Zq8!")
    logs = {name: tmp_path / f"{name}.log" for name in ("a0", "a1", "b")}
    with ExitStack() as stack:
        a0 = stack.enter_context(frontend_process(env, "fe-a", logs["a0"], 0))
        a1 = stack.enter_context(frontend_process(env, "fe-a", logs["a1"], 1))
        b = stack.enter_context(frontend_process(env, "fe-b", logs["b"], None))
        authorization, _ = asyncio.run(_register(a0))
        for port in (a1, b, a0):
            status, challenge = asyncio.run(_replay(port, authorization))
            assert status == 401
            assert "stale=true" in challenge
    # The log holds the phone's one registration; the attacker's contact never got in.
    events = read_events(kafka_bootstrap, env["REGSTATE_TOPIC_PREFIX"] + "registrations")
    assert [(e.kind, e.node) for e in events] == [("register", "fe-a#0")]
    assert all("evil" not in c.uri for e in events for c in e.contacts)
