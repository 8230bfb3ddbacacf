"""The alerting watermark's floor: the least event time the active input partitions delivered.

The runner reads many partitions of three topics, and Kafka hands them over at
different speeds: one fetch may carry minutes of one partition's event time and
seconds of another's. The detector turns a binding overdue when the watermark
passes its due time, so a watermark taken from the fastest partition makes
phones overdue whose refreshes simply have not been read yet (a false page).

So, as in Flink's per-partition watermarks with idleness, time is held back to
the least event time delivered by every partition that is still *active*:

* it has records known to be unread (its position is behind its high
  watermark), or
* it delivered an event within ``idle_ms`` of wall time (a high watermark is
  only as fresh as the last fetch of that partition, so "caught up" alone
  cannot be trusted while a producer is still writing to it).

A partition quiet for ``idle_ms`` with nothing unread no longer holds time
back: a topic partition that carries few phones must not stop alerting.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Final

HOLD: Final = -(2**63)
"""Floor meaning: do not move the watermark at all (an active partition delivered nothing)."""


class InputClock:
    """Event time per input partition, and the floor it puts under the watermark."""

    def __init__(self, idle_ms: int) -> None:
        if idle_ms < 0:
            raise ValueError("idle_ms must not be negative")
        self.idle_ms = idle_ms
        self._ts: dict[Hashable, int] = {}
        self._wall: dict[Hashable, int] = {}

    def delivered(self, partition: Hashable, ts: int, wall: int) -> None:
        """A record of ``partition`` with event time ``ts`` was read at ``wall``."""
        if ts > self._ts.get(partition, ts - 1):
            self._ts[partition] = ts
        self._wall[partition] = wall

    def floor(self, wall: int, unread: Iterable[Hashable] = ()) -> int | None:
        """The least event time of the active partitions; None when none is active.

        ``unread`` names the partitions known to have records not yet read.
        :data:`HOLD` when one of them has delivered nothing yet: its phones'
        first records are unknown, so time must stay where it is.
        """
        floor: int | None = None
        for p in unread:
            ts = self._ts.get(p)
            if ts is None:
                return HOLD
            floor = ts if floor is None else min(floor, ts)
        for p, last in self._wall.items():
            if wall - last < self.idle_ms:
                ts = self._ts[p]
                floor = ts if floor is None else min(floor, ts)
        return floor
