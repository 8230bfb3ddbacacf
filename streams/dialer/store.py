"""The dialer view's local copy of regstate.bindings: the ``BindingStore`` interface and SQLite.

A store holds one row per (AOR, contact) of the latest AorState of every AOR,
one row per AOR with its last-known health (kept after a tombstone, with the
time the tombstone arrived), and the next offset to read of every partition.

Guarantees of every BindingStore:

* :meth:`BindingStore.apply_batch` applies a batch of records AND the new
  offsets in one transaction: after a crash the store holds either all of a
  batch or none of it, so resuming from :meth:`BindingStore.offsets` neither
  skips nor re-applies a record.
* A record replaces every row of its AOR; a tombstone deletes them.
* Lookups return only contacts active at the time asked (``expires_at > now``,
  R6); the rows of lapsed contacts stay until the engine's sweeper expires them
  (then a new record or a tombstone arrives), so "expired at T" can be said.

The store never reads a clock itself except through the ``clock`` it is given.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from processors.dialer import extension_of, is_aor
from processors.dialer_tables import (
    LOCATION_COLUMNS,
    LOCATION_EXPIRES,
    LOCATION_LAST_MODIFIED,
    PS_CONTACTS_COLUMNS,
    ContactFacts,
    location_row,
    ps_contact_id,
    ps_contact_row,
    ruid_of,
)
from schemas.codec import encode_state
from schemas.state import AorState
from streams.clock import Clock, now_ms
from streams.dialer.sql import (
    BINDING_COLUMNS,
    LOCATION_INSERT_COLUMNS,
    PS_CONTACTS_INSERT_COLUMNS,
    SQLITE,
    Dialect,
)

log = logging.getLogger(__name__)

ContactTuple = tuple[Any, ...]
"""One ``regstate_bindings`` row in column order (see ``_COLUMNS``)."""


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """One record of regstate.bindings, already checked and flattened for a store.

    ``contacts`` None is a tombstone (``ts``, the record time, is then when the AOR
    lost its bindings). Otherwise ``contacts`` holds the rows of the AorState and
    ``version``/``updated_at``/``health_json``/``last_expires_at`` its AOR row.
    Build with :func:`record_from_json` (the consumer's fast path),
    :func:`record_from_state` or :func:`tombstone`.
    """

    aor: str
    ts: int
    contacts: tuple[ContactTuple, ...] | None
    version: int = 0
    updated_at: int = 0
    health_json: str | None = None
    last_expires_at: int | None = None
    location: tuple[tuple[Any, ...], ...] = ()
    """Kamailio ``location`` rows (only when the store keeps that table)."""
    ps_contacts: tuple[tuple[Any, ...], ...] = ()
    """Asterisk ``ps_contacts`` rows (only when the store keeps that table)."""


@dataclass(frozen=True, slots=True)
class ExtraTables:
    """Tables of other software a store keeps besides its own (off by default)."""

    kamailio_location: bool = False
    asterisk_contacts: bool = False

    @property
    def any(self) -> bool:
        """Whether records need more than the view's own columns."""
        return self.kamailio_location or self.asterisk_contacts


NO_EXTRA_TABLES = ExtraTables()


_MAX_INT: Final = 2**53
"""Largest time, version or port a store takes: below SQLite's int64 and exact in JSON
readers (the codec's own limits are far below it)."""


def tombstone(aor: str, ts: int) -> StoreRecord:
    """The record of a null value: the AOR has no contact left."""
    return StoreRecord(aor, ts, None)


def record_from_json(
    aor: str, value: bytes, ts: int, tables: ExtraTables = NO_EXTRA_TABLES
) -> StoreRecord:
    """A record from the AorState public JSON on regstate.bindings (docs/design.md section 4).

    Reads only what the store keeps, without building an AorState (bootstrap
    speed: this is the hot loop, hence the inlined checks). Raises
    ValueError/KeyError/TypeError on a value that is not an AorState of ``aor``,
    so the caller can count and skip it instead of failing a whole batch.
    ``tables`` says which rows of other software's tables to build as well.
    """
    d = orjson.loads(value)
    if d["aor"] != aor:
        raise ValueError(f"value is the state of {d['aor']!r}, key is {aor!r}")
    version = d.get("version", 0)
    updated = d.get("updated_ts", 0)
    if type(version) is not int or type(updated) is not int:
        raise TypeError("version and updated_ts must be integers")
    if not (0 <= version <= _MAX_INT and 0 <= updated <= _MAX_INT):
        raise ValueError("version/updated_ts out of range")
    ext = extension_of(aor)
    rows = []
    location: list[tuple[Any, ...]] = []
    ps_contacts: list[tuple[Any, ...]] = []
    last_exp: int | None = None
    for c in d.get("contacts") or ():
        exp = c["expires_at"]
        reg = c["registered_at"]
        ref = c["refreshed_at"]
        key = c["key"]
        uri = c["uri"]
        node = c["node"]
        # bool is an int subclass, hence `type(...) is`: a JSON true is not an expiry.
        if type(exp) is not int or type(reg) is not int or type(ref) is not int:
            raise TypeError(f"contact {key!r}: expires_at/registered_at/refreshed_at not integers")
        if type(key) is not str or type(uri) is not str or type(node) is not str:
            raise TypeError(f"contact {key!r}: key/uri/node not strings")
        # SQLite integers are int64: a bigger one raises OverflowError mid-batch (D82).
        if not (0 <= exp <= _MAX_INT and 0 <= reg <= _MAX_INT and 0 <= ref <= _MAX_INT):
            raise ValueError(f"contact {key[:100]!r}: a time is out of range")
        if last_exp is None or exp > last_exp:
            last_exp = exp
        src = c.get("source")
        if src is None:
            ip = port = transport = None
        else:
            ip, port, transport = src["ip"], src["port"], src["transport"]
            if type(port) is not int or not 0 <= port <= 65_535:
                raise ValueError(f"contact {key[:100]!r}: source.port {port!r} is not a port")
            if type(ip) is not str or type(transport) is not str:
                raise TypeError(f"contact {key[:100]!r}: source ip/transport not strings")
        ua = c.get("user_agent")
        if ua is not None and type(ua) is not str:
            raise TypeError(f"contact {key[:100]!r}: user_agent not a string")
        rows.append(
            (ext, aor, key, uri, node, ip, port, transport, ua, exp, reg, ref, updated, version)
        )
        if tables.any:
            facts = _facts(c, None if src is None else (src["ip"], src["port"], src["transport"]))
            if tables.kamailio_location:
                location.append(location_row(aor, facts))
            if tables.asterisk_contacts:
                ps_contacts.append(ps_contact_row(ext, facts))
    health = d.get("health")
    return StoreRecord(
        aor,
        ts,
        tuple(rows),
        version,
        updated,
        None if health is None else orjson.dumps(health).decode(),
        last_exp,
        tuple(location),
        tuple(ps_contacts),
    )


def _facts(c: Mapping[str, Any], source: tuple[str, int, str] | None) -> ContactFacts:
    """The fields of a contact the extra tables need, type-checked like the rest."""
    call_id, cseq, q = c["call_id"], c["cseq"], c.get("q")
    instance, reg_id, path = c.get("instance"), c.get("reg_id"), c.get("path") or []
    if type(call_id) is not str or type(cseq) is not int:
        raise TypeError(f"contact {c['key']!r}: call_id/cseq of the wrong type")
    if q is not None and type(q) not in (int, float):
        raise TypeError(f"contact {c['key']!r}: q is not a number")
    if (instance is not None and type(instance) is not str) or (
        reg_id is not None and type(reg_id) is not int
    ):
        raise TypeError(f"contact {c['key']!r}: instance/reg_id of the wrong type")
    if not isinstance(path, list) or not all(type(p) is str for p in path):
        raise TypeError(f"contact {c['key']!r}: path is not a list of strings")
    if not 0 <= cseq <= _MAX_INT or (reg_id is not None and not 0 <= reg_id <= _MAX_INT):
        raise ValueError(f"contact {c['key']!r}: cseq/reg_id out of range (D82)")
    return ContactFacts(
        c["key"], c["uri"], c["expires_at"], c["refreshed_at"], call_id, cseq, q, instance,
        reg_id, source, c.get("user_agent"), path,
    )  # fmt: skip


def record_from_state(
    state: AorState, ts: int, tables: ExtraTables = NO_EXTRA_TABLES
) -> StoreRecord:
    """A record from an AorState (tests, ``regstate where`` from a snapshot)."""
    return record_from_json(state.aor, encode_state(state), ts, tables)


@dataclass(frozen=True, slots=True)
class BindingRow:
    """One contact of one AOR as the dialer sees it (a row of ``regstate_bindings``)."""

    extension: str
    aor: str
    contact_key: str
    contact_uri: str
    node: str
    source_ip: str | None
    source_port: int | None
    source_transport: str | None
    user_agent: str | None
    expires_at: int
    registered_at: int
    refreshed_at: int
    updated_at: int
    version: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields, the same names as the columns."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class AorInfo:
    """Last-known facts of an AOR (a row of ``regstate_aors``).

    ``removed_at``: record time of the tombstone that removed the AOR's
    bindings, None while it has bindings. ``health`` is from the last AorState
    seen (a tombstone carries none), None if only a tombstone was ever seen.
    ``last_expires_at``: the latest expiry among the contacts of that state.
    """

    aor: str
    extension: str
    version: int | None
    updated_at: int | None
    health: dict[str, Any] | None
    last_expires_at: int | None
    removed_at: int | None


class BindingStore(Protocol):
    """What the dialer view needs from a local store (SQLite, MariaDB/MySQL)."""

    tables: ExtraTables
    """Tables of other software kept with the view's rows (records must carry their rows)."""

    def offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to read}`` stored for ``topic`` (empty: read from start)."""
        ...

    def apply_batch(
        self, records: Sequence[StoreRecord], next_offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Apply ``records`` in order and store ``next_offsets``, all in one transaction."""
        ...

    def keep_only(self, topic: str, ends: Mapping[int, int]) -> str | None:
        """Drop the copy unless it is of ``topic`` as it is now (``ends``: each partition's
        end offset); why it was dropped, or None."""
        ...

    def lookup_aor(self, aor: str, now_ms: int | None = None) -> list[BindingRow]:
        """Active contacts of ``aor`` at ``now_ms`` (default: the store's clock)."""
        ...

    def lookup_extension(self, extension: str, now_ms: int | None = None) -> list[BindingRow]:
        """Active contacts of every AOR whose user part is ``extension``."""
        ...

    def lookup(self, key: str, now_ms: int | None = None) -> list[BindingRow]:
        """:meth:`lookup_aor` when ``key`` has a scheme, else :meth:`lookup_extension`."""
        ...

    def all_rows(self, now_ms: int | None = None) -> list[BindingRow]:
        """Every active contact, sorted by AOR then contact key."""
        ...

    def count_rows(self) -> int:
        """Stored contact rows, lapsed ones included."""
        ...

    def contacts_any_time(self, key: str) -> list[BindingRow]:
        """Every stored contact of an AOR or extension, lapsed ones included."""
        ...

    def aor_info(self, key: str) -> list[AorInfo]:
        """Last-known facts of the AOR, or of every AOR with that extension."""
        ...

    def replace_phones(self, phones: Mapping[str, Sequence[str]], nodes: Mapping[str, str]) -> None:
        """Make ``regstate_phones``/``regstate_nodes`` hold exactly these (one transaction)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


@dataclass(frozen=True)
class BatchPlan:
    """What one batch does to a store, whatever the backend."""

    final: dict[str, StoreRecord]
    """The last record of each AOR (log order kept): it decides the AOR's rows."""
    inserts: list[ContactTuple]
    aor_rows: list[tuple[Any, ...]]
    """(aor, extension, version, updated_at, health_json, last_expires_at, removed_at)."""
    tombstones: list[tuple[Any, ...]]
    """(aor, extension, ts) of AORs removed with no state seen before."""
    location: list[tuple[Any, ...]]
    """Kamailio ``location`` rows of the final states (times still epoch seconds)."""
    ps_contacts: list[tuple[Any, ...]]


