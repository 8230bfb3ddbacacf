"""The Kamailio ``location`` table of the dialer view against what Kamailio itself writes.

A real Kamailio 5.6 registrar (usrloc ``db_mode=3``, ``db_sqlite``) saves two
bindings sent by SIPp into a fresh database made from Kamailio's own schema
files; the dialer view's store writes the same bindings into its table. Every
column must hold the same value with the same SQLite storage class
(``typeof``), except the three that name who wrote the row: ``id``, ``ruid`` and
``socket`` (README). Removing a binding removes its row in the same transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from processors.dialer import extension_of
from processors.dialer_tables import LOCATION_COLUMNS
from schemas import AorState, Binding, Health, Source
from streams.dialer.store import ExtraTables, SqliteBindingStore, record_from_state, tombstone
from tests.integration.kamailio_support import (
    KAMAILIO,
    SIPP,
    free_udp_port,
    kamailio_schema_db,
    running_kamailio,
    sipp,
)
from tests.integration.test_dialer_view_mysql import mariadb_dsn, mariadb_server

# In CI a missing Kamailio or SIPp is a failure, not a skip.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        (KAMAILIO is None or SIPP is None) and not os.environ.get("CI"),
        reason="kamailio/sipp not installed (scripts/kamailio-install.sh, sipp-install.sh)",
    ),
]

__all__ = ["mariadb_dsn", "mariadb_server"]  # fixtures used by name

WRITER_COLUMNS = {"id", "ruid", "socket"}
"""Who wrote the row: Kamailio's own counter and id, and the socket the REGISTER hit."""
KAMAILIO_TABLES = ExtraTables(kamailio_location=True)


def rows_of(db: Path, where: str = "") -> dict[str, dict[str, tuple[Any, str]]]:
    """``{username: {column: (value, typeof)}}`` of the location table."""
    conn = sqlite3.connect(db)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(location)")]
        sel = ", ".join(f"{c}, typeof({c})" for c in cols)
        out = {}
        for row in conn.execute(f"SELECT {sel} FROM location {where}"):  # noqa: S608
            d = {c: (row[2 * i], row[2 * i + 1]) for i, c in enumerate(cols)}
            out[d["username"][0]] = d
        return out
    finally:
        conn.close()


def seconds(julian: float) -> int:
    """A Julian day as Kamailio's db_sqlite stored it, back to epoch seconds."""
    return round((julian - 2440587.5) * 86400 - 0.5)


def binding_like(
    row: dict[str, tuple[Any, str]],
    source: Source,
    to_seconds: Callable[[Any], int] = lambda jd: seconds(jd),
    **kw: Any,
) -> Binding:
    """The binding regstate's fold would hold for the REGISTER Kamailio saved as ``row``;
    sub-second parts that Kamailio never sees are added to prove they are dropped."""
    uri = row["contact"][0]
    return Binding(
        key=uri,
        uri=uri,
        expires_at=to_seconds(row["expires"][0]) * 1000 + 999,
        registered_at=to_seconds(row["last_modified"][0]) * 1000 + 456,
        refreshed_at=to_seconds(row["last_modified"][0]) * 1000 + 456,
        call_id=row["callid"][0],
        cseq=row["cseq"][0],
        source=source,
        node="fe1",
        **kw,
    )


def register_both(tmp_path: Path, db: Path | str) -> tuple[int, int]:
    """SIPp registers 1001 (behind NAT, every optional field) and 1002 (bare) at a Kamailio
    registrar on ``db``; the source ports of the two."""
    nat_port, plain_port = free_udp_port(), free_udp_port()
    with running_kamailio(tmp_path, db) as port:
        r1 = sipp("kamailio_register", port, ["1001;"], tmp_path, local_port=nat_port)
        r2 = sipp("register_plain", port, ["1002;"], tmp_path, local_port=plain_port)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stdout[-1500:] + r2.stdout[-1500:]
    return nat_port, plain_port


def bindings_like(
    kam: dict[str, dict[str, tuple[Any, str]]],
    ports: tuple[int, int],
    to_seconds: Callable[[Any], int] = seconds,
) -> tuple[Binding, Binding]:
    """What regstate holds for the two REGISTERs of :func:`register_both`."""
    nat = binding_like(
        kam["1001"],
        Source("127.0.0.1", ports[0], "udp"),
        to_seconds,
        q=0.5,
        instance="<urn:uuid:00000000-0000-1000-8000-00a0c91e6bf6>",
        reg_id=1,
        user_agent="sipp-regstate-test",
        path=("<sip:edge1.example;lr>",),
    )
    plain = binding_like(
        kam["1002"],
        Source("127.0.0.1", ports[1], "udp"),
        to_seconds,
        q=None,
        instance=None,
        reg_id=None,
        user_agent=None,
        path=(),
    )
    return nat, plain


