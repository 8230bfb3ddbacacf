"""``regstate hep``: a HEPv3 listener (UDP and TCP) turning a registrar's mirror into events.

Settings (``REGSTATE_*``, README): the ``HEP_*`` ones, ``WEB_BIND`` and the
Kafka ones. Prints ``listening udp+tcp HOST:PORT http HOST:PORT`` on stdout
once bound, serves /metrics, /healthz and /readyz (:mod:`streams.hep.web`) and
runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from streams.settings import Settings, SettingsError

log = logging.getLogger("regstate.hep")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``hep`` subcommand."""
    parser = subparsers.add_parser(
        "hep",
        help="listen for HEPv3 (Homer) captures of an existing registrar and log its REGISTERs",
        description=(
            "Takes the HEPv3 mirror that Asterisk res_hep, Kamailio siptrace, OpenSIPS "
            "proto_hep, FreeSWITCH capture-server or heplify send, follows every REGISTER "
            "transaction and appends RegistrationEvents to regstate.registrations."
        ),
    )
    parser.add_argument("--port", type=int, help="override REGSTATE_HEP_PORT")
    parser.set_defaults(func=run)


def check(settings: Settings) -> tuple[dict[int, str], tuple[str, int] | None, frozenset[str]]:
    """The parsed node map, forward address and server set; SettingsError when bad."""
    from streams.hep.listener import parse_forward
    from streams.hep.tracker import agent_nodes

    try:
        nodes = agent_nodes(settings.hep_nodes)
    except ValueError as exc:
        raise SettingsError(f"REGSTATE_HEP_NODES: {exc}") from None
    try:
        forward = parse_forward(settings.hep_forward)
    except ValueError as exc:
        raise SettingsError(f"REGSTATE_HEP_FORWARD: {exc}") from None
    if not 0 <= settings.hep_port <= 65535:
        raise SettingsError("REGSTATE_HEP_PORT must be 0-65535")
    if not 0 <= settings.hep_web_port <= 65535:
        raise SettingsError("REGSTATE_HEP_WEB_PORT must be 0-65535")
    servers = frozenset(s.strip() for s in settings.hep_servers.split(",") if s.strip())
    return nodes, forward, servers


def run(args: argparse.Namespace) -> int:
    """Run the listener until a signal."""
    settings = Settings.from_env()  # logging is set up by streams.cli.main (D105)
    port = settings.hep_port if args.port is None else args.port
    check(settings)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(settings, port))


async def serve(settings: Settings, port: int) -> int:
    """Run a listener on ``port``; return 0 after SIGTERM/SIGINT."""
    from streams.frontend.eventlog import KafkaEventLog
    from streams.hep.listener import HepListener
    from streams.hep.tracker import Tracker
    from streams.hep.web import start_web

    nodes, forward, servers = check(settings)
    event_log = KafkaEventLog(settings, client_id="regstate-hep")
    listener = HepListener(
        Tracker(nodes, servers), event_log, auth_key=settings.hep_auth_key, forward=forward
    )
    await event_log.start()
    await listener.start(settings.hep_bind, port)
    web, web_port = await start_web(listener, settings.web_bind, settings.hep_web_port)
    print(
        f"listening udp+tcp {settings.hep_bind}:{listener.udp_port} "
        f"http {settings.web_bind}:{web_port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await web.cleanup()
    await listener.stop()
    await event_log.stop()
    log.info("stopped: %s %s", listener.stats, listener.tracker.stats)
    return 0
