"""The torture corpus of tests/sip_torture/ (see its README), as bytes."""

from __future__ import annotations

import re
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent.parent / "sip_torture"
_REPEAT = re.compile(rb"<repeat n=(\d+)>(.*?)</repeat>", re.DOTALL)


def load(path: Path) -> bytes:
    """The message of one corpus file: LF -> CRLF, ``<NUL>`` and ``<repeat>`` expanded."""
    data = path.read_bytes().replace(b"\n", b"\r\n").replace(b"<NUL>", b"\x00")
    return _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), data)


def corpus(prefix: str = "") -> dict[str, bytes]:
    """Every corpus message whose file name starts with ``prefix``, by file name."""
    return {p.name: load(p) for p in sorted(CORPUS_DIR.glob(f"{prefix}*.sip"))}
