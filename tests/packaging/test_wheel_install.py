"""Scenario: regstate installed from its wheel, outside the checkout, works.

The wheel is built from this checkout, installed into a new virtual environment
in a temporary directory, and run from there with no PYTHONPATH and no
checkout on sys.path: ``regstate --help``, ``--version``, every subcommand's
``--help``, and ``regstate replay --input`` on the sample log. The Docker image
installs the same wheel, so this is also the image's install step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.cli import build_parser
from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "REGSTATE_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the wheel, the bin/ directory of a fresh venv that has it installed)."""
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "dist"
    # Built from a copy of the files git knows: a stale build/ of the checkout could
    # otherwise carry modules that no longer exist into the wheel.
    source = root / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = PROJECT_ROOT / name.decode()
        if src.is_file() and not src.is_symlink():
            dst = source / name.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), "."],
        cwd=source,
        check=True,
        env=_clean_env(),
        timeout=300,
    )
    (wheel,) = wheels.glob("regstate-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        cwd=root,
        check=True,
        env=_clean_env(),
        timeout=900,
    )
    yield wheel, venv / "bin"


def _run(
    bin_dir: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = _clean_env()
    env["REGSTATE_DATA_DIR"] = str(bin_dir.parent / "data")
    return subprocess.run(
        [str(bin_dir / "regstate"), *args],
        cwd=bin_dir.parent,  # outside the checkout
        env=env,
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def _subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_wheel_holds_every_package_and_no_checkout_tooling(
    installed: tuple[Path, Path],
) -> None:
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    source_packages = {
        str(p.parent.relative_to(PROJECT_ROOT))
        for top in ("schemas", "processors", "streams")
        for p in (PROJECT_ROOT / top).rglob("__init__.py")
    }
    shipped = {str(Path(n).parent) for n in names if n.endswith("/__init__.py")}
    assert source_packages <= shipped, f"missing from the wheel: {source_packages - shipped}"
    assert not [n for n in names if n.startswith(("devkafka/", "tests/", "bench/"))]


def test_every_command_helps_from_the_wheel(installed: tuple[Path, Path]) -> None:
    _, bin_dir = installed
    top = _run(bin_dir, "--help")
    assert top.returncode == 0, top.stderr.decode()
    version = _run(bin_dir, "--version")
    assert version.returncode == 0 and version.stdout.decode().startswith("regstate ")
    failures = {}
    for command in _subcommands():
        done = _run(bin_dir, command, "--help")
        usage = b"usage: regstate " + command.encode()
        if done.returncode != 0 or not done.stdout.startswith(usage):
            failures[command] = done.stderr.decode()[-500:]
    assert not failures


def test_replay_of_the_sample_from_the_wheel(installed: tuple[Path, Path]) -> None:
    _, bin_dir = installed
    sample = (PROJECT_ROOT / "samples" / "sample.jsonl").read_bytes()
    from_wheel = _run(bin_dir, "replay", "--input", "-", stdin=sample)
    assert from_wheel.returncode == 0, from_wheel.stderr.decode()
    from_checkout = subprocess.run(
        [sys.executable, "-m", "streams", "replay", "--input", "-"],
        input=sample,
        capture_output=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=True,
    )
    states = orjson.loads(from_wheel.stdout)
    assert states and states == orjson.loads(from_checkout.stdout)


def test_the_dev_kafka_command_says_what_it_needs(installed: tuple[Path, Path]) -> None:
    _, bin_dir = installed
    done = _run(bin_dir, "kafka", "up")
    assert done.returncode == 2
    assert b"source checkout" in done.stderr and b"REGSTATE_BOOTSTRAP_SERVERS" in done.stderr
