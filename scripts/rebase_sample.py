"""Shift a sample log so its newest event happened now (demos only).

    .venv/bin/python scripts/rebase_sample.py samples/sample.jsonl > .regstate/sample-now.jsonl

The sample was recorded on 2026-01-01: published as is, every binding in it
would already be past its expiry and the query API would show none. Each
event's ``ts`` moves by (now - newest ts) and its node ``seq`` by the same time
in µs, so a second run is not skipped as a duplicate of the first (R5). Order,
gaps and every other field are kept.
"""

from __future__ import annotations

import sys
import time

import orjson


def main(path: str) -> int:
    """Print the shifted log on stdout."""
    with open(path, "rb") as f:
        records = [orjson.loads(line) for line in f if line.strip()]
    delta_ms = int(time.time() * 1000) - max(int(r["ts"]) for r in records)
    out = sys.stdout.buffer
    for r in records:
        r["ts"] = int(r["ts"]) + delta_ms
        r["seq"] = int(r["seq"]) + delta_ms * 1000
        r["id"] = f"{r['node']}:{r['seq']}"
        out.write(orjson.dumps(r) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
