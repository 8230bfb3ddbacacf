"""One logging setup for every ``regstate`` command (issue 16).

``REGSTATE_LOG_LEVEL`` (debug, info, warning, error) and ``REGSTATE_LOG_FORMAT``:
``text`` (a line per record for people) or ``json`` (one JSON object per line
for a log shipper: ``ts`` ISO 8601 UTC with ms, ``level``, ``logger``,
``msg``, ``exc`` when there is a traceback, and the record's ``extra``
fields). :func:`streams.cli.main` calls :func:`setup` before any subcommand
runs; the worker keeps it (Faust's own logging setup is turned off).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

import orjson

FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
"""Attributes every record has; anything else came from ``extra=``."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, newline-free (orjson escapes newlines in strings)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        return orjson.dumps(out, default=str).decode()


def setup(level: str, fmt: str) -> None:
    """Route every logger to stderr at ``level`` in ``fmt`` (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
