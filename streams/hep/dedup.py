"""Duplicated captures: the same packet reported twice within a few milliseconds. Pure.

Two capture points on one path (a registrar's own ``siptrace`` and a
``heplify`` on the same box), or a mirror sent twice, report one SIP message
more than once. A real retransmission comes at least T1/2 later (RFC 3261:
Timer E starts at T1 = 500 ms, Timer G the same), so the same bytes from the
same source to the same destination within :data:`WINDOW_US` are one packet
(D53). The capture agent is not part of the key: two agents seeing one packet
are still one packet.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from streams.hep.decode import HepPacket

WINDOW_US: Final = 200_000
"""Well under a SIP retransmission interval (250 ms at the very least), well over
the spread of two capture points' clocks on one host."""


class DuplicateFilter:
    """:meth:`seen` is True for a packet already seen within the window."""

    def __init__(self, window_us: int = WINDOW_US, max_entries: int = 1_000_000) -> None:
        self.window_us = window_us
        self.max_entries = max_entries
        self.duplicates = 0
        # Insertion order is capture order closely enough to prune from the front.
        self._last: OrderedDict[tuple[bytes, str, int, str, int, int], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def seen(self, packet: HepPacket) -> bool:
        """Whether ``packet`` duplicates one within the window; remembers it otherwise."""
        key = (
            packet.payload,
            packet.src_ip,
            packet.src_port,
            packet.dst_ip,
            packet.dst_port,
            packet.ip_proto,
        )
        at = packet.capture_us
        self._prune(at)
        last = self._last.get(key)
        if last is not None and abs(at - last) <= self.window_us:
            self.duplicates += 1
            return True
        self._last[key] = at
        self._last.move_to_end(key)
        return False

    def _prune(self, now_us: int) -> None:
        last = self._last
        while last:
            key, at = next(iter(last.items()))
            if now_us - at <= self.window_us and len(last) < self.max_entries:
                break
            del last[key]