def plan_batch(records: Sequence[StoreRecord]) -> BatchPlan:
    """Collapse a batch per AOR: the last record decides the rows, the last
    non-tombstone the remembered health (so a tombstone keeps what came before it)."""
    final: dict[str, StoreRecord] = {}
    last_state: dict[str, StoreRecord] = {}
    for r in records:
        final[r.aor] = r
        if r.contacts is not None:
            last_state[r.aor] = r
    inserts: list[ContactTuple] = []
    aor_rows: list[tuple[Any, ...]] = []
    tombstones: list[tuple[Any, ...]] = []
    location: list[tuple[Any, ...]] = []
    ps_contacts: list[tuple[Any, ...]] = []
    for aor, r in final.items():
        removed_at: int | None = None
        if r.contacts is not None:
            inserts.extend(r.contacts)
            location.extend(r.location)
            ps_contacts.extend(r.ps_contacts)
            known = r
        elif aor in last_state:
            known, removed_at = last_state[aor], r.ts
        else:
            tombstones.append((aor, extension_of(aor), r.ts))
            continue
        aor_rows.append(
            (
                aor,
                extension_of(aor),
                known.version,
                known.updated_at,
                known.health_json,
                known.last_expires_at,
                removed_at,
            )
        )
    return BatchPlan(final, inserts, aor_rows, tombstones, location, ps_contacts)


