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

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from processors.dialer import extension_of, is_aor
from schemas.codec import encode_state
from schemas.state import AorState
from streams.clock import Clock, now_ms

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


def tombstone(aor: str, ts: int) -> StoreRecord:
    """The record of a null value: the AOR has no contact left."""
    return StoreRecord(aor, ts, None)


def record_from_json(aor: str, value: bytes, ts: int) -> StoreRecord:
    """A record from the AorState public JSON on regstate.bindings (DESIGN section 4).

    Reads only what the store keeps, without building an AorState (bootstrap
    speed: this is the hot loop, hence the inlined checks). Raises
    ValueError/KeyError/TypeError on a value that is not an AorState of ``aor``,
    so the caller can count and skip it instead of failing a whole batch.
    """
    d = orjson.loads(value)
    if d["aor"] != aor:
        raise ValueError(f"value is the state of {d['aor']!r}, key is {aor!r}")
    version = d.get("version", 0)
    updated = d.get("updated_ts", 0)
    if type(version) is not int or type(updated) is not int:
        raise TypeError("version and updated_ts must be integers")
    ext = extension_of(aor)
    rows = []
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
        if last_exp is None or exp > last_exp:
            last_exp = exp
        src = c.get("source")
        if src is None:
            ip = port = transport = None
        else:
            ip, port, transport = src["ip"], src["port"], src["transport"]
        ua = c.get("user_agent")
        rows.append(
            (ext, aor, key, uri, node, ip, port, transport, ua, exp, reg, ref, updated, version)
        )
    health = d.get("health")
    return StoreRecord(
        aor,
        ts,
        tuple(rows),
        version,
        updated,
        None if health is None else orjson.dumps(health).decode(),
        last_exp,
    )


