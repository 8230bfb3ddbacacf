"""The ``regstate`` command: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser
and sets ``func`` (``(argparse.Namespace) -> int``, the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from streams import logsetup
from streams.settings import Settings, SettingsError

# Imported lazily so `regstate replay` does not pay for importing Faust.
DEV_KAFKA = "devkafka.cli"
SUBCOMMAND_MODULES = (
    DEV_KAFKA,
    "streams.log.topics_cli",
    "streams.log.publish_cli",
    "streams.analysis.replay_cli",
    "streams.analysis.export_cli",
    "streams.analysis.audit_cli",
    "streams.engine.cli",
    "streams.analysis.problems_cli",
    "streams.alerting.cli",
    "streams.frontend.users_cli",
    "streams.frontend.cli",
    "streams.frontend.simulate_cli",
    "streams.hep.cli",
    "streams.dialer.cli",
    "streams.completion_cli",
)


def version() -> str:
    """The installed distribution's version (``0+unknown`` when run from a bare tree)."""
    try:
        return metadata.version("regstate")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; exposed for tests and docs."""
    parser = argparse.ArgumentParser(
        prog="regstate",
        description="Event-sourced SIP registration state engine (see README.md).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only the development Kafka harness may be absent (an install from the
            # wheel); any other missing module is a broken install and must say so.
            if module_name != DEV_KAFKA or not module_name.startswith(f"{exc.name}"):
                raise
            _register_kafka_stub(subparsers)
            continue
        module.register(subparsers)
    return parser


def _register_kafka_stub(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "kafka",
        help="local development Kafka (only in a source checkout)",
        description="The local Kafka harness is part of the source checkout, not of the "
        "installed package: run `./dev setup` in a checkout, or point "
        "REGSTATE_BOOTSTRAP_SERVERS at your own brokers.",
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(func=_kafka_unavailable)


def _kafka_unavailable(args: argparse.Namespace) -> int:
    print(
        "regstate: `regstate kafka` is a development command of the source checkout "
        "(it needs kafka/pom.xml, java and mvn); this installation has no checkout. "
        "Set REGSTATE_BOOTSTRAP_SERVERS to your Kafka brokers instead.",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        logsetup.setup(settings.log_level, settings.log_format)
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"regstate: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader closed the pipe (`regstate replay --timeline | head`): what it
        # wanted was written. Point stdout at /dev/null so the interpreter's final
        # flush does not complain either, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
