"""The headline: a Kamailio proxy routes a call by the dialer view's table, nothing else.

A phone (SIPp) registers with digest auth at a regstate front-end; the front-end
publishes the event, a real worker folds it into regstate.bindings, a dialer
view (a `regstate dialer-view` process with REGSTATE_DIALER_KAMAILIO_LOCATION=1)
writes Kamailio's location table into its SQLite file. A Kamailio proxy with
usrloc ``db_mode=3`` on that file, which refuses every REGISTER itself and shares
nothing with the front-end (no dmq, no memory), relays an INVITE for the phone
to the SIPp UAS listening where the phone registered. After the phone
unregisters, the same INVITE gets 404 from Kamailio. Once with the view on SQLite
(Kamailio's db_sqlite), once on MariaDB (db_mysql).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.frontend.users import add_user
from tests.helpers import PROJECT_ROOT, wait_until
from tests.integration.engine_harness import Worker, engine_env, free_port
from tests.integration.kamailio_support import (
    KAMAILIO,
    PROXY_ONLY,
    SIPP,
    free_udp_port,
    running_kamailio,
    sipp,
    sipp_uas,
)
from tests.integration.test_dialer_view_mysql import mariadb_dsn, mariadb_server
from tests.integration.test_frontend_sipp import REALM, auth_row, started_frontend

__all__ = ["mariadb_dsn", "mariadb_server"]  # fixtures used by name

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        (KAMAILIO is None or SIPP is None) and not os.environ.get("CI"),
        reason="kamailio/sipp not installed (scripts/kamailio-install.sh, sipp-install.sh)",
    ),
]

PHONE = "1001"
PASSWORD = "Pw-1001-Kq7!"  # noqa: S105 - a test user's password


def location_users(db: Path) -> list[tuple[str, str, str]] | None:
    """(username, domain, contact) rows of the view's location table; None before it exists."""
    if not db.exists():
        return None
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT username, domain, contact FROM location").fetchall()
    except sqlite3.OperationalError:
        return None  # the view has not created its schema yet
    finally:
        conn.close()


def mysql_location_users(dsn: str) -> list[tuple[str, str, str]] | None:
    """The same, from the view's MariaDB database."""
    import pymysql

    from tests.integration.test_dialer_tables_mysql import query

    try:
        return [
            (r[0], r[1], r[2]) for r in query(dsn, "SELECT username, domain, contact FROM location")
        ]
    except pymysql.err.ProgrammingError:
        return None  # the view has not created its schema yet


@pytest.fixture(params=["sqlite", "mariadb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, str], Any, Any]:
    """(view env, location reader, Kamailio's database: a file or a URL) of the view."""
    if request.param == "sqlite":
        db = tmp_path / "dialer-view.sqlite3"
        return {"REGSTATE_DIALER_DB": str(db)}, lambda: location_users(db), db
    dsn = request.getfixturevalue("mariadb_dsn")
    return {"REGSTATE_DIALER_DSN": dsn}, lambda: mysql_location_users(dsn), dsn


def test_kamailio_routes_an_invite_by_the_dialer_view(
    kafka_bootstrap: str, tmp_path: Path, backend: tuple[dict[str, str], Any, Any]
) -> None:
    view_env, rows, kamailio_db = backend
    data = tmp_path / "fe"
    data.mkdir()
    add_user(data / "sip-users.json", REALM, PHONE, PASSWORD)
    with started_frontend(
        kafka_bootstrap, data, REGSTATE_SIP_RATE_PER_S="500", REGSTATE_SIP_RATE_BURST="500"
    ) as fe:
        prefix = fe.env["REGSTATE_TOPIC_PREFIX"]
        worker = Worker(
            engine_env(kafka_bootstrap, prefix, tmp_path / "engine", web_port=free_port()),
            tmp_path / "worker.log",
        ).start()
        view_log = (tmp_path / "view.log").open("wb")
        view = subprocess.Popen(
            [sys.executable, "-m", "streams", "dialer-view"],
            cwd=PROJECT_ROOT,
            env={
                **os.environ,
                "REGSTATE_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "REGSTATE_TOPIC_PREFIX": prefix,
                "REGSTATE_PARTITIONS": "4",
                **view_env,
                "REGSTATE_DIALER_WEB_PORT": "0",
                "REGSTATE_DIALER_KAMAILIO_LOCATION": "1",
            },
            stdout=view_log,
            stderr=subprocess.STDOUT,
        )
        try:
            worker.wait_ready()
            # Kamailio checks the table version at start: the view creates it first.
            wait_until(
                lambda: view.poll() is not None or rows() is not None,
                60,
                0.2,
                "view schema",
            )
            assert view.poll() is None, (tmp_path / "view.log").read_text()[-2000:]
            with running_kamailio(tmp_path, kamailio_db, register=PROXY_ONLY) as proxy:
                uas_port = free_udp_port()
                reg = sipp(
                    "register_auth", fe.port, [auth_row(PHONE, PASSWORD)], tmp_path, uas_port
                )
                assert reg.returncode == 0, reg.stdout[-2000:]
                wait_until(
                    lambda: rows() == [(PHONE, REALM, f"sip:{PHONE}@127.0.0.1:{uas_port}")],
                    60,
                    0.2,
                    "the registration in the view's location table",
                )
                with sipp_uas(tmp_path, uas_port):
                    call = sipp("invite_routed", proxy, [f"{PHONE};"], tmp_path)
                assert call.returncode == 0, call.stdout[-2000:] + call.stderr[-1000:]

                unreg = sipp("unregister_all", fe.port, [auth_row(PHONE, PASSWORD)], tmp_path)
                assert unreg.returncode == 0, unreg.stdout[-2000:]
                wait_until(lambda: rows() == [], 60, 0.2, "row removed")
                gone = sipp("invite_404", proxy, [f"{PHONE};"], tmp_path)
                assert gone.returncode == 0, gone.stdout[-2000:] + gone.stderr[-1000:]
        finally:
            view.terminate()
            code = view.wait(30)
            view_log.close()
            worker.stop()
        assert code == 0, (tmp_path / "view.log").read_text()[-2000:]
