"""The SQL of the dialer view's stores, per dialect (SQLite, MariaDB/MySQL).

One query layer (streams/dialer/store.py, ``SqlStore``) runs the same statements
on both databases; what differs is here: placeholders, the upsert spelling,
column types, how a DATETIME is written, and the SQL functions of the
``regstate_phone_status`` view.

Statements are written with ``?`` placeholders and backtick-quoted ``partition``
(SQLite accepts backticks too); :meth:`Dialect.sql` turns them into the driver's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.dialer_tables import (
    KAMAILIO_LOCATION_VERSION,
    LOCATION_COLUMNS,
    PS_CONTACTS_COLUMNS,
    julian_day,
)

BINDING_COLUMNS = (
    "extension, aor, contact_key, contact_uri, node, source_ip, source_port, "
    "source_transport, user_agent, expires_at, registered_at, refreshed_at, updated_at, version"
)
"""``regstate_bindings`` in :class:`streams.dialer.store.BindingRow` order."""


def local_datetime(t_s: int) -> str:
    """Epoch seconds as Kamailio's db_mysql writes a DATETIME: local time, to the second.

    Kamailio reads it back with its own local time zone: the view and the
    Kamailio servers reading the table must share a time zone (README).
    """
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_s))


@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases."""

    name: str
    mark: str
    """The driver's placeholder."""
    replace: str
    """``INSERT ... `` that replaces a row with the same unique key."""
    insert_ignore: str
    schema: tuple[str, ...]
    kamailio_schema: tuple[str, ...]
    asterisk_schema: tuple[str, ...]
    phone_status_view: tuple[str, ...]
    datetime: Callable[[int], Any]
    """Epoch seconds -> the value Kamailio's driver of this database stores for a DATETIME."""

    def sql(self, text: str) -> str:
        """``text`` with ``?`` placeholders made the driver's."""
        return text if self.mark == "?" else text.replace("?", self.mark)

    def upsert(self, table: str, columns: tuple[str, ...], keys: tuple[str, ...]) -> str:
        """Insert, or update every non-key column of the row with the same ``keys``."""
        cols = ", ".join(columns)
        marks = ", ".join([self.mark] * len(columns))
        rest = [c for c in columns if c not in keys]
        head = f"INSERT INTO {table} ({cols}) VALUES ({marks}) "  # noqa: S608 - constant names
        if self.name == "sqlite":
            sets = ", ".join(f"{c} = excluded.{c}" for c in rest)
            return head + f"ON CONFLICT({', '.join(keys)}) DO UPDATE SET {sets}"
        sets = ", ".join(f"{c} = VALUES({c})" for c in rest)
        return head + f"ON DUPLICATE KEY UPDATE {sets}"


_LOCATION_VERSION_ROW = (
    "INSERT {ignore} INTO version (table_name, table_version) "  # noqa: S608 - a constant
    f"VALUES ('location', {KAMAILIO_LOCATION_VERSION})"
)

# -- SQLite ------------------------------------------------------------------

_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS regstate_bindings (
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
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS regstate_bindings_extension ON regstate_bindings (extension)",
    """CREATE TABLE IF NOT EXISTS regstate_aors (
    aor TEXT PRIMARY KEY,
    extension TEXT NOT NULL,
    version INTEGER,
    updated_at INTEGER,
    health TEXT,
    last_expires_at INTEGER,
    removed_at INTEGER
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS regstate_aors_extension ON regstate_aors (extension)",
    """CREATE TABLE IF NOT EXISTS regstate_offsets (
    topic TEXT NOT NULL,
    `partition` INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, `partition`)
)""",
    """CREATE TABLE IF NOT EXISTS regstate_phones (
    extension TEXT NOT NULL,
    server_ip TEXT NOT NULL,
    PRIMARY KEY (extension, server_ip)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS regstate_nodes (
    node TEXT PRIMARY KEY,
    server_ip TEXT NOT NULL
) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS regstate_extra_tables (name TEXT PRIMARY KEY) WITHOUT ROWID",
)

# Kamailio 5.6's own SQLite schema of usrloc (types decide SQLite's column affinity,
# so they are kept as Kamailio declares them), and its `version` table.
_SQLITE_KAMAILIO = (
    """CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
)""",
    """CREATE TABLE IF NOT EXISTS location (
    id INTEGER PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL,
    contact VARCHAR(512) DEFAULT '' NOT NULL,
    received VARCHAR(128) DEFAULT NULL,
    path VARCHAR(512) DEFAULT NULL,
    expires TIMESTAMP WITHOUT TIME ZONE DEFAULT '2030-05-28 21:32:15' NOT NULL,
    q REAL DEFAULT 1.0 NOT NULL,
    callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INTEGER DEFAULT 1 NOT NULL,
    last_modified TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    cflags INTEGER DEFAULT 0 NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(64) DEFAULT NULL,
    methods INTEGER DEFAULT NULL,
    instance VARCHAR(255) DEFAULT NULL,
    reg_id INTEGER DEFAULT 0 NOT NULL,
    server_id INTEGER DEFAULT 0 NOT NULL,
    connection_id INTEGER DEFAULT 0 NOT NULL,
    keepalive INTEGER DEFAULT 0 NOT NULL,
    partition INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT location_ruid_idx UNIQUE (ruid)
)""",
    "CREATE INDEX IF NOT EXISTS location_account_contact_idx "
    "ON location (username, domain, contact)",
    "CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires)",
    "CREATE INDEX IF NOT EXISTS location_tcpcon_idx ON location (connection_id)",
    "CREATE INDEX IF NOT EXISTS location_connection_idx ON location (server_id, connection_id)",
    _LOCATION_VERSION_ROW.format(ignore="OR IGNORE"),
)

