"""``regstate topics ensure`` and ``regstate publish`` against a real Kafka (issue item 6).

Each test gets its own topic prefix, so tests never see each other's records,
and deletes its topics afterwards. What is read back from Kafka is folded with
processors.replay and must equal ``regstate replay`` of the same file, key by key.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from processors.replay import replay
from processors.sipuri import canonical_aor
from schemas import RegistrationEvent, Rejection, decode_event
from streams.analysis.timeline import dumps_snapshot, render_snapshot
from streams.cli import main
from streams.log.topics import topic_specs
from streams.settings import Settings
from tests.helpers import PROJECT_ROOT, create_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SAMPLE = PROJECT_ROOT / "samples" / "sample.jsonl"
GEN = PROJECT_ROOT / "bench" / "gen_events.py"
PARTITIONS = 4
"""Not the default (8): a count hard-coded anywhere would show."""


@pytest.fixture
def settings(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """REGSTATE_* for this test: its own topic prefix on the test Kafka."""
    prefix = f"test-{uuid.uuid4().hex[:12]}."
    monkeypatch.setenv("REGSTATE_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("REGSTATE_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("REGSTATE_PARTITIONS", str(PARTITIONS))
    monkeypatch.setenv("REGSTATE_REPLICATION_FACTOR", "1")
    monkeypatch.delenv("REGSTATE_MAX_CONTACTS", raising=False)
    monkeypatch.delenv("REGSTATE_MAX_CONTACTS_POLICY", raising=False)
    settings = Settings.from_env()
    yield settings
    asyncio.run(_delete_topics(settings))


async def _admin_call(settings: Settings, fn: Any) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        return await fn(admin)
    finally:
        await admin.close()


async def _delete_topics(settings: Settings) -> None:
    async def delete(admin: Any) -> None:
        existing = set(await admin.list_topics())
        names = [s.name for s in topic_specs(settings) if s.name in existing]
        if names:
            await admin.delete_topics(names)

    await _admin_call(settings, delete)


def describe(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """``{topic: (partition count, config)}`` of this test's topics, from the broker."""

    async def go(admin: Any) -> dict[str, tuple[int, dict[str, str]]]:
        names = [s.name for s in topic_specs(settings)]
        meta = {t["topic"]: t for t in await admin.describe_topics(names)}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
        configs = {
            res[3]: {entry[0]: entry[1] for entry in res[4]}
            for response in responses
            for res in response.resources
        }
        return {n: (len(meta[n]["partitions"]), configs[n]) for n in names}

    result: dict[str, tuple[int, dict[str, str]]] = asyncio.run(_admin_call(settings, go))
    return result


