"""``regstate dialer-view`` and ``regstate where``.

``dialer-view`` keeps a dialer server's copy of regstate.bindings in a local
SQLite file and serves it (see streams/dialer/view.py). ``where EXT|AOR`` says
where a phone rings now, from that file when it exists (the view may be running
or stopped), else from regstate.bindings read once (streams/log/snapshot.py).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from processors.dialer import ServerMap
from streams.cliutil import add_format_argument, add_time_argument
from streams.dialer.phones import load_server_map
from streams.settings import Settings, SettingsError

if TYPE_CHECKING:
    from streams.dialer.store import SqliteBindingStore


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="SQLite file (REGSTATE_DIALER_DB; default under data dir)")
    parser.add_argument(
        "--phones",
        help="VICIdial phones: mysql://user:pw@host:port/asterisk, or a CSV/tab-separated "
        "export with header extension,server_ip (REGSTATE_DIALER_PHONES)",
    )
    parser.add_argument(
        "--node-map",
        help="node -> server IP: fe1=10.0.0.1,fe2=10.0.0.2 or a CSV node,server_ip "
        "(REGSTATE_DIALER_NODE_MAP)",
    )


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``dialer-view`` and ``where``."""
    p = subparsers.add_parser(
        "dialer-view",
        help="a dialer server's materialized copy of regstate.bindings (SQLite or MariaDB, "
        "HTTP, SSE, Kamailio location, Asterisk ps_contacts)",
        description=(
            "Read regstate.bindings into a local SQLite file or MariaDB (offsets stored with "
            "the rows, so a restart resumes where it stopped), serve GET /v1/extensions/{ext}, "
            "/v1/aors/{aor}, /v1/events?ext=|aor= (server-sent binding events), /metrics, "
            "/healthz, /readyz (503 until caught up). With REGSTATE_DIALER_KAMAILIO_LOCATION=1 "
            "and REGSTATE_DIALER_ASTERISK_CONTACTS=1 also keep Kamailio's location and "
            "Asterisk's ps_contacts tables in the same transactions."
        ),
    )
    _add_common(p)
    p.add_argument("--port", type=int, help="HTTP port (REGSTATE_DIALER_WEB_PORT, default 6070)")
    p.set_defaults(func=run_dialer_view)

    w = subparsers.add_parser(
        "where",
        help="where an extension or AOR rings now, since when, or why it does not",
        description=(
            "Reads the dialer view's SQLite file (running or stopped); without one, reads "
            "regstate.bindings to its end. Exit 0 when some contact is active, 1 otherwise."
        ),
    )
    w.add_argument("key", help="extension (user part, e.g. 1001) or AOR (sip:1001@pbx)")
    _add_common(w)
    add_time_argument(w, "--at", "time to judge expiry at (default now)")
    add_format_argument(w, choices=("table", "json"), what="the answer")
    # Before --format: kept so scripts that pass it still work.
    w.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    w.add_argument(
        "--from-topic",
        action="store_true",
        help="read regstate.bindings to its end instead of a dialer view's store "
        "(slower; for a host without a dialer view)",
    )
    w.set_defaults(func=run_where)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from REGSTATE_*, with the flags on top; SettingsError on a bad DSN."""
    settings = Settings.from_env()
    overrides: dict[str, Any] = {}
    for flag, name in (
        ("db", "dialer_db"),
        ("phones", "dialer_phones"),
        ("node_map", "dialer_node_map"),
        ("port", "dialer_web_port"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[name] = value
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
        settings.validate()
    if settings.dialer_dsn:
        from streams.dialer.mysql import DsnError, MysqlDsn

        try:
            MysqlDsn.parse(settings.dialer_dsn)
        except DsnError as exc:
            raise SettingsError(str(exc)) from None
    return settings


async def _serve(settings: Settings, server_map: ServerMap) -> int:
    from streams.dialer.view import DialerViewService, sqlite_opener
    from streams.log.topics import ensure_topics

    await ensure_topics(settings)
    if settings.dialer_dsn:
        from streams.dialer.mysql import MysqlTls, mysql_opener

        opener = mysql_opener(
            settings.dialer_dsn,
            tls=MysqlTls.from_settings(settings),
            tables=settings.dialer_tables(),
        )
    else:
        opener = sqlite_opener(settings.dialer_db_path(), tables=settings.dialer_tables())
    service = DialerViewService(
        settings, opener, server_map=server_map, phones_source=settings.dialer_phones
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.run(stop)
    return 0


def run_dialer_view(args: argparse.Namespace) -> int:
    """Run the dialer view until SIGTERM/SIGINT (exit 0)."""
    settings = settings_from(args)
    server_map = load_server_map(settings.dialer_phones, settings.dialer_node_map)
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

    from streams.log.kafka_config import failure_message
    from streams.log.topics import TopicsError

    try:
        return asyncio.run(_serve(settings, server_map))
    except TopicsError as exc:
        print(f"regstate dialer-view: {exc}", file=sys.stderr)
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"regstate dialer-view: {failure_message(settings, exc)}", file=sys.stderr)
    return 1


def _store_from_topic(settings: Settings) -> SqliteBindingStore:
    """An in-memory store filled from regstate.bindings read to its end (no file around)."""
    from streams.dialer.store import SqliteBindingStore, record_from_json
    from streams.log.snapshot import read_latest
    from streams.log.topics import BINDINGS

    latest = asyncio.run(read_latest(settings, settings.topic(BINDINGS)))
    store = SqliteBindingStore(":memory:")
    records = [record_from_json(k.decode(), v, 0) for k, v in latest.items()]
    store.apply_batch(records, {})
    return store


def run_where(args: argparse.Namespace) -> int:
    """Print where ``args.key`` rings; 0 when ringing, 1 when not."""
    from streams.clock import now_ms
    from streams.dialer.report import build_reports, render_text
    from streams.dialer.store import BindingStore, SqliteBindingStore

    settings = settings_from(args)
    server_map = load_server_map(settings.dialer_phones, settings.dialer_node_map)
    path = settings.dialer_db_path()
    store: BindingStore
    if settings.dialer_dsn:
        from streams.dialer.mysql import MysqlBindingStore, MysqlDsn

        dsn = MysqlDsn.parse(settings.dialer_dsn)
        store = MysqlBindingStore(dsn, read_only=True)
        origin = f"dialer view database {dsn.database} on {dsn.host}:{dsn.port}"
    elif args.from_topic:
        store = _store_from_topic(settings)
        origin = f"topic {settings.topic('bindings')}"
    elif Path(path).exists():
        store = SqliteBindingStore(path, read_only=True)
        origin = f"dialer view file {path}"
    else:
        # No silent fallback to Kafka: a mistyped --db must not answer from elsewhere.
        print(
            f"regstate where: no dialer view file at {path} (--db, REGSTATE_DIALER_DB); "
            "run `regstate dialer-view`, or pass --from-topic to read regstate.bindings",
            file=sys.stderr,
        )
        return 2
    try:
        now = now_ms() if args.at is None else args.at
        reports = build_reports(store, args.key, server_map, now)
    finally:
        store.close()
    text, code = render_text(args.key, reports)
    if args.json or args.format == "json":
        sys.stdout.write(
            orjson.dumps(
                {
                    "key": args.key,
                    "now": now,
                    "source": origin,
                    "aors": [r.as_dict() for r in reports],
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
            + "\n"
        )
    else:
        sys.stdout.write(f"# from {origin}\n{text}")
    return code
