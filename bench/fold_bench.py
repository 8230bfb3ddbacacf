"""Fold throughput on one core: msgpack decode + fold of N synthetic events.

    .venv/bin/python bench/fold_bench.py --events 1000000

Generates the events in memory with bench/gen_events.py's generator, encodes
them all to msgpack first (the Kafka value form, not timed), then times what a
worker does per record on one core: ``decode_event`` + ``fold_event`` into a
dict of AorStates. It then times the two halves separately over the same
records, for the split. Garbage collection stays on, as in a worker.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen_events import generate_events
from processors.fold import fold_event
from processors.outcomes import Outcome
from schemas import AorState, RegistrationEvent, Rejection, decode_event, encode_event


def fold_all(records: list[bytes]) -> tuple[dict[str, AorState], Counter[Outcome]]:
    """Decode and fold every record, as the worker's agent does (the timed loop)."""
    states: dict[str, AorState] = {}
    outcomes: Counter[Outcome] = Counter()
    for data in records:
        event = decode_event(data)
        if isinstance(event, Rejection):
            raise SystemExit(f"generated record rejected: {event}")
        folded = fold_event(states.get(event.aor), event)
        states[event.aor] = folded.state
        outcomes[folded.outcome] += 1
    return states, outcomes


def decode_all(records: list[bytes]) -> list[RegistrationEvent]:
    """Decode only."""
    out: list[RegistrationEvent] = []
    for data in records:
        event = decode_event(data)
        if isinstance(event, Rejection):
            raise SystemExit(f"generated record rejected: {event}")
        out.append(event)
    return out


def fold_only(events: list[RegistrationEvent]) -> dict[str, AorState]:
    """Fold only, from already decoded events."""
    states: dict[str, AorState] = {}
    for event in events:
        states[event.aor] = fold_event(states.get(event.aor), event).state
    return states


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print events/s, µs/event and the decode/fold split."""
    parser = argparse.ArgumentParser(description="fold throughput on one core")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--aors", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    records = [
        encode_event(e) for e in generate_events(args.events, args.aors, args.nodes, args.seed)
    ]
    n = len(records)
    size = sum(map(len, records))
    print(
        f"prepared {n:,} msgpack records ({size / n:.0f} B avg, {args.aors:,} AORs, "
        f"{args.nodes} nodes, seed {args.seed}) in {time.perf_counter() - started:.1f} s"
    )

    gc.collect()
    t0 = time.perf_counter()
    c0 = time.process_time()
    states, outcomes = fold_all(records)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0

    gc.collect()
    t0 = time.perf_counter()
    events = decode_all(records)
    decode_s = time.perf_counter() - t0
    gc.collect()
    t0 = time.perf_counter()
    fold_only(events)
    fold_s = time.perf_counter() - t0

    print(
        f"decode+fold: {n / wall:,.0f} events/s, {wall / n * 1e6:.2f} µs/event "
        f"(wall {wall:.2f} s, cpu {cpu:.2f} s)"
    )
    if cpu < 0.9 * wall:
        # On a shared machine the wall clock includes time other processes had the core.
        print(
            f"  per CPU second: {n / cpu:,.0f} events/s "
            f"(this process had the core {cpu / wall:.0%} of the time)"
        )
    split_total = decode_s + fold_s
    print(
        f"  decode: {decode_s / n * 1e6:.2f} µs/event ({decode_s / split_total:.0%}), "
        f"fold: {fold_s / n * 1e6:.2f} µs/event ({fold_s / split_total:.0%}) "
        "(measured separately)"
    )
    print(
        f"  {len(states):,} AORs; outcomes: "
        + ", ".join(f"{o.value} {c:,}" for o, c in outcomes.most_common())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
