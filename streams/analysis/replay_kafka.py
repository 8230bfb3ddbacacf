"""``regstate replay`` from Kafka, and the analyst options of replay (issue 7).

Without ``--input``, replay reads regstate.registrations (of ``REGSTATE_*``)
instead of a file. With either source:

* ``--until T`` (ISO 8601 with a timezone, or ms since the epoch; ``--at`` is the
  same in ms) folds the events with ``ts <= T`` and prints the AorStates with
  the contacts active at T: the same JSON as the file replay prints;
* ``--aor A`` (repeatable, canonicalized) keeps only those AORs;
* ``--timeline`` prints instead every folded event of the selected AORs with
  ``ts >= --since``, in log order, with its outcome, the binding events it
  caused and why (:mod:`streams.analysis.timeline`), as JSON Lines or ``--format table``.

The fold always starts at the beginning of the log (the state at ``--since``
needs the whole history before it); ``--since`` only limits the timeline. From
Kafka, each partition is read up to its end offset as of the start, or up to
its first record timestamped after ``--until`` plus ``--skew-ms``
(:mod:`streams.log.reader`). Bad records are reported on stderr with their
position and skipped; the exit code is then 1.

aiokafka is imported only when reading from Kafka, so a file replay stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any, Final

from processors.sipuri import AorError, canonical_aor
from streams.analysis.timeline import (
    NOWHERE,
    ReplayRun,
    TimelineWriter,
    dumps_snapshot,
    render_snapshot,
)
from streams.cliutil import add_format_argument, add_time_argument
from streams.settings import Settings

EXIT_OK: Final = 0
EXIT_BAD_RECORDS: Final = 1
EXIT_CANNOT_READ: Final = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Kafka source and analyst options to the ``replay`` parser."""
    group = parser.add_argument_group(
        "Kafka source and timeline",
        "Without --input, replay reads regstate.registrations (REGSTATE_TOPIC_PREFIX, "
        "REGSTATE_BOOTSTRAP_SERVERS). Times: ms since the epoch or ISO 8601 with a "
        "timezone, e.g. 2026-01-01T14:02:00Z.",
    )
    add_time_argument(
        group,
        "--until",
        "fold events with ts <= TIME and show contacts active at TIME "
        "(same as --at; default: the largest ts folded)",
        default=None,
    )
    add_time_argument(
        group,
        "--since",
        "--timeline: show events with ts >= TIME (the fold still starts at the "
        "beginning of the log)",
        default=None,
    )
    group.add_argument(
        "--aor",
        action="append",
        default=None,
        metavar="AOR",
        help="only this AOR (repeatable; canonicalized, e.g. sip:1001@pbx.example.com)",
    )
    group.add_argument(
        "--timeline",
        action="store_true",
        help="print every event of the selected AORs with its outcome, effects and why, "
        "instead of the states",
    )
    add_format_argument(group, default="jsonl", what="--timeline output")
    group.add_argument(
        "--skew-ms",
        type=int,
        default=None,
        metavar="MS",
        help="Kafka: stop a partition at its first record timestamped after --until + MS "
        "(default 300000; -1 reads every partition to its end offset)",
    )
    group.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )


def uses_extensions(args: argparse.Namespace) -> bool:
    """Whether ``args`` need this module (else the plain file replay runs unchanged)."""
    return args.input is None or bool(
        args.until is not None
        or args.since is not None
        or args.aor
        or args.timeline
        or args.skew_ms is not None
    )


