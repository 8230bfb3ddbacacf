"""In-memory tables of one front-end node: transactions, source limits, accepted bindings.

All take the time as an argument (ms), never read a clock, so tests drive them.
Each is bounded: the oldest entries go first when a cap is reached, so a flood
of new Call-IDs or source addresses costs memory up to the cap and no more.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from processors.sipuri import contact_key, flow_key
from schemas import ContactEntry

TransactionKey = tuple[str, int, str, str]
"""(Call-ID, CSeq number, method, top Via branch)."""


@dataclass(slots=True)
class Answered:
    """A request already answered: the bytes to send again, and what to log about it."""

    response: bytes
    status: int
    aor: str | None


PENDING: Final = None
"""Marker for a request being processed (its response not sent yet)."""


class TransactionCache:
    """Final responses by transaction, kept ``ttl_ms`` (UDP non-INVITE Timer J: 64*T1 = 32 s).

    ``lookup`` returns an :class:`Answered`, ``PENDING`` (``None`` with
    ``found`` true) for a request in progress, or reports not found.
    """

    def __init__(self, ttl_ms: int = 32_000, max_entries: int = 100_000) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self._entries: OrderedDict[TransactionKey, tuple[int, Answered | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: TransactionKey, now_ms: int) -> tuple[bool, Answered | None]:
        """(found, answer); answer None while the request is still being processed."""
        self._expire(now_ms)
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        return True, entry[1]

    def begin(self, key: TransactionKey, now_ms: int) -> None:
        """Mark a request as in progress (its retransmissions are absorbed meanwhile)."""
        self._put(key, now_ms, None)

    def complete(self, key: TransactionKey, now_ms: int, answered: Answered) -> None:
        """Remember the final response for ``ttl_ms``."""
        self._put(key, now_ms, answered)

    def _put(self, key: TransactionKey, now_ms: int, value: Answered | None) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (now_ms + self.ttl_ms, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _expire(self, now_ms: int) -> None:
        # Entries are in insertion order with one TTL, so expired ones are at the front.
        while self._entries:
            key, (until, _) = next(iter(self._entries.items()))
            if until > now_ms:
                break
            del self._entries[key]


class SourceLimiter:
    """Per source IP: a token bucket, and a ban after repeated authentication failures.

    ``allow`` is called before a datagram is parsed, so a flooding address costs
    one dict lookup per packet and cannot use up the node for the others.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        ban_failures: int,
        ban_ms: int,
        max_sources: int = 100_000,
    ) -> None:
        self.rate_per_ms = rate_per_s / 1000.0
        self.burst = float(burst)
        self.ban_failures = ban_failures
        self.ban_ms = ban_ms
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._failures: dict[str, deque[int]] = {}
        self._banned: dict[str, int] = {}
        self.dropped = 0
        self.bans = 0

    def allow(self, ip: str, now_ms: int) -> bool:
        """Whether a packet from ``ip`` may be processed now (takes one token)."""
        until = self._banned.get(ip)
        if until is not None:
            if now_ms < until:
                self.dropped += 1
                return False
            del self._banned[ip]
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = [self.burst, float(now_ms)]
            self._buckets[ip] = bucket
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ip)
            bucket[0] = min(self.burst, bucket[0] + (now_ms - bucket[1]) * self.rate_per_ms)
            bucket[1] = float(now_ms)
        if bucket[0] < 1.0:
            self.dropped += 1
            return False
        bucket[0] -= 1.0
        return True

    def auth_failed(self, ip: str, now_ms: int) -> bool:
        """Count a failure; True when it bans ``ip`` for ``ban_ms``."""
        window = self._failures.setdefault(ip, deque())
        window.append(now_ms)
        while window and window[0] <= now_ms - self.ban_ms:
            window.popleft()
        if len(self._failures) > self.max_sources:
            self._failures.pop(next(iter(self._failures)))
        if len(window) >= self.ban_failures:
            self._banned[ip] = now_ms + self.ban_ms
            del self._failures[ip]
            self.bans += 1
            return True
        return False

    def banned(self, ip: str, now_ms: int) -> bool:
        """Whether ``ip`` is banned at ``now_ms``."""
        return self._banned.get(ip, 0) > now_ms


@dataclass(frozen=True, slots=True)
class LocalBinding:
    """A binding this node granted, as needed for its ``expire`` event."""

    aor: str
    key: str
    uri: str
    expires_at: int
    call_id: str
    cseq: int
    flow: int | None = None
    """The TCP connection an RFC 5626 (outbound) binding was registered over, if any."""


