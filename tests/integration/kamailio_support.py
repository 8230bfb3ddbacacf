"""A real Kamailio (Debian's 5.6) with usrloc in DB-only mode, and SIPp, for the dialer tests.

Each Kamailio listens on a UDP port of its own on 127.0.0.1 and keeps its
location table in the SQLite file it is given (``db_sqlite``, ``db_mode=3``: every
``save`` and every ``lookup`` goes to the database, nothing is cached). It is
ready once it answers an OPTIONS. Processes run in a session of their own and are
stopped by their id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import PROJECT_ROOT, wait_until

KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
)
SIPP = shutil.which("sipp")
# Debian's multiarch path (x86_64-linux-gnu, aarch64-linux-gnu, ...).
MODULES = next(
    iter(sorted(Path("/usr/lib").glob("*/kamailio/modules"))), Path("/usr/lib/kamailio/modules")
)
KAMAILIO_SQLITE_SCHEMA = Path("/usr/share/kamailio/db_sqlite")
KAMAILIO_MYSQL_SCHEMA = Path("/usr/share/kamailio/mysql")
SCENARIOS = PROJECT_ROOT / "tests" / "sipp"

CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "db_sqlite.so"
loadmodule "db_mysql.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "path.so"
loadmodule "nathelper.so"
modparam("usrloc", "db_url", "{db_url}")
modparam("usrloc", "db_mode", 3)
modparam("usrloc", "use_domain", 1)
modparam("registrar", "use_path", 1)
modparam("nathelper", "received_avp", "$avp(RECEIVED)")
modparam("registrar", "received_avp", "$avp(RECEIVED)")
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("OPTIONS") && $rU == $null) {{ sl_send_reply("200", "OK"); exit; }}
    if (has_totag()) {{
        if (is_method("ACK")) {{ if (t_check_trans()) t_relay(); else forward(); exit; }}
        t_relay();
        exit;
    }}
    if (is_method("REGISTER")) {{
        {register}
        exit;
    }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""
REGISTRAR = 'if (nat_uac_test("129")) fix_nated_register(); save("location");'
"""A registrar: NAT'd contacts get ``received`` (Contact private or its port not the source's)."""
PROXY_ONLY = 'sl_send_reply("403", "Register elsewhere");'
"""A proxy that never writes the table: every binding in it came from the dialer view."""


def free_udp_port() -> int:
    """A UDP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kamailio_schema_db(path: Path) -> None:
    """A fresh SQLite database with Kamailio's own ``version`` and usrloc tables."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        for name in ("standard-create.sql", "usrloc-create.sql"):
            conn.executescript((KAMAILIO_SQLITE_SCHEMA / name).read_text())
    finally:
        conn.close()


def answers_options(port: int) -> bool:
    """Whether something on 127.0.0.1:``port`` answers a SIP OPTIONS within 0.5 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        local = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-probe{local};rport\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=p{local}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: probe-{local}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), ("127.0.0.1", port))
        try:
            data = s.recv(4096)
        except OSError:  # no answer in time, or the port refused (nothing listens yet)
            return False
        return data.startswith(b"SIP/2.0 ")


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, children included: TERM, then KILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextmanager
def running_kamailio(work: Path, db: Path | str, register: str = REGISTRAR) -> Iterator[int]:
    """Kamailio on a free UDP port with usrloc ``db_mode=3`` on ``db`` (an SQLite file, or a
    ``mysql://`` URL); yields the port."""
    assert KAMAILIO is not None, "kamailio not installed (scripts/kamailio-install.sh)"
    port = free_udp_port()
    cfg = work / f"kamailio-{port}.cfg"
    db_url = db if isinstance(db, str) else f"sqlite://{db.resolve()}"
    cfg.write_text(CFG.format(port=port, modules=MODULES, db_url=db_url, register=register))
    log = work / f"kamailio-{port}.log"
    with log.open("wb") as out:
        # -DD: no daemon, children in our session; -E: log to stderr; a private runtime dir.
        rundir = work / f"kamailio-run-{port}"
        rundir.mkdir()
        proc = subprocess.Popen(
            [KAMAILIO, "-DD", "-E", "-f", str(cfg), "-Y", str(rundir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ),  # its TZ: Kamailio writes DATETIMEs in local time
        )
    try:
        wait_until(lambda: proc.poll() is not None or answers_options(port), 30, 0.2, "kamailio up")
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        yield port
    finally:
        stop_group(proc)


def sipp(
    scenario: str,
    target_port: int,
    rows: list[str],
    tmp: Path,
    local_port: int | None = None,
    timeout_s: int = 20,
) -> subprocess.CompletedProcess[str]:
    """One SIPp run of ``scenario`` (tests/sipp) against 127.0.0.1:``target_port``."""
    assert SIPP is not None, "sipp not installed (scripts/sipp-install.sh)"
    inf = tmp / f"{scenario}-{target_port}.csv"
    inf.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    return subprocess.run(
        [
            SIPP, "-sf", str(SCENARIOS / f"{scenario}.xml"), "-inf", str(inf),
            "-m", str(len(rows)), "-i", "127.0.0.1", "-p", str(local_port or free_udp_port()),
            f"127.0.0.1:{target_port}", "-timeout", f"{timeout_s}s", "-nostdin",
            "-trace_msg", "-message_file", str(tmp / f"{scenario}-{target_port}.msg"),
            "-trace_err", "-error_file", str(tmp / f"{scenario}-{target_port}.err"),
        ],
        capture_output=True, text=True, timeout=timeout_s + 30, check=False,
    )  # fmt: skip


@contextmanager
def sipp_uas(tmp: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """SIPp's built-in UAS on 127.0.0.1:``port`` (answers INVITEs 180/200, BYE 200)."""
    assert SIPP is not None, "sipp not installed (scripts/sipp-install.sh)"
    log = tmp / f"uas-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [SIPP, "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc)
