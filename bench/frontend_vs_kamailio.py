"""SIPp REGISTER-with-digest load against `regstate frontend` and, if installed, Kamailio.

    .venv/bin/python bench/frontend_vs_kamailio.py --users 4000 --rates 500,1000,1500,2000
    .venv/bin/python bench/frontend_vs_kamailio.py --processes 2 --rates 1500
    .venv/bin/python bench/frontend_vs_kamailio.py --rates 1000 --profile /tmp/fe.prof

At each rate (lowest first) both get the same SIPp run; the table shows the
transactions per second each completed and the share that succeeded, and the
rising stops once both fell below 99.9 %. ``--processes`` runs the node as that
many processes sharing the port (REGSTATE_SIP_PROCESSES); SIPp then sends each
call from its own UDP port (``-t un``) so the kernel can spread them, and
Kamailio gets as many children. ``--profile`` writes a cProfile of a
one-process node.

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
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.frontend.users import hashes_for, save_users  # noqa: E402
from streams.log.topics import ensure_topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.sip.digest import UserHashes  # noqa: E402

REALM = "pbx.example"
KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
children={children}
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


class Result(NamedTuple):
    elapsed_s: float
    ok: int
    failed: int

    @property
    def per_s(self) -> float:
        """Successful transactions (REGISTER answered 200) per second of the run."""
        return self.ok / self.elapsed_s

    def line(self, name: str, total: int) -> str:
        share = self.ok / total if total else 0.0
        return (
            f"{name:<28} {self.per_s:8.0f}/s  {self.ok:>6} ok {self.failed:>5} failed  {share:8.3%}"
        )


def run_sipp(port: int, users: list[str], rate: int, work: Path, name: str, spread: bool) -> Result:
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
            *(["-t", "un", "-max_socket", str(len(users) + 100)] if spread else []),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    ok = re.search(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)", result.stdout)
    failed = re.search(r"Failed call\s+\|\s+\d+\s+\|\s+(\d+)", result.stdout)
    return Result(elapsed, int(ok.group(1)) if ok else 0, int(failed.group(1)) if failed else 0)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def answers_options(port: int) -> bool:
    """Whether a UDP OPTIONS to 127.0.0.1:port gets any answer within 0.2 s."""
    request = (
        f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        "From: <sip:bench@127.0.0.1>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(request.encode(), ("127.0.0.1", port))
        try:
            return bool(s.recv(4096))
        except OSError:
            return False


def bench_regstate(
    users: list[str], rate: int, work: Path, processes: int, profile: str | None
) -> Result:
    port = free_port()
    data = work / f"regstate-{rate}"
    env = {
        **os.environ,
        "REGSTATE_TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:8]}.",
        "REGSTATE_DATA_DIR": str(data),
        "REGSTATE_SIP_REALM": REALM,
        "REGSTATE_SIP_PORT": str(port),
        "REGSTATE_SIP_PROCESSES": str(processes),
        "REGSTATE_NODE_ID": "fe-bench",
        "REGSTATE_SIP_DIGEST_ALGORITHMS": "MD5",
        "REGSTATE_SIP_RATE_PER_S": "100000",
        "REGSTATE_SIP_RATE_BURST": "100000",
        "REGSTATE_LOG_LEVEL": "info",
        "REGSTATE_FRONTEND_WEB_PORT": "0",
    }
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("REGSTATE_")})
    asyncio.run(ensure_topics(settings))
    table: dict[str, UserHashes] = {u: hashes_for(u, REALM, password(u)) for u in users}
    save_users(Path(settings.data_dir) / "sip-users.json", REALM, table)
    log_path = work / f"frontend-{rate}.log"
    command = [sys.executable, "-m", "streams", "frontend"]
    if profile:
        command = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "streams", "frontend"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
    try:
        wait_for(
            lambda: log_path.read_bytes().count(b"event log ready") >= processes,
            60,
            "the front-end's event log",
        )
        return run_sipp(port, users, rate, work, "regstate", spread=True)
    finally:
        proc.terminate()
        proc.wait(60)


def bench_kamailio(users: list[str], rate: int, work: Path, processes: int) -> Result | None:
    binary = shutil.which("kamailio")
    if binary is None:
        return None
    port = free_port()
    cfg = work / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=port, realm=REALM, children=max(2, processes)))
    proc = subprocess.Popen(
        [binary, "-f", str(cfg), "-DD", "-E", "-m", "128", "-M", "16", "-Y", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=(work / "kamailio.log").open("wb"),
    )
    try:
        wait_for(lambda: proc.poll() is not None or answers_options(port), 30, "kamailio")
        assert proc.poll() is None, (work / "kamailio.log").read_text()[-2000:]
        return run_sipp(port, users, rate, work, "kamailio", spread=True)
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000, help="SIPp calls per run")
    parser.add_argument(
        "--rates", default="500,1000,1500,2000", help="SIPp call rates to try, per second"
    )
    parser.add_argument("--processes", type=int, default=1, help="REGSTATE_SIP_PROCESSES")
    parser.add_argument("--profile", help="write a cProfile of the (one-process) node here")
    args = parser.parse_args()
    if args.profile and args.processes != 1:
        parser.error("--profile profiles a one-process node")
    users = [f"5{i:05d}" for i in range(args.users)]
    print(f"{args.users} REGISTERs (401, then 200) per run, {args.processes} process(es)")
    with tempfile.TemporaryDirectory(prefix="regstate-bench-") as tmp:
        work = Path(tmp)
        for rate in sorted(int(r) for r in args.rates.split(",")):
            print(f"-- SIPp rate {rate}/s")
            ours = bench_regstate(users, rate, work, args.processes, args.profile)
            print(ours.line("regstate frontend (Kafka)", len(users)), flush=True)
            theirs = bench_kamailio(users, rate, work, args.processes)
            if theirs is None:
                print("kamailio: not installed (apt-get install kamailio)")
            else:
                print(theirs.line("kamailio (usrloc, memory)", len(users)), flush=True)
                ratio = ours.per_s / theirs.per_s if theirs.per_s else float("nan")
                print(f"{'ratio regstate/kamailio':<28} {ratio:8.2f}x")
            below = ours.ok < 0.999 * len(users)
            if below and (theirs is None or theirs.ok < 0.999 * len(users)):
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
