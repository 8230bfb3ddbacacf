"""streams.alerting.watermark: the floor the input partitions put under the watermark."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.alerting.watermark import HOLD, InputClock


def test_the_slowest_active_partition_holds_time_back() -> None:
    clock = InputClock(idle_ms=5000)
    clock.delivered("bindings-0", 2_000_000, wall=100)
    clock.delivered("events-0", 1_400_000, wall=100)
    assert clock.floor(wall=200) == 1_400_000
    clock.delivered("events-0", 1_900_000, wall=300)
    assert clock.floor(wall=300) == 1_900_000


def test_a_caught_up_partition_still_holds_until_it_has_been_quiet_for_idle_ms() -> None:
    # Its high watermark may be stale: the producer may still be writing to it.
    clock = InputClock(idle_ms=5000)
    clock.delivered("a", 1_000, wall=0)
    clock.delivered("b", 9_000, wall=4_000)
    assert clock.floor(wall=4_999) == 1_000
    assert clock.floor(wall=5_000) == 9_000
    assert clock.floor(wall=9_000) is None


def test_unread_records_hold_however_long_the_partition_was_quiet() -> None:
    clock = InputClock(idle_ms=5000)
    clock.delivered("a", 1_000, wall=0)
    clock.delivered("b", 9_000, wall=60_000)
    assert clock.floor(wall=60_001, unread=["a"]) == 1_000


def test_a_partition_with_unread_records_that_delivered_nothing_holds_time_still() -> None:
    clock = InputClock(idle_ms=5000)
    clock.delivered("a", 1_000, wall=0)
    assert clock.floor(wall=1, unread=["never"]) == HOLD


def test_an_older_record_does_not_move_a_partition_back() -> None:
    clock = InputClock(idle_ms=5000)
    clock.delivered("a", 5_000, wall=0)
    clock.delivered("a", 4_000, wall=1)
    assert clock.floor(wall=2) == 5_000


def test_a_negative_idle_time_is_refused() -> None:
    with pytest.raises(ValueError, match="idle_ms"):
        InputClock(idle_ms=-1)


deliveries = st.lists(
    st.tuples(st.sampled_from("abcd"), st.integers(0, 10**6), st.integers(0, 10**4)),
    max_size=40,
)


@given(deliveries, st.integers(0, 2 * 10**4), st.sets(st.sampled_from("abcd")))
def test_the_floor_never_passes_what_an_active_partition_delivered(
    records: list[tuple[str, int, int]], wall: int, unread: set[str]
) -> None:
    clock = InputClock(idle_ms=3000)
    latest: dict[str, int] = {}
    last_wall: dict[str, int] = {}
    for p, ts, at in records:
        clock.delivered(p, ts, at)
        latest[p] = max(latest.get(p, ts), ts)
        last_wall[p] = at
    floor = clock.floor(wall, unread)
    active = {p for p in latest if wall - last_wall[p] < 3000} | unread
    if unread - latest.keys():
        assert floor == HOLD
    elif not active:
        assert floor is None
    else:
        assert floor == min(latest[p] for p in active)
