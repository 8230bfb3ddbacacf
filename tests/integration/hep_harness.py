"""Real peers for the HEP tests: `regstate hep` and Kamailio 5.6 subprocesses.

Kamailio runs as the registrar (Digest auth with a per-user password made in
the config: ``pw-<user>``) and mirrors every SIP message it receives or sends
as HEPv3 (``siptrace`` with ``trace_mode`` 1) to a `regstate hep` on a free
port. Everything listens on 127.0.0.1 on ports the OS picked.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import PROJECT_ROOT, wait_until
from tests.integration.kamailio_support import answers_options, stop_group

KAMAILIO = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin")
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
CAPTURE_ID = 2001
MAX_EXPIRES = 300
"""What Kamailio grants at most: phones ask for 3600, the table must show this."""

KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
disable_tcp=yes
listen=udp:127.0.0.1:{sip_port}
alias="pbx.example"
mpath="{modules}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "siptrace.so"
{extra_modules}
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 1)
modparam("registrar", "max_expires", {max_expires})
modparam("siptrace", "duplicate_uri", "sip:127.0.0.1:{hep_port}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", 3)
modparam("siptrace", "hep_capture_id", {capture_id})
modparam("siptrace", "trace_on", 1)
modparam("siptrace", "trace_mode", 1)
modparam("siptrace", "trace_to_database", 0)
{extra_params}
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (is_method("REGISTER")) {{
    $var(pw) = "pw-" + $fU;
    if (!pv_www_authenticate("pbx.example", "$var(pw)", "0")) {{
      www_challenge("pbx.example", "0");
      exit;
    }}
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
  }}
  sl_send_reply("405", "Method Not Allowed");
}}
{extra_routes}
"""


def free_udp_port() -> int:
    """A UDP port nobody has bound right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Hep:
    proc: subprocess.Popen[bytes]
    port: int
    web_port: int
    log: Path


@contextmanager
def started_hep(env: dict[str, str], log: Path) -> Iterator[Hep]:
    """A `regstate hep` subprocess on free ports; its stdout/stderr go to ``log``."""
    full = {**os.environ, **env, "REGSTATE_HEP_PORT": "0", "REGSTATE_HEP_WEB_PORT": "0"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "hep"],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )

    def bound() -> tuple[int, int] | None:
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("listening udp+tcp"):
                parts = line.split()
                return int(parts[2].rsplit(":", 1)[1]), int(parts[4].rsplit(":", 1)[1])
        return None

    try:
        ports = wait_until(bound, 30, 0.1, "regstate hep listening")
        wait_until(
            lambda: b"event log ready" in log.read_bytes(), 30, 0.1, "regstate hep event log"
        )
        yield Hep(proc, ports[0], ports[1], log)
    finally:
        proc.terminate()
        code = proc.wait(15)
    assert code == 0, log.read_text(errors="replace")[-2000:]


@dataclass
class Kamailio:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


@contextmanager
def started_kamailio(
    workdir: Path,
    hep_port: int,
    *,
    port: int | None = None,
    capture_id: int = CAPTURE_ID,
    extra_modules: str = "",
    extra_params: str = "",
    extra_routes: str = "",
) -> Iterator[Kamailio]:
    """Kamailio with the config above on ``port`` (None: a free one), mirroring to ``hep_port``.

    ``{sip_port}`` in the extra parameters and routes is its port."""
    assert KAMAILIO is not None
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "kamailio.log"
    fixed = port
    for _attempt in range(1 if fixed else 5):
        port = fixed or free_udp_port()
        cfg = workdir / "kamailio.cfg"
        cfg.write_text(
            KAMAILIO_CFG.format(
                sip_port=port,
                hep_port=hep_port,
                modules=MODULES,
                capture_id=capture_id,
                max_expires=MAX_EXPIRES,
                extra_modules=extra_modules,
                extra_params=extra_params.replace("{sip_port}", str(port)),
                extra_routes=extra_routes.replace("{sip_port}", str(port)),
            )
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-Y", str(workdir),
                 "-P", str(workdir / "kamailio.pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

        def up(p: subprocess.Popen[bytes] = proc, n: int = port) -> bool:
            return answers_options(n) or p.poll() is not None

        try:
            wait_until(up, 20, 0.1, "up")
        except AssertionError:
            stop_group(proc)
            raise
        if proc.poll() is None:
            break
        # The port was taken between our probe and Kamailio's bind: another one.
    else:
        raise AssertionError(f"kamailio did not start: {log.read_text(errors='replace')[-2000:]}")
    assert port is not None
    try:
        yield Kamailio(proc, port, log)
    finally:
        stop_group(proc)
