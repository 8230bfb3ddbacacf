"""REGSTATE_LOG_FORMAT (streams/logsetup.py): one setup for every command."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from streams.logsetup import JsonFormatter
from streams.settings import Settings, SettingsError


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("regstate.test", logging.WARNING, "f.py", 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_json_object_with_its_extra_fields_and_traceback() -> None:
    line = JsonFormatter().format(_record("dead letter %s\nnext", "p0@5", exc=True, partition=0))
    assert "\n" not in line
    doc = orjson.loads(line)
    assert doc["level"] == "warning" and doc["logger"] == "regstate.test"
    assert doc["msg"] == "dead letter p0@5\nnext"
    assert doc["partition"] == 0
    assert "ValueError: boom" in doc["exc"]
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]


def test_an_unknown_format_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="REGSTATE_LOG_FORMAT"):
        Settings.from_env({"REGSTATE_LOG_FORMAT": "xml"})


# Every command logging JSON for real: tests/integration/test_metrics_live.py runs the
# worker, a front-end, a dialer view and alerting with REGSTATE_LOG_FORMAT=json.
