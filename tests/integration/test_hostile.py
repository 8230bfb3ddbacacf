"""The hostile corpus (tests/hostile/) against the real system on the real broker (issue 14).

One worker, one front-end, one dialer view and one alerting consumer run as
``python -m streams ...`` subprocesses on the topics of this test only. SIP
requests go to the front-end over raw UDP and TCP sockets; Kafka records are
produced straight to the topics. Afterwards every process is still running and
answering, each bad record is in the dead-letter topic or in a counter with its
reason, and regstate.bindings equals the fold of the good records.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from schemas import decode_event, encode_event
from streams.dialer.store import SqliteBindingStore
from streams.log.deadletter import headers_dict
from streams.sip.uac import Phone
from tests.helpers import PROJECT_ROOT, unique_name, wait_until
from tests.integration.dialer_support import as_set
from tests.integration.engine_harness import (
    NO_SWEEP,
    Worker,
    bindings_view,
    diff_views,
    engine_env,
    ensure,
    free_port,
    generate,
    metric_sum,
    now_ms,
    public_view,
    read_topic,
    replay_records,
    settings_of,
    wait_committed_to_end,
)
from tests.integration.test_frontend_sipp import REALM, Frontend, password, started_frontend
from tests.sip_client import UdpClient, options

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CORPUS = PROJECT_ROOT / "tests" / "hostile"
PYTHON = sys.executable


def corpus(kind: str) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((CORPUS / kind).glob("*.json"))}


# --------------------------------------------------------------------------- processes


@contextmanager
def service(name: str, args: list[str], env: dict[str, str], log: Path) -> Iterator[Any]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "streams", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def http(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - 127.0.0.1 only
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def metrics(url: str) -> dict[str, float]:
    _, body = http(url)
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# --------------------------------------------------------------------------- SIP


def fill(lines: list[str], port: int, pad: int) -> bytes:
    text = "\r\n".join(lines) + "\r\n\r\n"
    text = text.replace("{pad}", "x" * pad).replace("{port}", str(port))
    text = text.replace("{branch}", uuid.uuid4().hex).replace("{callid}", uuid.uuid4().hex)
    return text.encode()


async def register(fe_port: int, user: str, contacts: list[str] | None = None) -> int:
    """One REGISTER of ``user`` from a fresh UDP socket: challenge, answer; the status."""
    client = await UdpClient.open(fe_port)
    try:
        phone = Phone(user, password(user), domain=REALM, local_port=client.port)
        challenge = await client.request(phone.register(contacts=contacts))
        assert challenge.status == 401
        auth = phone.answer(challenge.all("www-authenticate"))
        return (await client.request(phone.register(contacts=contacts, authorization=auth))).status
    finally:
        client.close()


async def run_sip_corpus(fe: Frontend) -> dict[str, list[int]]:
    """Send every SIP corpus file; the statuses answered, per file."""
    got: dict[str, list[int]] = {}
    for name, case in corpus("sip").items():
        msg = case["message"]
        client = await UdpClient.open(fe.port)
        try:
            if "resend" in msg:
                data = fill(msg["lines"], client.port, msg.get("pad", 0))
                sends = [data] * msg["resend"]
            else:
                sends = [
                    fill(msg["lines"], client.port, msg.get("pad", 0))
                    for _ in range(msg.get("send", 1))
                ]
            got[name] = [await client.request_status(d) for d in sends]
        finally:
            client.close()
        then = case["expect"].get("then_registers")
        if then:
            got[name + ":then"] = [await register(fe.port, then)]
    return got


async def closed(reader: asyncio.StreamReader, timeout: float) -> bool:  # noqa: ASYNC109
    try:
        return await asyncio.wait_for(reader.read(10), timeout) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def tcp_flood_while_udp_registers(fe: Frontend, n: int) -> tuple[int, int, list[int], bytes]:
    """``n`` idle TCP connections from 127.0.0.1 while UDP phones register.

    Returns (refused, still open, UDP statuses, the pong to a double-CRLF ping)."""
    conns = []
    for _ in range(n):
        conns.append(await asyncio.open_connection("127.0.0.1", fe.port))
    try:
        statuses = [await register(fe.port, f"30{i:02d}") for i in range(20, 30)]
        # A refused connection is aborted at accept; an open one stays silent for 5 s.
        states = await asyncio.gather(*(closed(r, 5.0) for r, _ in conns))
        open_ = [c for c, shut in zip(conns, states, strict=True) if not shut]
        pong = b""
        if open_:
            reader, writer = open_[0]
            writer.write(b"\r\n\r\n")
            pong = await asyncio.wait_for(reader.readexactly(2), 5)
        return sum(states), len(open_), statuses, pong
    finally:
        for _, w in conns:
            w.close()


# --------------------------------------------------------------------------- Kafka


def build_record(case: dict[str, Any], i: int, now: int) -> tuple[str, bytes, bytes | None]:
    """(topic, key, value) of one Kafka corpus file."""
    rec = case["record"]
    topic = case["topic"]
    aor = rec.get("aor", f"sip:hostile-{i}@{REALM}")
    if topic == "registrations":
        ts = now + rec.get("ts_offset_ms", 0)
        node = rec.get("node", "fe-hostile")
        seq = ts * 1000 + rec.get("seq_ahead_us", 0)
        n = rec.get("contacts", 1)
        m: dict[str, Any] = {
            "v": 1, "kind": "register", "node": node, "seq": seq, "ts": ts, "aor": aor,
            "call_id": f"hostile-{i}", "cseq": 1,
            "source": {"ip": "192.0.2.66", "port": 5060, "transport": "udp"},
            "user_agent": "hostile", "path": [], "raw": None, "wildcard": False,
            "expires": None,
            "contacts": [
                {"uri": f"sip:h{j}@192.0.2.{j % 250}:5060", "expires": 3600, "q": None,
                 "instance": None, "reg_id": None}
                for j in range(n)
            ],
        }  # fmt: skip
        m.update(copy.deepcopy(rec.get("changes", {})))
        m["contacts"][0].update(rec.get("contact_changes", {}))
        m["id"] = f"{m['node']}:{m['seq']}"
        return topic, aor.encode(), msgpack.packb(m)
    if "raw" in rec:
        return topic, aor.encode(), rec["raw"].encode()
    if topic == "bindings":
        contact = {
            "key": "sip:h@192.0.2.1:5060", "uri": "sip:h@192.0.2.1:5060",
            "expires_at": now + 3_600_000, "registered_at": now, "refreshed_at": now,
            "call_id": "c", "cseq": 1, "q": None, "instance": None, "reg_id": None,
            "source": None, "user_agent": None, "node": "fe-hostile", "path": [],
        }  # fmt: skip
        contact.update(rec.get("contact_changes", {}))
        state = {"aor": aor, "version": 1, "updated_ts": now, "contacts": [contact]}
        return topic, aor.encode(), orjson.dumps(state)
    event = {
        "aor": aor, "version": 1, "event": "registered", "key": "k", "uri": "sip:h@192.0.2.1",
        "ts": now, "node": "fe-hostile", "call_id": "c", "cseq": 1, "expires_at": now + 1,
        "cause": "fe-hostile:1",
    }  # fmt: skip
    event.update(rec.get("event_changes", {}))
    return topic, aor.encode(), json.dumps(event).encode()  # json: ints past u64 allowed


async def produce(
    bootstrap: str, prefix: str, records: Sequence[tuple[str, bytes, bytes | None]]
) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
        max_request_size=4 * 1024 * 1024,
    )  # fmt: skip
    await producer.start()
    try:
        where = []
        for topic, key, value in records:
            meta = await producer.send_and_wait(prefix + topic, value, key=key)
            where.append((meta.partition, meta.offset))
        return where
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- the test


def test_hostile_corpus_against_the_real_system(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = unique_name("hostile") + "."
    env = engine_env(
        kafka_bootstrap, prefix, tmp_path / "worker", worker_id="h1", web_port=free_port(),
        grace_ms=NO_SWEEP,
    )  # fmt: skip
    settings = settings_of(env)
    ensure(settings)
    fe_web = free_port()
    side_env = {
        **os.environ,
        **{k: v for k, v in env.items() if k != "REGSTATE_WEB_PORT"},
        "REGSTATE_DIALER_WEB_PORT": str(free_port()),
        "REGSTATE_DIALER_DB": str(tmp_path / "dialer.sqlite3"),
        "REGSTATE_ALERTING_PORT": str(free_port()),
    }
    dialer_url = f"http://127.0.0.1:{side_env['REGSTATE_DIALER_WEB_PORT']}"
    alerting_url = f"http://127.0.0.1:{side_env['REGSTATE_ALERTING_PORT']}"
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        with (
            started_frontend(
                kafka_bootstrap, tmp_path / "fe", REGSTATE_TOPIC_PREFIX=prefix,
                REGSTATE_FRONTEND_WEB_PORT=str(fe_web), REGSTATE_SIP_RATE_PER_S="5000",
                REGSTATE_SIP_RATE_BURST="5000", REGSTATE_SIP_BAN_FAILURES="5",
                REGSTATE_SIP_TCP_MAX_PER_ADDRESS="50", REGSTATE_LOG_LEVEL="info",
            ) as fe,
            service("dialer", ["dialer-view"], side_env, tmp_path / "dialer.log") as dialer,
            service("alerting", ["alerting"], side_env, tmp_path / "alerting.log") as alerting,
        ):  # fmt: skip
            worker.wait_ready()
            # Real phones first, then the SIP corpus, the contact cap, the TCP flood.
            phones = [asyncio.run(register(fe.port, f"30{i:02d}")) for i in range(10, 20)]
            assert phones == [200] * 10
            sip = asyncio.run(run_sip_corpus(fe))
            for name, case in corpus("sip").items():
                assert set(sip[name]) == {case["expect"]["status"]}, (name, Counter(sip[name]))
                if case["expect"].get("then_registers"):
                    assert sip[name + ":then"] == [200], name  # defect 5: the next phone
            eleven = [f"<sip:3003@127.0.0.{i}:5060>" for i in range(1, 12)]
            assert asyncio.run(register(fe.port, "3003", eleven)) == 403  # defect 1
            refused, still_open, udp, pong = asyncio.run(tcp_flood_while_udp_registers(fe, 400))
            assert (refused, still_open) == (350, 50)  # defect 7
            assert udp == [200] * 10 and pong == b"\r\n"

            # The Kafka corpus, with good events around it.
            now = now_ms()
            kafka = corpus("kafka")
            bad = [build_record(case, i, now) for i, case in enumerate(kafka.values())]
            good = generate(200, 20, seed=14, start_ts=now)
            good_records = [("registrations", e.aor.encode(), encode_event(e)) for e in good]
            where = asyncio.run(produce(kafka_bootstrap, prefix, good_records[:100] + bad))
            asyncio.run(produce(kafka_bootstrap, prefix, good_records[100:]))
            # The real phone whose node the forged seq = 2**63 named registers afterwards.
            assert asyncio.run(register(fe.port, "3010")) == 200
            hostile_at = dict(zip(kafka, where[100:], strict=True))

            topic = settings.topic("registrations")
            wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", topic)

            # Every bad registrations record is on the dead-letter topic with its reason.
            letters = asyncio.run(read_topic(kafka_bootstrap, settings.topic("deadletter")))
            letter_at = {
                (int(h["regstate-source-partition"]), int(h["regstate-source-offset"])): h[
                    "regstate-error"
                ].decode()
                for h in (headers_dict(r.headers) for r in letters)
            }
            expected_letters = {
                hostile_at[name]: case["expect"]["deadletter"]
                for name, case in kafka.items()
                if "deadletter" in case["expect"]
            }
            assert letter_at == expected_letters
            wm = worker.metrics()
            assert metric_sum(wm, "regstate_deadletters_total") == len(expected_letters)
            capped = 'regstate_events_folded_total{kind="register",outcome="too_many_contacts"}'
            assert wm.get(capped)

            # The table is the fold of the good records (and only theirs).
            records = asyncio.run(read_topic(kafka_bootstrap, topic))
            hostile_offsets = {
                hostile_at[n] for n, c in kafka.items() if c["topic"] == "registrations"
            }
            good_log = [r for r in records if (r.partition, r.offset) not in hostile_offsets]
            replay = replay_records(good_log, settings.fold_policy())
            assert replay.refused == 0
            want = public_view(replay.states)
            hostile_keys = {f"sip:hostile-{i}@{REALM}" for i in range(len(kafka))}
            bindings = asyncio.run(read_topic(kafka_bootstrap, settings.topic("bindings")))
            got = bindings_view(r for r in bindings if r.key.decode() not in hostile_keys)
            assert not diff_views(got, want), diff_views(got, want)
            assert f"sip:3010@{REALM}" in got  # not silenced by the forged seq
            assert f"sip:3003@{REALM}" not in got  # 11 contacts: no binding anywhere
            fe_events = [
                decode_event(r.value) for r in records if r.key == f"sip:3003@{REALM}".encode()
            ]
            assert [(e.kind, e.reason) for e in fe_events] == [("reject", "too_many_contacts")]  # type: ignore[union-attr]
            unknown = [r for r in records if r.key.startswith((b"sip:9999@", b"sip:x"))]
            assert unknown == []  # defect 4: nothing logged for unauthenticated unknown users

            # The dialer view holds the same contacts, counted the bad records and is serving.
            dialer_bad = sum(c["expect"].get("dialer", 0) for c in kafka.values())
            wait_until(
                lambda: metrics(dialer_url + "/metrics").get("regstate_dialer_decode_errors_total")
                == dialer_bad,
                60, 0.5, "dialer view counted the bad records",
            )  # fmt: skip
            expected_rows = {
                (aor, b.key, b.uri, b.node, b.expires_at, s.version)
                for aor, s in replay.states.items()
                for b in s.active_contacts(now)
            }

            def dialer_rows() -> set[Any]:
                store = SqliteBindingStore(tmp_path / "dialer.sqlite3", read_only=True)
                try:
                    return as_set(r for r in store.all_rows(now) if r.aor not in hostile_keys)
                finally:
                    store.close()

            wait_until(lambda: dialer_rows() == expected_rows, 60, 0.5, "dialer rows = the fold")
            assert http(f"{dialer_url}/v1/aors/sip:3003@{REALM}")[0] == 404

            # Alerting skipped each bad record with its reason and is still consuming.
            want_skips = Counter(
                tuple(c["expect"]["alerting"]) for c in kafka.values() if "alerting" in c["expect"]
            )

            def skips() -> Counter[tuple[str, ...]]:
                out: Counter[tuple[str, ...]] = Counter()
                for name, value in metrics(alerting_url + "/metrics").items():
                    m = re.fullmatch(
                        r'regstate_alerting_skipped_total\{input="([^"]+)",reason="([^"]+)"\}', name
                    )
                    if m:
                        out[(m.group(1), m.group(2))] = int(value)
                return out

            wait_until(lambda: skips() == want_skips, 90, 0.5, "alerting skipped the bad records")

            # Every process is still running and answering.
            assert worker.alive() and worker.ready()
            assert fe.proc.poll() is None and http(f"http://127.0.0.1:{fe_web}/readyz")[0] == 200
            assert asyncio.run(options_answered(fe.port))
            assert dialer.poll() is None and http(dialer_url + "/readyz")[0] == 200
            assert alerting.poll() is None and http(alerting_url + "/healthz")[0] == 200
            log = (tmp_path / "worker.log").read_text()
            assert "Restarting dead" not in log and "Crashed reason" not in log
    finally:
        worker.stop()  # also when an assertion failed: no worker outlives the test


async def options_answered(port: int) -> bool:
    client = await UdpClient.open(port)
    try:
        return (await client.request(options(client.port))).status == 200
    finally:
        client.close()


async def test_readyz_flips_on_a_failed_record_and_back_on_the_next_ack(
    kafka_bootstrap: str,
) -> None:
    """Defect 6: /readyz stayed 200 while the node answered 503 to every REGISTER (D88).

    A record Kafka refuses (2 MiB, past the producer's 1 MiB request limit) makes
    the node's event log fail; /readyz turns 503, and 200 again with the next ack."""
    import aiohttp

    from schemas import RegistrationEvent
    from streams.frontend.eventlog import KafkaEventLog
    from streams.frontend.node import FrontendNode
    from streams.frontend.registrar import ExpiryPolicy, Registrar
    from streams.frontend.tables import SourceLimiter
    from streams.frontend.web import start_web
    from streams.log.topics import ensure_topics
    from streams.settings import Settings
    from streams.sip.digest import DigestAuthenticator, NonceIssuer

    settings = Settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=unique_name("readyz") + ".", partitions=2
    )
    await ensure_topics(settings)
    event_log = KafkaEventLog(settings)
    auth = DigestAuthenticator(REALM, {}, NonceIssuer(b"k" * 32, REALM, 300_000, now_ms))
    node = FrontendNode(
        node_id="fe-rz",
        registrar=Registrar(auth, ExpiryPolicy()),
        event_log=event_log,
        limiter=SourceLimiter(50, 100, 20, 300_000),
    )
    await event_log.start()
    runner, port = await start_web(node, event_log, "127.0.0.1", 0)

    def event(seq: int, raw: str | None = None) -> RegistrationEvent:
        ts = now_ms()
        return RegistrationEvent(
            "reject", f"fe-rz:{seq}", "fe-rz", seq, ts, f"sip:1@{REALM}", "c", seq,
            status=401, reason="auth_failed", raw=raw,
        )  # fmt: skip

    async def readyz(session: aiohttp.ClientSession) -> int:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
            return r.status

    try:
        assert await event_log.wait_ready(30)
        async with aiohttp.ClientSession() as session:
            await event_log.append(event(1))
            assert await readyz(session) == 200
            with pytest.raises(Exception, match=r"[Tt]oo ?[Ll]arge|size"):
                await event_log.append(event(2, raw="x" * (2 << 20)))
            assert await readyz(session) == 503
            await event_log.append(event(3))
            assert await readyz(session) == 200
    finally:
        await runner.cleanup()
        await event_log.stop()
