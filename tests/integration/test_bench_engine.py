"""bench/engine_bench.py on a real broker: each phase runs end to end and prints its figures.

The figures' values belong to the machine (no target is asserted here); what is checked
is that every phase measures what it says: the whole log folded, a latency sample per
new state, the relay floor's sample per record, and the CPU of the worker and of the
bench's own publisher and reader (D128)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.bench_support import run_bench, search_line

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]


def _bench(bootstrap: str, work: Path, *args: str) -> str:
    return run_bench("engine_bench.py", "--bootstrap", bootstrap, "--data-dir", str(work), *args)


def test_throughput_and_latency_phases(kafka_bootstrap: str, tmp_path: Path) -> None:
    rate, seconds = 300, 3
    stdout = _bench(
        kafka_bootstrap,
        tmp_path,
        "--phases",
        "throughput,latency",
        "--events",
        "4000",
        "--aors",
        "400",
        "--latency-rate",
        str(rate),
        "--latency-seconds",
        str(seconds),
        "--latency-events",
        "2000",
    )
    throughput = search_line(
        r"RESULT throughput: 4000 events folded by 1 worker\(s\) .*: (\d+) events/s "
        r"\((\d+) to the last folded\), worker CPU (\d+) µs/event",
        stdout,
    )
    committed, folded, worker_cpu = map(int, throughput.groups())
    assert folded >= committed > 0
    assert worker_cpu > 0

    latency = search_line(
        rf"RESULT latency at {rate} events/s for {seconds} s: (\d+) bindings records, "
        r"p50 ([\d.]+) ms, p99 ([\d.]+) ms",
        stdout,
    )
    states, p50, p99 = int(latency.group(1)), float(latency.group(2)), float(latency.group(3))
    assert 0 < states <= rate * seconds
    assert 0 < p50 <= p99

    cpu = search_line(
        r"RESULT CPU during the latency phase: worker (\d+) µs/event; the bench's publisher "
        r"(\d+) µs/event, its reader (\d+) µs/event; machine \d+% busy",
        stdout,
    )
    assert all(int(x) > 0 for x in cpu.groups())

    # The relay re-sends every record: one sample each.
    floor = search_line(
        rf"RESULT latency floor \(relay: consume and re-send, no fold\) at {rate} events/s: "
        r"(\d+) records, p50 ([\d.]+) ms, p99 ([\d.]+) ms",
        stdout,
    )
    assert int(floor.group(1)) == rate * seconds
    assert 0 < float(floor.group(2)) <= float(floor.group(3))


def test_restart_phase(kafka_bootstrap: str, tmp_path: Path) -> None:
    stdout = _bench(kafka_bootstrap, tmp_path, "--phases", "restart", "--bindings", "2000")
    search_line(r"table filled: 2000 bindings", stdout)
    restart = search_line(
        r"RESULT restart to ready with 2000 bindings \(RocksDB\): "
        r"([\d.]+) s, ([\d.]+) s, ([\d.]+) s \[target <= 10 s\]",
        stdout,
    )
    assert all(float(x) > 0 for x in restart.groups())