def binding_key(contact: ContactEntry) -> str:
    """R2: the flow key with instance and reg-id, else the Contact URI's canonical form."""
    if contact.instance is not None and contact.reg_id is not None:
        return flow_key(contact.instance, contact.reg_id)
    return contact_key(contact.uri)


class LocalBindings:
    """Bindings this node accepted, with a heap of their expiry times.

    Only a 200 the node sent after its event was acknowledged changes this
    table, so every ``expire`` it yields names a binding that is in the log.
    Bindings accepted by other nodes, or before a restart, are the engine
    sweeper's (DESIGN section 6).
    """

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, LocalBinding]] = {}
        self._heap: list[tuple[int, str, str]] = []
        # Outbound bindings per connection; entries of bindings replaced since are
        # skipped when the connection closes (their ``flow`` no longer matches).
        self._by_flow: dict[int, set[tuple[str, str]]] = {}

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_aor.values())

    def apply(
        self,
        aor: str,
        contacts: Iterable[ContactEntry],
        *,
        wildcard: bool,
        call_id: str,
        cseq: int,
        ts: int,
        flow: int | None = None,
    ) -> None:
        """Apply a 200-answered REGISTER: wildcard clears, expiry 0 removes, others set.

        ``flow``: the TCP connection it came over. A contact with ``+sip.instance``
        and ``reg-id`` (RFC 5626) is then bound to that connection (:meth:`drop_flow`).
        """
        table = self._by_aor.setdefault(aor, {})
        if wildcard:
            table.clear()
        for contact in contacts:
            key = binding_key(contact)
            if contact.expires == 0:
                table.pop(key, None)
                continue
            outbound = flow is not None and contact.instance is not None
            on_flow = flow if outbound and contact.reg_id is not None else None
            binding = LocalBinding(
                aor, key, contact.uri, ts + contact.expires * 1000, call_id, cseq, on_flow
            )
            if on_flow is not None:
                self._by_flow.setdefault(on_flow, set()).add((aor, key))
            table[key] = binding
            heapq.heappush(self._heap, (binding.expires_at, aor, key))
        if not table:
            del self._by_aor[aor]

    def active(self, aor: str, now_ms: int) -> list[tuple[str, int]]:
        """(Contact URI, seconds left) of the AOR's bindings still active at ``now_ms``."""
        table = self._by_aor.get(aor, {})
        return [
            (b.uri, max(1, (b.expires_at - now_ms + 999) // 1000))
            for b in table.values()
            if b.expires_at > now_ms
        ]

    def active_after(
        self, aor: str, contacts: Iterable[ContactEntry], *, wildcard: bool, now_ms: int
    ) -> int:
        """How many of the AOR's bindings on this node would be active after applying
        ``contacts`` at ``now_ms`` (the fold's R9 count, as far as this node knows)."""
        keys = (
            set()
            if wildcard
            else {k for k, b in self._by_aor.get(aor, {}).items() if b.expires_at > now_ms}
        )
        for contact in contacts:
            if contact.expires == 0:
                keys.discard(binding_key(contact))
            else:
                keys.add(binding_key(contact))
        return len(keys)

    def next_due(self) -> int | None:
        """The earliest expiry in the heap (possibly of a binding since refreshed)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> list[LocalBinding]:
        """Remove and return the bindings whose expiry is at or before ``now_ms``."""
        due: list[LocalBinding] = []
        while self._heap and self._heap[0][0] <= now_ms:
            expires_at, aor, key = heapq.heappop(self._heap)
            table = self._by_aor.get(aor)
            binding = table.get(key) if table else None
            # A heap entry of a binding refreshed or removed since is stale: skip it.
            if binding is None or binding.expires_at != expires_at or table is None:
                continue
            del table[key]
            if not table:
                del self._by_aor[aor]
            due.append(binding)
        return due

    def drop_flow(self, flow: int) -> list[LocalBinding]:
        """Remove and return the outbound bindings still on connection ``flow`` (it closed)."""
        lost: list[LocalBinding] = []
        for aor, key in sorted(self._by_flow.pop(flow, ())):
            table = self._by_aor.get(aor)
            binding = table.get(key) if table else None
            if binding is None or binding.flow != flow or table is None:
                continue  # refreshed over another connection, or gone
            del table[key]
            if not table:
                del self._by_aor[aor]
            lost.append(binding)
        return lost
