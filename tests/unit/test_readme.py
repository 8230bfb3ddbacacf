"""The README stays true: every setting and every subcommand is documented there."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from streams.alerting.runner import AlertingSettings
from streams.cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"REGSTATE_{f.name.upper()}"
        for f in fields(AlertingSettings)  # every Settings field and alerting's own
        if f"`REGSTATE_{f.name.upper()}`" not in README
    ]
    assert missing == []


def test_every_subcommand_is_in_the_readme() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = sorted(sub.choices)  # type: ignore[arg-type]
    assert names, "no subcommands registered"
    missing = [name for name in names if f"`{name}" not in README and f" {name} " not in README]
    assert missing == []


def test_quick_start_has_the_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "./dev run" in quick
    assert "./dev test" in quick
