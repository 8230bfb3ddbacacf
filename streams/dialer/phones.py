"""Where the dialer view learns which phones to expect: VICIdial's ``phones`` table or a file.

``REGSTATE_DIALER_PHONES`` is a ``mysql://`` DSN of VICIdial's database (usually
``asterisk``), or the path of a CSV / ``mysql --batch`` export. Both are read
again every ``REGSTATE_DIALER_PHONES_REFRESH_S`` by the view, in a thread (PyMySQL
and file reads block), and the new map replaces the old one in one assignment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from processors.dialer import (
    PhonesError,
    ServerMap,
    expected_phones,
    parse_node_map,
    parse_node_map_csv,
    parse_phones_csv,
)
from streams.settings import SettingsError

PHONES_QUERY = "SELECT extension, server_ip, active, protocol FROM phones"
"""VICIdial's ``phones`` columns the view needs (the filter is processors.dialer's)."""


def is_dsn(source: str) -> bool:
    """Whether a phones source names a database rather than a file."""
    return source.startswith(("mysql://", "mariadb://"))


def read_phones_table(dsn: str) -> dict[str, tuple[str, ...]]:
    """Active SIP phones of VICIdial's ``phones`` table at ``dsn`` (blocks: call in a thread)."""
    from streams.dialer.mysql import MysqlDsn, connect

    conn: Any = connect(MysqlDsn.parse(dsn), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(PHONES_QUERY)
            rows = cur.fetchall()
    finally:
        conn.close()
    return expected_phones(
        (str(ext).strip(), str(ip).strip(), active, protocol)
        for ext, ip, active, protocol in rows
        if ext and ip
    )


def load_phones(source: str) -> dict[str, tuple[str, ...]]:
    """The expected phones of ``source`` (DSN, file path, or empty for none).

    Raises PhonesError naming the bad file or line; DsnError on a bad DSN; a
    driver error (PyMySQL's OperationalError...) when the database cannot be read.
    """
    if not source:
        return {}
    if is_dsn(source):
        return read_phones_table(source)
    try:
        return parse_phones_csv(Path(source).read_text())
    except OSError as exc:
        raise PhonesError(f"phones file {source}: {exc.strerror or exc}") from None


def load_node_map(node_map: str) -> dict[str, str]:
    """The node map: inline ``a=ip,...`` or a CSV path."""
    if node_map and Path(node_map).is_file():
        return parse_node_map_csv(Path(node_map).read_text())
    return parse_node_map(node_map) if node_map else {}


def read_errors() -> tuple[type[Exception], ...]:
    """What reading a phones source may raise (the driver's errors when it is installed)."""
    from streams.dialer.mysql import DsnError

    errors: tuple[type[Exception], ...] = (OSError, PhonesError, DsnError)
    try:
        import pymysql  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return errors
    return (*errors, pymysql.MySQLError)


def load_server_map(phones: str, node_map: str) -> ServerMap:
    """The phones source and the node map at start; SettingsError names what is wrong."""
    try:
        return ServerMap(load_phones(phones), load_node_map(node_map))
    except read_errors() as exc:
        raise SettingsError(f"REGSTATE_DIALER_PHONES / NODE_MAP: {exc}") from None
