"""Captures put back in capture-time order before the tracker sees them. Pure.

A capture agent's packets do not arrive in the order they were captured: a
registrar's processes each send their own (Kamailio's receiving children send
a 401 or 403, its timer process a retransmission), and UDP may reorder. The
tracker's events take their ``seq`` from the capture time (D52), and the fold
skips an event whose ``seq`` is not above the last one of its node (R5): an
event emitted after a later-captured one would be lost. So packets wait in a
small buffer, :data:`WINDOW_US` of capture time, and leave it in capture-time
order (D57). A packet that arrives later than that still goes through at once
(``late`` counts them): nothing is dropped, only its order is not repaired.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Final

from streams.hep.decode import HepPacket

WINDOW_US: Final = 250_000
"""How long a capture waits for earlier-captured ones still on their way."""


class CaptureOrder:
    """:meth:`push` a packet, get back the packets now due, in capture-time order."""

    def __init__(self, window_us: int = WINDOW_US) -> None:
        self.window_us = window_us
        self.late = 0
        self._heap: list[tuple[int, int, HepPacket]] = []
        self._arrival = itertools.count()
        self._newest = -(2**62)
        self._released = -(2**62)

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, packet: HepPacket) -> list[HepPacket]:
        """Take one packet; the packets captured ``window_us`` before the newest seen."""
        at = packet.capture_us
        if at < self._released:
            self.late += 1
            return [packet]
        heapq.heappush(self._heap, (at, next(self._arrival), packet))
        self._newest = max(self._newest, at)
        return self.release(self._newest - self.window_us)

    def release(self, until_us: int) -> list[HepPacket]:
        """Every packet captured at or before ``until_us``, oldest first."""
        out: list[HepPacket] = []
        heap = self._heap
        while heap and heap[0][0] <= until_us:
            at, _, packet = heapq.heappop(heap)
            self._released = max(self._released, at)
            out.append(packet)
        return out
