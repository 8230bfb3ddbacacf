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
from pathlib import Path
from typing import Any

import pytest

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

# In CI a missing Kamailio or SIPp is a failure, not a skip.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        (KAMAILIO is None or SIPP is None) and not os.environ.get("CI"),
        reason="kamailio/sipp not installed (scripts/kamailio-install.sh, sipp-install.sh)",
    ),
]

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


def binding_like(row: dict[str, tuple[Any, str]], source: Source, **kw: Any) -> Binding:
    """The binding regstate's fold would hold for the REGISTER Kamailio saved as ``row``;
    sub-second parts that Kamailio never sees are added to prove they are dropped."""
    uri = row["contact"][0]
    return Binding(
        key=uri,
        uri=uri,
        expires_at=seconds(row["expires"][0]) * 1000 + 999,
        registered_at=seconds(row["last_modified"][0]) * 1000 + 456,
        refreshed_at=seconds(row["last_modified"][0]) * 1000 + 456,
        call_id=row["callid"][0],
        cseq=row["cseq"][0],
        source=source,
        node="fe1",
        **kw,
    )


def test_location_rows_match_what_kamailio_writes(tmp_path: Path) -> None:
    theirs = tmp_path / "kamailio.sqlite3"
    kamailio_schema_db(theirs)
    nat_port, plain_port = free_udp_port(), free_udp_port()
    with running_kamailio(tmp_path, theirs) as port:
        r1 = sipp("kamailio_register", port, ["1001;"], tmp_path, local_port=nat_port)
        r2 = sipp("register_plain", port, ["1002;"], tmp_path, local_port=plain_port)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stdout[-1500:] + r2.stdout[-1500:]
    kam = rows_of(theirs)
    assert set(kam) == {"1001", "1002"}

    nat = binding_like(
        kam["1001"],
        Source("127.0.0.1", nat_port, "udp"),
        q=0.5,
        instance="<urn:uuid:00000000-0000-1000-8000-00a0c91e6bf6>",
        reg_id=1,
        user_agent="sipp-regstate-test",
        path=("<sip:edge1.example;lr>",),
    )
    plain = binding_like(
        kam["1002"],
        Source("127.0.0.1", plain_port, "udp"),
        q=None,
        instance=None,
        reg_id=None,
        user_agent=None,
        path=(),
    )
    ours = tmp_path / "view.sqlite3"
    store = SqliteBindingStore(ours, tables=KAMAILIO_TABLES)
    try:
        records = [
            record_from_state(
                AorState(f"sip:{u}@pbx.example", 1, b.refreshed_at, (b,), Health()),
                b.refreshed_at,
                KAMAILIO_TABLES,
            )
            for u, b in (("1001", nat), ("1002", plain))
        ]
        store.apply_batch(records, {("t", 0): 2})
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
