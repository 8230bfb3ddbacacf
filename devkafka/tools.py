"""Finding and checking ``java`` and ``mvn``: a missing tool is named with how to install it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from devkafka.errors import ToolMissingError

MIN_JAVA = 17
"""Kafka 4.x brokers need Java 17."""

JAVA_MISSING = (
    "java not found: install a Java {min}+ JDK or JRE "
    "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless), or set JAVA_HOME"
)
MVN_MISSING = (
    "mvn not found: install Apache Maven (Debian/Ubuntu: apt-get install maven); "
    "it fetches the Kafka jars from Maven Central once"
)


def find_java(env: dict[str, str] | None = None) -> str:
    """Path of ``java`` (``$JAVA_HOME/bin/java`` first); ToolMissingError if none."""
    source = os.environ if env is None else env
    java_home = source.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java", path=source.get("PATH"))
    if found is None:
        raise ToolMissingError(JAVA_MISSING.format(min=MIN_JAVA))
    return found


def find_mvn(env: dict[str, str] | None = None) -> str:
    """Path of ``mvn``; ToolMissingError if none."""
    source = os.environ if env is None else env
    found = shutil.which("mvn", path=source.get("PATH"))
    if found is None:
        raise ToolMissingError(MVN_MISSING)
    return found


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output (``"1.8.0_x"`` is 8), or None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def check_java(java: str) -> None:
    """ToolMissingError unless ``java`` runs and is at least Java 17."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, java found on PATH
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissingError(f"{java} -version failed ({exc}): " + JAVA_MISSING) from exc
    major = parse_java_major(done.stderr + done.stdout)
    if major is None or major < MIN_JAVA:
        found = (done.stderr or done.stdout).strip().splitlines()[:1]
        raise ToolMissingError(
            f"Kafka 4 needs Java {MIN_JAVA}+, {java} is {found[0] if found else 'unknown'}: "
            + JAVA_MISSING.format(min=MIN_JAVA).removeprefix("java not found: ")
        )
