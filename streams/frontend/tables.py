"""In-memory tables of one front-end node: transactions, source limits, accepted bindings.

All take the time as an argument (ms), never read a clock, so tests drive them.
Each is bounded: the oldest entries go first when a cap is reached, so a flood
of new Call-IDs or source addresses costs memory up to the cap and no more.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
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


def _entry_bytes(key: TransactionKey, value: Answered | None) -> int:
    """About what one cache entry holds (strings, response bytes, and the objects)."""
    size = 200 + len(key[0]) + len(key[2]) + len(key[3])
    if value is not None:
        size += len(value.response) + (len(value.aor) if value.aor else 0)
    return size


class TransactionCache:
    """Final responses by transaction, kept ``ttl_ms`` (UDP non-INVITE Timer J: 64*T1 = 32 s).

    ``lookup`` returns an :class:`Answered`, ``PENDING`` (``None`` with
    ``found`` true) for a request in progress, or reports not found.
    """

    def __init__(
        self, ttl_ms: int = 32_000, max_entries: int = 100_000, max_bytes: int = 64 << 20
    ) -> None:
        """Bounded by entries and by bytes (D86): a response echoes the request's Via,
        From, To and Call-ID, so an entry may hold 8 KiB; 100k such are 1 GiB."""
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
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
        self._drop(key)
        self._entries[key] = (now_ms + self.ttl_ms, value)
        self.bytes += _entry_bytes(key, value)
        while len(self._entries) > self.max_entries or (
            self.bytes > self.max_bytes and len(self._entries) > 1
        ):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: TransactionKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= _entry_bytes(key, entry[1])

    def _expire(self, now_ms: int) -> None:
        # Entries are in insertion order with one TTL, so expired ones are at the front.
        while self._entries:
            key, (until, _) = next(iter(self._entries.items()))
            if until > now_ms:
                break
            self._drop(key)


class SourceLimiter:
    """Per source: a token bucket; per source and user: a ban after repeated auth failures.

    ``allow`` is called before a datagram is parsed, so a flooding address costs
    one dict lookup per packet and cannot use up the node for the others. Bans are
    keyed by (source, AOR user) and count only failures whose credentials carried a
    valid nonce of ours (D85): garbage from one address cannot silence the other
    phones behind it, nor a user's phone at another address. Sources in ``exempt``
    (known NAT addresses of call centres) are never banned.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        ban_failures: int,
        ban_ms: int,
        max_sources: int = 100_000,
        exempt: Callable[[str], bool] | None = None,
    ) -> None:
        self.rate_per_ms = rate_per_s / 1000.0
        self.burst = float(burst)
        self.ban_failures = ban_failures
        self.ban_ms = ban_ms
        self.max_sources = max_sources
        self.exempt = exempt or (lambda _source: False)
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._failures: OrderedDict[tuple[str, str], deque[int]] = OrderedDict()
        self._banned: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.dropped = 0
        self.bans = 0
        self.banned_drops = 0

    def allow(self, source: str, now_ms: int) -> bool:
        """Whether a packet from ``source`` may be processed now (takes one token)."""
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = [self.burst, float(now_ms)]
            self._buckets[source] = bucket
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            bucket[0] = min(self.burst, bucket[0] + (now_ms - bucket[1]) * self.rate_per_ms)
            bucket[1] = float(now_ms)
        if bucket[0] < 1.0:
            self.dropped += 1
            return False
        bucket[0] -= 1.0
        return True

    def auth_failed(self, source: str, user: str, now_ms: int) -> bool:
        """Count a failure (valid nonce, wrong digest); True when it bans (source, user)."""
        if self.exempt(source):
            return False
        key = (source, user)
        window = self._failures.get(key)
        if window is None:
            window = self._failures[key] = deque()
            if len(self._failures) > self.max_sources:
                self._failures.popitem(last=False)
        window.append(now_ms)
        while window and window[0] <= now_ms - self.ban_ms:
            window.popleft()
        if len(window) >= self.ban_failures:
            self._banned[key] = now_ms + self.ban_ms
            self._banned.move_to_end(key)
            if len(self._banned) > self.max_sources:
                self._banned.popitem(last=False)
            del self._failures[key]
            self.bans += 1
            return True
        return False

    def banned(self, source: str, user: str, now_ms: int) -> bool:
        """Whether (source, user) is banned at ``now_ms`` (counts the drop if so)."""
        key = (source, user)
        until = self._banned.get(key)
        if until is None:
            return False
        if now_ms >= until:
            del self._banned[key]
            return False
        self.banned_drops += 1
        return True


def address_matcher(spec: str) -> Callable[[str], bool]:
    """A predicate for ``10.0.0.0/8,192.0.2.7``-style lists (IPv4/IPv6 addresses or networks).

    A source key of the ``ip_port`` form (``ip:port``) matches by its address.
    Raises ValueError naming a bad entry.
    """
    nets = []
    for item in (x.strip() for x in spec.split(",")):
        if item:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
    if not nets:
        return lambda _source: False

    def matches(source: str) -> bool:
        for host in (source, source.rsplit(":", 1)[0]):  # ip, or ip:port
            try:
                ip = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                continue
            return any(ip in net for net in nets)
        return False

    return matches


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
    sweeper's (docs/design.md section 6).
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

    def restore(self, binding: LocalBinding) -> None:
        """Put back a due binding whose expire event failed, unless it was set again since."""
        table = self._by_aor.setdefault(binding.aor, {})
        if binding.key not in table:
            table[binding.key] = binding
            heapq.heappush(self._heap, (binding.expires_at, binding.aor, binding.key))

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


class RejectBudget:
    """At most ``budget`` reject events per (AOR, source) per window (D87).

    A resent or repeated failing REGISTER is answered every time, but only the
    first few of each window reach the permanent log; the rest are counted. The
    health thresholds (3 auth failures, 3 retransmissions) fit in the default 5.
    Bounded: the oldest (AOR, source) pairs go first past ``max_entries``.
    """

    def __init__(self, budget: int, window_ms: int, max_entries: int = 100_000) -> None:
        self.budget = budget
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._spent: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self.suppressed = 0

    def take(self, aor: str, source: str, now_ms: int) -> bool:
        """True if one more reject event of (aor, source) may be logged now."""
        key = (aor, source)
        entry = self._spent.get(key)
        if entry is None or now_ms - entry[0] >= self.window_ms:
            self._spent[key] = [now_ms, 1]
            self._spent.move_to_end(key)
            if len(self._spent) > self.max_entries:
                self._spent.popitem(last=False)
            return True
        if entry[1] < self.budget:
            entry[1] += 1
            return True
        self.suppressed += 1
        return False