def record_from_state(state: AorState, ts: int) -> StoreRecord:
    """A record from an AorState (tests, ``regstate where`` from a snapshot)."""
    return record_from_json(state.aor, encode_state(state), ts)


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
    """What the dialer view needs from a local store (SQLite here; MySQL could be another)."""

    def offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to read}`` stored for ``topic`` (empty: read from start)."""
        ...

    def apply_batch(
        self, records: Sequence[StoreRecord], next_offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Apply ``records`` in order and store ``next_offsets``, all in one transaction."""
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

    def close(self) -> None:
        """Release the connection."""
        ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS regstate_bindings (
    aor TEXT NOT NULL,
    contact_key TEXT NOT NULL,
    extension TEXT NOT NULL,
    contact_uri TEXT NOT NULL,
    node TEXT NOT NULL,
    source_ip TEXT,
    source_port INTEGER,
    source_transport TEXT,
    user_agent TEXT,
    expires_at INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    refreshed_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (aor, contact_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS regstate_bindings_extension ON regstate_bindings (extension);
CREATE TABLE IF NOT EXISTS regstate_aors (
    aor TEXT PRIMARY KEY,
    extension TEXT NOT NULL,
    version INTEGER,
    updated_at INTEGER,
    health TEXT,
    last_expires_at INTEGER,
    removed_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS regstate_aors_extension ON regstate_aors (extension);
CREATE TABLE IF NOT EXISTS regstate_offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

_COLUMNS = (
    "extension, aor, contact_key, contact_uri, node, source_ip, source_port, "
    "source_transport, user_agent, expires_at, registered_at, refreshed_at, updated_at, version"
)
_INSERT_BINDING = (
    f"INSERT OR REPLACE INTO regstate_bindings ({_COLUMNS}) "  # noqa: S608 - constant columns
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_AOR = (
    "INSERT INTO regstate_aors (aor, extension, version, updated_at, health, last_expires_at, "
    "removed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(aor) DO UPDATE SET "
    "version = excluded.version, updated_at = excluded.updated_at, health = excluded.health, "
    "last_expires_at = excluded.last_expires_at, removed_at = excluded.removed_at"
)
# A tombstone without a state earlier in its batch keeps what the table knows.
_TOMBSTONE_AOR = (
    "INSERT INTO regstate_aors (aor, extension, removed_at) VALUES (?, ?, ?) "
    "ON CONFLICT(aor) DO UPDATE SET removed_at = excluded.removed_at"
)

_AOR_INFO = (
    "SELECT aor, extension, version, updated_at, health, last_expires_at, removed_at "
    "FROM regstate_aors "
)
_AOR_INFO_BY_AOR = _AOR_INFO + "WHERE aor = ?"
_AOR_INFO_BY_EXT = _AOR_INFO + "WHERE extension = ? ORDER BY aor"


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
    for aor, r in final.items():
        removed_at: int | None = None
        if r.contacts is not None:
            inserts.extend(r.contacts)
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
    return BatchPlan(final, inserts, aor_rows, tombstones)


class SqliteBindingStore:
    """BindingStore on an embedded SQLite file (WAL; one writer, any number of readers).

    ``path`` ``":memory:"`` gives a private in-memory store (``regstate where``
    without a local file). ``read_only`` opens an existing file without ever
    writing it (the :class:`DialerView` API); the schema is then not created.
    Durability: WAL with ``synchronous=NORMAL`` survives a killed process
    (SIGKILL) without losing a committed batch; after a power loss the last
    batches may roll back, offsets with them, so they are simply read again.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        clock: Clock = now_ms,
        check_same_thread: bool = True,
    ) -> None:
        self.path = str(path)
        self.clock = clock
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
            self.conn.executescript(SCHEMA)
        # A reader must not fail while the writer commits a batch.
        self.conn.execute("PRAGMA busy_timeout=5000")

    # -- writing -----------------------------------------------------------

    def offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset}`` stored for ``topic``."""
        cur = self.conn.execute(
            "SELECT partition, next_offset FROM regstate_offsets WHERE topic = ?", (topic,)
        )
        return {int(p): int(o) for p, o in cur.fetchall()}

    def apply_batch(
        self, records: Sequence[StoreRecord], next_offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Apply ``records`` in log order and store ``next_offsets`` in one transaction.

        Several records of one AOR in a batch end as the last one would alone,
        except that a tombstone keeps the health of a state earlier in the batch.
        """
        plan = plan_batch(records)
        final, inserts, aor_rows, tombstones = (
            plan.final,
            plan.inserts,
            plan.aor_rows,
            plan.tombstones,
        )
        deletes = [(aor,) for aor in final]
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany("DELETE FROM regstate_bindings WHERE aor = ?", deletes)
            cur.executemany(_INSERT_BINDING, inserts)
            cur.executemany(_UPSERT_AOR, aor_rows)
            cur.executemany(_TOMBSTONE_AOR, tombstones)
            cur.executemany(
                "INSERT INTO regstate_offsets (topic, partition, next_offset) VALUES (?, ?, ?) "
                "ON CONFLICT(topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                [(t, p, o) for (t, p), o in next_offsets.items()],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # -- reading -----------------------------------------------------------

    def _rows(self, sql: str, params: Iterable[Any]) -> list[BindingRow]:
        return [BindingRow(*row) for row in self.conn.execute(sql, tuple(params))]

    def lookup_aor(self, aor: str, now_ms: int | None = None) -> list[BindingRow]:
        """Active contacts of ``aor`` at ``now_ms`` (default: the clock), by contact key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows(
            f"SELECT {_COLUMNS} FROM regstate_bindings "  # noqa: S608 - constant columns
            "WHERE aor = ? AND expires_at > ? ORDER BY contact_key",
            (aor, now),
        )

    def lookup_extension(self, extension: str, now_ms: int | None = None) -> list[BindingRow]:
        """Active contacts of every AOR with user part ``extension``, by AOR then key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows(
            f"SELECT {_COLUMNS} FROM regstate_bindings "  # noqa: S608 - constant columns
            "WHERE extension = ? AND expires_at > ? ORDER BY aor, contact_key",
            (extension, now),
        )

    def lookup(self, key: str, now_ms: int | None = None) -> list[BindingRow]:
        """:meth:`lookup_aor` when ``key`` has a scheme, else :meth:`lookup_extension`."""
        if is_aor(key):
            return self.lookup_aor(key, now_ms)
        return self.lookup_extension(key, now_ms)

    def all_rows(self, now_ms: int | None = None) -> list[BindingRow]:
        """Every active contact at ``now_ms``, by AOR then contact key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows(
            f"SELECT {_COLUMNS} FROM regstate_bindings "  # noqa: S608 - constant columns
            "WHERE expires_at > ? ORDER BY aor, contact_key",
            (now,),
        )

    def contacts_any_time(self, key: str) -> list[BindingRow]:
        """Every stored contact of an AOR or extension, lapsed ones included."""
        column = "aor" if is_aor(key) else "extension"
        return self._rows(
            f"SELECT {_COLUMNS} FROM regstate_bindings "  # noqa: S608 - constant columns
            f"WHERE {column} = ? ORDER BY aor, contact_key",
            (key,),
        )

    def aor_info(self, key: str) -> list[AorInfo]:
        """Last-known facts of the AOR, or of every AOR with that extension, by AOR."""
        cur = self.conn.execute(_AOR_INFO_BY_AOR if is_aor(key) else _AOR_INFO_BY_EXT, (key,))
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
            for a, e, v, u, h, le, rm in cur.fetchall()
        ]

    def count_rows(self) -> int:
        """Stored contact rows, lapsed ones included (a gauge for /metrics)."""
        (n,) = self.conn.execute("SELECT count(*) FROM regstate_bindings").fetchone()
        return int(n)

    def close(self) -> None:
        """Close the connection (a WAL checkpoint happens on the last close)."""
        self.conn.close()
