"""Reading RegistrationEvents from JSON Lines files (docs/design.md section 4, file form).

One reader for every command that takes ``--input FILE.jsonl`` (``replay``,
``publish``), so a line means the same thing everywhere: decoded and validated by
:func:`schemas.decode_event_json`, its AOR canonicalized by
:func:`processors.sipuri.canonical_aor` (files are edited by hand, and the AOR is
the Kafka key and the table key: two spellings of one AOR must not become two
AORs).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from processors.sipuri import AorError, canonical_aor
from schemas import RegistrationEvent, Rejection, decode_event_json

STDIN: Final = "-"
"""The ``--input`` value that means standard input."""

LineResult = tuple[int, RegistrationEvent | str]
"""``(line number, event)`` for a good line, ``(line number, reason)`` for a bad one."""


def is_stdin(source: str | Path) -> bool:
    """Whether ``source`` names standard input (``-``)."""
    return str(source) == STDIN


def display_name(source: str | Path) -> str:
    """How messages name the input: the path as given, or ``<stdin>``."""
    return "<stdin>" if is_stdin(source) else str(source)


def parse_line(line: bytes | str) -> RegistrationEvent | str:
    """Decode one non-blank line: the event with its AOR canonical, or why it is bad.

    Never raises on bad input. The reason is the codec's Rejection text
    (``reason: detail``), or ``invalid_aor: ...`` when the AOR is no SIP/SIPS/tel URI.
    """
    decoded = decode_event_json(line)
    if isinstance(decoded, Rejection):
        return str(decoded)
    try:
        aor = canonical_aor(decoded.aor)
    except AorError as exc:
        return f"invalid_aor: {exc}"
    if aor != decoded.aor:
        decoded = decoded._replace(aor=aor)
    return decoded


def iter_lines(stream: BinaryIO) -> Iterator[LineResult]:
    """Parse every non-blank line of an open binary stream, one line in memory at a time.

    Line numbers count every physical line (blank ones too), starting at 1, so
    they match what an editor shows.
    """
    for line_no, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        yield line_no, parse_line(line)


def read_events(source: str | Path) -> Iterator[LineResult]:
    """Stream ``(line_no, event | reason)`` from a JSON Lines file, or stdin for ``-``.

    The file is read lazily, line by line; it is opened when iteration starts and
    closed when the iterator is exhausted or closed. Blank lines are skipped.
    Raises OSError only when the file cannot be opened or read.
    """
    if is_stdin(source):
        yield from iter_lines(sys.stdin.buffer)
        return
    with Path(source).open("rb") as stream:
        yield from iter_lines(stream)


def count_lines(source: str | Path, chunk_size: int = 1 << 20) -> int | None:
    """Physical line count of a regular file (for a progress bar); None for stdin.

    Reads the file once in large chunks without decoding, which is much cheaper
    than parsing it.
    """
    if is_stdin(source):
        return None
    count = 0
    last = b"\n"
    with Path(source).open("rb") as stream:
        while chunk := stream.read(chunk_size):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    # A last line without its newline is still a line.
    return count + (0 if last == b"\n" else 1)
