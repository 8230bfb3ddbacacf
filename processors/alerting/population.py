"""Who is registered where: phones, their bindings, and the groups they are counted in.

A *phone* is an AOR at one source network. :class:`Population` takes the three
inputs (AorStates, BindingEvents, RegistrationEvents), keeps each phone up or
down, and keeps every group's up count, down phones, comebacks and rejects.
It decides nothing about alerts: the evaluators (``evaluation.py``) read it.
Pure: time only moves through :meth:`Population.advance`.
"""

from __future__ import annotations

import heapq
from collections import deque

from processors.alerting.config import (
    MAX_REJECTS_KEPT,
    SWEEPER_PREFIX,
    DetectorConfig,
    Group,
    PhoneId,
)
from processors.alerting.keys import aor_domain, network_of, ua_family
from schemas.alerts import GROUP_TYPES
from schemas.events import RegistrationEvent, front_end_of
from schemas.state import AorState, BindingEvent

_NEVER = -(2**62)


class Binding:
    """What the detector knows of one binding; ``down_at`` is set once it is overdue or ended."""

    __slots__ = (
        "down_at",
        "due_at",
        "ended",
        "expires_at",
        "interval",
        "node",
        "refreshed_at",
        "ua",
    )

    def __init__(self, node: str, ua: str, refreshed_at: int, expires_at: int) -> None:
        self.node = node
        self.ua = ua
        self.refreshed_at = refreshed_at
        self.expires_at = expires_at
        self.interval: int | None = None
        self.due_at = expires_at
        self.down_at: int | None = None
        self.ended = False


class Phone:
    """One AOR at one network, with its bindings from there."""

    __slots__ = ("aor", "bindings", "domain", "down_at", "groups", "net", "pid")

    def __init__(self, aor: str, net: str) -> None:
        self.aor = aor
        self.net = net
        self.domain = aor_domain(aor)
        self.pid: PhoneId = (aor, net)
        self.bindings: dict[str, Binding] = {}
        self.groups: tuple[Group, ...] = ()
        self.down_at: int | None = None


class GroupState:
    """One group's phones: how many are up, which are down since when, and recent evidence."""

    __slots__ = ("comebacks", "down", "rejects", "up")

    def __init__(self) -> None:
        self.up = 0
        self.down: dict[PhoneId, int] = {}
        self.comebacks: deque[tuple[int, PhoneId]] = deque()
        self.rejects: deque[tuple[int, str]] = deque(maxlen=MAX_REJECTS_KEPT)

    @property
    def size(self) -> int:
        return self.up + len(self.down)