_IN_CHUNK = 500
"""AORs per ``IN (...)`` list (well under every driver's placeholder limit)."""

_AOR_INFO = (
    "SELECT aor, extension, version, updated_at, health, last_expires_at, removed_at "
    "FROM regstate_aors "
)
_SELECT = f"SELECT {BINDING_COLUMNS} FROM regstate_bindings "  # noqa: S608 - constant columns


def _spell_times(row: tuple[Any, ...], dt: Callable[[int], Any]) -> tuple[Any, ...]:
    """A location row with its two DATETIMEs as the database's Kamailio driver writes them."""
    e, m = LOCATION_EXPIRES, LOCATION_LAST_MODIFIED
    return (*row[:e], dt(row[e]), *row[e + 1 : m], dt(row[m]), *row[m + 1 :])


class SqlStore:
    """The one query layer of every SQL BindingStore; subclasses open the connection and
    say how a transaction starts and how rows are fetched (DB-API drivers differ there).

    All statements are the dialect's (streams/dialer/sql.py): the same SQL for SQLite and
    MariaDB but for placeholders, upserts and types.
    """

    dialect: Dialect
    clock: Clock
    tables: ExtraTables
    conn: Any

    # -- what a driver provides ----------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _begin(self) -> Any:
        """Start a write transaction; the cursor to write with."""
        raise NotImplementedError

    def _commit(self, cur: Any) -> None:
        raise NotImplementedError

    def _rollback(self, cur: Any) -> None:
        raise NotImplementedError

    # -- schema ---------------------------------------------------------------

    def _schema(self) -> list[str]:
        """DDL of a writer: the view's tables, the phone status view, the extra tables."""
        d = self.dialect
        ddl = [*d.schema, *d.phone_status_view]
        if self.tables.kamailio_location:
            ddl += d.kamailio_schema
        if self.tables.asterisk_contacts:
            ddl += d.asterisk_schema
        return ddl

    def _create_schema(self) -> None:
        """Create what is missing; re-read from the start when an extra table is turned on.

        The view's own rows do not hold every column Kamailio or Asterisk needs
        (Call-ID, CSeq, q, path...), so a table turned on for a store that already
        has bindings is filled by reading regstate.bindings again from the start
        (a compacted topic: one record per AOR): the stored offsets and bindings
        are dropped in the same transaction that records the table as kept, and the
        view is not ready until it caught up again.
        """
        cur = self.conn.cursor()
        for ddl in self._schema():
            cur.execute(ddl)
        cur.close()
        self._commit_ddl()
        wanted = {
            name
            for name, on in (
                ("location", self.tables.kamailio_location),
                ("ps_contacts", self.tables.asterisk_contacts),
            )
            if on
        }
        kept = {name for (name,) in self._fetch("SELECT name FROM regstate_extra_tables")}
        if wanted == kept:
            return
        cur = self._begin()
        try:
            if wanted - kept:
                (n,) = self._fetch_in(cur, "SELECT count(*) FROM regstate_offsets")[0]
                if n:
                    log.warning(
                        "dialer store: %s turned on; reading regstate.bindings again from "
                        "the start to fill it",
                        ", ".join(sorted(wanted - kept)),
                    )
                    cur.execute("DELETE FROM regstate_offsets")
                    cur.execute("DELETE FROM regstate_bindings")
            cur.execute("DELETE FROM regstate_extra_tables")
            if wanted:
                cur.executemany(
                    self.dialect.sql("INSERT INTO regstate_extra_tables (name) VALUES (?)"),
                    [(name,) for name in sorted(wanted)],
                )
            self._commit(cur)
        except BaseException:
            self._rollback(cur)
            raise

    @staticmethod
    def _fetch_in(cur: Any, sql: str) -> list[tuple[Any, ...]]:
        cur.execute(sql)
        return list(cur.fetchall())

    def _commit_ddl(self) -> None:
        """End the DDL (MariaDB commits DDL itself; SQLite runs in autocommit)."""

    # -- writing --------------------------------------------------------------

    def offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset}`` stored for ``topic``."""
        rows = self._fetch(
            self.dialect.sql(
                "SELECT `partition`, next_offset FROM regstate_offsets WHERE topic = ?"
            ),
            (topic,),
        )
        return {int(p): int(o) for p, o in rows}

    def keep_only(self, topic: str, ends: Mapping[int, int]) -> str | None:
        """Drop the copy unless it is of ``topic`` as it is now; why it was dropped, or None.

        The store holds a copy of one log: its rows and the offsets they were read to.
        Offsets of another topic (the view's topic prefix changed) or beyond a
        partition's end (the topic was deleted and created again) mean the rows are
        another log's. Resuming would keep them: phantom contacts for every dialer
        and proxy that reads the store. So the rows, the extra tables' rows made from
        them and the offsets go in one transaction, and the view reads ``topic`` from
        its start (D123).
        """
        stored = self._fetch(
            self.dialect.sql("SELECT topic, `partition`, next_offset FROM regstate_offsets")
        )
        others = sorted({str(t) for t, _, _ in stored if t != topic})
        beyond = sorted(int(p) for t, p, o in stored if t == topic and int(o) > ends.get(int(p), 0))
        if others:
            reason = f"the store holds a copy of {', '.join(others)}, not of {topic}"
        elif beyond:
            reason = (
                f"the store has read {topic} beyond the end of partition "
                f"{', '.join(map(str, beyond))} (the topic was created again)"
            )
        else:
            return None
        cur = self._begin()
        try:
            if self.tables.any:
                aors = [
                    a for (a,) in self._fetch_in(cur, "SELECT DISTINCT aor FROM regstate_bindings")
                ]
                for i in range(0, len(aors), _IN_CHUNK):
                    chunk = aors[i : i + _IN_CHUNK]
                    self._delete_extra_rows(cur, chunk, ", ".join([self.dialect.mark] * len(chunk)))
            for table in ("regstate_bindings", "regstate_aors", "regstate_offsets"):
                cur.execute(f"DELETE FROM {table}")  # noqa: S608
            self._commit(cur)
        except BaseException:
            self._rollback(cur)
            raise
        return reason

    def apply_batch(
        self, records: Sequence[StoreRecord], next_offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Apply ``records`` in log order and store ``next_offsets`` in one transaction.

        Several records of one AOR in a batch end as the last one would alone,
        except that a tombstone keeps the health of a state earlier in the batch.
        The extra tables (Kamailio ``location``, Asterisk ``ps_contacts``) change in
        the same transaction: their rows of an AOR are those of its current state.
        """
        d = self.dialect
        plan = plan_batch(records)
        aors = list(plan.final)
        cur = self._begin()
        try:
            for i in range(0, len(aors), _IN_CHUNK):
                chunk = aors[i : i + _IN_CHUNK]
                marks = ", ".join([d.mark] * len(chunk))
                if self.tables.any:
                    self._delete_extra_rows(cur, chunk, marks)
                cur.execute(
                    f"DELETE FROM regstate_bindings WHERE aor IN ({marks})",  # noqa: S608
                    chunk,
                )
            if plan.inserts:
                cur.executemany(
                    f"{d.replace} INTO regstate_bindings ({BINDING_COLUMNS}) "
                    f"VALUES ({', '.join([d.mark] * 14)})",
                    plan.inserts,
                )
            if plan.aor_rows:
                cur.executemany(
                    d.upsert(
                        "regstate_aors",
                        ("aor", "extension", "version", "updated_at", "health",
                         "last_expires_at", "removed_at"),
                        ("aor",),
                    ),
                    plan.aor_rows,
                )  # fmt: skip
            if plan.tombstones:
                # A tombstone without a state earlier in its batch keeps what the table knows.
                cur.executemany(
                    d.upsert("regstate_aors", ("aor", "extension", "removed_at"), ("aor",)),
                    plan.tombstones,
                )
            if plan.location:
                cur.executemany(
                    f"{d.replace} INTO location ({LOCATION_INSERT_COLUMNS}) "
                    f"VALUES ({', '.join([d.mark] * len(LOCATION_COLUMNS))})",
                    [_spell_times(r, d.datetime) for r in plan.location],
                )
            if plan.ps_contacts:
                cur.executemany(
                    f"{d.replace} INTO ps_contacts ({PS_CONTACTS_INSERT_COLUMNS}) "
                    f"VALUES ({', '.join([d.mark] * len(PS_CONTACTS_COLUMNS))})",
                    plan.ps_contacts,
                )
            offs = [(t, p, o) for (t, p), o in next_offsets.items()]
            if offs:
                cur.executemany(
                    d.upsert("regstate_offsets", ("topic", "`partition`", "next_offset"),
                             ("topic", "`partition`")),
                    offs,
                )  # fmt: skip
            self._commit(cur)
        except BaseException:
            self._rollback(cur)
            raise

    def _delete_extra_rows(self, cur: Any, aors: list[str], marks: str) -> None:
        """Delete the extra tables' rows of the bindings ``aors`` had until now, by the
        ids derived from them (rows written by anyone else stay)."""
        cur.execute(
            "SELECT aor, contact_key, extension, contact_uri FROM regstate_bindings "  # noqa: S608
            f"WHERE aor IN ({marks})",
            aors,
        )
        old = cur.fetchall()
        if not old:
            return
        mark = self.dialect.mark
        if self.tables.kamailio_location:
            ruids = [ruid_of(a, k) for a, k, _, _ in old]
            cur.execute(
                f"DELETE FROM location WHERE ruid IN ({', '.join([mark] * len(ruids))})",  # noqa: S608
                ruids,
            )
        if self.tables.asterisk_contacts:
            ids = [ps_contact_id(e, u) for _, _, e, u in old]
            cur.execute(
                f"DELETE FROM ps_contacts WHERE id IN ({', '.join([mark] * len(ids))})",  # noqa: S608
                ids,
            )

    def replace_phones(self, phones: Mapping[str, Sequence[str]], nodes: Mapping[str, str]) -> None:
        """Make ``regstate_phones``/``regstate_nodes`` hold exactly these, in one transaction
        (``regstate_phone_status`` never shows half a refresh)."""
        d = self.dialect
        cur = self._begin()
        try:
            cur.execute("DELETE FROM regstate_phones")
            cur.execute("DELETE FROM regstate_nodes")
            rows = [(ext, ip) for ext, ips in phones.items() for ip in ips]
            if rows:
                cur.executemany(
                    d.sql("INSERT INTO regstate_phones (extension, server_ip) VALUES (?, ?)"), rows
                )
            if nodes:
                cur.executemany(
                    d.sql("INSERT INTO regstate_nodes (node, server_ip) VALUES (?, ?)"),
                    list(nodes.items()),
                )
            self._commit(cur)
        except BaseException:
            self._rollback(cur)
            raise

    # -- reading --------------------------------------------------------------

    def _rows(self, where: str, params: Sequence[Any]) -> list[BindingRow]:
        return [BindingRow(*row) for row in self._fetch(self.dialect.sql(_SELECT + where), params)]

    def lookup_aor(self, aor: str, now_ms: int | None = None) -> list[BindingRow]:
        """Active contacts of ``aor`` at ``now_ms`` (default: the clock), by contact key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows("WHERE aor = ? AND expires_at > ? ORDER BY contact_key", (aor, now))

    def lookup_extension(self, extension: str, now_ms: int | None = None) -> list[BindingRow]:
        """Active contacts of every AOR with user part ``extension``, by AOR then key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows(
            "WHERE extension = ? AND expires_at > ? ORDER BY aor, contact_key", (extension, now)
        )

    def lookup(self, key: str, now_ms: int | None = None) -> list[BindingRow]:
        """:meth:`lookup_aor` when ``key`` has a scheme, else :meth:`lookup_extension`."""
        if is_aor(key):
            return self.lookup_aor(key, now_ms)
        return self.lookup_extension(key, now_ms)

    def all_rows(self, now_ms: int | None = None) -> list[BindingRow]:
        """Every active contact at ``now_ms``, by AOR then contact key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows("WHERE expires_at > ? ORDER BY aor, contact_key", (now,))

    def contacts_any_time(self, key: str) -> list[BindingRow]:
        """Every stored contact of an AOR or extension, lapsed ones included."""
        if is_aor(key):
            return self._rows("WHERE aor = ? ORDER BY contact_key", (key,))
        return self._rows("WHERE extension = ? ORDER BY aor, contact_key", (key,))

    def aor_info(self, key: str) -> list[AorInfo]:
        """Last-known facts of the AOR, or of every AOR with that extension, by AOR."""
        where = "WHERE aor = ?" if is_aor(key) else "WHERE extension = ? ORDER BY aor"
        return [
            AorInfo(
                aor=a,
                extension=e,
                version=v,
                updated_at=u,
                health=None if h is None else orjson.loads(h),
                last_expires_at=le,
                removed_at=rm,
            )
            for a, e, v, u, h, le, rm in self._fetch(self.dialect.sql(_AOR_INFO + where), (key,))
        ]

    def count_rows(self) -> int:
        """Stored contact rows, lapsed ones included (a gauge for /metrics)."""
        ((n,),) = self._fetch("SELECT count(*) FROM regstate_bindings")
        return int(n)


class SqliteBindingStore(SqlStore):
    """BindingStore on an embedded SQLite file (WAL; one writer, any number of readers).

    ``path`` ``":memory:"`` gives a private in-memory store (``regstate where``
    without a local file). ``read_only`` opens an existing file without ever
    writing it (the :class:`DialerView` API); the schema is then not created.
    Durability: WAL with ``synchronous=NORMAL`` survives a killed process
    (SIGKILL) without losing a committed batch; after a power loss the last
    batches may roll back, offsets with them, so they are simply read again.
    """

    dialect = SQLITE

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        clock: Clock = now_ms,
        check_same_thread: bool = True,
        tables: ExtraTables = NO_EXTRA_TABLES,
    ) -> None:
        self.path = str(path)
        self.clock = clock
        self.tables = tables
        if read_only:
            uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
            self.conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=check_same_thread
            )
        else:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode; transactions are explicit (BEGIN ... COMMIT) in apply_batch.
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=check_same_thread
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            # 64 MiB of page cache: index inserts of a 1M-row bootstrap stay in memory.
            self.conn.execute("PRAGMA cache_size=-65536")
            self._create_schema()
        # A reader must not fail while the writer commits a batch.
        self.conn.execute("PRAGMA busy_timeout=5000")

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(sql, tuple(params)).fetchall()
        return rows

    def _begin(self) -> Any:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        return cur

    def _commit(self, cur: Any) -> None:
        cur.execute("COMMIT")

    def _rollback(self, cur: Any) -> None:
        cur.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection (a WAL checkpoint happens on the last close)."""
        self.conn.close()
