"""``regstate export``: the raw events of regstate.registrations as JSON Lines.

Each line is :func:`schemas.encode_event_json` of a decoded event (docs/design.md
section 4, file form), so ``regstate replay --input`` and ``regstate publish
--input`` take the file back. Events are selected by their ``ts``
(``--since <= ts <= --until``, both optional) and ``--aor``, and written
partition by partition in log order, so the events of each AOR keep their log
order (which is all the fold needs: R4, R5 and D2 are per AOR). Records the
engine would dead-letter are skipped and reported on stderr (exit code 1).

The file is written next to its final name and renamed into place when
complete: a failed export never leaves a truncated FILE behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

from processors.sipuri import AorError
from schemas import RegistrationEvent, encode_event_json
from streams.analysis.replay_kafka import (
    EXIT_CANNOT_READ,
    read_kafka,
    reader_from_args,
)
from streams.cliutil import add_time_argument
from streams.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="write the events of regstate.registrations as JSON Lines (replay/publish input)",
        description=(
            "Read regstate.registrations and write the events with --since <= ts <= "
            "--until (event time) of the selected AORs, one JSON object per line, in "
            "log order per AOR. Records that cannot be decoded are skipped and "
            "reported on stderr (exit code 1). Replaying an export that starts at "
            "--since gives the states built from that window only: for the state at "
            "a time, export without --since."
        ),
    )
    add_time_argument(parser, "--since", "first event time of the window", default=None)
    add_time_argument(parser, "--until", "last event time of the window", default=None)
    parser.add_argument(
        "--aor", action="append", default=None, metavar="AOR", help="only this AOR (repeatable)"
    )
    parser.add_argument(
        "--output", required=True, metavar="FILE", help="JSON Lines file, or - for stdout"
    )
    parser.add_argument(
        "--skew-ms",
        type=int,
        default=None,
        metavar="MS",
        help="how far Kafka record timestamps may be from event ts: partitions are read "
        "from --since - MS to --until + MS by record time (default 300000; -1 reads "
        "every partition whole)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )
    parser.set_defaults(func=run)


def _err(text: str) -> None:
    print(f"regstate export: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Export. 0: every record good; 1: bad records skipped; 2: cannot read or write."""
    from streams.log.reader import canonical_aors

    settings = Settings.from_env()
    if args.since is not None and args.until is not None and args.since > args.until:
        _err("--since is after --until")
        return EXIT_CANNOT_READ
    try:
        aors = canonical_aors(args.aor) if args.aor else None
    except AorError as exc:
        _err(f"--aor: {exc}")
        return EXIT_CANNOT_READ
    reader = reader_from_args(
        settings,
        args,
        until_ms=args.until,
        aors=aors,
        since_ms=args.since,
        command="export",
        client_id="regstate-export",
    )
    since, until = args.since, args.until
    written = 0

    def write_to(out: BinaryIO) -> int:
        def feed(_record: Any, event: RegistrationEvent) -> None:
            nonlocal written
            if (since is not None and event.ts < since) or (until is not None and event.ts > until):
                return
            out.write(encode_event_json(event))
            out.write(b"\n")
            written += 1

        return read_kafka(settings, reader, feed, "export")

    if args.output == "-":
        code = write_to(sys.stdout.buffer)
        sys.stdout.flush()
        name = "<stdout>"
    else:
        final = Path(args.output)
        partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
        try:
            with partial.open("wb") as out:
                code = write_to(out)
            if code == EXIT_CANNOT_READ:
                partial.unlink(missing_ok=True)
                return code
            partial.replace(final)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            _err(f"cannot write {final}: {exc}")
            return EXIT_CANNOT_READ
        name = str(final)
    if code != EXIT_CANNOT_READ:
        _err(f"wrote {written} events to {name} ({reader.stats.summary()})")
    return code