# Asterisk's realtime ps_contacts as its alembic migrations leave it (ENUMs as text
# with a CHECK: SQLite has no ENUM).
_AST_BOOL = "('0', '1', 'off', 'on', 'false', 'true', 'no', 'yes')"


def _ps_contacts(yes_no: Callable[[str], str], keys: str = "") -> str:
    """``CREATE TABLE ps_contacts``: the columns once, each dialect spelling the
    ENUM of Asterisk's yes/no columns (``yes_no(column)``) and any inline keys."""
    return f"""CREATE TABLE IF NOT EXISTS ps_contacts (
    id VARCHAR(255) NOT NULL,
    uri VARCHAR(511),
    expiration_time BIGINT,
    qualify_frequency INTEGER,
    outbound_proxy VARCHAR(255),
    path TEXT,
    user_agent VARCHAR(255),
    qualify_timeout FLOAT,
    reg_server VARCHAR(255),
    authenticate_qualify {yes_no("authenticate_qualify")},
    via_addr VARCHAR(40),
    via_port INTEGER,
    call_id VARCHAR(255),
    endpoint VARCHAR(255),
    prune_on_boot {yes_no("prune_on_boot")},
    qualify_2xx_only {yes_no("qualify_2xx_only")},
    UNIQUE (id),
    CONSTRAINT ps_contacts_uq UNIQUE (id, reg_server){keys}
)"""


_SQLITE_ASTERISK = (
    _ps_contacts(lambda column: f"VARCHAR(5) CHECK ({column} IN {_AST_BOOL})"),
    "CREATE INDEX IF NOT EXISTS ps_contacts_id ON ps_contacts (id)",
    "CREATE INDEX IF NOT EXISTS ps_contacts_qualifyfreq_exp "
    "ON ps_contacts (qualify_frequency, expiration_time)",
)

_NOW_MS_SQLITE = "CAST(strftime('%s', 'now') AS INTEGER) * 1000"
_FRONT_END_SQLITE = (
    "CASE WHEN instr(b.node, '#') > 0 THEN substr(b.node, 1, instr(b.node, '#') - 1) "
    "ELSE b.node END"
)


def _phone_status(*, now_ms: str, front_end: str, dt: str, health: str, source: str) -> str:
    """One row per expected (extension, server) and active binding of the extension."""
    return f"""SELECT p.extension AS extension,
    p.server_ip AS expected_server,
    CASE WHEN b.aor IS NULL THEN 'N' ELSE 'Y' END AS registered,
    b.node AS node,
    n.server_ip AS server,
    b.contact_uri AS contact,
    {source} AS source,
    {dt.format("b.registered_at")} AS since,
    {dt.format("b.expires_at")} AS expires,
    {health} AS health,
    CASE WHEN b.aor IS NULL OR n.server_ip IS NULL THEN NULL
        WHEN EXISTS (SELECT 1 FROM regstate_phones e
                     WHERE e.extension = p.extension AND e.server_ip = n.server_ip) THEN 'N'
        ELSE 'Y' END AS mismatch
FROM regstate_phones p
LEFT JOIN regstate_bindings b ON b.extension = p.extension AND b.expires_at > {now_ms}
LEFT JOIN regstate_aors a ON a.aor = b.aor
LEFT JOIN regstate_nodes n ON n.node = {front_end}"""  # noqa: S608 - SQL functions only


_SQLITE_VIEW = (
    "DROP VIEW IF EXISTS regstate_phone_status",
    "CREATE VIEW regstate_phone_status AS "
    + _phone_status(
        now_ms=_NOW_MS_SQLITE,
        front_end=_FRONT_END_SQLITE,
        dt="datetime({} / 1000, 'unixepoch')",
        health="json_extract(a.health, '$.state')",
        source="b.source_ip || ':' || b.source_port",
    ),
)

SQLITE = Dialect(
    name="sqlite",
    mark="?",
    replace="INSERT OR REPLACE",
    insert_ignore="INSERT OR IGNORE",
    schema=_SQLITE_SCHEMA,
    kamailio_schema=_SQLITE_KAMAILIO,
    asterisk_schema=_SQLITE_ASTERISK,
    phone_status_view=_SQLITE_VIEW,
    datetime=julian_day,
)

