"""``regstate audit``: is the live table right?

Folds the whole of regstate.registrations (up to its end offsets as of the
start) and compares the result, AOR by AOR, with the compacted
regstate.bindings (offset 0 to its end offsets, last value per key, tombstones
delete) at one common time ``--at`` (default: now), with
:func:`processors.audit.compare`: contacts active at ``--at`` on both sides,
and the version. Prints the number of AORs checked and every divergence, each
with the position of the last regstate.bindings record of the AOR (the record
that is wrong) and of the AOR's last event in regstate.registrations.

The engine may lag behind the log: ``--wait-ms`` first waits (up to MS) until
the engine's consumer group has committed every partition up to the end
offsets taken at the start; the engine commits an offset only once its outputs
are acknowledged, so regstate.bindings then holds everything the audit folds.
If the log grew while regstate.bindings was read (the engine may then be
ahead of the fold), the snapshot is taken again, within the same budget.
Without ``--wait-ms``, the lag is measured and printed, and divergences may be
lag. The engine's sweeper appends ``expire`` events whenever bindings lapse,
so on a live system an exact snapshot needs a quiet moment.

Exit codes: 0 no divergence; 1 divergences; 2 cannot read Kafka or bad arguments.
Records the engine dead-letters are skipped by both sides and only reported.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, Final

import orjson

from processors.audit import Divergence, compare
from processors.explain import iso_ms
from streams.analysis.replay_kafka import EXIT_CANNOT_READ, kafka_errors
from streams.analysis.timeline import NOWHERE, ReplayRun
from streams.cliutil import add_time_argument
from streams.clock import now_ms
from streams.settings import Settings

EXIT_DIVERGENT: Final = 1
WAIT_POLL_S: Final = 0.5
SNAPSHOT_ATTEMPTS: Final = 3
"""--wait-ms: how often to retry when the log grows while regstate.bindings is read."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``audit`` subcommand."""
    parser = subparsers.add_parser(
        "audit",
        help="fold regstate.registrations and compare it with the live regstate.bindings",
        description=(
            "Fold the whole of regstate.registrations and compare it, AOR by AOR, with "
            "the compacted regstate.bindings: the contacts active at --at and the "
            "version. Prints the AORs checked and every divergence with the Kafka "
            "positions where it starts. Exit 0 when both agree, 1 on any divergence, "
            "2 when Kafka cannot be read."
        ),
    )
    add_time_argument(parser, "--at", "compare contacts active at TIME (default now)", default=None)
    parser.add_argument(
        "--wait-ms",
        type=int,
        default=0,
        metavar="MS",
        help="first wait up to MS for the engine's consumer group to have no lag",
    )
    parser.add_argument(
        "--group",
        default=None,
        metavar="GROUP",
        help="the engine's consumer group (default: REGSTATE_TOPIC_PREFIX + 'engine')",
    )
    parser.add_argument(
        "--format",
        choices=("text", "jsonl"),
        default="text",
        help="divergences as text (default) or one JSON object per line",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )
    parser.set_defaults(func=run)


def _err(text: str) -> None:
    print(f"regstate audit: {text}", file=sys.stderr)


def _pos(topic: str, at: tuple[int, int] | None) -> str:
    return "none" if at is None else f"{topic} p{at[0]}@{at[1]}"


def divergence_dict(d: Divergence, bindings: str, registrations: str) -> dict[str, Any]:
    """A divergence as the ``jsonl`` format prints it."""
    return {
        "aor": d.aor,
        "kind": d.kind,
        "problems": list(d.problems),
        "log_version": d.expected_version,
        "live_version": d.actual_version,
        "live_record": None
        if d.live_record is None
        else {"topic": bindings, "partition": d.live_record[0], "offset": d.live_record[1]},
        "log_record": None
        if d.log_record is None
        else {
            "topic": registrations,
            "partition": d.log_record[0],
            "offset": d.log_record[1],
        },
    }


def render_text(d: Divergence, bindings: str, registrations: str) -> str:
    """A divergence as the ``text`` format prints it: a headline and indented details."""
    lines = [
        f"DIVERGENT {d.aor}: {d.kind} (live version {d.actual_version}, "
        f"log version {d.expected_version})"
    ]
    lines += [f"    {p}" for p in d.problems]
    lines.append(
        f"    live record: {_pos(bindings, d.live_record)}; "
        f"last event: {_pos(registrations, d.log_record)}"
    )
    return "\n".join(lines)


async def _wait_for_engine(
    settings: Settings, group: str, topic: str, ends: dict[int, int], wait_ms: int
) -> dict[int, int] | None:
    """Poll the group's lag until it is 0 or ``wait_ms`` passed; return the last lag."""
    from streams.log.reader import group_lag

    deadline = time.monotonic() + wait_ms / 1000
    while True:
        lag = await group_lag(settings, group, topic, ends)
        if (lag is not None and sum(lag.values()) == 0) or time.monotonic() >= deadline:
            return lag
        await asyncio.sleep(WAIT_POLL_S)


