"""Detached node processes: start, liveness (guarded against recycled pids), locks, logs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from devkafka.layout import HOST


def port_free(port: int) -> bool:
    """True if 127.0.0.1:``port`` can be listened on now (as a JVM would, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def process_alive(pid: int, marker: str | None = None) -> bool:
    """True if ``pid`` runs, is no zombie, and (when given) has ``marker`` in its command line.

    The marker (the node's server.properties path) guards against a recycled pid.
    """
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        state = stat.rpartition(")")[2].split()[:1]
        if state == ["Z"]:
            return False
        return marker is None or marker in cmdline
    if sys.platform.startswith("linux"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spawn_detached(command: Sequence[str], log_path: Path, cwd: Path) -> int:
    """Start ``command`` in its own session, output appended to ``log_path``; return its pid.

    A shell backgrounds the command and exits at once, so the command is re-parented
    to init: it outlives the CLI, and no Popen object stays behind in a long-lived
    caller (pytest) to warn "subprocess is still running" or leave a zombie.
    """
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    done = subprocess.run(  # noqa: S603 - argv list, no shell interpolation of arguments
        ["/bin/sh", "-c", script, "sh", str(log_path), *command],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        start_new_session=True,
    )
    return int(done.stdout.strip())


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or ``""`` if it does not exist."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock: serializes up/down of one layout across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
