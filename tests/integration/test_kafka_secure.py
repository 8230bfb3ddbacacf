"""The local Kafka started with ``--secure``: SASL_SSL for every client, ACLs per role.

* The engine path (publish as the front-end -> worker as the worker -> regstate.bindings
  -> dialer view as the dialer) runs over SASL_SSL, each with its own principal.
* A plaintext client, a wrong password and an unknown CA are refused, and the error
  names the setting to fix; no password shows up in what is printed.
* The front-end principal cannot write regstate.bindings; the dialer principal cannot
  write any topic (the broker's authorization error is asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import TopicAuthorizationFailedError  # type: ignore[import-untyped]

from devkafka.local import LocalKafka
from devkafka.secure import ROLES
from processors.dialer import ServerMap, extension_of
from processors.replay import replay
from streams.cli import build_parser
from streams.dialer.store import SqliteBindingStore
from streams.dialer.view import DialerViewService, sqlite_opener
from streams.log.kafka_config import client_config
from streams.log.topics import (
    ALERTS,
    BINDING_EVENTS,
    BINDINGS,
    DEADLETTER,
    REGISTRATIONS,
    ensure_topics,
)
from tests.helpers import PROJECT_ROOT, wait_until_async
from tests.integration.engine_harness import (
    NO_SWEEP,
    Worker,
    engine_env,
    free_port,
    generate,
    now_ms,
    publish,
)
from tests.integration.secure_support import SecuredTopics, secured_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def topics(secure_kafka: LocalKafka) -> SecuredTopics:
    return secured_topics(secure_kafka)


def _topics_list(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``regstate topics list --live`` with ``env`` on top of this process's environment."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("REGSTATE_KAFKA_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "streams", "topics", "list", "--live"],
        cwd=PROJECT_ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_admin_lists_the_topics(topics: SecuredTopics) -> None:
    done = _topics_list(topics.env("admin"))
    assert done.returncode == 0, done.stderr
    assert topics.prefix + "registrations" in done.stdout


def test_plaintext_client_is_refused_naming_the_protocol_setting(topics: SecuredTopics) -> None:
    env = topics.env("admin")
    env["REGSTATE_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    done = _topics_list(env)
    assert done.returncode == 1
    assert "REGSTATE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in done.stderr


def test_wrong_password_is_refused_naming_the_password_file(
    topics: SecuredTopics, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    env = topics.env("admin", kafka_sasl_password_file=str(wrong))
    done = _topics_list(env)
    assert done.returncode == 1
    assert "SASL login of 'regstate-admin' refused" in done.stderr
    assert "REGSTATE_KAFKA_SASL_PASSWORD_FILE" in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout


def test_unknown_ca_is_refused_naming_the_ca_setting(topics: SecuredTopics) -> None:
    env = topics.env("admin")
    env["REGSTATE_KAFKA_SSL_CAFILE"] = ""  # the system's CAs never signed the local CA
    done = _topics_list(env)
    assert done.returncode == 1
    assert "certificate is not trusted" in done.stderr
    assert "REGSTATE_KAFKA_SSL_CAFILE" in done.stderr


async def _write(settings_env: dict[str, str], topic: str) -> None:
    from streams.settings import Settings

    settings = Settings.from_env(settings_env)
    # No idempotence: it needs WRITE somewhere, and the dialer has none at all; the
    # produce request itself is what the ACLs must refuse.
    producer = AIOKafkaProducer(**client_config(settings, "acl-test"), acks="all")
    await producer.start()
    try:
        await asyncio.wait_for(await producer.send(topic, b"v", key=b"sip:x@y"), 30)
    finally:
        await producer.stop()


def test_frontend_writes_registrations_but_not_bindings(topics: SecuredTopics) -> None:
    env = topics.env("frontend")
    asyncio.run(_write(env, topics.prefix + REGISTRATIONS))  # its one permission
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_write(env, topics.prefix + BINDINGS))


@pytest.mark.parametrize("name", [REGISTRATIONS, BINDINGS, BINDING_EVENTS, ALERTS, DEADLETTER])
def test_dialer_writes_nothing(topics: SecuredTopics, name: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_write(topics.env("dialer"), topics.prefix + name))


async def _get(url: str, token: str | None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status


async def assert_sse_token_required(base: str, token: str) -> None:
    """The dialer view's SSE stream: 401 without the token; with it, the subscription."""
    url = base + "/v1/events?ext=1"
    assert await _get(url, None) == 401
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200
        assert await resp.content.readline() == b": subscribed\n"


async def assert_token_required(base: str, data_paths: list[str], token: str) -> None:
    """Every data path: 401 without the token or with a wrong one, 200 with it; probes open."""
    for path in data_paths:
        assert await _get(base + path, None) == 401, path
        assert await _get(base + path, "x" * len(token)) == 401, path
        assert await _get(base + path, token) == 200, path
    for path in ("/healthz", "/metrics"):
        assert await _get(base + path, None) == 200, path


