"""``regstate topics ensure|list``: the public topics of docs/design.md section 3.

aiokafka is imported only when a topics command runs, so that building the
parser (every ``regstate`` invocation) stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from streams.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``topics`` subcommand and its ``ensure`` and ``list`` actions."""
    topics = subparsers.add_parser(
        "topics",
        help="create or list the public topics (registrations, bindings, ...)",
        description=(
            "The topics of docs/design.md section 3, named REGSTATE_TOPIC_PREFIX + role, with "
            "REGSTATE_PARTITIONS partitions (registrations, bindings, binding-events) and "
            "REGSTATE_REPLICATION_FACTOR replicas."
        ),
    )
    actions = topics.add_subparsers(dest="topics_action", metavar="ACTION", required=True)

    ensure = actions.add_parser(
        "ensure",
        help="create the missing topics; check the existing ones",
        description=(
            "Create every missing topic with its config. Existing topics are left "
            "alone but checked: a partition count of registrations other than "
            "REGSTATE_PARTITIONS is an error (exit 1); other differences are warnings."
        ),
    )
    _add_retention(ensure)
    ensure.set_defaults(func=_ensure)

    listing = actions.add_parser(
        "list", help="print each topic's spec (with --live: what the broker has)"
    )
    _add_retention(listing)
    listing.add_argument(
        "--live",
        action="store_true",
        help="also describe each topic on the broker (partitions, replicas, config that differs)",
    )
    listing.set_defaults(func=_list)


def _add_retention(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registrations-retention-ms",
        type=int,
        default=-1,
        metavar="MS",
        help="retention.ms of a newly created registrations topic (default -1: unlimited)",
    )


def _ensure(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

    from streams.log.kafka_config import failure_message
    from streams.log.topics import TopicsError, ensure_topics, topic_specs

    settings = Settings.from_env()
    specs = topic_specs(settings, registrations_retention_ms=args.registrations_retention_ms)

    def warn(message: str) -> None:
        print(f"regstate topics: warning: {message}", file=sys.stderr)

    try:
        created = asyncio.run(ensure_topics(settings, specs, warn=warn))
    except TopicsError as exc:
        print(f"regstate topics: {exc}", file=sys.stderr)
        return 1
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"regstate topics: {failure_message(settings, exc)}", file=sys.stderr)
        return 1
    for spec in specs:
        print(f"{'created' if spec.name in created else 'exists '} {spec.describe()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from streams.log.kafka_config import failure_message
    from streams.log.topics import TopicsError, check_topic, describe_topics, topic_specs

    settings = Settings.from_env()
    specs = topic_specs(settings, registrations_retention_ms=args.registrations_retention_ms)
    if not args.live:
        for spec in specs:
            print(spec.describe())
        return 0

    from aiokafka.errors import KafkaError

    try:
        states = asyncio.run(describe_topics(settings, [s.name for s in specs]))
    except TopicsError as exc:
        print(f"regstate topics: {exc}", file=sys.stderr)
        return 1
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"regstate topics: {failure_message(settings, exc)}", file=sys.stderr)
        return 1
    code = 0
    for spec in specs:
        state = states.get(spec.name)
        if state is None:
            print(f"{spec.name} MISSING (want: {spec.describe()})")
            code = 1
            continue
        config = " ".join(f"{k}={state.config.get(k)}" for k in sorted(spec.config))
        print(
            f"{spec.name} partitions={state.partitions} "
            f"replication_factor={state.replication_factor} {config}".rstrip()
        )
        errors, warnings = check_topic(spec, state)
        for message in errors + warnings:
            print(f"  differs: {message}")
        if errors:
            code = 1
    return code
