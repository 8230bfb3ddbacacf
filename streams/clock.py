"""The one wall clock of the runtime (docs/design.md section 6).

Event time is the node's ``ts``; the pure code in ``processors/`` never reads a
clock and takes ``now`` as an argument. The runtime reads the wall clock here
only, so a test or a simulation can hand any part a clock of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
"""A clock in ms since the Unix epoch (``now_ms`` or a test's fake)."""


def now_ms() -> int:
    """Wall clock, ms since the Unix epoch (event ``ts``, sweeper, query filters, alert times)."""
    return time.time_ns() // 1_000_000


def now_us() -> int:
    """Wall clock, µs since the Unix epoch: where a node's ``seq`` starts (section 4)."""
    return time.time_ns() // 1000
