"""The sweeper's selection logic: which bindings to expire, and when to look again (pure).

docs/design.md section 6: each worker appends an ``expire`` event to regstate.registrations
for every binding of the partitions it owns whose expiry passed more than a grace
period ago; the fold applies it like any other event. The sweeper never writes
the table (trap 8), so a binding still expires when no front-end is alive.

This module holds everything but the I/O, with the clock injected (``now`` in ms),
so it is tested without Faust or Kafka:

* :class:`ExpiryIndex`: a min-heap of ``(due_at, partition, aor)`` with lazy
  deletion, one live entry per AOR (the next time the AOR needs a look). It is
  fed by the agent after each table write and rebuilt from the table when a
  partition is assigned, so a sweep touches only the AORs that are due instead of
  scanning the table (1M bindings: no full scan per tick).
* :class:`SweepPlanner`: pops the due AORs, re-reads each one's current state
  (the index is a hint; the state decides), builds the ``expire`` events, and
  remembers what it sent so the same expire is not re-sent every tick (only
  after ``resend_ms``, should the first one have been lost).
* :class:`SeqSource`: the sweeper node's ``seq``, strictly increasing, also
  across restarts (it starts from the wall clock in microseconds).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from schemas import AorState, Binding, RegistrationEvent, ending_event

NODE_PREFIX: Final = "engine:"


def sweeper_node(worker_id: str) -> str:
    """The ``node`` of a worker's sweeper events (docs/design.md section 4: ``engine:<worker>``)."""
    return f"{NODE_PREFIX}{worker_id}"


class SeqSource:
    """Per-node sequence numbers: strictly increasing, and above any earlier run's.

    Each value is ``max(previous + 1, now_us())``: a restarted worker starts from
    the clock, past every seq its previous run used as long as that run did not
    emit more events than microseconds went by (a sweeper emits far fewer) and
    the clock did not step back by more than the restart took.
    """

    def __init__(self, now_us: Callable[[], int]) -> None:
        self._now_us = now_us
        self._last = 0

    def __call__(self) -> int:
        """The next seq."""
        value = max(self._last + 1, self._now_us())
        self._last = value
        return value


def is_due(binding: Binding, now_ms: int, grace_ms: int) -> bool:
    """Whether the sweeper expires ``binding`` at ``now_ms``: its expiry is over grace ago."""
    return now_ms - binding.expires_at > grace_ms


def expire_event(
    state: AorState, binding: Binding, *, node: str, seq: int, now_ms: int
) -> RegistrationEvent:
    """The ``expire`` event for one binding (R6): its Call-ID and CSeq, the key as contact.

    ``ts`` is now; the fold removes the binding only if call_id and cseq still
    match and ts is at or past the expiry, so a late or repeated expire is a no-op.
    """
    return ending_event(
        "expire",
        node=node,
        seq=seq,
        ts=now_ms,
        aor=state.aor,
        call_id=binding.call_id,
        cseq=binding.cseq,
        contact=binding.key,
        reason="expired",
    )