def run(args: argparse.Namespace) -> int:
    """Audit; see the module docstring for what is compared and the exit codes."""
    from streams.log.reader import (
        LiveView,
        RegistrationsReader,
        end_offsets,
        group_lag,
        read_bindings,
    )

    settings = Settings.from_env()
    registrations = settings.topic("registrations")
    bindings = settings.topic("bindings")
    group = args.group or settings.engine_group()
    at_ms = args.at if args.at is not None else now_ms()
    progress = not args.no_progress and sys.stderr.isatty()
    run_ = ReplayRun(policy=settings.fold_policy())
    last_event: dict[str, tuple[int, int]] = {}

    def on_bad(bad: Any) -> None:
        _err(f"{registrations} {bad} (dead-lettered by the engine too; not compared)")

    def on_note(text: str) -> None:
        _err(f"note: {text}")

    async def snapshot() -> tuple[dict[int, int], dict[int, int] | None, LiveView]:
        """End offsets of the log, the engine's lag there, and regstate.bindings after it.

        With --wait-ms: wait for the engine to commit up to those end offsets,
        read regstate.bindings, and check that the log did not grow meanwhile.
        If it did not, the engine had processed exactly the log up to the end
        offsets (it commits only once its outputs are acknowledged) and nothing
        more: the two sides are one consistent snapshot. If it did, try again,
        within the same --wait-ms budget, up to SNAPSHOT_ATTEMPTS times.
        """
        deadline = time.monotonic() + args.wait_ms / 1000
        attempt = 0
        while True:
            attempt += 1
            ends = await end_offsets(settings, registrations)
            if args.wait_ms > 0:
                left = max(0, int((deadline - time.monotonic()) * 1000))
                lag = await _wait_for_engine(settings, group, registrations, ends, left)
            else:
                lag = await group_lag(settings, group, registrations, ends)
            view = await read_bindings(settings, progress=progress)
            if args.wait_ms <= 0:
                return ends, lag, view
            if await end_offsets(settings, registrations) == ends:
                return ends, lag, view
            if attempt >= SNAPSHOT_ATTEMPTS or time.monotonic() >= deadline:
                _err(
                    f"note: {registrations} grew while {bindings} was read; divergences of "
                    "AORs with events in that moment may be races, not errors"
                )
                return ends, lag, view

    async def go() -> tuple[LiveView, dict[int, int] | None, RegistrationsReader]:
        ends, lag, view = await snapshot()
        reader = RegistrationsReader(
            settings,
            skew_ms=-1,
            stop_offsets=ends,
            progress=progress,
            on_bad=on_bad,
            on_note=on_note,
            client_id="regstate-audit",
        )
        async for batch in reader.batches():
            for record, event in batch:
                run_.feed(NOWHERE, event)
                last_event[event.aor] = (record.partition, record.offset)
        return view, lag, reader

    try:
        view, lag, reader = asyncio.run(go())
    except kafka_errors() as exc:
        from streams.log.kafka_config import failure_message

        _err(f"cannot read Kafka: {failure_message(settings, exc)}")
        return EXIT_CANNOT_READ

    if lag is None:
        _err(f"consumer group {group} has no committed offsets on {registrations}")
    elif sum(lag.values()):
        behind = ", ".join(f"p{p}: {n}" for p, n in sorted(lag.items()) if n)
        _err(
            f"engine group {group} is {sum(lag.values())} records behind ({behind}); "
            "divergences may be lag (use --wait-ms)"
        )

    # An unreadable live record is one divergence of its own, not also "missing".
    divergences = [
        d for d in compare(run_.states, view.states, at_ms) if d.aor not in view.undecodable
    ]
    for key, (position, reason) in sorted(view.undecodable.items()):
        divergences.append(
            Divergence(
                key,
                "undecodable",
                (f"live record is not an AorState: {reason}",),
                run_.states[key].version if key in run_.states else None,
                None,
                position,
            )
        )
    divergences = sorted(
        (
            d._replace(live_record=view.last_record.get(d.aor), log_record=last_event.get(d.aor))
            for d in divergences
        ),
        key=lambda d: d.aor,
    )
    checked = len(run_.states.keys() | view.states.keys() | view.undecodable.keys())
    out = sys.stdout
    for d in divergences:
        if args.format == "jsonl":
            out.write(orjson.dumps(divergence_dict(d, bindings, registrations)).decode() + "\n")
        else:
            out.write(render_text(d, bindings, registrations) + "\n")
    summary = (
        f"checked {checked} AORs at {iso_ms(at_ms)} ({at_ms}): {len(divergences)} divergent; "
        f"folded {reader.stats.admitted} events, read {view.records} bindings records"
    )
    if args.format == "jsonl":
        _err(summary)
    else:
        out.write(f"regstate audit: {summary}\n")
    if view.keyless:
        _err(f"{len(view.keyless)} {bindings} records without a key ignored")
    out.flush()
    return EXIT_DIVERGENT if divergences else 0
