"""The ``regstate`` command: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser
and sets ``func`` (``(argparse.Namespace) -> int``, the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streams.settings import SettingsError

# Imported lazily so `regstate replay` does not pay for importing Faust.
SUBCOMMAND_MODULES = (
    "streams.kafka_cli",
    "streams.topics_cli",
    "streams.publish_cli",
    "streams.replay_cli",
    "streams.export_cli",
    "streams.audit_cli",
    "streams.worker_cli",
    "streams.problems_cli",
    "streams.alerting_cli",
    "streams.users_cli",
    "streams.frontend_cli",
    "streams.simulate_cli",
    "streams.dialer_cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; exposed for tests and docs."""
    parser = argparse.ArgumentParser(
        prog="regstate",
        description="Event-sourced SIP registration state engine (see README.md).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"regstate: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
