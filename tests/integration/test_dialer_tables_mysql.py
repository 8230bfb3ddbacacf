"""The dialer view's tables for other software on a real MariaDB.

* VICIdial's ``phones`` table (1,000 phones) as the source of expected phones:
  an added phone and a moved ``server_ip`` are picked up within one refresh,
  ``regstate_phone_status`` flags a phone on the wrong server and one not
  registered at all.
* Asterisk's ``ps_contacts``, created by the test from the column list of
  Asterisk's alembic migrations (contrib/ast-db-manage), written through by the
  store; Kamailio's ``location`` in the same transaction, DATETIMEs as db_mysql
  writes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import pytest

from schemas import AorState, Binding, Health, Source, encode_state
from streams.dialer.sql import local_datetime
from streams.dialer.store import ExtraTables, record_from_state, tombstone
from tests.helpers import wait_until_async
from tests.integration.dialer_support import publish, view_settings
from tests.integration.test_dialer_view_mysql import mariadb_dsn, mariadb_server

if TYPE_CHECKING:
    from streams.dialer.mysql import MysqlBindingStore

__all__ = ["mariadb_dsn", "mariadb_server"]  # fixtures used by name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Asterisk's ps_contacts after every migration of contrib/ast-db-manage that touches it
# (43956d550a44 creates id/uri/expiration_time/qualify_frequency; later ones add
# outbound_proxy, path, user_agent, qualify_timeout, reg_server, authenticate_qualify,
# via_addr, via_port, call_id, endpoint, prune_on_boot, qualify_2xx_only and resize).
AST_BOOL = "ENUM('0','1','off','on','false','true','no','yes')"
PS_CONTACTS_MIGRATED = [
    ("id", "VARCHAR(255) NOT NULL"),
    ("uri", "VARCHAR(511)"),
    ("expiration_time", "BIGINT"),
    ("qualify_frequency", "INTEGER"),
    ("outbound_proxy", "VARCHAR(255)"),
    ("path", "TEXT"),
    ("user_agent", "VARCHAR(255)"),
    ("qualify_timeout", "FLOAT"),
    ("reg_server", "VARCHAR(255)"),
    ("authenticate_qualify", AST_BOOL),
    ("via_addr", "VARCHAR(40)"),
    ("via_port", "INTEGER"),
    ("call_id", "VARCHAR(255)"),
    ("endpoint", "VARCHAR(255)"),
    ("prune_on_boot", AST_BOOL),
    ("qualify_2xx_only", AST_BOOL),
]


def connect(dsn: str) -> Any:
    from streams.dialer.mysql import MysqlDsn, connect

    return connect(MysqlDsn.parse(dsn), autocommit=True)


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def binding(ext: str, node: str, now_ms: int, port: int = 5062) -> Binding:
    uri = f"sip:{ext}@192.0.2.10:{port}"
    return Binding(
        key=uri, uri=uri, expires_at=now_ms + 3_600_000, registered_at=now_ms - 5_000,
        refreshed_at=now_ms - 5_000, call_id=f"c-{ext}", cseq=2, q=None, instance=None,
        reg_id=None, source=Source("198.51.100.7", port, "udp"), user_agent="Yealink",
        node=node, path=(),
    )  # fmt: skip


async def test_phones_from_vicidial_mariadb(kafka_bootstrap: str, mariadb_dsn: str) -> None:
    from processors.dialer import ServerMap
    from streams.dialer.mysql import mysql_opener
    from streams.dialer.phones import load_phones
    from streams.dialer.view import DialerViewService

    rows = [(str(2000 + i), "10.0.0.1" if i % 2 else "10.0.0.2", "Y", "SIP") for i in range(1000)]
    rows += [("7001", "10.0.0.1", "N", "SIP"), ("7002", "10.0.0.1", "Y", "IAX2")]
    conn = connect(mariadb_dsn)
    with conn.cursor() as cur:
        # The columns of VICIdial's phones table the view reads (the real one has ~100 more).
        cur.execute(
            "CREATE TABLE phones (extension VARCHAR(100), dialplan_number VARCHAR(20), "
            "server_ip VARCHAR(15), active ENUM('Y','N') DEFAULT 'Y', "
            "protocol ENUM('SIP','Zap','IAX2','EXTERNAL') DEFAULT 'SIP')"
        )
        cur.executemany(
            "INSERT INTO phones (extension, server_ip, active, protocol) VALUES (%s,%s,%s,%s)",
            rows,
        )
    conn.close()
    phones = load_phones(mariadb_dsn)
    assert len(phones) == 1000 and "7001" not in phones and "7002" not in phones

    settings = dataclasses.replace(view_settings(kafka_bootstrap), dialer_phones_refresh_s=1)
    now = time.time_ns() // 1_000_000
    # 2001 expects 10.0.0.1 and registered at fe1 (10.0.0.1); 2003 expects 10.0.0.1 but
    # registered at fe2#0 (a process of fe2 = 10.0.0.2); 2005 never registered.
    records = [
        (f"sip:{ext}@pbx.example".encode(), encode_state(AorState(
            f"sip:{ext}@pbx.example", 1, now, (binding(ext, node, now),),
            Health("registered", now),
        )))
        for ext, node in (("2001", "fe1"), ("2003", "fe2#0"))
    ]  # fmt: skip
    await publish(settings, records)
    service = DialerViewService(
        settings,
        mysql_opener(mariadb_dsn),
        server_map=ServerMap(phones, {"fe1": "10.0.0.1", "fe2": "10.0.0.2"}),
        progress=False,
        phones_source=mariadb_dsn,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await wait_until_async(lambda: service.ready or task.done(), 60, message="ready")
        assert not task.done(), task.exception()

        def status(ext: str) -> list[tuple[Any, ...]]:
            return query(
                mariadb_dsn,
                "SELECT expected_server, registered, node, server, contact, source, since, "
                "expires, health, mismatch FROM regstate_phone_status WHERE extension = %s",
                (ext,),
            )

        await wait_until_async(lambda: len(status("2003")) == 1 and status("2003")[0][1] == "Y")
        (ok,) = status("2001")
        (wrong,) = status("2003")
        (absent,) = status("2005")
        assert ok[1] == "Y" and ok[3] == "10.0.0.1" and ok[9] == "N" and ok[8] == "registered"
        assert ok[4] == "sip:2001@192.0.2.10:5062" and ok[5] == "198.51.100.7:5062"
        assert type(ok[6]).__name__ == "datetime" and type(ok[7]).__name__ == "datetime"
        assert wrong[0] == "10.0.0.1" and wrong[3] == "10.0.0.2" and wrong[9] == "Y"
        assert absent[1] == "N" and absent[2] is None and absent[9] is None
        (n,) = query(mariadb_dsn, "SELECT count(*) FROM regstate_phone_status")[0]
        assert n == 1000

        # An admin adds a phone and moves 2003 to the server it registered at.
        before = service.metrics.phones_refreshes
        conn = connect(mariadb_dsn)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO phones (extension, server_ip) VALUES ('5000', '10.0.0.9')")
            cur.execute("UPDATE phones SET server_ip = '10.0.0.2' WHERE extension = '2003'")
        conn.close()
        # The map is swapped and the refresh counted in one step of the loop: polled
        # in-process, the count read when the change shows is the refresh that brought it.
        await wait_until_async(
            lambda: (
                service.server_map.phones.get("5000") == ("10.0.0.9",)
                and service.server_map.phones.get("2003") == ("10.0.0.2",)
            ),
            30,
            0.01,
        )
        # Within one refresh (plus the one that may have been reading meanwhile).
        assert service.metrics.phones_refreshes - before <= 2
        (moved,) = status("2003")
        assert moved[0] == "10.0.0.2" and moved[9] == "N"
        assert status("5000")[0][:2] == ("10.0.0.9", "N")
        assert service.server_map.phones["5000"] == ("10.0.0.9",)
        assert service.server_map.check("2003", "fe2#0").mismatch is False
        assert service.metrics.phones_refresh_errors == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _store_with_both_tables(dsn: str) -> MysqlBindingStore:
    """A MariaDB store that keeps Kamailio's ``location`` and Asterisk's ``ps_contacts``
    (the latter created as Asterisk's migrations leave it)."""
    from streams.dialer.mysql import MysqlBindingStore

    cols = ", ".join(f"{name} {kind}" for name, kind in PS_CONTACTS_MIGRATED)
    query(dsn, f"CREATE TABLE ps_contacts ({cols}, UNIQUE (id), UNIQUE (id, reg_server))")
    return MysqlBindingStore(
        dsn, tables=ExtraTables(kamailio_location=True, asterisk_contacts=True)
    )


def test_ps_contacts_and_location_on_mariadb(mariadb_dsn: str) -> None:
    store = _store_with_both_tables(mariadb_dsn)
    tables = store.tables
    try:
        now = 1_767_225_600_000
        b1, b2 = binding("1001", "fe1", now), binding("1001", "fe2", now, port=5070)
        state = AorState("sip:1001@pbx.example", 1, now, (b1, b2), Health())
        store.apply_batch([record_from_state(state, now, tables)], {("t", 0): 1})
        got = query(
            mariadb_dsn,
            "SELECT id, uri, expiration_time, endpoint, via_addr, via_port, call_id, user_agent, "
            "prune_on_boot, authenticate_qualify, qualify_2xx_only, reg_server "
            "FROM ps_contacts ORDER BY via_port",
        )
        assert [(g[0].split(";@")[0], g[1], g[2], g[3], g[5]) for g in got] == [
            ("1001", b1.uri, b1.expires_at // 1000, "1001", 5062),
            ("1001", b2.uri, b2.expires_at // 1000, "1001", 5070),
        ]
        assert got[0][8:] == ("no", "no", "no", "")
        loc = query(mariadb_dsn, "SELECT username, domain, contact, expires FROM location")
        assert len(loc) == 2 and {r[2] for r in loc} == {b1.uri, b2.uri}
        # DATETIME in local time, as Kamailio's db_mysql writes and reads it.
        assert loc[0][3].strftime("%Y-%m-%d %H:%M:%S") == local_datetime(b1.expires_at // 1000)
        (v,) = query(mariadb_dsn, "SELECT table_version FROM version WHERE table_name='location'")
        assert v == (9,)
        # One contact left, then none: both tables follow in the same transaction.
        store.apply_batch(
            [record_from_state(state._replace(contacts=(b2,)), now, tables)], {("t", 0): 2}
        )
        assert query(mariadb_dsn, "SELECT via_port FROM ps_contacts") == [(5070,)]
        assert query(mariadb_dsn, "SELECT count(*) FROM location") == [(1,)]
        store.apply_batch([tombstone(state.aor, now)], {("t", 0): 3})
        assert query(mariadb_dsn, "SELECT count(*) FROM ps_contacts") == [(0,)]
        assert query(mariadb_dsn, "SELECT count(*) FROM location") == [(0,)]
    finally:
        store.close()


def test_a_copy_of_another_log_is_dropped_on_mariadb(mariadb_dsn: str) -> None:
    """keep_only on MariaDB: another topic's rows, and the Kamailio and Asterisk rows made
    from them, go in one transaction; rows other software wrote stay (D123)."""
    store = _store_with_both_tables(mariadb_dsn)
    tables = store.tables
    try:
        now = 1_767_225_600_000
        state = AorState("sip:1001@pbx.example", 1, now, (binding("1001", "fe1", now),), Health())
        store.apply_batch([record_from_state(state, now, tables)], {("a.bindings", 0): 4})
        query(
            mariadb_dsn, "INSERT INTO location (ruid, username, contact) VALUES ('k1', '2001', 'x')"
        )
        query(mariadb_dsn, "INSERT INTO ps_contacts (id, uri) VALUES ('2001;@x', 'sip:2001@x')")
        assert store.keep_only("a.bindings", {0: 4}) is None
        assert store.count_rows() == 1
        assert store.keep_only("b.bindings", {0: 9}) == (
            "the store holds a copy of a.bindings, not of b.bindings"
        )
        assert store.count_rows() == 0 and store.offsets("a.bindings") == {}
        assert query(mariadb_dsn, "SELECT ruid FROM location") == [("k1",)]
        assert query(mariadb_dsn, "SELECT id FROM ps_contacts") == [("2001;@x",)]
        assert query(mariadb_dsn, "SELECT count(*) FROM regstate_aors") == [(0,)]
    finally:
        store.close()


async def test_a_blocked_mariadb_lookup_does_not_stall_the_view(
    kafka_bootstrap: str, mariadb_dsn: str
) -> None:
    """Another session holds a write lock on regstate_bindings: a lookup waits for it in
    the reader thread while /healthz and /metrics still answer."""
    import aiohttp

    from streams.dialer.mysql import mysql_opener
    from streams.dialer.view import DialerViewService

    settings = view_settings(kafka_bootstrap)
    now = time.time_ns() // 1_000_000
    state = AorState("sip:2001@pbx.example", 1, now, (binding("2001", "fe1", now),))
    await publish(settings, [(state.aor.encode(), encode_state(state))])
    service = DialerViewService(settings, mysql_opener(mariadb_dsn), progress=False)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    locker = connect(mariadb_dsn)
    try:
        await wait_until_async(lambda: service.ready or task.done(), 60, message="ready")
        assert not task.done(), task.exception()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{service.port}") as http:
            with locker.cursor() as cur:
                cur.execute("LOCK TABLES regstate_bindings WRITE")
            lookup = asyncio.create_task(http.get("/v1/extensions/2001"))

            def lookup_waits_for_lock() -> bool:
                (n,) = query(
                    mariadb_dsn,
                    "SELECT count(*) FROM information_schema.PROCESSLIST "
                    "WHERE STATE LIKE %s AND INFO LIKE %s",
                    ("%lock%", "SELECT extension%"),
                )[0]
                return bool(n)

            await wait_until_async(
                lambda: asyncio.to_thread(lookup_waits_for_lock), 30, message="lookup blocked"
            )
            for path in ("/healthz", "/readyz"):
                async with http.get(path, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    assert r.status == 200
            assert not lookup.done()  # still waiting for the lock, in its thread
            with locker.cursor() as cur:
                cur.execute("UNLOCK TABLES")
            resp = await asyncio.wait_for(lookup, 30)
            assert resp.status == 200
            body = await resp.json()
            assert body["aors"][0]["aor"] == "sip:2001@pbx.example"
            resp.release()
    finally:
        locker.close()
        stop.set()
        await asyncio.wait_for(task, 30)
