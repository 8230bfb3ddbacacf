"""One style for every ``regstate`` command (issue 16): times, formats, tables, pipes.

* Every time flag takes ms since the epoch or an ISO 8601 time with a timezone
  (:func:`time_arg`, added with :func:`add_time_argument`), parsed by the one
  parser :func:`streams.analysis.timeline.parse_time`.
* Every command whose output can be a table takes ``--format table|json|jsonl``
  (:func:`add_format_argument`); JSON keeps times as ms, tables print them
  with :func:`table_time` (``2026-01-01T08:00:00.000Z``, UTC) and AORs in full.
* A reader that closes the pipe (``regstate replay --timeline | head``) ends
  the command quietly: :func:`streams.cli.main` catches the BrokenPipeError.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from processors.explain import iso_ms
from streams.analysis.timeline import parse_time

FORMATS: Final = ("table", "json", "jsonl")
TIME_HELP: Final = "ms since the epoch or ISO 8601 with a timezone, e.g. 2026-01-01T08:00:00Z"


def time_arg(text: str) -> int:
    """argparse type of every time flag: ms since the epoch, or ISO 8601 with a timezone."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_time_argument(parser: Any, flag: str, help_text: str, **kwargs: Any) -> None:
    """A time flag (``metavar TIME``); its help ends with the two accepted forms."""
    parser.add_argument(
        flag, type=time_arg, metavar="TIME", help=f"{help_text} ({TIME_HELP})", **kwargs
    )


def add_format_argument(
    parser: Any,
    *,
    default: str = "table",
    choices: tuple[str, ...] = FORMATS,
    what: str = "output",
) -> None:
    """``--format``: a table for people, JSON (one document) or JSON Lines for programs."""
    parser.add_argument(
        "--format",
        choices=choices,
        default=default,
        help=f"{what} as {', '.join(choices)} (default {default})",
    )


def table_time(ms: int | None) -> str:
    """The one time format of tables: ISO 8601 UTC with ms; ``-`` when unknown."""
    return "-" if ms is None else iso_ms(ms)
