"""``regstate replay --input FILE.jsonl [--at MS]``: fold a log file, print the table at MS.

Imports neither Faust nor aiokafka: replay is pure and must start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from processors.replay import replay
from schemas import RegistrationEvent
from streams.analysis import replay_kafka
from streams.analysis.timeline import dumps_snapshot, render_snapshot
from streams.cliutil import add_time_argument
from streams.log.jsonl import LineResult, display_name, read_events
from streams.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay",
        help="fold a JSON Lines event log and print {aor: AorState} active at MS",
        description=(
            "Fold the RegistrationEvents of a JSON Lines file (one event per line) "
            "whose ts <= MS and print one JSON object keyed by AOR, sorted, holding "
            "the contacts still active at MS. Bad lines are reported on stderr and "
            "skipped (exit code 1); the good ones are still folded and printed."
        ),
    )
    parser.add_argument(
        "--input",
        default=None,
        metavar="FILE",
        help="JSON Lines file, or - for stdin (default: read Kafka, see below)",
    )
    add_time_argument(
        parser,
        "--at",
        "fold events with ts <= TIME and show contacts active at TIME "
        "(default: the largest ts in the file)",
        default=None,
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="also print AORs without an active contact, with their health",
    )
    parser.add_argument("--compact", action="store_true", help="one line instead of indented")
    # Kafka source, --until/--since/--aor/--timeline (issue 7): streams.analysis.replay_kafka.
    replay_kafka.add_arguments(parser)
    parser.set_defaults(func=run)


def good_events(
    lines: Iterable[LineResult], on_bad: Callable[[int, str], None]
) -> Iterator[RegistrationEvent]:
    """The events of ``lines``, in order; each bad line goes to ``on_bad(line_no, reason)``."""
    for line_no, item in lines:
        if isinstance(item, str):
            on_bad(line_no, item)
        else:
            yield item


def run(args: argparse.Namespace) -> int:
    """Fold the file and print the snapshot. 0: every line good; 1: some bad; 2: no input."""
    if replay_kafka.uses_extensions(args):
        return replay_kafka.run(args)
    settings = Settings.from_env()
    name = display_name(args.input)
    bad = 0

    def report_bad(line_no: int, reason: str) -> None:
        nonlocal bad
        bad += 1
        print(f"regstate replay: {name}:{line_no}: {reason}", file=sys.stderr)

    max_ts: int | None = None

    def track_max(events: Iterable[RegistrationEvent]) -> Iterator[RegistrationEvent]:
        nonlocal max_ts
        for event in events:
            if max_ts is None or event.ts > max_ts:
                max_ts = event.ts
            yield event

    # One streaming pass is enough for both cases. With --at, events after MS are
    # skipped by the fold. Without it, MS is the largest ts in the file, and every
    # event has ts <= that largest ts: all of them are folded, and MS is known once
    # the pass ends, which is when the snapshot is taken. No second pass of the
    # file and no buffering of stdin is needed.
    try:
        table = replay(
            track_max(good_events(read_events(args.input), report_bad)),
            settings.fold_policy(),
            until_ms=args.at,
        )
    except BrokenPipeError:
        raise  # stdout closed by the reader: streams.cli ends quietly
    except OSError as exc:
        print(f"regstate replay: cannot read {name}: {exc}", file=sys.stderr)
        return 2
    at_ms = args.at if args.at is not None else max_ts
    snapshot = {} if at_ms is None else render_snapshot(table.states, at_ms, include_empty=args.all)
    sys.stdout.buffer.write(dumps_snapshot(snapshot, compact=args.compact))
    sys.stdout.flush()
    return 1 if bad else 0