@pytest.mark.slow
async def test_engine_path_over_sasl_ssl(topics: SecuredTopics, tmp_path: Path) -> None:
    """Front-end publishes, the worker folds, the dialer view serves: three principals.

    The worker's and the dialer view's HTTP APIs ask for the bearer token meanwhile.
    """
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "http.token"
    token_file.write_text(token + "\n")
    frontend = topics.settings("frontend")
    events = generate(600, 60, seed=5, start_ts=now_ms() - 20 * 60_000)
    await asyncio.to_thread(publish, frontend, events)

    env = engine_env(
        topics.kafka.bootstrap,
        topics.prefix,
        tmp_path,
        worker_id="sec",
        web_port=free_port(),
        grace_ms=NO_SWEEP,
        http_token_file=str(token_file),
    )
    env.update(topics.env("worker"))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await asyncio.to_thread(worker.wait_ready, 120)
        assert worker.proc is not None
        titles = _process_title(worker.proc.pid)
        now = max(e.ts for e in events)
        table = replay(events, frontend.fold_policy())
        want = {
            (aor, b.key, b.uri, b.expires_at)
            for aor, s in table.states.items()
            for b in s.active_contacts(now)
        }
        assert want
        db = tmp_path / "dialer.sqlite3"
        dialer = DialerViewService(
            topics.settings("dialer", dialer_web_port=0, http_token_file=str(token_file)),
            sqlite_opener(str(db), clock=lambda: now),
            server_map=ServerMap({}, {}),
            clock=lambda: now,
            progress=False,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dialer.run(stop))

        def rows() -> set[tuple[str, str, str, int]]:
            store = SqliteBindingStore(db, read_only=True)
            try:
                return {
                    (r.aor, r.contact_key, r.contact_uri, r.expires_at) for r in store.all_rows(now)
                }
            finally:
                store.close()

        try:
            await wait_until_async(
                lambda: dialer.ready or task.done(), 90, message="dialer view ready"
            )
            assert not task.done(), task.result()
            await wait_until_async(
                lambda: db.exists() and rows() == want, 120, message="dialer rows = replay"
            )
            # An AOR active at the dialer's clock and still at the worker's (wall clock).
            wall = now_ms() + 120_000
            aor = next(a for a, s in sorted(table.states.items()) if s.active_contacts(wall))
            quoted = quote(aor, safe="")
            await assert_token_required(
                f"http://127.0.0.1:{dialer.port}",
                [f"/v1/aors/{quoted}", f"/v1/extensions/{quote(extension_of(aor))}"],
                token,
            )
            await assert_sse_token_required(f"http://127.0.0.1:{dialer.port}", token)
            await assert_token_required(worker.url, [f"/v1/aors/{quoted}", "/v1/problems"], token)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        worker.stop()
    secrets_ = [topics.kafka.secrets.password(r) for r in ROLES] + [token]
    log_text = (tmp_path / "worker.log").read_text(errors="replace")
    assert not [s for s in secrets_ if s in log_text], "a secret in the worker's log"
    assert not [s for s in secrets_ if s in titles], "a secret in a process title"
    records = await _all_records(topics)
    assert records, "the topics hold the engine path's records"
    blob = b"\n".join(records)
    assert not [s for s in secrets_ if s.encode() in blob], "a secret in a topic"


async def _all_records(topics: SecuredTopics) -> list[bytes]:
    """Keys, values and headers of every record of the test's topics (read as the admin)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings = topics.settings("admin")
    consumer = AIOKafkaConsumer(
        **client_config(settings, "secrets-test"), enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        names = [n for n in await consumer.topics() if n.startswith(topics.prefix)]
        await consumer._client.force_metadata_update()  # the partitions of every topic
        tps = [TopicPartition(n, p) for n in names for p in consumer.partitions_for_topic(n) or ()]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    out.append(record.key or b"")
                    out.append(record.value or b"")
                    out.extend(v for _, v in record.headers)
    finally:
        await consumer.stop()
    return out


def _process_title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def _help_texts(parser: argparse.ArgumentParser) -> Iterator[str]:
    yield parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _help_texts(sub)


def test_no_secret_in_help_broker_titles_logs_or_files(
    topics: SecuredTopics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--help of every command (with a role's settings in the environment), the brokers'
    process titles and logs hold no password; every secret file is private (0600)."""
    kafka = topics.kafka
    secrets_ = [kafka.secrets.password(r) for r in ROLES]
    for name, value in topics.env("admin").items():
        monkeypatch.setenv(name, value)
    helps = "\n".join(_help_texts(build_parser()))
    assert "--secure" in helps and "REGSTATE_ALERTING_WEBHOOK_PASSWORD_FILE" in helps
    assert not [s for s in secrets_ if s in helps]
    for spec in kafka.layout.specs:
        pid = kafka.node_pid(spec.node_id)
        assert pid is not None
        assert not [s for s in secrets_ if s in _process_title(pid)]
        node_dir = kafka.node_dir(spec.node_id)
        for log in ("server.log", "console.log"):
            text = (node_dir / log).read_text(errors="replace")
            assert not [s for s in secrets_ if s in text], f"a password in {log}"
        assert not (node_dir / "format.args").exists()
        assert (node_dir / "server.properties").stat().st_mode & 0o077 == 0
    assert kafka.secrets.root.stat().st_mode & 0o077 == 0
    for path in kafka.secrets.root.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.parametrize("role", ["frontend", "worker", "dialer", "alerting"])
def test_roles_check_the_topics_at_start_without_creating_any(
    topics: SecuredTopics, role: str
) -> None:
    """What `regstate publish`, `worker`, `dialer-view` and `alerting` do first."""
    assert asyncio.run(ensure_topics(topics.settings(role))) == []


@pytest.mark.parametrize("command", ["worker", "dialer-view", "alerting"])
def test_a_service_refused_by_kafka_exits_naming_the_setting(
    topics: SecuredTopics, tmp_path: Path, command: str
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    role = {"worker": "worker", "dialer-view": "dialer", "alerting": "alerting"}[command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGSTATE_KAFKA_")}
    env.update(topics.env(role, kafka_sasl_password_file=str(wrong), data_dir=str(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-m", "streams", command],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"SASL login of 'regstate-{role}' refused" in done.stderr
    assert "REGSTATE_KAFKA_SASL_PASSWORD_FILE" in done.stderr
    assert "Traceback" not in done.stderr
