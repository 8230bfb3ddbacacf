"""A second :class:`streams.dialer.store.BindingStore`: MariaDB/MySQL through a DSN.

``REGSTATE_DIALER_DSN=mysql://user:password@127.0.0.1:3306/dbname`` makes the
dialer view keep its copy there instead of the SQLite file, so dialer servers
that already query MySQL (VICIdial) can join against ``regstate_bindings``. The
tables, columns and guarantees are those of the SQLite store: each batch and
its offsets in one InnoDB transaction, a record replaces its AOR's rows, a
tombstone deletes them, lookups filter ``expires_at > now``.

Limits: ``aor`` up to 255 and ``contact_key`` up to 512 characters (InnoDB's
3072-byte key limit in utf8mb4); a longer one fails its batch and stops the
view (exit non-zero) rather than being skipped silently. Collation is binary:
AOR user parts are case-sensitive (R1). Needs PyMySQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from processors.dialer import is_aor
from streams.clock import Clock, now_ms
from streams.dialer.store import (
    AorInfo,
    BindingRow,
    StoreRecord,
    plan_batch,
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS regstate_bindings (
    aor VARCHAR(255) NOT NULL,
    contact_key VARCHAR(512) NOT NULL,
    extension VARCHAR(255) NOT NULL,
    contact_uri TEXT NOT NULL,
    node VARCHAR(255) NOT NULL,
    source_ip VARCHAR(64),
    source_port INT,
    source_transport VARCHAR(16),
    user_agent TEXT,
    expires_at BIGINT NOT NULL,
    registered_at BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (aor, contact_key),
    KEY regstate_bindings_extension (extension)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS regstate_aors (
    aor VARCHAR(255) NOT NULL PRIMARY KEY,
    extension VARCHAR(255) NOT NULL,
    version BIGINT,
    updated_at BIGINT,
    health TEXT,
    last_expires_at BIGINT,
    removed_at BIGINT,
    KEY regstate_aors_extension (extension)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS regstate_offsets (
    topic VARCHAR(255) NOT NULL,
    `partition` INT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, `partition`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
)

_COLUMNS = (
    "extension, aor, contact_key, contact_uri, node, source_ip, source_port, "
    "source_transport, user_agent, expires_at, registered_at, refreshed_at, updated_at, version"
)
_SELECT = f"SELECT {_COLUMNS} FROM regstate_bindings "  # noqa: S608 - constant columns
_INSERT_BINDING = (
    f"REPLACE INTO regstate_bindings ({_COLUMNS}) "  # noqa: S608 - constant columns
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPSERT_AOR = (
    "INSERT INTO regstate_aors (aor, extension, version, updated_at, health, last_expires_at, "
    "removed_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
    "version = VALUES(version), updated_at = VALUES(updated_at), health = VALUES(health), "
    "last_expires_at = VALUES(last_expires_at), removed_at = VALUES(removed_at)"
)
_TOMBSTONE_AOR = (
    "INSERT INTO regstate_aors (aor, extension, removed_at) VALUES (%s, %s, %s) "
    "ON DUPLICATE KEY UPDATE removed_at = VALUES(removed_at)"
)
_UPSERT_OFFSET = (
    "INSERT INTO regstate_offsets (topic, `partition`, next_offset) VALUES (%s, %s, %s) "
    "ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset)"
)
_AOR_INFO = (
    "SELECT aor, extension, version, updated_at, health, last_expires_at, removed_at "
    "FROM regstate_aors "
)
_DELETE_CHUNK = 500


class DsnError(ValueError):
    """A REGSTATE_DIALER_DSN that is not ``mysql://user:password@host:port/db``."""


@dataclass(frozen=True, slots=True)
class MysqlDsn:
    """The parts of a ``mysql://`` (or ``mariadb://``) DSN."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def parse(cls, dsn: str) -> MysqlDsn:
        """Parse ``mysql://user:password@host:port/db``; DsnError names what is missing."""
        u = urlsplit(dsn)
        if u.scheme not in ("mysql", "mariadb"):
            raise DsnError("REGSTATE_DIALER_DSN must start with mysql:// or mariadb://")
        database = u.path.lstrip("/")
        if not u.hostname or not database:
            raise DsnError("REGSTATE_DIALER_DSN needs a host and a database name")
        return cls(
            host=u.hostname,
            port=u.port or 3306,
            user=unquote(u.username or ""),
            password=unquote(u.password or ""),
            database=database,
        )


@dataclass(frozen=True, slots=True)
class MysqlTls:
    """TLS of the MariaDB/MySQL connection (``REGSTATE_MYSQL_SSL_*``); empty ``ca``: none."""

    ca: str = ""
    cert: str = ""
    key: str = ""

    @classmethod
    def from_settings(cls, settings: Any) -> MysqlTls:
        return cls(settings.mysql_ssl_ca, settings.mysql_ssl_cert, settings.mysql_ssl_key)

    def connect_args(self) -> dict[str, Any]:
        """PyMySQL's keyword arguments: verify the server's certificate and host name."""
        if not self.ca:
            return {}
        args: dict[str, Any] = {
            "ssl_ca": self.ca,
            "ssl_verify_cert": True,
            "ssl_verify_identity": True,
        }
        if self.cert:
            args.update(ssl_cert=self.cert, ssl_key=self.key)
        return args


