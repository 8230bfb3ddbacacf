"""The Kafka runtime classpath, resolved by Maven once and cached by the pom's hash."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from devkafka.errors import KafkaLocalError
from devkafka.layout import pom_kafka_version
from devkafka.processes import file_lock
from devkafka.tools import find_mvn


def resolve_classpath(
    kafka_root: Path, pom: Path, *, log: bool = True, env: dict[str, str] | None = None
) -> str:
    """The Kafka runtime classpath, from the cache or from Maven.

    The cache file is ``kafka_root/classpath-<pom sha256 prefix>.txt``; it is used only
    if every jar it lists still exists (``~/.m2`` may have been wiped).
    """
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cache = kafka_root / f"classpath-{digest}.txt"
    with file_lock(kafka_root / "classpath.lock"):
        cached = _read_classpath(cache)
        if cached is not None:
            return cached
        mvn = find_mvn(env)
        if log:
            print(
                f"regstate: resolving Kafka {pom_kafka_version(pom)} jars with Maven "
                "(about 70 MB into ~/.m2, downloaded once)",
                file=sys.stderr,
            )
        tmp = cache.with_suffix(".tmp")
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={tmp}",
            "-Dmdep.includeScope=runtime",
        ]
        try:
            done = subprocess.run(  # noqa: S603 - argv list
                command, capture_output=True, text=True, timeout=900, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaLocalError("mvn dependency:build-classpath timed out") from exc
        if done.returncode != 0 or not tmp.exists():
            raise KafkaLocalError(
                f"mvn dependency:build-classpath failed (exit {done.returncode})",
                detail="\n".join((done.stdout + done.stderr).splitlines()[-40:]),
            )
        os.replace(tmp, cache)
        resolved = _read_classpath(cache)
        if resolved is None:
            raise KafkaLocalError(f"Maven wrote an empty or broken classpath to {cache}")
        return resolved


def classpath_argfile(kafka_root: Path, classpath: str) -> Path:
    """A java ``@argfile`` holding ``-cp <classpath>``; returns its path.

    Keeps the 4 KB classpath out of the command line, so ``ps`` shows which node a
    JVM is. Named by the classpath's hash, written atomically: concurrent callers agree.
    """
    digest = hashlib.sha256(classpath.encode()).hexdigest()[:16]
    path = kafka_root / f"classpath-{digest}.args"
    if not path.exists():
        # Inside double quotes an argfile treats backslash as an escape character.
        quoted = classpath.replace("\\", "\\\\").replace('"', '\\"')
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(f'-cp "{quoted}"\n')
        os.replace(tmp, path)
    return path


def _read_classpath(cache: Path) -> str | None:
    try:
        text = cache.read_text().strip()
    except OSError:
        return None
    jars = [j for j in text.split(os.pathsep) if j]
    if not jars or not all(Path(j).is_file() for j in jars):
        return None
    return os.pathsep.join(jars)
