"""Pure rows of the Kamailio and Asterisk tables, and the phones sources a VICIdial admin has."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.dialer import PhonesError, parse_phones_csv
from processors.dialer_tables import (
    ContactFacts,
    contact_address,
    julian_day,
    location_row,
    ps_contact_id,
    received_of,
    ruid_of,
    split_aor,
)
from processors.sipuri import parse_sip_uri
from schemas import AorState, Binding, Health, Source
from streams.dialer.store import ExtraTables, SqliteBindingStore, record_from_state

T0 = 1_767_225_600_000


def test_tab_separated_export_with_active_and_protocol() -> None:
    # What `mysql --batch -e "SELECT * FROM phones"` prints: tabs, extra columns.
    text = (
        "extension\tdialplan_number\tserver_ip\tactive\tprotocol\n"
        "1001\t1001\t10.0.0.1\tY\tSIP\n"
        "1002\t1002\t10.0.0.2\tN\tSIP\n"
        "1003\t1003\t10.0.0.1\tY\tIAX2\n"
        "1004\t1004\t10.0.0.3\tY\tPJSIP\n"
        "1001\t1001\t10.0.0.2\tY\tSIP\n"
    )
    assert parse_phones_csv(text) == {"1001": ("10.0.0.1", "10.0.0.2"), "1004": ("10.0.0.3",)}
    with pytest.raises(PhonesError, match="line 2"):
        parse_phones_csv("extension\tserver_ip\n\t10.0.0.1\n")


def test_received_only_when_the_source_is_not_the_contact() -> None:
    assert received_of("sip:1001@10.0.0.5:5060", ("10.0.0.5", 5060, "udp")) is None
    assert received_of("sip:1001@10.0.0.5", ("10.0.0.5", 5060, "udp")) is None
    assert received_of("sip:1001@10.0.0.5", ("203.0.113.9", 40000, "udp")) == (
        "sip:203.0.113.9:40000"
    )
    assert received_of("sip:1001@10.0.0.5", ("203.0.113.9", 40000, "TCP")) == (
        "sip:203.0.113.9:40000;transport=tcp"
    )
    assert received_of("sip:1001@[2001:db8::1]:5060", ("2001:db8::2", 5060, "udp")) == (
        "sip:[2001:db8::2]:5060"
    )
    assert received_of("sip:1001@10.0.0.5", None) is None


def test_aor_parts_ruid_and_asterisk_id() -> None:
    assert split_aor("sip:1001@pbx.example") == ("1001", "pbx.example")
    assert split_aor("tel:+15551234") == ("+15551234", None)
    assert ruid_of("sip:1@a", "k") == ruid_of("sip:1@a", "k") != ruid_of("sip:1@a", "k2")
    assert len(ruid_of("sip:" + "x" * 300 + "@a", "k" * 500)) <= 64  # location.ruid VARCHAR(64)
    # Asterisk: "<aor>;@<md5 of the contact URI>"
    digest = hashlib.md5(b"sip:1001@h", usedforsecurity=False).hexdigest()
    assert ps_contact_id("1001", "sip:1001@h") == f"1001;@{digest}"


@given(st.integers(min_value=0, max_value=4_102_444_800))
def test_julian_day_is_what_sqlite_reads_back(t: int) -> None:
    # SQLite's own datetime() turns Kamailio's REAL back into the same second.
    conn = sqlite3.connect(":memory:")
    (text,) = conn.execute("SELECT datetime(?)", (julian_day(t),)).fetchone()
    (back,) = conn.execute("SELECT CAST(strftime('%s', ?) AS INTEGER)", (text,)).fetchone()
    assert back == t


@given(st.integers(min_value=0, max_value=10**13))
def test_expiry_rounds_down_never_past_the_view(expires_at: int) -> None:
    facts = ContactFacts("k", "sip:a@h", expires_at, 0, "c", 1, None, None, None, None, None, ())
    row = location_row("sip:a@h", facts)
    assert row[6] * 1000 <= expires_at < (row[6] + 1) * 1000


def test_sqlite_store_writes_through_asterisk_migrated_schema(tmp_path: Path) -> None:
    """ps_contacts made by the test from the migrations' column list (SQLite: no ENUM, so
    the booleans are checked text); the store inserts through it and keeps it in step."""
    db = tmp_path / "v.sqlite3"
    conn = sqlite3.connect(db)
    bools = "CHECK ({} IN ('0','1','off','on','false','true','no','yes'))"
    conn.execute(
        "CREATE TABLE ps_contacts (id VARCHAR(255) NOT NULL UNIQUE, uri VARCHAR(511), "
        "expiration_time BIGINT, qualify_frequency INTEGER, outbound_proxy VARCHAR(255), "
        "path TEXT, user_agent VARCHAR(255), qualify_timeout FLOAT, reg_server VARCHAR(255), "
        f"authenticate_qualify VARCHAR(5) {bools.format('authenticate_qualify')}, "
        "via_addr VARCHAR(40), via_port INTEGER, call_id VARCHAR(255), endpoint VARCHAR(255), "
        f"prune_on_boot VARCHAR(5) {bools.format('prune_on_boot')}, "
        f"qualify_2xx_only VARCHAR(5) {bools.format('qualify_2xx_only')}, "
        "UNIQUE (id, reg_server))"
    )
    conn.commit()
    conn.close()
    tables = ExtraTables(asterisk_contacts=True)
    store = SqliteBindingStore(db, tables=tables)
    b = Binding(
        "sip:1001@10.0.0.5", "sip:1001@10.0.0.5", T0 + 60_000, T0, T0, "cid", 3, 0.8, None, None,
        Source("203.0.113.9", 40000, "udp"), "Yealink", "fe1", ("<sip:edge;lr>",),
    )  # fmt: skip
    store.apply_batch(
        [record_from_state(AorState("sip:1001@pbx", 1, T0, (b,), Health()), T0, tables)],
        {("t", 0): 1},
    )
    rows = store.conn.execute(
        "SELECT id, uri, expiration_time, endpoint, via_addr, via_port, path, call_id "
        "FROM ps_contacts"
    ).fetchall()
    assert rows == [
        (
            ps_contact_id("1001", b.uri), b.uri, (T0 + 60_000) // 1000, "1001", "203.0.113.9",
            40000, "<sip:edge;lr>", "cid",
        )
    ]  # fmt: skip
    store.close()


def test_turning_a_table_on_reads_the_topic_again(tmp_path: Path) -> None:
    """The view's rows lack Call-ID, CSeq, path...: a table turned on for a store with
    bindings is filled by reading from the start (offsets and bindings dropped once)."""
    db = tmp_path / "v.sqlite3"
    b = Binding(
        "sip:1001@10.0.0.5", "sip:1001@10.0.0.5", T0 + 60_000, T0, T0, "cid", 3, None, None,
        None, None, None, "fe1", (),
    )  # fmt: skip
    state = AorState("sip:1001@pbx", 1, T0, (b,), Health())
    plain = SqliteBindingStore(db)
    plain.apply_batch([record_from_state(state, T0)], {("t", 0): 7})
    plain.close()
    tables = ExtraTables(kamailio_location=True)
    on = SqliteBindingStore(db, tables=tables)
    assert on.offsets("t") == {} and on.count_rows() == 0  # re-read from the start
    on.apply_batch([record_from_state(state, T0, tables)], {("t", 0): 7})
    on.close()
    again = SqliteBindingStore(db, tables=tables)
    assert again.offsets("t") == {0: 7} and again.count_rows() == 1  # kept: nothing to fill
    (n,) = again.conn.execute("SELECT count(*) FROM location").fetchone()
    assert n == 1
    again.close()


def test_a_copy_of_another_log_is_dropped_not_resumed(tmp_path: Path) -> None:
    """A store that read another topic (the prefix changed), or read this one beyond its
    end (the topic was created again), holds another log's rows: they go with the
    location rows made from them; a row Kamailio wrote itself stays (D123)."""
    db = tmp_path / "v.sqlite3"
    tables = ExtraTables(kamailio_location=True)
    b = Binding(
        "sip:1001@10.0.0.5", "sip:1001@10.0.0.5", T0 + 60_000, T0, T0, "cid", 3, None, None,
        None, None, None, "fe1", (),
    )  # fmt: skip
    state = AorState("sip:1001@pbx", 1, T0, (b,), Health())
    store = SqliteBindingStore(db, tables=tables)
    store.apply_batch([record_from_state(state, T0, tables)], {("a.bindings", 0): 7})
    store.conn.execute("INSERT INTO location (ruid, username, contact) VALUES ('k1', '2001', 'x')")
    store.conn.commit()
    assert store.keep_only("a.bindings", {0: 7}) is None  # its own log: resumed
    assert store.offsets("a.bindings") == {0: 7} and store.count_rows() == 1

    why = store.keep_only("b.bindings", {0: 100})
    assert why == "the store holds a copy of a.bindings, not of b.bindings"
    assert store.offsets("a.bindings") == {} and store.count_rows() == 0
    assert store.aor_info("sip:1001@pbx") == []
    left = store.conn.execute("SELECT ruid FROM location").fetchall()
    assert left == [("k1",)]

    store.apply_batch([record_from_state(state, T0, tables)], {("b.bindings", 2): 7})
    assert store.keep_only("b.bindings", {2: 7}) is None
    why = store.keep_only("b.bindings", {2: 3})
    assert why is not None and "beyond the end of partition 2" in why
    assert store.offsets("b.bindings") == {} and store.count_rows() == 0
    store.close()


@pytest.mark.parametrize(
    "uri",
    [
        "sip:1001@10.0.0.5",
        "sip:1001@10.0.0.5:5070;transport=tcp",
        "sips:1001@Pbx.Example",
        "sip:1001;phone-context=x@10.0.0.5:5080?subject=a",
        "sip:[2001:db8::1]:5062;lr",
        "sip:[2001:DB8::1]",
        "sip:pbx.example",
    ],
)
def test_contact_address_agrees_with_the_uri_parser(uri: str) -> None:
    parsed = parse_sip_uri(uri)
    assert parsed is not None
    default = 5061 if parsed.scheme == "sips" else 5060
    want = (parsed.host.strip("[]").lower(), parsed.port or default)
    assert contact_address(uri) == want
