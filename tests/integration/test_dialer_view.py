"""The dialer view on the real broker: two views converge, lookups over HTTP, SSE pushes.

Records of regstate.bindings are made from ``processors.replay`` of a generated
log (tests/integration/dialer_support.py), under a topic prefix of this test only.
Clocks are injected (a fixed ``now``), every wait polls until a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from processors.dialer import ServerMap
from schemas import BindingEvent, encode_binding_event
from streams.cli import main
from streams.dialer.store import SqliteBindingStore
from streams.dialer.view import DialerViewService, sqlite_opener
from streams.log.topics import BINDING_EVENTS
from streams.settings import Settings
from tests.helpers import wait_until_async
from tests.integration.dialer_support import History, as_set, publish, view_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, db: Path, now: int, server_map: ServerMap | None = None
) -> AsyncIterator[DialerViewService]:
    """A dialer view in this loop, stopped (and its store closed) on exit."""
    service = DialerViewService(
        settings,
        sqlite_opener(str(db), clock=lambda: now),
        server_map=server_map or ServerMap({}, {}),
        clock=lambda: now,
        progress=False,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await wait_until_async(
            lambda: service.ready or task.done(), 60, message="dialer view ready"
        )
        if task.done():
            task.result()
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def rows_at(db: Path, now: int) -> set[tuple[str, str, str, str, int, int]]:
    store = SqliteBindingStore(db, read_only=True)
    try:
        return as_set(store.all_rows(now))
    finally:
        store.close()


async def test_two_views_converge_with_replay(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = view_settings(kafka_bootstrap)
    hist = History(n_events=3000, n_aors=300)
    first = hist.chunk(2000)
    await publish(settings, first)
    now = hist.now
    db1, db2 = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    async with running(settings, db1, now) as v1, running(settings, db2, now) as v2:
        # Ready means caught up with the end seen at start: every record already applied.
        assert v1.metrics.records_applied == len(first) == v2.metrics.records_applied
        assert rows_at(db1, now) == hist.expected(now) == rows_at(db2, now)
        # More history (replacements and tombstones) while both run.
        more = hist.chunk(1000)
        await publish(settings, more)
        final_now = hist.now
        expected = hist.expected(final_now)
        assert any(v is None for _, v in more), "the history should hold tombstones"
        await wait_until_async(
            lambda: rows_at(db1, final_now) == expected == rows_at(db2, final_now),
            60,
            message="both views equal to replay",
        )
        assert v1.metrics.records_applied == len(first) + len(more)
        assert v1.metrics.records_reread == 0
    assert len(expected) > 50


async def test_http_lookups_and_sse(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = view_settings(kafka_bootstrap)
    hist = History(n_events=600, n_aors=40)
    await publish(settings, hist.chunk(600))
    now = hist.now
    expected = hist.expected(now)
    aor, key, uri, node, expires_at, _ = sorted(expected)[0]
    ext = aor.split(":", 1)[1].split("@", 1)[0]
    server_map = ServerMap({ext: ("10.0.0.1",)}, {node: "10.0.0.9"})
    async with (
        running(settings, tmp_path / "v.sqlite3", now, server_map) as view,
        aiohttp.ClientSession(f"http://127.0.0.1:{view.port}") as http,
    ):
        async with http.get("/readyz") as r:
            assert r.status == 200
        async with http.get(f"/v1/extensions/{ext}") as r:
            assert r.status == 200
            body = await r.json()
        (entry,) = [a for a in body["aors"] if a["aor"] == aor]
        contact = next(c for c in entry["contacts"] if c["contact_key"] == key)
        assert contact["contact_uri"] == uri and contact["expires_at"] == expires_at
        assert contact["expires_in_s"] == (expires_at - now) // 1000
        assert (contact["expected_server"], contact["mismatch"]) == ("10.0.0.1", True)
        async with http.get(f"/v1/aors/{quote(aor, safe='')}") as r:
            assert r.status == 200
            assert (await r.json())["health"]["state"]
        async with http.get("/v1/aors/sip%3A999999%40nowhere") as r:
            assert r.status == 404
        async with http.get("/v1/extensions/999999") as r:
            assert r.status == 404
        async with http.get("/metrics") as r:
            text = await r.text()
        assert "regstate_dialer_records_applied_total" in text
        assert "regstate_dialer_ready 1" in text

        # SSE: subscribe to one extension; an event of another extension is not sent.
        async with http.get("/v1/events", params={"ext": ext}) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert await asyncio.wait_for(stream.content.readline(), 10) == b": subscribed\n"
            assert await stream.content.readline() == b"\n"
            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
            await producer.start()
            try:
                for target in ("sip:424242@pbx.example.com", aor):
                    be = BindingEvent(
                        target, 99, "expired", key, uri, now, node, "c", 1, expires_at, "x:1"
                    )
                    await producer.send_and_wait(
                        settings.topic(BINDING_EVENTS),
                        encode_binding_event(be),
                        key=target.encode(),
                    )
            finally:
                await producer.stop()
            lines = []
            while True:
                line = await asyncio.wait_for(stream.content.readline(), 20)
                if line == b"\n":
                    break
                lines.append(line.decode().rstrip("\n"))
        assert lines[:2] == ["id: 99", "event: expired"]
        data = orjson.loads(lines[2].removeprefix("data: "))
        assert data["aor"] == aor and data["extension"] == ext and data["mismatch"] is True
        assert view.metrics.events_pushed == 1


async def test_where_reads_file_or_topic(
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = view_settings(kafka_bootstrap)
    hist = History(n_events=400, n_aors=20)
    await publish(settings, hist.chunk(400))
    now = hist.now
    aor, _, uri, _, _, _ = sorted(hist.expected(now))[0]
    ext = aor.split(":", 1)[1].split("@", 1)[0]
    db = tmp_path / "w.sqlite3"
    monkeypatch.setenv("REGSTATE_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("REGSTATE_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("REGSTATE_DIALER_DB", str(db))
    # No file yet: an error naming it, never a silent answer from elsewhere (issue 16).
    code = await asyncio.to_thread(main, ["where", ext, "--at", str(now)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and str(db) in captured.err
    # --from-topic reads regstate.bindings (in a thread: it runs its own loop).
    code = await asyncio.to_thread(main, ["where", ext, "--at", str(now), "--from-topic"])
    out = capsys.readouterr().out
    assert code == 0 and "from topic" in out and uri in out
    async with running(settings, db, now):
        pass
    code = await asyncio.to_thread(main, ["where", aor, "--at", str(now), "--format", "json"])
    body = orjson.loads(capsys.readouterr().out)
    assert code == 0 and body["source"].startswith("dialer view file")
    assert uri in {c["contact_uri"] for c in body["aors"][0]["contacts"]}
    code = await asyncio.to_thread(main, ["where", "777777", "--at", str(now)])
    assert code == 1 and "no binding" in capsys.readouterr().out


async def test_a_store_of_another_prefix_is_dropped_not_resumed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """One SQLite file, the view's topic prefix changed (a test deployment's store
    reused by production): the view holds production's rows only, none left over from
    the old prefix's phones (D123)."""
    db = tmp_path / "v.sqlite3"
    before = view_settings(kafka_bootstrap)
    old = History(n_events=1500, n_aors=200)
    await publish(before, old.chunk(1500))
    async with running(before, db, old.now):
        pass
    assert rows_at(db, old.now) == old.expected(old.now)
    new = History(n_events=400, n_aors=40, seed=11)
    left_over = {row[0] for row in old.expected(old.now)} - {e.aor for e in new.events}
    assert len(left_over) > 20, "the old log should hold AORs the new one lacks"

    after = view_settings(kafka_bootstrap)
    records = new.chunk(400)
    await publish(after, records)
    async with running(after, db, new.now) as view:
        assert view.metrics.records_applied == len(records)
    assert rows_at(db, new.now) == new.expected(new.now)
    store = SqliteBindingStore(db, read_only=True)
    try:
        assert [aor for aor in sorted(left_over) if store.contacts_any_time(aor)] == []
        assert store.offsets(before.topic("bindings")) == {}
    finally:
        store.close()