async def _read_topic(bootstrap: str, topic: str, within: float) -> list[Any]:
    """Every record of ``topic`` from the beginning to the end offsets as of now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert meta["error_code"] == 0, meta
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        tps = [TopicPartition(topic, p["partition"]) for p in meta["partitions"]]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[Any] = []
        while True:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= end[tp] for tp in tps):
                return records
            assert time.monotonic() < deadline, f"read {len(records)} records; at {positions}"
            batches = await consumer.getmany(*tps, timeout_ms=500)
            for recs in batches.values():
                records.extend(recs)
    finally:
        await consumer.stop()


def read_registrations(settings: Settings, timeout: float = 60.0) -> list[Any]:
    records: list[Any] = asyncio.run(
        _read_topic(settings.bootstrap_servers, settings.topic("registrations"), timeout)
    )
    return records


def check_records(records: list[Any], partitions: int) -> list[RegistrationEvent]:
    """Check keys and partitions; return the events in per-partition log order."""
    events: list[RegistrationEvent] = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = decode_event(record.value)
        assert not isinstance(event, Rejection), event
        assert canonical_aor(event.aor) == event.aor
        assert record.key == event.aor.encode("utf-8")
        # Java's partitioner: toPositive(murmur2(key)) % partitions.
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % partitions
        events.append(event)
    return events


def replay_cli(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> dict[str, Any]:
    code = main(["replay", "--input", str(path), *extra])
    out = capsys.readouterr().out
    assert code == 0
    result: dict[str, Any] = orjson.loads(out)
    return result


def assert_same_table(
    capsys: pytest.CaptureFixture[str], path: Path, events: list[RegistrationEvent]
) -> None:
    """Folding the records read back equals ``regstate replay`` of the file, key by key."""
    at = max(e.ts for e in events)
    from_kafka = render_snapshot(replay(events).states, at, include_empty=True)
    from_file = replay_cli(capsys, path, "--all")
    assert list(from_kafka) == list(from_file)
    for aor, state in from_file.items():
        assert orjson.loads(orjson.dumps(from_kafka[aor])) == state, aor
    # The default view, byte for byte: the same JSON as `regstate replay` prints.
    assert main(["replay", "--input", str(path)]) == 0
    printed = capsys.readouterr().out.encode()
    assert printed == dumps_snapshot(render_snapshot(replay(events).states, at))
    assert list(orjson.loads(printed)) == [a for a, s in from_kafka.items() if s["contacts"]]


def publish(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["publish", "--no-progress", *args])
    return code, capsys.readouterr().err


def test_topics_ensure_creates_every_topic_with_its_config(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["topics", "ensure", "--registrations-retention-ms", "-1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["created"] * 5

    topics = describe(settings)
    p = settings.topic
    expected = {
        p("registrations"): (PARTITIONS, {"cleanup.policy": "delete", "retention.ms": "-1"}),
        p("bindings"): (PARTITIONS, {"cleanup.policy": "compact"}),
        p("binding-events"): (
            PARTITIONS,
            {"cleanup.policy": "delete", "retention.ms": "604800000"},
        ),
        p("alerts"): (1, {"cleanup.policy": "compact"}),
        p("deadletter"): (1, {"cleanup.policy": "delete"}),
    }
    for name, (partitions, config) in expected.items():
        have_partitions, have_config = topics[name]
        assert have_partitions == partitions, name
        assert {k: have_config[k] for k in config} == config, name

    # Idempotent: a second run creates nothing and succeeds.
    assert main(["topics", "ensure"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[0] for line in captured.out.splitlines()] == ["exists"] * 5
    assert captured.err == ""
    assert main(["topics", "list", "--live"]) == 0
    assert "differs" not in capsys.readouterr().out


def test_partition_mismatch_on_registrations_is_refused(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(
        create_topic(settings.bootstrap_servers, settings.topic("registrations"), PARTITIONS + 1)
    )
    assert main(["topics", "ensure"]) == 1
    err = capsys.readouterr().err
    assert f"has {PARTITIONS + 1} partitions" in err
    assert f"REGSTATE_PARTITIONS is {PARTITIONS}" in err
    assert "table would break" in err
    # Nothing else was created when the check failed.
    assert set(describe_existing(settings)) == {settings.topic("registrations")}

    code, err = publish(capsys, "--input", str(SAMPLE))
    assert code == 1
    assert "table would break" in err
    code, err = publish(capsys, "--no-create", "--input", str(SAMPLE))
    assert code == 1
    assert f"has {PARTITIONS + 1} partitions" in err
    assert read_registrations(settings) == []


def describe_existing(settings: Settings) -> list[str]:
    async def go(admin: Any) -> list[str]:
        names = {s.name for s in topic_specs(settings)}
        return [t for t in await admin.list_topics() if t in names]

    result: list[str] = asyncio.run(_admin_call(settings, go))
    return result


def test_publish_sample_and_read_it_back(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = publish(capsys, "--input", str(SAMPLE))
    assert code == 0, err
    assert "regstate publish: published 44, bad 0, elapsed " in err
    assert "events/s" in err

    records = read_registrations(settings)
    assert len(records) == 44  # the duplicate line is published too: the fold skips it (R5)
    events = check_records(records, PARTITIONS)
    assert {e.aor for e in events} == {f"sip:{u}@pbx.example.com" for u in range(1001, 1011)}
    assert_same_table(capsys, SAMPLE, events)


def test_publish_generated_log_and_read_it_back(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "gen.jsonl"
    done = subprocess.run(
        [
            *(sys.executable, str(GEN), "--events", "20000", "--aors", "700"),
            *("--nodes", "3", "--seed", "11", "--output", str(path)),
        ],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    code, err = publish(capsys, "--input", str(path))
    assert code == 0, err
    assert "published 20000, bad 0" in err

    records = read_registrations(settings, timeout=120)
    assert len(records) == 20000
    events = check_records(records, PARTITIONS)
    assert len({r.partition for r in records}) == PARTITIONS
    # Per AOR, Kafka holds the events in file order (one partition, idempotent producer).
    by_aor: dict[str, list[str]] = {}
    for e in events:
        by_aor.setdefault(e.aor, []).append(e.id)
    in_file: dict[str, list[str]] = {}
    for line in path.read_bytes().splitlines():
        m = orjson.loads(line)
        in_file.setdefault(m["aor"], []).append(m["id"])
    assert by_aor == in_file
    assert_same_table(capsys, path, events)


def test_publish_reports_bad_lines_and_publishes_the_good_ones(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = SAMPLE.read_bytes().splitlines()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([lines[0], b"{broken", lines[1], b'{"v": 3}', lines[2]]) + b"\n")
    code, err = publish(capsys, "--input", str(path))
    assert code == 1
    assert f"{path}:2: not_json: " in err
    assert f"{path}:4: unknown_version: " in err
    assert "published 3, bad 2" in err
    assert len(read_registrations(settings)) == 3


def test_publish_from_stdin(settings: Settings) -> None:
    """The real command line: ``regstate publish --input -`` in a subprocess."""
    assert main(["topics", "ensure"]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "streams", "publish", "--input", "-", "--no-create"],
        input=SAMPLE.read_bytes(),
        capture_output=True,
        check=False,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert b"published 44, bad 0" in done.stderr
    assert len(read_registrations(settings)) == 44