class MysqlBindingStore:
    """BindingStore on MariaDB/MySQL (InnoDB). One connection per store object.

    The writer runs each batch in one transaction; a reader uses autocommit so
    every lookup sees the latest committed batch (not a REPEATABLE READ snapshot).
    """

    def __init__(
        self,
        dsn: str | MysqlDsn,
        *,
        read_only: bool = False,
        clock: Clock = now_ms,
        tls: MysqlTls | None = None,
    ) -> None:
        # Optional dependency, untyped; absent where no MySQL store is used.
        import pymysql  # type: ignore[import-untyped,import-not-found,unused-ignore]

        d = dsn if isinstance(dsn, MysqlDsn) else MysqlDsn.parse(dsn)
        self.clock = clock
        self.conn: Any = pymysql.connect(
            host=d.host,
            port=d.port,
            user=d.user,
            password=d.password,
            database=d.database,
            charset="utf8mb4",
            autocommit=read_only,
            **(tls or MysqlTls()).connect_args(),
        )
        if not read_only:
            with self.conn.cursor() as cur:
                for ddl in SCHEMA:
                    cur.execute(ddl)
            self.conn.commit()

    def offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset}`` stored for ``topic``."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT `partition`, next_offset FROM regstate_offsets WHERE topic = %s", (topic,)
            )
            rows = cur.fetchall()
        self.conn.commit()  # end the read transaction of a writer connection
        return {int(p): int(o) for p, o in rows}

    def apply_batch(
        self, records: Sequence[StoreRecord], next_offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Same contract as :meth:`SqliteBindingStore.apply_batch`, in one InnoDB transaction."""
        plan = plan_batch(records)
        final, inserts, aor_rows, tombstones = (
            plan.final,
            plan.inserts,
            plan.aor_rows,
            plan.tombstones,
        )
        aors = list(final)
        try:
            self.conn.begin()
            with self.conn.cursor() as cur:
                for i in range(0, len(aors), _DELETE_CHUNK):
                    chunk = aors[i : i + _DELETE_CHUNK]
                    marks = ", ".join(["%s"] * len(chunk))
                    cur.execute(
                        f"DELETE FROM regstate_bindings WHERE aor IN ({marks})",  # noqa: S608
                        chunk,
                    )
                if inserts:
                    cur.executemany(_INSERT_BINDING, inserts)
                if aor_rows:
                    cur.executemany(_UPSERT_AOR, aor_rows)
                if tombstones:
                    cur.executemany(_TOMBSTONE_AOR, tombstones)
                offs = [(t, p, o) for (t, p), o in next_offsets.items()]
                if offs:
                    cur.executemany(_UPSERT_OFFSET, offs)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[BindingRow]:
        with self.conn.cursor() as cur:
            cur.execute(_SELECT + where, params)
            return [BindingRow(*row) for row in cur.fetchall()]

    def lookup_aor(self, aor: str, now_ms: int | None = None) -> list[BindingRow]:
        """Active contacts of ``aor`` at ``now_ms`` (default: the clock), by contact key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows("WHERE aor = %s AND expires_at > %s ORDER BY contact_key", (aor, now))

    def lookup_extension(self, extension: str, now_ms: int | None = None) -> list[BindingRow]:
        """Active contacts of every AOR with user part ``extension``, by AOR then key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows(
            "WHERE extension = %s AND expires_at > %s ORDER BY aor, contact_key", (extension, now)
        )

    def lookup(self, key: str, now_ms: int | None = None) -> list[BindingRow]:
        """:meth:`lookup_aor` when ``key`` has a scheme, else :meth:`lookup_extension`."""
        if is_aor(key):
            return self.lookup_aor(key, now_ms)
        return self.lookup_extension(key, now_ms)

    def all_rows(self, now_ms: int | None = None) -> list[BindingRow]:
        """Every active contact at ``now_ms``, by AOR then contact key."""
        now = self.clock() if now_ms is None else now_ms
        return self._rows("WHERE expires_at > %s ORDER BY aor, contact_key", (now,))

    def contacts_any_time(self, key: str) -> list[BindingRow]:
        """Every stored contact of an AOR or extension, lapsed ones included."""
        if is_aor(key):
            return self._rows("WHERE aor = %s ORDER BY contact_key", (key,))
        return self._rows("WHERE extension = %s ORDER BY aor, contact_key", (key,))

    def aor_info(self, key: str) -> list[AorInfo]:
        """Last-known facts of the AOR, or of every AOR with that extension, by AOR."""
        where = "WHERE aor = %s" if is_aor(key) else "WHERE extension = %s ORDER BY aor"
        with self.conn.cursor() as cur:
            cur.execute(_AOR_INFO + where, (key,))
            rows = cur.fetchall()
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
            for a, e, v, u, h, le, rm in rows
        ]

    def count_rows(self) -> int:
        """Stored contact rows, lapsed ones included."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM regstate_bindings")
            (n,) = cur.fetchone()
        return int(n)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def mysql_opener(dsn: str, clock: Clock = now_ms, tls: MysqlTls | None = None) -> Any:
    """A ``streams.dialer.view.StoreOpener`` for the DSN: a writer and a reader connection."""
    parsed = MysqlDsn.parse(dsn)

    def open_store(writer: bool) -> MysqlBindingStore:
        return MysqlBindingStore(parsed, read_only=not writer, clock=clock, tls=tls)

    return open_store
