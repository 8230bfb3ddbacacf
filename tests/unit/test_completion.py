"""`regstate completion bash`: the generated script completes commands, flags and choices."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from streams.cli import build_parser
from streams.completion_cli import bash_script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def complete(*words: str) -> list[str]:
    """What bash offers for ``regstate <words>`` (the last word is the one completed)."""
    script = bash_script(build_parser())
    line = " ".join(f"'{w}'" for w in ("regstate", *words))
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; _regstate; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return sorted(w for w in out.stdout.splitlines() if w)


def test_the_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n"], input=bash_script(build_parser()), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_commands_flags_choices_and_nested_commands_complete() -> None:
    assert complete("rep") == ["replay"]
    assert "where" in complete("")
    assert complete("replay", "--tim") == ["--timeline"]
    assert complete("problems", "--format", "") == ["json", "jsonl", "table"]
    assert complete("where", "1001", "--format", "j") == ["json"]
    assert complete("topics", "") == ["ensure", "list"]
    assert complete("topics", "list", "--l") == ["--live"]
    assert complete("completion", "b") == ["bash"]
    # Hidden aliases (--json) are not offered.
    assert "--json" not in complete("problems", "--")