def _err(text: str) -> None:
    print(f"regstate replay: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Replay from a file or from Kafka, as the states or as the timeline.

    Exit codes: 0 all records good; 1 some bad records (skipped; the rest is
    still folded and printed); 2 the source cannot be read or the arguments
    contradict each other.
    """
    settings = Settings.from_env()
    until = args.until
    if args.at is not None:
        if until is not None and until != args.at:
            _err("--at and --until differ; give one of them")
            return EXIT_CANNOT_READ
        until = args.at
    aors = None
    if args.aor:
        try:
            aors = frozenset(canonical_aor(a) for a in args.aor)
        except AorError as exc:
            _err(f"--aor: {exc}")
            return EXIT_CANNOT_READ
    writer = TimelineWriter(sys.stdout, args.format) if args.timeline else None
    run_ = ReplayRun(
        policy=settings.fold_policy(),
        until_ms=until,
        since_ms=args.since,
        aors=aors,
        on_entry=writer,
    )
    if args.input is not None:
        code = _from_file(args.input, run_)
    else:
        code = _from_kafka(settings, args, run_)
    if code == EXIT_CANNOT_READ:
        return code
    if writer is not None:
        writer.close()
    else:
        at = run_.snapshot_time()
        snapshot = {} if at is None else render_snapshot(run_.states, at, include_empty=args.all)
        sys.stdout.flush()
        sys.stdout.buffer.write(dumps_snapshot(snapshot, compact=args.compact))
    sys.stdout.flush()
    return code


def _from_file(path: str, run_: ReplayRun) -> int:
    from streams.log.jsonl import display_name, read_events

    name = display_name(path)
    bad = 0
    try:
        for line_no, item in read_events(path):
            if isinstance(item, str):
                bad += 1
                _err(f"{name}:{line_no}: {item}")
            else:
                run_.feed({"line": line_no}, item)
    except BrokenPipeError:
        raise  # stdout closed by the reader (`| head`): streams.cli ends quietly
    except OSError as exc:
        _err(f"cannot read {name}: {exc}")
        return EXIT_CANNOT_READ
    return EXIT_BAD_RECORDS if bad else EXIT_OK


def kafka_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Kafka cannot be read" (imported lazily)."""
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

    from streams.log.reader import LogReadError

    return (KafkaError, LogReadError, TimeoutError, ConnectionError)


def reader_from_args(
    settings: Settings,
    args: argparse.Namespace,
    *,
    until_ms: int | None,
    aors: frozenset[str] | None,
    since_ms: int | None = None,
    command: str,
    client_id: str,
) -> Any:
    """A :class:`streams.log.reader.RegistrationsReader` reporting on stderr as ``command``."""
    from streams.log.reader import DEFAULT_SKEW_MS, RegistrationsReader

    topic = settings.topic("registrations")

    def on_bad(bad: Any) -> None:
        print(f"regstate {command}: {topic} {bad}", file=sys.stderr)

    def on_note(text: str) -> None:
        print(f"regstate {command}: note: {text}", file=sys.stderr)

    return RegistrationsReader(
        settings,
        until_ms=until_ms,
        since_ms=since_ms,
        skew_ms=DEFAULT_SKEW_MS if args.skew_ms is None else args.skew_ms,
        aors=aors,
        progress=not args.no_progress and sys.stderr.isatty(),
        on_bad=on_bad,
        on_note=on_note,
        client_id=client_id,
    )


def read_kafka(
    settings: Settings, reader: Any, feed: Callable[[Any, Any], None], command: str
) -> int:
    """Run ``reader`` to its end, handing each (LogRecord, event) to ``feed``; exit code."""

    async def go() -> None:
        async for batch in reader.batches():
            for record, event in batch:
                feed(record, event)

    try:
        asyncio.run(go())
    except kafka_errors() as exc:
        from streams.log.kafka_config import failure_message

        print(
            f"regstate {command}: cannot read {reader.topic}: {failure_message(settings, exc)}",
            file=sys.stderr,
        )
        return EXIT_CANNOT_READ
    return EXIT_BAD_RECORDS if reader.stats.bad_count else EXIT_OK


def _from_kafka(settings: Settings, args: argparse.Namespace, run_: ReplayRun) -> int:
    reader = reader_from_args(
        settings,
        args,
        until_ms=run_.until_ms,
        aors=run_.aors,
        command="replay",
        client_id="regstate-replay",
    )

    def feed(record: Any, event: Any) -> None:
        # The position is only shown by the timeline: no dict per event otherwise.
        if run_.on_entry is None:
            run_.feed(NOWHERE, event)
        else:
            run_.feed({"partition": record.partition, "offset": record.offset}, event)

    code = read_kafka(settings, reader, feed, "replay")
    if code != EXIT_CANNOT_READ:
        stats = reader.stats
        extra = f", after --until {run_.after_until}" if run_.until_ms is not None else ""
        _err(f"{reader.topic}: {stats.summary()}{extra}, from {len(reader.plans)} partition(s)")
    return code
