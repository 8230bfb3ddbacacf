"""Issue 7 against a real Kafka: ``replay`` from Kafka, ``export``, ``audit``.

Each test publishes to its own topic prefix (``test-<uuid>.``) and deletes its
topics afterwards. Logs are small (a few thousand events) to keep the suite
quick on a shared machine; the bench (bench/replay_bench.py) does the million.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from processors.explain import iso_ms
from processors.replay import replay
from schemas import RegistrationEvent, encode_event, encode_event_json, encode_state
from streams.cli import main
from streams.log.routing import kafka_partition
from streams.log.topics import topic_specs
from streams.settings import Settings
from tests.helpers import wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTITIONS = 4
START_TS = 1_767_254_400_000
"""2026-01-01T08:00:00Z: event times are fixed, far from the record timestamps (now)."""


# --------------------------------------------------------------------------- fixtures


class Env:
    """Switches REGSTATE_TOPIC_PREFIX between prefixes; deletes every prefix's topics at the end."""

    def __init__(self, bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bootstrap = bootstrap
        self.monkeypatch = monkeypatch
        self.prefixes: list[str] = []
        monkeypatch.setenv("REGSTATE_BOOTSTRAP_SERVERS", bootstrap)
        monkeypatch.setenv("REGSTATE_PARTITIONS", str(PARTITIONS))
        monkeypatch.setenv("REGSTATE_REPLICATION_FACTOR", "1")
        for name in ("REGSTATE_MAX_CONTACTS", "REGSTATE_MAX_CONTACTS_POLICY"):
            monkeypatch.delenv(name, raising=False)
        self.use_new_prefix()

    def use_new_prefix(self) -> Settings:
        prefix = f"test-{uuid.uuid4().hex[:12]}."
        self.prefixes.append(prefix)
        self.monkeypatch.setenv("REGSTATE_TOPIC_PREFIX", prefix)
        return self.settings

    @property
    def settings(self) -> Settings:
        return Settings.from_env()

    async def delete_all(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            names = [
                s.name
                for p in self.prefixes
                for s in topic_specs(Settings(bootstrap_servers=self.bootstrap, topic_prefix=p))
                if s.name in existing
            ]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()


@pytest.fixture
def env(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    e = Env(kafka_bootstrap, monkeypatch)
    yield e
    asyncio.run(e.delete_all())


# --------------------------------------------------------------------------- helpers


def generated(n_events: int, n_aors: int, seed: int) -> list[RegistrationEvent]:
    """bench/gen_events.py's synthetic log with fixed event times."""
    from bench.gen_events import generate_events

    return list(generate_events(n_events, n_aors, 3, seed, start_ts=START_TS, raw=False))


def write_jsonl(path: Path, events: list[RegistrationEvent]) -> Path:
    path.write_bytes(b"".join(encode_event_json(e) + b"\n" for e in events))
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``regstate ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def publish_file(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, _, err = cli(capsys, "publish", "--no-progress", "--input", str(path))
    assert code == 0, err


def timeline(out: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.splitlines()]


def per_aor(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Timeline entries by AOR, without their position (partition/offset or line)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        out[e["aor"]].append(
            {k: v for k, v in e.items() if k not in ("partition", "offset", "line")}
        )
    return dict(out)


def ids_per_aor(events: list[RegistrationEvent]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for e in events:
        out[e.aor].append(e.id)
    return dict(out)


async def produce(
    settings: Settings,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, int | None]],
) -> list[tuple[int, int]]:
    """Append (key, value, record timestamp) records by hand; their (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        positions = []
        for key, value, ts in records:
            meta = await producer.send_and_wait(topic, value, key=key, timestamp_ms=ts)
            positions.append((meta.partition, meta.offset))
        return positions
    finally:
        await producer.stop()


def ensure_topics(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "topics", "ensure")
    assert code == 0, err


# --------------------------------------------------------------------------- replay / export


def test_kafka_replay_and_export_agree_with_the_file(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = generated(3000, 60, seed=7)
    original = write_jsonl(tmp_path / "original.jsonl", events)
    publish_file(capsys, original)
    ts = sorted(e.ts for e in events)
    since, until = ts[len(ts) // 3], ts[2 * len(ts) // 3]

    # The state at --until: Kafka == the original file == the export up to --until.
    code, from_kafka, err = cli(capsys, "replay", "--until", str(until), "--no-progress")
    assert code == 0, err
    assert f"read {len(events)} records, good {len(events)}, bad 0" in err
    code, from_file, err = cli(capsys, "replay", "--input", str(original), "--at", str(until))
    assert code == 0, err
    assert from_kafka == from_file
    assert len(orjson.loads(from_kafka)) > 10

    upto = tmp_path / "upto.jsonl"
    code, _, err = cli(capsys, "export", "--until", str(until), "--output", str(upto))
    assert code == 0, err
    exported = [orjson.loads(line) for line in upto.read_bytes().splitlines()]
    assert len(exported) == sum(1 for e in events if e.ts <= until)
    code, from_export, err = cli(capsys, "replay", "--input", str(upto), "--at", str(until))
    assert code == 0, err
    assert from_export == from_file

    # An ISO 8601 time means the same instant.
    code, from_iso, _ = cli(capsys, "replay", "--until", iso_ms(until), "--no-progress")
    assert (code, from_iso) == (0, from_kafka)

    # The timeline of [since, until]: from Kafka == from the export (history included).
    code, out, err = cli(
        capsys, "replay", "--timeline", "--since", str(since), "--until", str(until)
    )
    assert code == 0, err
    kafka_tl = timeline(out)
    code, out, err = cli(
        capsys,
        *("replay", "--input", str(upto), "--timeline"),
        *("--since", str(since), "--until", str(until)),
    )
    assert code == 0, err
    file_tl = timeline(out)
    assert per_aor(kafka_tl) == per_aor(file_tl)
    assert {e["outcome"] for e in kafka_tl} >= {"applied", "duplicate", "stale", "rejected"}
    assert all(since <= e["ts"] <= until for e in kafka_tl)
    assert all("partition" in e and "offset" in e for e in kafka_tl)

    # The export of [since, until] holds exactly those events, per AOR in log order.
    window = tmp_path / "window.jsonl"
    code, _, err = cli(
        capsys,
        *("export", "--since", str(since), "--until", str(until), "--output", str(window)),
    )
    assert code == 0, err
    in_window = [e for e in events if since <= e.ts <= until]
    exported_ids: dict[str, list[str]] = defaultdict(list)
    for line in window.read_bytes().splitlines():
        m = orjson.loads(line)
        exported_ids[m["aor"]].append(m["id"])
    assert dict(exported_ids) == ids_per_aor(in_window)
    assert {a: [e["id"] for e in es] for a, es in per_aor(kafka_tl).items()} == dict(exported_ids)

    # --aor selects (canonicalized) and gives the same state and timeline as the file.
    aor = max(ids_per_aor(events).items(), key=lambda kv: len(kv[1]))[0]
    typed = "<" + aor.replace("pbx.example.com", "PBX.Example.com") + ";transport=udp>"
    code, one, err = cli(
        capsys, "replay", "--aor", typed, "--until", str(until), "--all", "--compact"
    )
    assert code == 0, err
    code, everything, _ = cli(capsys, "replay", "--until", str(until), "--all", "--compact")
    assert orjson.loads(one) == {aor: orjson.loads(everything)[aor]}
    code, out, _ = cli(capsys, "replay", "--aor", aor, "--timeline", "--until", str(until))
    assert per_aor(timeline(out)) == {aor: per_aor(file_timeline(capsys, original, until))[aor]}

    # The readable table: a header and one line per event.
    code, out, _ = cli(
        capsys, "replay", "--aor", aor, "--timeline", "--format", "table", "--until", str(until)
    )
    lines = out.splitlines()
    assert lines[0].startswith("TIME (UTC)")
    assert len(lines) == 1 + sum(1 for e in events if e.aor == aor and e.ts <= until)


def file_timeline(
    capsys: pytest.CaptureFixture[str], path: Path, until: int
) -> list[dict[str, Any]]:
    """``replay --input PATH --timeline --until UNTIL`` (every AOR)."""
    code, out, err = cli(
        capsys, "replay", "--input", str(path), "--timeline", "--until", str(until)
    )
    assert code == 0, err
    return timeline(out)


def test_export_publish_replay_round_trip(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = generated(2000, 40, seed=3)
    publish_file(capsys, write_jsonl(tmp_path / "log.jsonl", events))
    code, state_a, err = cli(capsys, "replay", "--all")
    assert code == 0, err
    export_a = tmp_path / "a.jsonl"
    code, _, err = cli(capsys, "export", "--output", str(export_a))
    assert code == 0, err
    assert f"wrote {len(events)} events" in err

    env.use_new_prefix()
    publish_file(capsys, export_a)
    code, state_b, err = cli(capsys, "replay", "--all")
    assert code == 0, err
    assert state_b == state_a
    # Exported again, the log is byte for byte the same: order and content survived.
    code, out, err = cli(capsys, "export", "--output", "-")
    assert code == 0, err
    assert out.encode() == export_a.read_bytes()


def test_time_limit_late_records_and_bad_records(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """Record timestamps set by hand: the partition stops after until + skew, unless late."""
    ensure_topics(capsys)
    settings = env.settings
    topic = settings.topic("registrations")
    aor = "sip:2001@pbx.example.com"
    key = aor.encode()
    t = START_TS

    def reg(seq: int, ts: int, cseq: int) -> RegistrationEvent:
        return RegistrationEvent(
            kind="register", id=f"fe1:{seq}", node="fe1", seq=seq, ts=ts, aor=aor,
            call_id="c1", cseq=cseq, contacts=(_contact(f"sip:2001@192.0.2.{seq}"),),
        )  # fmt: skip

    until, skew = t + 60_000, 60_000
    timely = [
        (key, encode_event(reg(1, t, 1)), t),
        (key, encode_event(reg(2, t + 30_000, 2)), t + 30_000),
        # First record past until + skew: read as a probe, folded not (ts > until).
        (key, encode_event(reg(3, t + 600_000, 3)), t + 600_000),
        # Late: an event from before --until appended 30 min later. Behind timely
        # records past the limit, the reader cannot see it (the documented gap).
        (key, encode_event(reg(4, t + 50_000, 4)), t + 1_800_000),
    ]
    asyncio.run(produce(settings, topic, timely))
    partition = kafka_partition(key, PARTITIONS)
    args = ("replay", "--aor", aor, "--until", str(until), "--skew-ms", str(skew), "--compact")
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert "read 3 records" in err
    assert uris(out, aor) == {"sip:2001@192.0.2.1", "sip:2001@192.0.2.2"}
    # --skew-ms -1 reads to the end offset: the late event is folded.
    code, out, err = cli(capsys, *args[:-3], "--skew-ms", "-1", "--compact")
    assert "read 4 records" in err
    assert uris(out, aor) == {f"sip:2001@192.0.2.{i}" for i in (1, 2, 4)}

    # A late record *before* the limit: that partition is read to its end.
    # In another partition than the first AOR, so that its first record is the probe.
    aor2 = next(
        a
        for a in (f"sip:{u}@pbx.example.com" for u in range(2002, 2100))
        if kafka_partition(a.encode(), PARTITIONS) != partition
    )
    key2 = aor2.encode()
    ev = [
        e._replace(aor=aor2) for e in (reg(1, t, 1), reg(2, t + 10_000, 2), reg(3, t + 20_000, 3))
    ]
    asyncio.run(
        produce(
            settings,
            topic,
            [
                (key2, encode_event(ev[0]), t + 900_000),  # late: appended 15 min after
                (key2, encode_event(ev[1]), t + 900_001),
                (key2, encode_event(ev[2]), t + 900_002),
            ],
        )
    )
    code, out, err = cli(
        capsys, "replay", "--aor", aor2, "--until", str(until), "--skew-ms", str(skew)
    )
    assert code == 0, err
    assert "holds late records" in err
    assert uris(out, aor2) == {f"sip:2001@192.0.2.{i}" for i in (1, 2, 3)}

    # Bad records: reported with partition and offset, skipped, exit code 1.
    ((p_bad, o_bad), (p_mis, o_mis)) = asyncio.run(
        produce(
            settings,
            topic,
            [
                (key, b"\xc1 not msgpack", None),
                (b"sip:other@pbx.example.com", encode_event(reg(5, t + 1000, 5)), None),
            ],
        )
    )
    assert p_bad == partition
    code, out, err = cli(capsys, "replay", "--compact")
    assert code == 1
    assert f"{topic} p{p_bad}@{o_bad}: not_msgpack: " in err
    assert f"{topic} p{p_mis}@{o_mis}: key_mismatch: " in err
    assert aor in orjson.loads(out)
    code, _, err = cli(capsys, "export", "--output", "-")
    assert code == 1
    assert f"p{p_bad}@{o_bad}: not_msgpack" in err


def uris(out: str, aor: str) -> set[str]:
    """The contact URIs of ``aor`` in a replay's output."""
    return {c["uri"] for c in orjson.loads(out)[aor]["contacts"]}


def _contact(uri: str) -> Any:
    from schemas import ContactEntry

    return ContactEntry(uri, 3600)


def test_replay_of_a_missing_topic_is_an_error(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "replay")
    assert code == 2
    assert "does not exist" in err
    code, _, err = cli(capsys, "replay", "--aor", "not a uri")
    assert code == 2
    assert "--aor" in err


# --------------------------------------------------------------------------- audit


def fold_of(events: list[RegistrationEvent]) -> dict[str, Any]:
    return replay(events).states


def write_bindings(settings: Settings, states: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """regstate.bindings as the engine must write it: public AorState, tombstone if empty."""
    records = [
        (aor.encode(), encode_state(s) if s.contacts else None, None)
        for aor, s in sorted(states.items())
    ]
    positions = asyncio.run(produce(settings, settings.topic("bindings"), records))
    return {aor: pos for (aor, _s), pos in zip(sorted(states.items()), positions, strict=True)}


def last_event_positions(settings: Settings) -> dict[str, tuple[int, int]]:
    """(partition, offset) of each AOR's last record in regstate.registrations."""

    async def go() -> dict[str, tuple[int, int]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        try:
            topic = settings.topic("registrations")
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: dict[str, tuple[int, int]] = {}
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for tp, recs in (await consumer.getmany(timeout_ms=500)).items():
                    for r in recs:
                        out[r.key.decode()] = (tp.partition, r.offset)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(go())


def test_audit_passes_on_a_correct_table_and_names_the_wrong_records(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = generated(1500, 40, seed=5)
    publish_file(capsys, write_jsonl(tmp_path / "log.jsonl", events))
    settings = env.settings
    states = fold_of(events)
    at = max(e.ts for e in events)
    live = {a for a, s in states.items() if s.only_active(at).contacts}
    assert 5 < len(live) < len(states)  # some AORs are tombstones at `at`
    write_bindings(settings, states)

    code, out, err = cli(capsys, "audit", "--at", str(at))
    assert code == 0, out + err
    assert f"checked {len(states)} AORs" in out
    assert "0 divergent" in out

    # A contact with another URI, and a phantom AOR.
    victim = sorted(live)[0]
    state = states[victim]
    target = state.only_active(at).contacts[0]
    wrong = state._replace(
        contacts=tuple(
            b._replace(uri="sip:evil@203.0.113.66:5060") if b == target else b
            for b in state.contacts
        )
    )
    phantom_aor = "sip:9999@pbx.example.com"
    phantom = state._replace(aor=phantom_aor)
    [(p_wrong, o_wrong), (p_ph, o_ph)] = asyncio.run(
        produce(
            settings,
            settings.topic("bindings"),
            [
                (victim.encode(), encode_state(wrong), None),
                (phantom_aor.encode(), encode_state(phantom), None),
            ],
        )
    )
    last = last_event_positions(settings)
    code, out, err = cli(capsys, "audit", "--at", str(at))
    assert code == 1, out + err
    assert f"checked {len(states) + 1} AORs" in out
    assert "2 divergent" in out
    bindings, registrations = settings.topic("bindings"), settings.topic("registrations")
    assert f"DIVERGENT {victim}: differs" in out
    assert "uri live 'sip:evil@203.0.113.66:5060' != log" in out
    p, o = last[victim]
    assert (
        f"live record: {bindings} p{p_wrong}@{o_wrong}; last event: {registrations} p{p}@{o}" in out
    )
    assert f"DIVERGENT {phantom_aor}: extra" in out
    assert f"live record: {bindings} p{p_ph}@{o_ph}; last event: none" in out

    code, out, _ = cli(capsys, "audit", "--at", str(at), "--format", "jsonl")
    assert code == 1
    found = {d["aor"]: d for d in map(orjson.loads, out.splitlines())}
    assert set(found) == {victim, phantom_aor}
    assert found[victim]["live_record"]["offset"] == o_wrong
    assert found[victim]["log_record"] == {"topic": registrations, "partition": p, "offset": o}

    # Repaired (the right value written again), the audit passes again.
    asyncio.run(produce(settings, settings.topic("bindings"), [
        (victim.encode(), encode_state(state), None), (phantom_aor.encode(), None, None)
    ]))  # fmt: skip
    code, out, _ = cli(capsys, "audit", "--at", str(at))
    assert code == 0, out


def test_audit_measures_and_waits_for_the_engine_group(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The engine's lag comes from its consumer group's commits (simulated here)."""
    events = generated(300, 10, seed=9)
    publish_file(capsys, write_jsonl(tmp_path / "log.jsonl", events))
    settings = env.settings
    write_bindings(settings, fold_of(events))
    topic = settings.topic("registrations")
    group = f"{settings.topic_prefix}engine"

    async def commit(fraction: float) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            # Committing needs group membership: join, wait for the assignment.
            consumer.subscribe([topic])
            await wait_until_async(
                lambda: _poll(consumer),
                30,
                message="group assignment",
            )
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
            await consumer.commit({tp: int(ends[tp] * fraction) for tp in tps})
        finally:
            await consumer.stop()

    async def _poll(consumer: Any) -> bool:
        await consumer.getmany(timeout_ms=100, max_records=1)
        return len(consumer.assignment()) == PARTITIONS

    at = str(max(e.ts for e in events))
    code, _, err = cli(capsys, "audit", "--at", at)
    assert code == 0
    assert f"consumer group {group} has no committed offsets" in err
    asyncio.run(commit(0.5))
    code, _, err = cli(capsys, "audit", "--at", at, "--wait-ms", "300")
    assert code == 0
    assert f"engine group {group} is " in err and "records behind" in err
    asyncio.run(commit(1.0))
    code, _, err = cli(capsys, "audit", "--at", at, "--wait-ms", "30000")
    assert code == 0
    assert "behind" not in err and "no committed offsets" not in err
