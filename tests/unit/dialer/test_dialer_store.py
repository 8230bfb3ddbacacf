"""The dialer view's SQLite store: batches with offsets, tombstones, lookups, the active filter."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.dialer import ServerMap
from schemas import AorState, Binding, Health, Source
from schemas.state import HealthState
from streams.dialer.report import DialerView, build_reports, render_text
from streams.dialer.store import (
    SqliteBindingStore,
    StoreRecord,
    record_from_state,
    tombstone,
)

T0 = 1_767_225_600_000
TOPIC = "t.bindings"


def binding(key: str, expires_at: int, node: str = "fe1", registered_at: int = T0) -> Binding:
    return Binding(
        key=key,
        uri=key,
        expires_at=expires_at,
        registered_at=registered_at,
        refreshed_at=registered_at,
        call_id="c1",
        cseq=1,
        q=None,
        instance=None,
        reg_id=None,
        source=Source("198.51.100.7", 5062, "udp"),
        user_agent="Yealink",
        node=node,
        path=(),
    )


def state(
    aor: str, *contacts: Binding, version: int = 1, health: HealthState = "registered"
) -> AorState:
    return AorState(aor, version, T0, tuple(contacts), Health(state=health, since=T0))


def rec(aor: str, s: AorState | None, ts: int) -> StoreRecord:
    return tombstone(aor, ts) if s is None else record_from_state(s, ts)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteBindingStore]:
    s = SqliteBindingStore(tmp_path / "v.sqlite3", clock=lambda: T0)
    yield s
    s.close()


def test_record_replaces_rows_and_tombstone_deletes(store: SqliteBindingStore) -> None:
    a = "sip:1001@a.example"
    store.apply_batch(
        [rec(a, state(a, binding("sip:x@1", T0 + 60_000), binding("sip:y@2", T0 + 60_000)), T0)],
        {(TOPIC, 0): 1},
    )
    assert [r.contact_key for r in store.lookup_aor(a)] == ["sip:x@1", "sip:y@2"]
    store.apply_batch(
        [rec(a, state(a, binding("sip:y@2", T0 + 90_000), version=2), T0)], {(TOPIC, 0): 2}
    )
    rows = store.lookup_aor(a)
    assert [(r.contact_key, r.expires_at, r.version) for r in rows] == [("sip:y@2", T0 + 90_000, 2)]
    store.apply_batch([rec(a, None, T0 + 5)], {(TOPIC, 0): 3})
    assert store.lookup_aor(a) == []
    assert store.contacts_any_time(a) == []
    (info,) = store.aor_info(a)
    assert info.removed_at == T0 + 5
    assert info.health is not None and info.health["state"] == "registered"
    assert info.last_expires_at == T0 + 90_000
    assert store.offsets(TOPIC) == {0: 3}


def test_tombstone_in_same_batch_keeps_health_of_earlier_state(store: SqliteBindingStore) -> None:
    a = "sip:1002@a.example"
    store.apply_batch(
        [
            rec(a, state(a, binding("sip:z@1", T0 + 1000), health="flapping"), T0),
            rec(a, None, T0 + 7),
        ],
        {(TOPIC, 1): 10},
    )
    assert store.contacts_any_time(a) == []
    (info,) = store.aor_info(a)
    assert (info.removed_at, info.health and info.health["state"]) == (T0 + 7, "flapping")
    # Tombstone of an AOR never seen: remembered with unknown health.
    store.apply_batch([rec("sip:9@b.example", None, T0 + 9)], {(TOPIC, 1): 11})
    (info,) = store.aor_info("sip:9@b.example")
    assert info.health is None and info.removed_at == T0 + 9
    # A later state clears removed_at.
    store.apply_batch([rec(a, state(a, binding("sip:z@1", T0 + 9000), version=5), T0)], {})
    (info,) = store.aor_info(a)
    assert info.removed_at is None and info.version == 5


def test_offsets_commit_with_rows_or_not_at_all(store: SqliteBindingStore, tmp_path: Path) -> None:
    a = "sip:1003@a.example"
    store.apply_batch([rec(a, state(a, binding("sip:q@1", T0 + 1000)), T0)], {(TOPIC, 0): 4})

    good = rec("sip:1004@a.example", state("sip:1004@a.example", binding("sip:w@1", T0)), T0)
    assert good.contacts is not None
    # A contact row that cannot be stored (NOT NULL node) fails mid-transaction.
    broken = dataclasses.replace(
        good, contacts=((*good.contacts[0][:4], None, *good.contacts[0][5:]),)
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.apply_batch(
            [rec(a, None, T0), broken],
            {(TOPIC, 0): 9},
        )
    # Neither the tombstone nor the offset went in.
    assert store.offsets(TOPIC) == {0: 4}
    assert len(store.lookup_aor(a)) == 1
    # Another connection (a restart) sees the same.
    other = SqliteBindingStore(tmp_path / "v.sqlite3", read_only=True)
    assert other.offsets(TOPIC) == {0: 4}
    other.close()


def test_extension_lookup_spans_domains_and_filters_by_time(store: SqliteBindingStore) -> None:
    a, b, c = "sip:1001@a.example", "sip:1001@b.example", "sip:1002@a.example"
    store.apply_batch(
        [
            rec(a, state(a, binding("sip:a@1", T0 + 10_000)), T0),
            rec(b, state(b, binding("sip:b@1", T0 + 20_000), binding("sip:b@2", T0 - 1)), T0),
            rec(c, state(c, binding("sip:c@1", T0 + 10_000)), T0),
        ],
        {(TOPIC, 0): 3},
    )
    assert [(r.aor, r.contact_key) for r in store.lookup("1001")] == [
        (a, "sip:a@1"),
        (b, "sip:b@1"),
    ]
    # The injected clock decides; expires_at == now is not active (R6).
    assert [r.aor for r in store.lookup("1001", now_ms=T0 + 10_000)] == [b]
    assert store.lookup("1001", now_ms=T0 + 20_000) == []
    assert [r.extension for r in store.lookup(c)] == ["1002"]
    assert len(store.contacts_any_time("1001")) == 3
    assert len(store.all_rows()) == 3


def test_reports_and_text_say_why_not(store: SqliteBindingStore, tmp_path: Path) -> None:
    a, gone = "sip:1001@a.example", "sip:1005@a.example"
    store.apply_batch(
        [
            rec(a, state(a, binding("sip:a@1", T0 + 30_000, node="fe2")), T0),
            rec(gone, state(gone, binding("sip:g@1", T0 - 5000)), T0 - 9000),
        ],
        {(TOPIC, 0): 2},
    )
    text, code = render_text("1001", build_reports(store, "1001", _map(), T0))
    assert code == 0
    assert "expires in 30 s" in text and "udp 198.51.100.7:5062" in text and "MISMATCH" in text
    text, code = render_text(gone, build_reports(store, gone, _map(), T0))
    assert code == 1 and "expired at" in text
    store.apply_batch([rec(gone, None, T0 - 2000)], {(TOPIC, 0): 3})
    text, code = render_text(gone, build_reports(store, gone, _map(), T0))
    assert code == 1 and "unregistered/expired since 2025-12-31T23:59:58.000Z" in text
    text, code = render_text("4242", build_reports(store, "4242", _map(), T0))
    assert code == 1 and "no binding" in text
    # The read-only Python API over the same file.
    with DialerView(tmp_path / "v.sqlite3", server_map=_map(), clock=lambda: T0) as view:
        (p,) = view.where("1001")
        assert p.as_dict()["mismatch"] is True and p.as_dict()["expected_server"] == "10.0.0.1"
        assert p.expires_in_s == 30
        with pytest.raises(sqlite3.OperationalError):
            view.store.conn.execute("DELETE FROM regstate_bindings")


def _map() -> ServerMap:
    return ServerMap({"1001": ("10.0.0.1",)}, {"fe1": "10.0.0.1", "fe2": "10.0.0.2"})


def test_record_from_json_refuses_foreign_shapes() -> None:
    from streams.dialer.store import record_from_json

    s = state("sip:1@a", binding("sip:k@1", T0 + 1))
    ok = record_from_state(s, T0)
    assert ok.contacts is not None and ok.contacts[0][0] == "1"
    with pytest.raises(ValueError):
        record_from_json("sip:2@a", b'{"aor": "sip:1@a"}', T0)  # key is another AOR
    with pytest.raises(KeyError):
        record_from_json("sip:1@a", b'{"aor": "sip:1@a", "contacts": [{"uri": "x"}]}', T0)
    with pytest.raises(TypeError):
        record_from_json(
            "sip:1@a",
            b'{"aor": "sip:1@a", "contacts": [{"key": "k", "uri": "u", "node": "n",'
            b' "expires_at": "soon", "registered_at": 1, "refreshed_at": 1}]}',
            T0,
        )
    with pytest.raises(ValueError):
        record_from_json("sip:1@a", b"not json", T0)


def test_settings_and_dsn() -> None:
    from streams.dialer.mysql import DsnError, MysqlDsn
    from streams.settings import Settings

    s = Settings.from_env({"REGSTATE_DATA_DIR": "/var/lib/rs"})
    assert s.dialer_db_path() == "/var/lib/rs/dialer-view.sqlite3"
    assert Settings.from_env({"REGSTATE_DIALER_DB": "/x.db"}).dialer_db_path() == "/x.db"
    d = MysqlDsn.parse("mysql://u:p%40ss@127.0.0.1:3307/dialer")
    assert (d.user, d.password, d.host, d.port, d.database) == (
        "u",
        "p@ss",
        "127.0.0.1",
        3307,
        "dialer",
    )
    assert MysqlDsn.parse("mariadb://u@db/x").port == 3306
    for bad in ("postgres://u@h/x", "mysql://u@h/", "mysql:///x"):
        with pytest.raises(DsnError):
            MysqlDsn.parse(bad)


async def test_readyz_and_metrics_before_and_after_catch_up(tmp_path: Path) -> None:
    from streams.dialer.view import DialerViewService, sqlite_opener
    from streams.metrics.dialer import render_metrics
    from streams.settings import Settings

    service = DialerViewService(
        Settings(), sqlite_opener(str(tmp_path / "r.sqlite3")), progress=False
    )
    request: Any = None  # the handlers do not look at it
    assert (await service.h_readyz(request)).status == 503
    service.caught_up.set()
    assert (await service.h_readyz(request)).status == 503  # push consumer not positioned
    service.events_ready.set()
    assert (await service.h_readyz(request)).status == 200
    service.metrics.records_applied = 7
    service.metrics.resumed_from = {0: 3, 1: 4}
    text = render_metrics(service.metrics, ready=service.ready, rows=2)
    assert "regstate_dialer_records_applied_total 7" in text
    assert 'regstate_dialer_resumed_from_offset{partition="1"} 4' in text
    assert "regstate_dialer_ready 1" in text


@pytest.mark.parametrize(
    "contact",
    [
        {"expires_at": 2**63 - 1},
        {"registered_at": 2**63},
        {"source": {"ip": "192.0.2.1", "port": 2**63, "transport": "udp"}},
        {"source": {"ip": "192.0.2.1", "port": -1, "transport": "udp"}},
        {"user_agent": 5},
    ],
)
def test_numbers_sqlite_cannot_hold_are_refused_before_the_batch(
    contact: dict[str, object], store: SqliteBindingStore
) -> None:
    """A ts or port past int64 raised OverflowError inside the transaction: a crash loop
    on the same record. Now the record is refused at decode (ValueError/TypeError,
    counted and skipped by the view) and the batch commits (D82)."""
    import orjson

    from streams.dialer.store import record_from_json

    good = {"key": "k", "uri": "sip:k@1", "node": "fe1", "expires_at": T0 + 1}
    good |= {"registered_at": T0, "refreshed_at": T0}
    value = orjson.dumps({"aor": "sip:1@a", "contacts": [good | contact]})
    with pytest.raises((ValueError, TypeError)):
        record_from_json("sip:1@a", value, T0)
    store.apply_batch(
        [record_from_json("sip:1@a", orjson.dumps({"aor": "sip:1@a", "contacts": [good]}), T0)],
        {("t", 0): 1},
    )
    assert len(store.lookup_aor("sip:1@a", T0)) == 1


async def test_sse_streams_are_capped_and_bad_binding_events_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D86: past the subscriber cap an SSE client gets 503; D82: a binding event that is
    not one is counted, never raised into the push consumer."""
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from streams.dialer import view
    from streams.settings import Settings

    monkeypatch.setattr(view, "SSE_MAX_SUBSCRIBERS", 2)
    service = view.DialerViewService(
        Settings(), view.sqlite_opener(str(tmp_path / "s.sqlite3")), progress=False
    )
    app = web.Application()
    app.router.add_get("/v1/events", service.h_events)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("/v1/events"))
        first = await session.get(url)
        second = await session.get(url)
        for r in (first, second):
            assert r.status == 200 and await r.content.readline() == b": subscribed\n"
        third = await session.get(url)
        assert third.status == 503 and service.metrics.sse_refused == 1
        for bad in (b"not json", b'{"aor": 5, "version": 1}', b"[1, 2]", b'{"aor": "sip:1@a"}'):
            service._push(bad)
        assert service.metrics.decode_errors == 4
        for r in (first, second, third):
            r.close()
