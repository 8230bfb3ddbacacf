"""``regstate frontend``: a SIP front-end node (UDP and TCP) logging to regstate.registrations.

Settings (``REGSTATE_*``, README): ``NODE_ID``, the ``SIP_*`` ones,
``FRONTEND_WEB_PORT``, ``WEB_BIND`` and the Kafka ones. The node prints
``listening udp+tcp HOST:PORT node NODE http HOST:PORT`` on stdout once bound,
serves /metrics, /healthz and /readyz (:mod:`streams.frontend.web`), runs until
SIGTERM or SIGINT, and re-reads the user file when it changes (so ``regstate
users add`` takes effect without a restart). Uses uvloop when it is installed.
With ``SIP_PROCESSES`` above 1 it supervises that many such processes sharing
the port (docs/decisions.md D38).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.events import PROCESS_SEPARATOR
from streams.frontend.tables import address_matcher
from streams.frontend.users import UserFileError, load_users, users_path
from streams.metrics.frontend import MULTIPROC_ENV
from streams.settings import Settings, SettingsError

if TYPE_CHECKING:
    from streams.frontend.eventlog import KafkaEventLog
    from streams.frontend.node import FrontendNode
    from streams.sip.digest import DigestAuthenticator

log = logging.getLogger("regstate.frontend")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``frontend`` subcommand."""
    parser = subparsers.add_parser(
        "frontend",
        help="run a SIP front-end node: answer REGISTER/OPTIONS, log to Kafka",
        description=(
            "Answers REGISTER (Digest auth, 200 only after Kafka acknowledged the "
            "event) and OPTIONS on UDP and TCP; see `regstate users` for accounts."
        ),
    )
    parser.add_argument("--port", type=int, help="override REGSTATE_SIP_PORT")
    parser.add_argument(
        "--processes", type=int, help="override REGSTATE_SIP_PROCESSES (SO_REUSEPORT)"
    )
    # Internal: the supervisor starts process i of a node with this.
    parser.add_argument("--process-index", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def node_name(settings: Settings, process_index: int | None = None) -> str:
    """REGSTATE_NODE_ID, else ``fe-<host name>``; ``<that>#<i>`` for process i of several."""
    name = settings.node_id or f"fe-{socket.gethostname()}"
    return name if process_index is None else f"{name}{PROCESS_SEPARATOR}{process_index}"


def load_secret(path: Path) -> bytes:
    """The nonce HMAC key; created (32 random bytes, mode 0600) when missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def check(settings: Settings) -> None:
    """Raise SettingsError for front-end settings no node can run with."""
    for name in (
        "sip_nonce_lifetime_s",
        "sip_rate_per_s",
        "sip_rate_burst",
        "sip_ban_failures",
        "sip_ack_timeout_ms",
        "sip_retry_after_s",
        "sip_reject_budget",
        "sip_reject_window_s",
        "sip_tcp_max_connections",
        "sip_tcp_max_per_address",
        "sip_tcp_message_timeout_s",
    ):
        if getattr(settings, name) < 1:
            raise SettingsError(f"REGSTATE_{name.upper()} must be at least 1")
    for name in ("sip_ban_exempt", "sip_trusted_proxies"):
        try:
            address_matcher(getattr(settings, name))
        except ValueError as exc:
            raise SettingsError(f"REGSTATE_{name.upper()}: {exc}") from exc
    if (
        not 1
        <= settings.sip_min_expires
        <= settings.sip_default_expires
        <= settings.sip_max_expires
    ):
        raise SettingsError(
            "REGSTATE_SIP_MIN_EXPIRES <= REGSTATE_SIP_DEFAULT_EXPIRES <= "
            "REGSTATE_SIP_MAX_EXPIRES must hold (and min >= 1)"
        )
    if settings.sip_rate_key not in ("ip", "ip_port"):
        raise SettingsError(f"REGSTATE_SIP_RATE_KEY={settings.sip_rate_key!r}: use ip or ip_port")
    if not 0 <= settings.sip_port <= 65535:
        raise SettingsError("REGSTATE_SIP_PORT must be 0-65535")
    if not 0 <= settings.frontend_web_port <= 65535 - settings.sip_processes:
        raise SettingsError("REGSTATE_FRONTEND_WEB_PORT must be 0-65535 (plus one per process)")
    if settings.sip_processes < 1:
        raise SettingsError("REGSTATE_SIP_PROCESSES must be at least 1")
    if PROCESS_SEPARATOR in settings.node_id or ":" in settings.node_id:
        raise SettingsError(
            f"REGSTATE_NODE_ID={settings.node_id!r} must not contain "
            f"{PROCESS_SEPARATOR!r} or ':' (event ids are <node>:<seq>)"
        )


def algorithms(settings: Settings) -> tuple[str, ...]:
    """REGSTATE_SIP_DIGEST_ALGORITHMS as a tuple; SettingsError for an unknown name."""
    names = tuple(a.strip().upper() for a in settings.sip_digest_algorithms.split(",") if a.strip())
    if not names or any(a not in ("MD5", "SHA-256") for a in names):
        raise SettingsError(
            f"REGSTATE_SIP_DIGEST_ALGORITHMS={settings.sip_digest_algorithms!r}: "
            "use SHA-256 and/or MD5, comma-separated"
        )
    return names


def run(args: argparse.Namespace) -> int:
    """Run the node until a signal."""
    settings = Settings.from_env()
    port = settings.sip_port if args.port is None else args.port
    processes = settings.sip_processes if args.processes is None else args.processes
    if args.process_index is None and processes != 1:
        return supervise(settings, port, processes)
    runner_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        runner_factory = uvloop.new_event_loop
    try:
        prepared = prepare(settings, args.process_index)
    except UserFileError as exc:
        print(f"regstate frontend: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=runner_factory) as runner:
        return runner.run(
            serve(settings, prepared, port, reuse_port=args.process_index is not None)
        )


def supervise(settings: Settings, port: int, processes: int) -> int:
    """Run ``processes`` node processes sharing ``port`` (SO_REUSEPORT) until a signal.

    Prints each process's ``listening`` line (its node id and HTTP port), then
    one for the node, once every process is bound. If one process
    dies, the others are stopped and the exit status is 1, so the service
    manager restarts the node as a whole.
    """
    if processes < 1 or port == 0:
        print(
            "regstate frontend: several processes need a fixed port "
            "(REGSTATE_SIP_PORT or --port) and REGSTATE_SIP_PROCESSES >= 1",
            file=sys.stderr,
        )
        return 2
    check(settings)
    # Created once here: processes racing to create it could read it half written.
    load_secret(secret_file(settings))
    command = [sys.executable, "-m", "streams", "frontend", "--port", str(port)]
    # One scrape target per node: the processes share prometheus_client's multiprocess
    # directory (streams.metrics.frontend), fresh per run so no old counts are summed.
    shared = tempfile.mkdtemp(prefix="regstate-frontend-metrics-")
    env = {**os.environ, MULTIPROC_ENV: shared}
    children = [
        # Our own interpreter and module: no shell, nothing from outside in argv.
        subprocess.Popen(  # noqa: S603
            [*command, "--process-index", str(i)], stdout=subprocess.PIPE, env=env
        )
        for i in range(processes)
    ]
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith(b"listening"):
                stopping.set()  # it failed to start (its stderr says why)
            sys.stdout.write("  " + line.decode(errors="replace"))
        if not stopping.is_set():
            node = node_name(settings)
            print(
                f"listening udp+tcp {settings.sip_bind}:{port} node {node} processes {processes}",
                flush=True,
            )
        while not stopping.is_set():
            if any(child.poll() is not None for child in children):
                break
            stopping.wait(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(shared, ignore_errors=True)
    return 0 if stopping.is_set() and all(c.returncode == 0 for c in children) else 1


@dataclass
class Prepared:
    """A node built from settings, not started yet."""

    node: FrontendNode
    event_log: KafkaEventLog
    auth: DigestAuthenticator
    users_file: Path
    process_index: int | None = None


def secret_file(settings: Settings) -> Path:
    """The nonce HMAC key file (``sip_nonce_secret_file``, else under ``data_dir``)."""
    if settings.sip_nonce_secret_file:
        return Path(settings.sip_nonce_secret_file)
    return Path(settings.data_dir) / "sip-nonce.key"


def prepare(settings: Settings, process_index: int | None = None) -> Prepared:
    """Build the node (reads the user file and the nonce key; creates the key if missing).

    Raises SettingsError for bad settings and UserFileError for a bad user file.
    """
    # aiokafka is imported only when a node is built, not for every `regstate` command.
    from streams.clock import now_ms
    from streams.frontend.eventlog import KafkaEventLog
    from streams.frontend.node import FrontendNode
    from streams.frontend.registrar import ExpiryPolicy, Registrar
    from streams.frontend.tables import RejectBudget, SourceLimiter
    from streams.sip.digest import DigestAuthenticator, NonceIssuer

    check(settings)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    secret_path = secret_file(settings)
    path = users_path(settings.data_dir, settings.sip_users_file)
    users = load_users(path, settings.sip_realm)
    if not users:
        log.warning("no users in %s: every REGISTER will fail (regstate users add)", path)
    auth = DigestAuthenticator(
        settings.sip_realm,
        users,
        NonceIssuer(
            load_secret(secret_path),
            settings.sip_realm,
            settings.sip_nonce_lifetime_s * 1000,
            now_ms,
            issuer=node_name(settings, process_index),
        ),
        algorithms=algorithms(settings),
    )
    registrar = Registrar(
        auth,
        ExpiryPolicy(
            settings.sip_default_expires, settings.sip_min_expires, settings.sip_max_expires
        ),
        frozenset(d.strip().lower() for d in settings.sip_domains.split(",") if d.strip()),
        settings.fold_policy(),
    )
    if not settings.sip_domains.strip():
        log.warning(
            "REGSTATE_SIP_DOMAINS is empty: REGISTERs for ANY domain are accepted. "
            "Development only: set it to the domains this registrar serves."
        )
    event_log = KafkaEventLog(settings)
    node = FrontendNode(
        node_id=node_name(settings, process_index),
        registrar=registrar,
        event_log=event_log,
        limiter=SourceLimiter(
            settings.sip_rate_per_s,
            settings.sip_rate_burst,
            settings.sip_ban_failures,
            settings.sip_ban_s * 1000,
            exempt=address_matcher(settings.sip_ban_exempt),
        ),
        trusted_proxy=address_matcher(settings.sip_trusted_proxies),
        reject_budget=RejectBudget(settings.sip_reject_budget, settings.sip_reject_window_s * 1000),
        ack_timeout_s=settings.sip_ack_timeout_ms / 1000,
        retry_after_s=settings.sip_retry_after_s,
        source_key=(lambda ip, port: f"{ip}:{port}")
        if settings.sip_rate_key == "ip_port"
        else None,
    )
    return Prepared(node, event_log, auth, path, process_index)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


async def serve(
    settings: Settings, prepared: Prepared, port: int, *, reuse_port: bool = False
) -> int:
    """Run a prepared node on ``port``; return 0 after SIGTERM/SIGINT."""
    node, event_log, auth, path = (
        prepared.node,
        prepared.event_log,
        prepared.auth,
        prepared.users_file,
    )
    from streams.frontend.web import start_web

    await event_log.start()
    await node.start(settings.sip_bind, port, reuse_port=reuse_port)
    web_port = settings.frontend_web_port
    if web_port:
        web_port += prepared.process_index or 0
    web, web_port = await start_web(
        node, event_log, settings.web_bind, web_port, node_name(settings), settings
    )
    print(
        f"listening udp+tcp {settings.sip_bind}:{node.udp_port} node {node.node_id} "
        f"http {settings.web_bind}:{web_port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mtime = _mtime(path)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)
        current = _mtime(path)
        if current != mtime:
            mtime = current
            try:
                auth.users = load_users(path, settings.sip_realm)
                log.info("reloaded %d users from %s", len(auth.users), path)
            except UserFileError as exc:
                log.error("user file not reloaded: %s", exc)
    await web.cleanup()
    await node.stop()
    await event_log.stop()
    log.info("stopped: %s", node.stats)
    return 0
