"""bench/agent_path_bench.py drives the real agent: what it folds is what the fold gives.

The bench times the agent's batch path without a broker; this checks that the
path it times is the whole one: every AOR's table value equals a plain fold of
the same log, the binding events counted are the fold's, and the producer got at
least those events and a changelog record per AOR.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import orjson

from bench.agent_path_bench import PARTS, Record, agent_round, chunks
from bench.engine_bench import bench_events
from processors.fold import fold_event
from schemas import AorState, encode_state
from streams.settings import Settings

BENCH = Path(__file__).resolve().parents[3] / "bench" / "agent_path_bench.py"


def test_agent_path_folds_the_log_as_the_fold_does(tmp_path: Path) -> None:
    args = argparse.Namespace(
        events=600, aors=40, partitions=4, seed=3, batch=97, data_dir=str(tmp_path)
    )
    events = bench_events(args, args.events)
    batches = chunks(args, events, "regstate.registrations")
    assert sum(len(r) for b in batches for _, r in b) == len(events)
    assert all(isinstance(r, Record) for b in batches for _, rs in b for r in rs)

    cpu, engine = agent_round(args, batches)
    assert cpu > 0

    policy = Settings().fold_policy()
    expected: dict[str, AorState] = {}
    changes = 0
    for e in events:
        folded = fold_event(expected.get(e.aor), e, policy)
        expected[e.aor] = folded.state
        changes += len(folded.events)
    for aor, state in expected.items():
        stored = engine.table.stored(0, aor.encode())  # the memory store: one dict
        assert stored is not None, aor
        assert orjson.loads(stored) == orjson.loads(encode_state(state, internal=True))
    assert sum(engine.metrics.binding_events.values()) == changes > 0
    # Each binding event, plus a changelog record per AOR and batch that changed it.
    assert engine.producer().records >= changes + len(expected)


def test_every_part_the_bench_can_leave_out_exists() -> None:
    """--without replaces named functions; each must still exist under its name, or the
    bench would measure the part it claims to leave out. Run in a child: it patches."""
    parts = [f"--without={part}" for part in PARTS]
    cmd = [sys.executable, str(BENCH), "--only=agent", "--events=300", "--aors=30", *parts]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