class ExpiryIndex:
    """Next time each AOR of each owned partition needs the sweeper's look.

    One live entry per AOR that holds a binding, ``_due[partition][aor] =
    (due_at, bindings)``; the heap holds, for each live entry, an entry due no
    later than it. A later due time pushes nothing (a refresh, the common case,
    moves an AOR's due time later at every REGISTER): its earlier heap entry,
    when popped, is pushed again at the live due time. Stale heap entries (an
    AOR removed, a partition dropped) are skipped when popped and compacted away
    once they outnumber the live ones. ``bindings`` per entry keeps an exact count of
    the bindings of each partition (the ``active bindings`` gauge) at no scan.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, bytes]] = []
        self._due: dict[int, dict[bytes, tuple[int, int]]] = {}
        self._bindings: dict[int, int] = {}

    def __len__(self) -> int:
        return sum(len(d) for d in self._due.values())

    def partitions(self) -> set[int]:
        """Partitions the index holds (those added with :meth:`add_partition`)."""
        return set(self._due)

    def bindings(self) -> dict[int, int]:
        """Bindings held per tracked partition, as last scheduled."""
        return dict(self._bindings)

    def add_partition(self, partition: int) -> None:
        """Start tracking ``partition`` (empty); a no-op if already tracked."""
        if partition not in self._due:
            self._due[partition] = {}
            self._bindings[partition] = 0

    def drop_partition(self, partition: int) -> None:
        """Forget a partition (revoked); its heap entries die lazily."""
        self._due.pop(partition, None)
        self._bindings.pop(partition, None)
        self._maybe_compact()

    def schedule(self, partition: int, aor: bytes, due_at: int | None, bindings: int = 0) -> None:
        """Set when ``aor`` (holding ``bindings``) needs a look; None clears it.

        Ignored for partitions not tracked.
        """
        due = self._due.get(partition)
        if due is None:
            return
        old = due.get(aor)
        if old is not None:
            self._bindings[partition] -= old[1]
        if due_at is None:
            if old is not None:
                del due[aor]
            return
        due[aor] = (due_at, bindings)
        self._bindings[partition] += bindings
        if old is None or due_at < old[0]:
            heapq.heappush(self._heap, (due_at, partition, aor))
            self._maybe_compact()

    def schedule_if_absent(
        self, partition: int, aor: bytes, due_at: int | None, bindings: int = 0
    ) -> None:
        """Like :meth:`schedule`, but never overrides an entry (a rebuild racing the agent)."""
        due = self._due.get(partition)
        if due is not None and aor not in due:
            self.schedule(partition, aor, due_at, bindings)

    def aors(self, partition: int) -> list[bytes]:
        """The AORs of ``partition`` that hold a binding (a copy)."""
        return list(self._due.get(partition, {}))

    def due_at(self, partition: int, aor: bytes) -> int | None:
        """When ``aor`` is scheduled, or None."""
        entry = self._due.get(partition, {}).get(aor)
        return None if entry is None else entry[0]

    def pop_due(self, now_ms: int, limit: int) -> list[tuple[int, bytes]]:
        """Remove and return up to ``limit`` ``(partition, aor)`` due at or before ``now_ms``.

        In due order. The caller re-schedules each one after looking at its state.
        """
        out: list[tuple[int, bytes]] = []
        heap = self._heap
        while heap and len(out) < limit and heap[0][0] <= now_ms:
            due_at, partition, aor = heapq.heappop(heap)
            due = self._due.get(partition)
            entry = None if due is None else due.get(aor)
            if due is None or entry is None or entry[0] < due_at:
                continue  # stale: removed, re-scheduled earlier or partition dropped
            if entry[0] > due_at:
                heapq.heappush(heap, (entry[0], partition, aor))  # re-scheduled later
                continue
            del due[aor]
            self._bindings[partition] -= entry[1]
            out.append((partition, aor))
        return out

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self) + 4096:
            self._heap = [
                (entry[0], partition, aor)
                for partition, due in self._due.items()
                for aor, entry in due.items()
            ]
            heapq.heapify(self._heap)


@dataclass(frozen=True, slots=True)
class PlannedExpire:
    """One ``expire`` event to append, keyed by its AOR, for a partition the worker owns."""

    partition: int
    key: bytes
    event: RegistrationEvent


class SweepPlanner:
    """Chooses the ``expire`` events of one sweep; remembers what it sent.

    Guarantees, for the partitions in :attr:`index`:

    * every binding whose expiry passed more than ``grace_ms`` ago is planned at
      the first sweep after that moment (given :meth:`observe` after every table
      write and a rebuild of the index on assignment), up to ``limit`` per sweep,
      the rest at the next ones;
    * a binding (same key, Call-ID and CSeq) is planned again only ``resend_ms``
      after it was last planned, never on every tick;
    * the state read back through ``read_state`` decides: an index entry for an
      AOR that has changed since only costs one read.
    """

    def __init__(
        self,
        node: str,
        *,
        grace_ms: int,
        resend_ms: int,
        now: Callable[[], int],
        seq: Callable[[], int],
    ) -> None:
        self.node = node
        self.grace_ms = grace_ms
        self.resend_ms = resend_ms
        self.now = now
        self.seq = seq
        self.index = ExpiryIndex()
        # aor -> binding key -> (call_id, cseq, planned_at): expires in flight.
        self._sent: dict[bytes, dict[str, tuple[str, int, int]]] = {}

    def observe(self, partition: int, aor: bytes, state: AorState | None) -> None:
        """The agent wrote ``state`` for ``aor``: re-schedule it, forget settled sends."""
        sent = self._sent.get(aor)
        if sent is not None:
            live = {} if state is None else {b.key: b for b in state.contacts}
            for key in list(sent):
                b = live.get(key)
                if b is None or (b.call_id, b.cseq) != sent[key][:2]:
                    del sent[key]
            if not sent:
                del self._sent[aor]
        self.index.schedule(partition, aor, self._next_look(aor, state), _count(state))

    def track(self, partition: int) -> None:
        """Start sweeping ``partition`` (before its rebuild: :meth:`rebuild_entry`)."""
        self.index.add_partition(partition)

    def forget(self, partition: int) -> None:
        """Stop sweeping ``partition`` (revoked); forget what was sent for its AORs."""
        for aor in self.index.aors(partition):
            self._sent.pop(aor, None)
        self.index.drop_partition(partition)

    def rebuild_entry(self, partition: int, aor: bytes, state: AorState | None) -> None:
        """Index one AOR read from the table at assignment, unless the agent got there first."""
        self.index.schedule_if_absent(partition, aor, self._next_look(aor, state), _count(state))

    def rebuild_raw(
        self, partition: int, aor: bytes, first_expiry: int | None, bindings: int
    ) -> None:
        """Like :meth:`rebuild_entry` from the earliest expiry alone (no state decode).

        Right for a partition just assigned: nothing was sent for its AORs yet.
        """
        due_at = None if first_expiry is None else first_expiry + self.grace_ms + 1
        self.index.schedule_if_absent(partition, aor, due_at, bindings)

    def plan(
        self, read_state: Callable[[int, bytes], AorState | None], limit: int
    ) -> list[PlannedExpire]:
        """The expire events of one sweep at ``now()``: at most ``limit`` of them."""
        now = self.now()
        planned: list[PlannedExpire] = []
        for partition, aor in self.index.pop_due(now, limit):
            state = read_state(partition, aor)
            if state is not None:
                sent = self._sent.get(aor)
                for b in state.contacts:
                    if not is_due(b, now, self.grace_ms):
                        continue
                    mark = None if sent is None else sent.get(b.key)
                    if (
                        mark is not None
                        and mark[:2] == (b.call_id, b.cseq)
                        and now - mark[2] < self.resend_ms
                    ):
                        continue
                    event = expire_event(state, b, node=self.node, seq=self.seq(), now_ms=now)
                    planned.append(PlannedExpire(partition, aor, event))
                    if sent is None:
                        sent = self._sent[aor] = {}
                    sent[b.key] = (b.call_id, b.cseq, now)
            self.index.schedule(partition, aor, self._next_look(aor, state), _count(state))
        return planned

    def pending_sends(self) -> int:
        """Expires planned and not yet seen applied (for metrics)."""
        return sum(len(s) for s in self._sent.values())

    def bindings(self) -> dict[int, int]:
        """Bindings held per owned partition (for the ``active bindings`` gauge)."""
        return self.index.bindings()

    def _next_look(self, aor: bytes, state: AorState | None) -> int | None:
        if state is None or not state.contacts:
            return None
        sent = self._sent.get(aor)
        best: int | None = None
        for b in state.contacts:
            at = b.expires_at + self.grace_ms + 1
            mark = None if sent is None else sent.get(b.key)
            if mark is not None and mark[:2] == (b.call_id, b.cseq):
                at = max(at, mark[2] + self.resend_ms)
            if best is None or at < best:
                best = at
        return best


def _count(state: AorState | None) -> int:
    return 0 if state is None else len(state.contacts)