# -- MariaDB / MySQL ---------------------------------------------------------

_TABLE_OPTS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
_MYSQL_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS regstate_bindings (
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
) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS regstate_aors (
    aor VARCHAR(255) NOT NULL PRIMARY KEY,
    extension VARCHAR(255) NOT NULL,
    version BIGINT,
    updated_at BIGINT,
    health TEXT,
    last_expires_at BIGINT,
    removed_at BIGINT,
    KEY regstate_aors_extension (extension)
) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS regstate_offsets (
    topic VARCHAR(255) NOT NULL,
    `partition` INT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, `partition`)
) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS regstate_phones (
    extension VARCHAR(100) NOT NULL,
    server_ip VARCHAR(64) NOT NULL,
    PRIMARY KEY (extension, server_ip)
) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS regstate_nodes (
    node VARCHAR(255) NOT NULL PRIMARY KEY,
    server_ip VARCHAR(64) NOT NULL
) {_TABLE_OPTS}""",
    "CREATE TABLE IF NOT EXISTS regstate_extra_tables (name VARCHAR(64) PRIMARY KEY) "
    + _TABLE_OPTS,
)

# Kamailio 5.6's MySQL schema of usrloc and `version`.
_MYSQL_KAMAILIO = (
    """CREATE TABLE IF NOT EXISTS version (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INT UNSIGNED DEFAULT 0 NOT NULL,
    CONSTRAINT table_name_idx UNIQUE (table_name)
)""",
    """CREATE TABLE IF NOT EXISTS location (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `ruid` VARCHAR(64) DEFAULT '' NOT NULL,
    `username` VARCHAR(64) DEFAULT '' NOT NULL,
    `domain` VARCHAR(64) DEFAULT NULL,
    `contact` VARCHAR(512) DEFAULT '' NOT NULL,
    `received` VARCHAR(128) DEFAULT NULL,
    `path` VARCHAR(512) DEFAULT NULL,
    `expires` DATETIME DEFAULT '2030-05-28 21:32:15' NOT NULL,
    `q` FLOAT(10,2) DEFAULT 1.0 NOT NULL,
    `callid` VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    `cseq` INT(11) DEFAULT 1 NOT NULL,
    `last_modified` DATETIME DEFAULT '2000-01-01 00:00:01' NOT NULL,
    `flags` INT(11) DEFAULT 0 NOT NULL,
    `cflags` INT(11) DEFAULT 0 NOT NULL,
    `user_agent` VARCHAR(255) DEFAULT '' NOT NULL,
    `socket` VARCHAR(64) DEFAULT NULL,
    `methods` INT(11) DEFAULT NULL,
    `instance` VARCHAR(255) DEFAULT NULL,
    `reg_id` INT(11) DEFAULT 0 NOT NULL,
    `server_id` INT(11) DEFAULT 0 NOT NULL,
    `connection_id` INT(11) DEFAULT 0 NOT NULL,
    `keepalive` INT(11) DEFAULT 0 NOT NULL,
    `partition` INT(11) DEFAULT 0 NOT NULL,
    CONSTRAINT ruid_idx UNIQUE (`ruid`),
    KEY account_contact_idx (`username`, `domain`, `contact`),
    KEY expires_idx (`expires`),
    KEY tcpcon_idx (`connection_id`),
    KEY connection_idx (`server_id`, `connection_id`)
)""",
    _LOCATION_VERSION_ROW.format(ignore="IGNORE"),
)

_MYSQL_ASTERISK = (
    _ps_contacts(
        lambda _column: f"ENUM{_AST_BOOL}",
        keys=",\n    KEY ps_contacts_id (id),"
        "\n    KEY ps_contacts_qualifyfreq_exp (qualify_frequency, expiration_time)",
    ),
)

_MYSQL_VIEW = (
    "CREATE OR REPLACE VIEW regstate_phone_status AS "
    + _phone_status(
        now_ms="UNIX_TIMESTAMP() * 1000",
        front_end="SUBSTRING_INDEX(b.node, '#', 1)",
        dt="CAST(FROM_UNIXTIME({} DIV 1000) AS DATETIME)",
        health="JSON_VALUE(a.health, '$.state')",
        source="CONCAT(b.source_ip, ':', b.source_port)",
    ),
)

MYSQL = Dialect(
    name="mysql",
    mark="%s",
    replace="REPLACE",
    insert_ignore="INSERT IGNORE",
    schema=_MYSQL_SCHEMA,
    kamailio_schema=_MYSQL_KAMAILIO,
    asterisk_schema=_MYSQL_ASTERISK,
    phone_status_view=_MYSQL_VIEW,
    datetime=local_datetime,
)

LOCATION_INSERT_COLUMNS = ", ".join(f"`{c}`" for c in LOCATION_COLUMNS)
PS_CONTACTS_INSERT_COLUMNS = ", ".join(PS_CONTACTS_COLUMNS)
