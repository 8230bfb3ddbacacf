"""``regstate alerting``: the mass-deregistration alerting consumer.

Every threshold is a ``REGSTATE_ALERTING_*`` setting (see
:class:`streams.alerting.runner.AlertingSettings`) and can be overridden by the flag of
the same name (``--window-ms`` for ``REGSTATE_ALERTING_WINDOW_MS``). It ensures
the public topics exist, then runs until SIGTERM or SIGINT, which flush the
sinks and stop it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from typing import TYPE_CHECKING, Any

from streams.settings import SettingsError

if TYPE_CHECKING:
    from streams.alerting.runner import AlertingSettings

PREFIX = "alerting_"


def _flag(name: str) -> str:
    return "--" + name[len(PREFIX) :].replace("_", "-")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``alerting`` subcommand, one flag per ``REGSTATE_ALERTING_*`` setting."""
    from streams.alerting.runner import AlertingSettings

    parser = subparsers.add_parser(
        "alerting",
        help="the mass-deregistration alerting consumer (regstate.alerts, webhook, /metrics)",
        description=(
            "Read regstate.bindings, regstate.binding-events and rejects from "
            "regstate.registrations; detect mass drops, silent front-end nodes and "
            "re-registration storms over event-time windows; write every alert to "
            "regstate.alerts, an Alertmanager-compatible webhook and the log; serve "
            "/metrics, /alerts and /healthz. Each flag overrides REGSTATE_ALERTING_<FLAG>."
        ),
    )
    defaults = AlertingSettings()
    for f in dataclasses.fields(AlertingSettings):
        if not f.name.startswith(PREFIX):
            continue
        env = f"REGSTATE_{f.name.upper()}"
        default = getattr(defaults, f.name)
        parser.add_argument(
            _flag(f.name),
            dest=f.name,
            type=int if f.type in ("int", int) else str,
            default=None,
            metavar="N" if f.type in ("int", int) else "TEXT",
            help=f"{env} (default {default!r})",
        )
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> AlertingSettings:
    """AlertingSettings from REGSTATE_*, with the flags given on the command line on top."""
    from streams.alerting.runner import AlertingSettings

    settings = AlertingSettings.from_env()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(AlertingSettings)
        if f.name.startswith(PREFIX) and getattr(args, f.name, None) is not None
    }
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
        settings.validate()
    return settings


async def _main(settings: AlertingSettings) -> int:
    from streams.alerting.runner import AlertingRunner
    from streams.log.topics import ensure_topics

    await ensure_topics(settings)
    runner = AlertingRunner(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.run(stop)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the alerting consumer until stopped; 0 on a clean stop, 2 on bad settings."""
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"regstate alerting: configuration error: {exc}")
        return 2
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

    from streams.log.kafka_config import failure_message
    from streams.log.topics import TopicsError

    try:
        return asyncio.run(_main(settings))
    except TopicsError as exc:
        print(f"regstate alerting: {exc}", file=sys.stderr)
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"regstate alerting: {failure_message(settings, exc)}", file=sys.stderr)
    return 1
