"""bench/quix_peer.py on a real broker.

Its empty Faust agent counts every record of the log it was given, and one that has not
taken them all in time is reported instead of hanging. Each contender is timed to two
ends, its commit of the log's end and its last record folded (the worker commits on its
timer, the peers at once, D127); ``--rounds`` runs them again in reverse order and prints
medians."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.bench_support import run_bench, search_line

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

NO_FOLD = ("--no-worker", "--no-pipeline")  # the empty agent alone
RATE = r"(\d+) events/s \((\d+) to the last folded\)"


def _bench(bootstrap: str, work: Path, *extra: str, events: int = 2000) -> str:
    return run_bench(
        "quix_peer.py",
        "--bootstrap",
        bootstrap,
        "--events",
        str(events),
        "--aors",
        str(events // 10),
        "--no-quix",
        "--data-dir",
        str(work),
        *extra,
    )


def test_empty_faust_agent_takes_the_whole_log(kafka_bootstrap: str, tmp_path: Path) -> None:
    stdout = _bench(kafka_bootstrap, tmp_path, *NO_FOLD, "--faust", "aiokafka")
    line = search_line(r"RESULT faust-aiokafka: (\d+) records taken .*: (\d+) events/s", stdout)
    assert int(line.group(1)) == 2000
    assert int(line.group(2)) > 0


def test_a_transport_that_takes_nothing_is_reported(kafka_bootstrap: str, tmp_path: Path) -> None:
    # Too short for Faust to start at all: the child is stopped and the bench says so.
    stdout = _bench(
        kafka_bootstrap, tmp_path, *NO_FOLD, "--faust", "aiokafka", "--faust-timeout", "0.5"
    )
    want = r"RESULT faust-aiokafka: had not taken all 2000 records after 0.5 s; see "
    search_line(want, stdout)


@pytest.mark.slow
def test_worker_and_client_floor_are_timed_to_both_ends(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stdout = _bench(
        kafka_bootstrap, tmp_path, "--worker", "regstate:", "--rounds", "2", events=3000
    )
    first, second = stdout.split("bench: round 2 of 2")
    for contender in (r"worker regstate: 3000 events folded", r"pipeline: 3000 records folded"):
        for rnd in (first, second):
            line = search_line(contender + r".*?: " + RATE, rnd)
            committed, folded = int(line.group(1)), int(line.group(2))
            # The last record is folded before the end is committed, never after.
            assert 0 < committed <= folded, line.group(0)
    # The second round runs the contenders in reverse order.
    assert first.index("worker regstate: published") < first.index("pipeline: published")
    assert second.index("pipeline: published") < second.index("worker regstate: published")
    for end in ("to the commit of the end", "to the last folded"):
        for rnd in (first, second):
            ratio = search_line(rf"RATIO worker regstate \({end}\): (\d+) events/s = \d+% of", rnd)
            assert int(ratio.group(1)) > 0
        median = search_line(
            rf"MEDIAN worker regstate \({end}\) over 2 rounds: (\d+)% of bare "
            r"\(rounds: (\d+)%, (\d+)%\)",
            stdout,
        )
        a, b = int(median.group(2)), int(median.group(3))
        assert int(median.group(1)) in range(min(a, b), max(a, b) + 1)
