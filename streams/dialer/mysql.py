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

The statements are those of the one query layer (``SqlStore`` in
streams/dialer/store.py, MySQL dialect in streams/dialer/sql.py); this module
only connects and runs transactions. PyMySQL blocks: the dialer view calls every
store method from a thread of its own, never from its event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from streams.clock import Clock, now_ms
from streams.dialer.sql import MYSQL
from streams.dialer.store import NO_EXTRA_TABLES, ExtraTables, SqlStore


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


def connect(dsn: MysqlDsn, *, autocommit: bool, tls: MysqlTls | None = None) -> Any:
    """A PyMySQL connection (optional dependency, untyped; absent where no MySQL is used)."""
    import pymysql  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return pymysql.connect(
        host=dsn.host,
        port=dsn.port,
        user=dsn.user,
        password=dsn.password,
        database=dsn.database,
        charset="utf8mb4",
        autocommit=autocommit,
        **(tls or MysqlTls()).connect_args(),
    )


class MysqlBindingStore(SqlStore):
    """BindingStore on MariaDB/MySQL (InnoDB). One connection per store object.

    The writer runs each batch in one transaction; a reader uses autocommit so
    every lookup sees the latest committed batch (not a REPEATABLE READ snapshot).
    """

    dialect = MYSQL

    def __init__(
        self,
        dsn: str | MysqlDsn,
        *,
        read_only: bool = False,
        clock: Clock = now_ms,
        tls: MysqlTls | None = None,
        tables: ExtraTables = NO_EXTRA_TABLES,
    ) -> None:
        d = dsn if isinstance(dsn, MysqlDsn) else MysqlDsn.parse(dsn)
        self.clock = clock
        self.tables = tables
        self.read_only = read_only
        self.conn: Any = connect(d, autocommit=read_only, tls=tls)
        if not read_only:
            self._create_schema()

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, tuple(params))
            rows = list(cur.fetchall())
        if not self.read_only:
            self.conn.commit()  # end the read transaction of a writer connection
        return rows

    def _commit_ddl(self) -> None:
        self.conn.commit()

    def _begin(self) -> Any:
        self.conn.begin()
        return self.conn.cursor()

    def _commit(self, cur: Any) -> None:
        self.conn.commit()
        cur.close()

    def _rollback(self, cur: Any) -> None:
        self.conn.rollback()
        cur.close()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def mysql_opener(
    dsn: str,
    clock: Clock = now_ms,
    tls: MysqlTls | None = None,
    tables: ExtraTables = NO_EXTRA_TABLES,
) -> Any:
    """A ``streams.dialer.view.StoreOpener`` for the DSN: a writer and a reader connection."""
    parsed = MysqlDsn.parse(dsn)

    def open_store(writer: bool) -> MysqlBindingStore:
        return MysqlBindingStore(parsed, read_only=not writer, clock=clock, tls=tls, tables=tables)

    return open_store
