"""SIPp REGISTER-with-digest load against `regstate frontend` and, if installed, Kamailio.

    .venv/bin/python bench/frontend_vs_kamailio.py --users 2000 --rate 400

Both answer the same SIPp scenario (tests/sipp/register_auth.xml: REGISTER, 401,
REGISTER with MD5 credentials, 200) for the same users and passwords. regstate
logs every 200 to Kafka (acks=all) before sending it; Kamailio keeps bindings in
memory (usrloc db_mode 0) and checks a password computed in its script, so it is
the in-memory upper bound. Needs a running Kafka (`regstate kafka up`), `sipp`,
and `kamailio` for the comparison (Debian packages sip-tester, kamailio).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.settings import Settings  # noqa: E402
from streams.sip.digest import UserHashes  # noqa: E402
from streams.sip.users import hashes_for, save_users  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

REALM = "pbx.example"
KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
children=2
listen=udp:127.0.0.1:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
request_route {{
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    if (!is_method("REGISTER")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    if (!pv_www_authenticate("{realm}", "Pw-$tU-Zq8!", "0")) {{
        www_challenge("{realm}", "0");
        exit;
    }}
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
}}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def password(user: str) -> str:
    return f"Pw-{user}-Zq8!"


def run_sipp(port: int, users: list[str], rate: int, work: Path, name: str) -> tuple[float, str]:
    csv = work / f"{name}.csv"
    csv.write_text(
        "SEQUENTIAL\n"
        + "".join(f"{u};[authentication username={u} password={password(u)}]\n" for u in users)
    )
    started = time.monotonic()
    result = subprocess.run(
        [
            "sipp", "-sf", str(ROOT / "tests" / "sipp" / "register_auth.xml"), "-inf", str(csv),
            "-m", str(len(users)), "-r", str(rate), "-l", "200", "-i", "127.0.0.1",
            "-p", str(free_port()), f"127.0.0.1:{port}", "-nostdin", "-timeout", "300s",
            "-trace_stat", "-stf", str(work / f"{name}.stat.csv"),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    ok = re.search(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)", result.stdout)
    failed = re.search(r"Failed call\s+\|\s+\d+\s+\|\s+(\d+)", result.stdout)
    summary = f"ok {ok.group(1) if ok else '?'} failed {failed.group(1) if failed else '?'}"
    return elapsed, summary


def bench_regstate(users: list[str], rate: int, work: Path) -> str:
    port = free_port()
    env = {
        **os.environ,
        "REGSTATE_TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:8]}.",
        "REGSTATE_DATA_DIR": str(work / "regstate"),
        "REGSTATE_SIP_REALM": REALM,
        "REGSTATE_SIP_PORT": str(port),
        "REGSTATE_NODE_ID": "fe-bench",
        "REGSTATE_SIP_DIGEST_ALGORITHMS": "MD5",
        "REGSTATE_SIP_RATE_PER_S": "100000",
        "REGSTATE_SIP_RATE_BURST": "100000",
        "REGSTATE_LOG_LEVEL": "warning",
    }
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("REGSTATE_")})
    asyncio.run(ensure_topics(settings))
    table: dict[str, UserHashes] = {u: hashes_for(u, REALM, password(u)) for u in users}
    save_users(Path(settings.data_dir) / "sip-users.json", REALM, table)
    log = (work / "frontend.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "frontend"], env=env, stdout=subprocess.PIPE, stderr=log
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "listening ..."
        time.sleep(2)  # the event log connects in the background
        elapsed, summary = run_sipp(port, users, rate, work, "regstate")
    finally:
        proc.terminate()
        proc.wait(20)
    rate_s = len(users) / elapsed
    return f"regstate frontend: {len(users)} in {elapsed:.1f} s ({rate_s:.0f}/s), {summary}"


def bench_kamailio(users: list[str], rate: int, work: Path) -> str:
    binary = shutil.which("kamailio")
    if binary is None:
        return "kamailio: not installed (apt-get install kamailio)"
    port = free_port()
    cfg = work / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=port, realm=REALM))
    proc = subprocess.Popen(
        [binary, "-f", str(cfg), "-DD", "-E", "-m", "128", "-M", "16", "-Y", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=(work / "kamailio.log").open("wb"),
    )
    try:
        time.sleep(2)
        assert proc.poll() is None, (work / "kamailio.log").read_text()[-2000:]
        elapsed, summary = run_sipp(port, users, rate, work, "kamailio")
    finally:
        proc.terminate()
        proc.wait(20)
    rate_s = len(users) / elapsed
    return f"kamailio (usrloc, memory): {len(users)} in {elapsed:.1f} s ({rate_s:.0f}/s), {summary}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=400, help="new SIPp calls per second")
    args = parser.parse_args()
    users = [f"5{i:05d}" for i in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="regstate-bench-") as tmp:
        work = Path(tmp)
        print(bench_regstate(users, args.rate, work))
        print(bench_kamailio(users, args.rate, work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
