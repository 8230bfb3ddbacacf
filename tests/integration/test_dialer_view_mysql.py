"""The MariaDB/MySQL BindingStore (stage E) against a real MariaDB server.

The server is the private one of ``scripts/mariadb-up.sh`` (installed with
apt-get when missing, started on 127.0.0.1:3307), or the one named by
``$REGSTATE_TEST_MARIADB_DSN``. Each test uses a database of its own. The same
contract as the SQLite store: batches with their offsets in one transaction,
tombstones, lookups with the active filter; and a dialer view on MariaDB ends
on the same rows as ``processors.replay`` and as a dialer view on SQLite.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT
from tests.integration.dialer_support import History, RowKey, as_set, publish, view_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

T0 = 1_767_225_600_000
TOPIC = "t.bindings"


@pytest.fixture(scope="session")
def mariadb_server() -> str:
    """DSN of a running MariaDB whose user may create databases.

    ``REGSTATE_SKIP_MARIADB=1`` skips these tests (a machine without apt-get or root).
    """
    if os.environ.get("REGSTATE_SKIP_MARIADB") == "1":
        pytest.skip("REGSTATE_SKIP_MARIADB=1")
    external = os.environ.get("REGSTATE_TEST_MARIADB_DSN")
    if external:
        return external
    out = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "mariadb-up.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def mariadb_dsn(mariadb_server: str) -> Iterator[str]:
    """A fresh database on the server, dropped afterwards."""
    import pymysql

    from streams.dialer.mysql import MysqlDsn

    base = MysqlDsn.parse(mariadb_server)
    name = f"regstate_t_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(
        host=base.host, port=base.port, user=base.user, password=base.password, autocommit=True
    )
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield f"mysql://{base.user}:{base.password}@{base.host}:{base.port}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


def test_mysql_store_contract(mariadb_dsn: str) -> None:
    import pymysql

    from schemas import AorState, Binding, Health, Source
    from streams.dialer.mysql import MysqlBindingStore
    from streams.dialer.store import record_from_state, tombstone

    def state(aor: str, *keys_exp: tuple[str, int], version: int = 1) -> AorState:
        contacts = tuple(
            Binding(
                k,
                k,
                e,
                T0,
                T0,
                "c",
                1,
                None,
                None,
                None,
                Source("192.0.2.1", 5060, "udp"),
                "ua",
                "fe1",
                (),
            )
            for k, e in keys_exp
        )
        return AorState(aor, version, T0, contacts, Health("registered", T0))

    a, b = "sip:1001@a.example", "sip:1001@b.example"
    store = MysqlBindingStore(mariadb_dsn, clock=lambda: T0)
    reader = MysqlBindingStore(mariadb_dsn, read_only=True, clock=lambda: T0)
    try:
        store.apply_batch(
            [
                record_from_state(state(a, ("sip:x@1", T0 + 5000), ("sip:y@1", T0 - 1)), T0),
                record_from_state(state(b, ("sip:z@1", T0 + 9000)), T0),
            ],
            {(TOPIC, 0): 2},
        )
        assert [(r.aor, r.contact_key) for r in reader.lookup("1001")] == [
            (a, "sip:x@1"),
            (b, "sip:z@1"),
        ]
        assert [r.aor for r in reader.lookup("1001", now_ms=T0 + 5000)] == [b]
        assert len(reader.contacts_any_time(a)) == 2
        # Replace, then tombstone in one batch: rows gone, health and removal time kept.
        store.apply_batch(
            [
                record_from_state(state(a, ("sip:x@1", T0 + 7000), version=2), T0),
                tombstone(a, T0 + 3),
            ],
            {(TOPIC, 0): 4},
        )
        assert reader.contacts_any_time(a) == []
        (info,) = reader.aor_info(a)
        assert (info.removed_at, info.version, info.last_expires_at) == (T0 + 3, 2, T0 + 7000)
        assert info.health is not None and info.health["state"] == "registered"
        # A failing batch leaves neither rows nor offsets behind.
        good = record_from_state(state(a, ("sip:w@1", T0 + 1000)), T0)
        assert good.contacts is not None
        row = good.contacts[0]
        broken = dataclasses.replace(good, contacts=((*row[:4], None, *row[5:]),))
        with pytest.raises(pymysql.err.IntegrityError):
            store.apply_batch([tombstone(b, T0), broken], {(TOPIC, 0): 9})
        assert store.offsets(TOPIC) == {0: 4}
        assert [r.aor for r in reader.lookup("1001")] == [b]
    finally:
        store.close()
        reader.close()


async def test_dialer_view_on_mariadb_matches_replay_and_sqlite(
    kafka_bootstrap: str, mariadb_dsn: str, tmp_path: Path
) -> None:
    from streams.dialer.mysql import MysqlBindingStore, mysql_opener
    from streams.dialer.store import SqliteBindingStore
    from streams.dialer.view import DialerViewService, sqlite_opener

    settings = view_settings(kafka_bootstrap)
    hist = History(n_events=2000, n_aors=200, seed=5)
    first = hist.chunk(1500)
    await publish(settings, first)
    db = tmp_path / "v.sqlite3"
    services = [
        DialerViewService(settings, mysql_opener(mariadb_dsn), progress=False),
        DialerViewService(settings, sqlite_opener(str(db)), progress=False),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in services]
    try:
        for s, t in zip(services, tasks, strict=True):
            while not s.ready:
                assert not t.done(), t.exception() if t.done() else None
                await asyncio.sleep(0.05)
        await publish(settings, hist.chunk(500))
        now = hist.now
        expected = hist.expected(now)

        def rows() -> tuple[set[RowKey], set[RowKey]]:
            my = MysqlBindingStore(mariadb_dsn, read_only=True)
            lite = SqliteBindingStore(db, read_only=True)
            try:
                return as_set(my.all_rows(now)), as_set(lite.all_rows(now))
            finally:
                my.close()
                lite.close()

        from tests.helpers import wait_until_async

        await wait_until_async(
            lambda: rows() == (expected, expected), 60, message="MariaDB and SQLite equal replay"
        )
        assert services[0].metrics.records_reread == 0
    finally:
        stop.set()
        await asyncio.gather(*tasks)