class Population:
    """Every phone the inputs showed, up or down, and the groups it counts in."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.types = frozenset(config.group_types)
        self._all_types = self.types == frozenset(GROUP_TYPES)
        self.phones: dict[PhoneId, Phone] = {}
        self._where: dict[tuple[str, str], PhoneId] = {}
        self.groups: dict[Group, GroupState] = {}
        self.down: dict[PhoneId, int] = {}
        """Every down phone, since when."""
        self._heap: list[tuple[int, str, str, int]] = []
        self.last_seen: dict[str, int] = {}
        """Front-end node -> the latest event time it sent."""
        self.now = _NEVER
        self.max_ts = _NEVER
        self.settled: set[PhoneId] = set()
        """Phones of a resolved incident still down: not counted again until back."""

    # ------------------------------------------------------------------ inputs

    def observe(self, item: BindingEvent | AorState | RegistrationEvent) -> None:
        """Take one record of regstate.binding-events, regstate.bindings or registrations."""
        if isinstance(item, BindingEvent):
            self._observe_binding_event(item)
        elif isinstance(item, AorState):
            self._observe_state(item)
        else:
            self._observe_registration(item)

    def seen(self, node: str, ts: int) -> None:
        """``node`` sent something at ``ts`` (liveness for node_down; the latest event time)."""
        self._seen(node, ts)

    def _seen(self, node: str, ts: int) -> None:
        if ts > self.max_ts:
            self.max_ts = ts
        if node.startswith(SWEEPER_PREFIX):
            return
        node = front_end_of(node)  # a node's processes: one node alive or silent
        if ts > self.last_seen.get(node, _NEVER):
            self.last_seen[node] = ts

    def _observe_registration(self, ev: RegistrationEvent) -> None:
        self._seen(ev.node, ev.ts)
        if ev.kind != "reject":
            return
        reason = ev.reason or str(ev.status)
        groups: tuple[Group, ...] = (
            ("node", front_end_of(ev.node)),
            ("net", network_of(ev.source)),
            ("ua", ua_family(ev.user_agent)),
            ("domain", aor_domain(ev.aor)),
        )
        for g in groups:
            if g[0] in self.types:
                self._group(g).rejects.append((ev.ts, reason))

    def _observe_state(self, s: AorState) -> None:
        if s.updated_ts > self.max_ts:
            self.max_ts = s.updated_ts
        for c in s.contacts:
            self._seen(c.node, c.refreshed_at)
            net = network_of(c.source)
            pid = (s.aor, net)
            where = self._where.get((s.aor, c.key))
            if where is not None and where != pid:
                self._move(s.aor, c.key, where)
            phone = self.phones.get(pid)
            if phone is None:
                phone = self.phones[pid] = Phone(s.aor, net)
            self._refresh(
                phone, c.key, c.node, ua_family(c.user_agent), c.refreshed_at, c.expires_at
            )

    def _observe_binding_event(self, e: BindingEvent) -> None:
        self._seen(e.node, e.ts)
        if e.key is None:
            return  # `rejected`: no binding involved
        pid = self._where.get((e.aor, e.key))
        if pid is None:
            return  # not known yet: its AorState brings it with its network
        phone = self.phones[pid]
        b = phone.bindings[e.key]
        if e.event in ("registered", "refreshed", "shortened"):
            if e.expires_at is not None:
                self._refresh(phone, e.key, e.node, b.ua, e.ts, e.expires_at)
            return
        if e.ts < b.refreshed_at:
            return  # an ending older than the refresh we hold (inputs interleave)
        if e.event == "unregistered":
            self._remove_binding(phone, e.key)
            return
        # expired / deactivated: lost, as of the earlier of overdue and now.
        b.ended = True
        if b.down_at is None:
            b.down_at = e.ts
        self._settle(phone, e.ts)

    # ------------------------------------------------------------------ bookkeeping

    def _group(self, g: Group) -> GroupState:
        gs = self.groups.get(g)
        if gs is None:
            gs = self.groups[g] = GroupState()
        return gs

    def _groups_of(self, phone: Phone) -> tuple[Group, ...]:
        bindings = phone.bindings
        if len(bindings) == 1:
            (latest,) = bindings.values()
        else:
            latest = max(bindings.values(), key=lambda b: b.refreshed_at)
        every: tuple[Group, ...] = (
            ("node", latest.node),
            ("net", phone.net),
            ("ua", latest.ua),
            ("domain", phone.domain),
        )
        if self._all_types:
            return every
        return tuple(g for g in every if g[0] in self.types)

    def _leave_groups(self, phone: Phone) -> None:
        for g in phone.groups:
            gs = self.groups[g]
            if phone.down_at is None:
                gs.up -= 1
            else:
                gs.down.pop(phone.pid, None)
        phone.groups = ()

    def _join_groups(self, phone: Phone) -> None:
        phone.groups = self._groups_of(phone)
        for g in phone.groups:
            gs = self._group(g)
            if phone.down_at is None:
                gs.up += 1
            else:
                gs.down[phone.pid] = phone.down_at

    def _settle(self, phone: Phone, at: int) -> None:
        """Recompute the phone's up/down state and groups after its bindings changed."""
        if not phone.bindings:
            self._leave_groups(phone)
            self.down.pop(phone.pid, None)
            self.settled.discard(phone.pid)
            del self.phones[phone.pid]
            return
        live = any(b.down_at is None for b in phone.bindings.values())
        was_down = phone.down_at is not None
        if live:
            # Back up: bindings that ended while it was down are of no more use.
            for key in [k for k, b in phone.bindings.items() if b.ended]:
                del phone.bindings[key]
                self._where.pop((phone.aor, key), None)
            if not was_down and phone.groups and self._groups_of(phone) == phone.groups:
                return  # the steady refresh: still up, same groups
        self._leave_groups(phone)
        if live:
            phone.down_at = None
            self.down.pop(phone.pid, None)
            self.settled.discard(phone.pid)
        else:
            phone.down_at = max(b.down_at for b in phone.bindings.values() if b.down_at is not None)
            self.down[phone.pid] = phone.down_at
        self._join_groups(phone)
        if was_down and phone.down_at is None:
            for g in phone.groups:
                self.groups[g].comebacks.append((at, phone.pid))

    def _refresh(
        self, phone: Phone, key: str, node: str, ua: str, refreshed_at: int, expires_at: int
    ) -> None:
        node = front_end_of(node)  # grouped by machine, not by process of it
        b = phone.bindings.get(key)
        if b is None:
            b = phone.bindings[key] = Binding(node, ua, refreshed_at, expires_at)
            self._where[(phone.aor, key)] = phone.pid
        elif refreshed_at > b.refreshed_at:
            gap = refreshed_at - b.refreshed_at
            # A re-REGISTER much sooner than the grant (a reboot, a double send) says
            # nothing about the phone's refresh interval: keep the one learned.
            if gap * 10 >= max(0, b.expires_at - b.refreshed_at):
                b.interval = gap
            b.refreshed_at, b.expires_at = refreshed_at, expires_at
            b.node, b.ua = node, ua
        else:
            if (
                refreshed_at == b.refreshed_at
                and b.down_at is None
                and (b.node, b.ua) != (node, ua)
            ):
                # The same refresh seen through the other input: take its details.
                b.node, b.ua = node, ua
                self._regroup(phone)
            return  # nothing newer than what we hold
        b.ended = False
        b.down_at = None
        due = expires_at - self.config.overdue_margin_ms
        if b.interval is not None:
            learned = refreshed_at + int(b.interval * self.config.refresh_tolerance)
            due = min(due, learned + self.config.refresh_slack_ms)
        b.due_at = max(due, refreshed_at)
        heapq.heappush(self._heap, (b.due_at, phone.aor, key, refreshed_at))
        self._settle(phone, refreshed_at)

    def _regroup(self, phone: Phone) -> None:
        if self._groups_of(phone) != phone.groups:
            self._leave_groups(phone)
            self._join_groups(phone)

    def _remove_binding(self, phone: Phone, key: str) -> None:
        """A planned removal (``unregistered``)."""
        del phone.bindings[key]
        self._where.pop((phone.aor, key), None)
        if all(b.down_at is not None for b in phone.bindings.values()):
            # The phone logged out; what it leaves behind (a binding orphaned by a
            # reboot behind a NAT) is stale, not a phone lost.
            for k in phone.bindings:
                self._where.pop((phone.aor, k), None)
            phone.bindings.clear()
        self._settle(phone, self.now)

    def _move(self, aor: str, key: str, old: PhoneId) -> None:
        """A binding now comes from another network (an RFC 5626 flow that moved)."""
        phone = self.phones[old]
        phone.bindings.pop(key, None)
        self._where.pop((aor, key), None)
        self._settle(phone, self.now)

    # ------------------------------------------------------------------ time

    def advance(self, now_ms: int) -> int:
        """Move to ``now_ms`` (never back); bindings due by then go overdue as of their due time.

        Returns the time now, which a late tick leaves where it was.
        """
        now = max(now_ms, self.now)
        self.now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, aor, key, refreshed_at = heapq.heappop(heap)
            pid = self._where.get((aor, key))
            if pid is None:
                continue
            phone = self.phones[pid]
            b = phone.bindings.get(key)
            if b is None or b.refreshed_at != refreshed_at or b.down_at is not None:
                continue  # refreshed since, or already lost
            b.down_at = due
            self._settle(phone, due)
        return now

    def forget(self, now: int, held: set[PhoneId]) -> None:
        """Phones down over ``forget_ms`` leave their groups, unless an incident ``held`` them."""
        horizon = now - self.config.forget_ms
        for pid in [p for p, t in self.down.items() if t < horizon and p not in held]:
            phone = self.phones[pid]
            for key in list(phone.bindings):
                self._where.pop((phone.aor, key), None)
            phone.bindings.clear()
            self._settle(phone, now)

    # ------------------------------------------------------------------ queries

    def silent(self, node: str, now: int) -> bool:
        """Whether front-end ``node`` sent nothing for ``node_silence_ms`` (or ever)."""
        last = self.last_seen.get(node)
        return last is None or now - last >= self.config.node_silence_ms

    def size(self, g: Group) -> int:
        """Up plus down phones of group ``g``."""
        gs = self.groups.get(g)
        return gs.size if gs is not None else 0

    def still_down(self, phones: set[PhoneId]) -> int:
        """How many of ``phones`` are down now."""
        return sum(1 for p in phones if p in self.down)
