"""``regstate problems``: phones whose health (R12) is auth_failing, unreachable or flapping.

Reads regstate.bindings from its first offset (the last value of every AOR),
or with ``--log`` folds regstate.registrations from Kafka, or with ``--input``
folds a JSON Lines log like ``regstate replay``, and lists the AORs in the
asked states. regstate.bindings holds a tombstone for an AOR without contacts
(docs/design.md section 3), so only ``--log`` and ``--input`` see a wrong-password phone
that never registered (docs/decisions.md D22). The selection and the evidence are
:mod:`processors.problems`, the same as the worker's ``GET /v1/problems``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from typing import Any

import orjson

from processors.problems import (
    HEALTH_STATES,
    ProblemQueryError,
    parse_states,
    problem_to_dict,
    select,
)
from processors.replay import Table, replay
from schemas import AorState, decode_state
from streams.analysis.replay_cli import good_events
from streams.cliutil import add_format_argument, table_time
from streams.log.jsonl import display_name, read_events
from streams.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``problems`` subcommand."""
    parser = subparsers.add_parser(
        "problems",
        help="list AORs whose health is auth_failing, unreachable or flapping",
        description=(
            "Read regstate.bindings from offset 0 (the last value of every AOR) and "
            "list the AORs whose health.state is not registered/unregistered, or is "
            "one of --state. With --log, fold regstate.registrations instead, and "
            "with --input a JSON Lines event log (both: every AOR, also those without "
            "a contact). Exit 0 on success (also when nothing is listed), 1 when some "
            "--input lines or --log records were bad (the rest is listed), 2 on a "
            "usage, input or connection error."
        ),
    )
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="STATE",
        help=f"only this state (repeat or comma-separate): {', '.join(HEALTH_STATES)}",
    )
    parser.add_argument(
        "--input", metavar="FILE", help="fold this JSON Lines log instead of reading Kafka"
    )
    parser.add_argument(
        "--log",
        action="store_true",
        help=(
            "fold regstate.registrations from Kafka instead of reading regstate.bindings: "
            "slower, but also lists AORs without a contact (a wrong-password phone that "
            "never registered is a tombstone on regstate.bindings)"
        ),
    )
    add_format_argument(parser, what="the problems")
    # Before --format: kept so scripts that pass it still work.
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="at most N entries (oldest first)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="give up reading the topic after S seconds (default 60)",
    )
    parser.set_defaults(func=run)


def _from_file(path: str, settings: Settings) -> tuple[list[AorState], int]:
    name = display_name(path)
    bad = 0

    def report(line_no: int, reason: str) -> None:
        nonlocal bad
        bad += 1
        print(f"regstate problems: {name}:{line_no}: {reason}", file=sys.stderr)

    table = replay(good_events(read_events(path), report), settings.fold_policy())
    return list(table.states.values()), bad


def _from_log(settings: Settings) -> tuple[list[AorState], int]:
    """Fold the whole registrations log (the engine's own rules); (states, bad records)."""
    from streams.log.reader import DEFAULT_SKEW_MS, RegistrationsReader

    topic = settings.topic("registrations")
    reader = RegistrationsReader(
        settings,
        until_ms=None,
        since_ms=None,
        skew_ms=DEFAULT_SKEW_MS,
        aors=None,
        progress=sys.stderr.isatty(),
        on_bad=lambda bad: print(f"regstate problems: {topic} {bad}", file=sys.stderr),
        on_note=lambda text: print(f"regstate problems: note: {text}", file=sys.stderr),
        client_id="regstate-problems",
    )
    table = Table()
    policy = settings.fold_policy()

    async def go() -> None:
        async for batch in reader.batches():
            for _, event in batch:
                table.apply(event, policy)

    asyncio.run(go())
    return list(table.states.values()), reader.stats.bad_count


def _from_topic(settings: Settings, timeout_s: float) -> list[AorState]:
    from streams.log.snapshot import read_latest

    topic = settings.topic("bindings")
    latest = asyncio.run(read_latest(settings, topic, timeout_s=timeout_s))
    states = []
    for key, value in latest.items():
        try:
            states.append(decode_state(value))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            print(f"regstate problems: {topic} key {key!r}: {exc!r}", file=sys.stderr)
    return states


def _when(ms: int) -> str:
    return table_time(ms)


def render_table(entries: Iterable[dict[str, Any]]) -> str:
    """The human form: one line per AOR, state, since, AOR, node, source, evidence."""
    rows = [("STATE", "SINCE", "AOR", "NODE", "SOURCE", "EVIDENCE")]
    for e in entries:
        rows.append(
            (
                e["state"],
                _when(e["since"]),
                e["aor"],
                e["node"] or "-",
                e["source"] or "-",
                e["summary"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] + "\n"
        for r in rows
    )


def run(args: argparse.Namespace) -> int:
    """List the problems; 0 on success (also when none), 1 with bad --input lines, 2 on errors."""
    settings = Settings.from_env()
    try:
        wanted = parse_states(args.state)
    except ProblemQueryError as exc:
        print(f"regstate problems: {exc.detail}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print("regstate problems: --limit must be at least 1", file=sys.stderr)
        return 2
    bad = 0
    try:
        if args.input:
            states, bad = _from_file(args.input, settings)
        elif args.log:
            states, bad = _from_log(settings)
        else:
            states = _from_topic(settings, args.timeout)
    except OSError as exc:
        print(f"regstate problems: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - Kafka unreachable, topic missing: say so, exit 2
        print(f"regstate problems: {exc}", file=sys.stderr)
        return 2
    selected, total = select(states, wanted, args.limit or len(states) or 1)
    entries = [problem_to_dict(s) for s in selected]
    fmt = "json" if args.json else args.format
    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(entries, option=orjson.OPT_APPEND_NEWLINE))
    elif fmt == "jsonl":
        for e in entries:
            sys.stdout.buffer.write(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE))
    else:
        sys.stdout.write(render_table(entries))
        if total > len(entries):
            sys.stdout.write(f"({total - len(entries)} more not shown)\n")
    sys.stdout.flush()
    return 1 if bad else 0