def records_of(*bindings: Binding) -> list[Any]:
    """One AOR per binding, named by the contact's user part (1001, 1002)."""
    return [
        record_from_state(
            AorState(f"sip:{extension_of(b.uri)}@pbx.example", 1, b.refreshed_at, (b,), Health()),
            b.refreshed_at,
            KAMAILIO_TABLES,
        )
        for b in bindings
    ]


def test_location_rows_match_what_kamailio_writes(tmp_path: Path) -> None:
    theirs = tmp_path / "kamailio.sqlite3"
    kamailio_schema_db(theirs)
    ports = register_both(tmp_path, theirs)
    kam = rows_of(theirs)
    assert set(kam) == {"1001", "1002"}
    nat, plain = bindings_like(kam, ports)
    ours = tmp_path / "view.sqlite3"
    store = SqliteBindingStore(ours, tables=KAMAILIO_TABLES)
    try:
        store.apply_batch(records_of(nat, plain), {("t", 0): 2})
        mine = rows_of(ours)
        assert set(mine) == {"1001", "1002"}
        for user in ("1001", "1002"):
            for column in LOCATION_COLUMNS:
                if column in WRITER_COLUMNS:
                    continue
                assert mine[user][column] == kam[user][column], (user, column)
            assert mine[user]["ruid"][0].startswith("regstate-")
            assert mine[user]["socket"] == (None, "null")
        (version,) = store.conn.execute(
            "SELECT table_version FROM version WHERE table_name = 'location'"
        ).fetchone()
        assert version == 9

        # A tombstone (unregistered or expired by the engine) removes the row with the view's.
        store.apply_batch([tombstone("sip:1001@pbx.example", nat.expires_at)], {("t", 0): 3})
        assert set(rows_of(ours)) == {"1002"}
        assert store.lookup("1001", nat.refreshed_at) == []
        # A refresh replaces the row (same ruid), never adds a second one.
        later = plain._replace(expires_at=plain.expires_at + 60_000, cseq=2)
        store.apply_batch(
            [
                record_from_state(
                    AorState("sip:1002@pbx.example", 2, 0, (later,)), 0, KAMAILIO_TABLES
                )
            ],
            {("t", 0): 4},
        )
        after = rows_of(ours)
        assert set(after) == {"1002"} and after["1002"]["cseq"] == (2, "integer")
        assert after["1002"]["ruid"] == mine["1002"]["ruid"]
    finally:
        store.close()


def mysql_rows(dsn: str) -> dict[str, dict[str, tuple[Any, str]]]:
    """``{username: {column: (value, Python type the driver returned)}}`` of location."""
    from tests.integration.test_dialer_tables_mysql import connect

    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM location")
            cols = [d[0] for d in cur.description]
            out = {}
            for row in cur.fetchall():
                d = {c: (v, type(v).__name__) for c, v in zip(cols, row, strict=True)}
                out[d["username"][0]] = d
            return out
    finally:
        conn.close()


def test_location_rows_match_what_kamailio_writes_on_mariadb(
    tmp_path: Path, mariadb_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """db_mysql writes DATETIMEs in local time: Kamailio and the view share a zone that is
    not UTC here, so an hour's mistake cannot pass."""
    from streams.dialer.mysql import MysqlBindingStore
    from tests.integration.kamailio_support import KAMAILIO_MYSQL_SCHEMA
    from tests.integration.test_dialer_tables_mysql import connect

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        conn = connect(mariadb_dsn)
        with conn.cursor() as cur:
            for name in ("standard-create.sql", "usrloc-create.sql"):
                for stmt in (KAMAILIO_MYSQL_SCHEMA / name).read_text().split(";"):
                    if stmt.strip():
                        cur.execute(stmt)
        conn.close()
        ports = register_both(tmp_path, mariadb_dsn)
        kam = mysql_rows(mariadb_dsn)
        assert set(kam) == {"1001", "1002"}
        nat, plain = bindings_like(kam, ports, lambda dt: int(dt.timestamp()))
        conn = connect(mariadb_dsn)
        with conn.cursor() as cur:
            cur.execute("DELETE FROM location")
        conn.close()
        store = MysqlBindingStore(mariadb_dsn, tables=KAMAILIO_TABLES)
        try:
            store.apply_batch(records_of(nat, plain), {("t", 0): 2})
        finally:
            store.close()
        mine = mysql_rows(mariadb_dsn)
        for user in ("1001", "1002"):
            for column in LOCATION_COLUMNS:
                if column not in WRITER_COLUMNS:
                    assert mine[user][column] == kam[user][column], (user, column)
    finally:
        monkeypatch.undo()
        time.tzset()
