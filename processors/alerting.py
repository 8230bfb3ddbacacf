"""Mass-deregistration detection over event time (DESIGN section 9 trap 9: no Faust windows).

Pure: no clock, no I/O. A :class:`Detector` is fed what the engine publishes
(:meth:`Detector.observe`) and is told the time (:meth:`Detector.tick`, the
watermark of the caller); it answers with the alerts that fired, moved or
resolved. The same inputs with the same ticks give the same alerts.

What it watches
    A *phone* is an AOR at one source network: its bindings from that /24
    (IPv6 /64). A phone is *down* when every one of its bindings ended as
    ``expired`` or ``deactivated`` or is *overdue*; it is *up* again when any of
    them is refreshed or registered. A binding is overdue once the watermark
    passes the time a working phone would have refreshed it: its learned
    refresh interval times ``refresh_tolerance`` plus ``refresh_slack_ms`` after
    its last refresh, and at the latest ``overdue_margin_ms`` before it expires.
    A phone whose bindings are all removed by ``unregistered`` (a planned
    logout) leaves the population and never counts as lost. Counting phones
    rather than bindings keeps a reboot behind a NAT (new Contact, old binding
    left to expire) from looking like a loss.

Groups
    Every phone belongs to four groups: its front-end node (the node of its most
    recently refreshed binding; the processes ``fe1#0``, ``fe1#1`` of one node are
    node ``fe1``), its network, its user-agent family and its AOR
    domain. A group's size is its up phones plus its down phones not yet
    forgotten (``forget_ms``).

Firing (``mass_drop``, ``node_down``)
    A group is a candidate when, within ``window_ms`` before the watermark, at
    least ``max(min_count, ceil(min_ratio * size))`` of its phones went down. A
    candidate that stays one for ``hold_ms`` fires. A node group whose node sent
    nothing for ``node_silence_ms`` is a ``node_down`` candidate instead of a
    ``mass_drop`` one. Candidates are ranked: node_down first, then by lost
    phones times the share of the group lost (the largest group hit hardest
    explains most), then network before node, user agent and domain. A
    candidate whose lost phones are mostly (``explain_ratio``) lost phones of a
    better-ranked candidate or of an open incident is *explained* and neither
    holds nor fires: one cut /24 gives one alert naming the /24, not one per
    node, user agent and domain it touches; a silent node gives one node_down
    alert, not one per network.

Incidents
    An open incident collects the group's phones that go down while it is
    open. It resolves once ``resolve_ratio`` of them are up again (or left by
    unregistering). Its key (:func:`schemas.alerts.alert_key`) is fixed when it
    fires and names the group and the event time the condition began, so every
    record of one incident shares one key. Phones still down when it resolves
    are not counted again until they come back.

Re-registration storms
    When at least ``max(storm_min_count, ceil(storm_min_ratio * size))`` phones of a
    group come back up within ``storm_window_ms``, a ``reregistration_storm``
    incident fires at once (it is load, not an outage); it resolves when fewer
    than half that many came back in the last ``storm_window_ms``. Storms are
    ranked and explained like drops.

Guarantees
    Events may arrive late and in any order across the three inputs: every
    binding keeps the event time of its last refresh, and an older ending or
    refresh than the one it holds is ignored. A planned logout never pages. The
    time passed to :meth:`Detector.tick` never goes backwards (an earlier one is
    taken as the latest).
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, NamedTuple

from schemas.alerts import GROUP_TYPES, Alert, AlertKind, GroupType, alert_key
from schemas.events import RegistrationEvent, Source, front_end_of
from schemas.state import AorState, BindingEvent

SWEEPER_PREFIX: Final = "engine:"
"""Node ids of the engine's sweeper (DESIGN section 6): not front-ends, never silent."""
UNKNOWN: Final = "unknown"
MAX_REJECTS_KEPT: Final = 10_000
"""Rejects remembered per group (evidence in summaries; the oldest go first)."""

Group = tuple[GroupType, str]
PhoneId = tuple[str, str]
"""(AOR, network)."""
ChangeKind = Literal["fired", "updated", "resolved"]

_GROUP_NOUN: Final[Mapping[GroupType, str]] = {
    "node": "front-end node",
    "net": "network",
    "ua": "user agent",
    "domain": "domain",
}
_TYPE_RANK: Final[Mapping[GroupType, int]] = {"net": 0, "node": 1, "ua": 2, "domain": 3}
"""Tie-break between equally hit groups: the network is the likeliest cause."""
_ALERTNAME: Final[Mapping[AlertKind, str]] = {
    "mass_drop": "RegstateMassDeregistration",
    "node_down": "RegstateNodeDown",
    "reregistration_storm": "RegstateReregistrationStorm",
}


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds of the detector (all times event time, ms)."""

    window_ms: int = 600_000
    """Sliding window over which losses are counted."""
    hold_ms: int = 60_000
    """How long a candidate must stay one before it fires (Prometheus ``for``)."""
    min_count: int = 10
    """N_min: fewest lost phones that can page, whatever the group size."""
    min_ratio: float = 0.2
    """p: smallest share of a group's phones lost within the window that pages."""
    resolve_ratio: float = 0.8
    """Share of an incident's lost phones that must be back before it resolves."""
    explain_ratio: float = 0.8
    """A candidate whose lost phones are at least this share of a better one's is explained."""
    node_silence_ms: int = 120_000
    """A node that sent nothing for this long is silent (node_down instead of mass_drop)."""
    overdue_margin_ms: int = 2_000
    """A binding is overdue at the latest this long before it expires."""
    refresh_tolerance: float = 1.25
    """Overdue after this many learned refresh intervals (plus the slack) without a refresh."""
    refresh_slack_ms: int = 30_000
    """Added to the learned interval: a refresh retransmitted for up to 32 s is not late."""
    storm_window_ms: int = 60_000
    """Window over which phones coming back are counted as a re-registration storm."""
    storm_min_count: int = 10
    """Fewest phones back within the storm window that make a storm."""
    storm_min_ratio: float = 0.2
    """Smallest share of a group back within the storm window that makes a storm."""
    forget_ms: int = 6 * 3600 * 1000
    """A phone down this long leaves its groups (unless an open incident holds it)."""
    update_ratio: float = 0.1
    """An open incident is re-emitted (``updated``) when a figure moved by this share."""
    group_types: tuple[GroupType, ...] = GROUP_TYPES
    """Which groupings are watched."""

    def __post_init__(self) -> None:
        for name in ("window_ms", "min_count", "storm_window_ms", "storm_min_count", "forget_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("hold_ms", "node_silence_ms", "overdue_margin_ms", "refresh_slack_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("min_ratio", "resolve_ratio", "explain_ratio", "storm_min_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
        if self.refresh_tolerance < 1.0:
            raise ValueError("refresh_tolerance must be at least 1")
        if not set(self.group_types) <= set(GROUP_TYPES) or not self.group_types:
            raise ValueError(f"group_types must be some of {GROUP_TYPES}")


class AlertChange(NamedTuple):
    """What happened to one incident at one tick; ``alert`` is its whole new record."""

    change: ChangeKind
    alert: Alert


class GroupStats(NamedTuple):
    """A group's phones at the last tick (for metrics)."""

    group_type: GroupType
    group: str
    active: int
    down: int


# --------------------------------------------------------------------------- grouping keys


def network_of(source: Source | None) -> str:
    """The /24 (IPv4) or /64 (IPv6) a request came from, e.g. ``10.0.3.0/24``."""
    if source is None:
        return UNKNOWN
    return _network(source.ip)


@functools.lru_cache(maxsize=65_536)
def _network(address: str) -> str:
    # Cached: every refresh of every phone asks, and a fleet has few addresses.
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return UNKNOWN
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@functools.lru_cache(maxsize=4096)
def ua_family(user_agent: str | None) -> str:
    """The vendor or product word of a User-Agent, lower-case: ``Cisco/SPA504G-7.6.2`` -> cisco."""
    if not user_agent:
        return UNKNOWN
    word = user_agent.strip().replace("/", " ").replace("-", " ").split(" ", 1)[0]
    return word.lower() or UNKNOWN


def aor_domain(aor: str) -> str:
    """The host of an AOR without port, lower-case: ``sip:1001@PBX.example.com:5060`` -> pbx..."""
    rest = aor.split(":", 1)[1] if ":" in aor else aor
    host = rest.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[: host.find("]") + 1].lower() if "]" in host else host.lower()
    return host.split(":", 1)[0].split(";", 1)[0].lower() or UNKNOWN


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- internal state


class _Binding:
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


class _Phone:
    """One AOR at one network, with its bindings from there."""

    __slots__ = ("aor", "bindings", "domain", "down_at", "groups", "net", "pid")

    def __init__(self, aor: str, net: str) -> None:
        self.aor = aor
        self.net = net
        self.domain = aor_domain(aor)
        self.pid: PhoneId = (aor, net)
        self.bindings: dict[str, _Binding] = {}
        self.groups: tuple[Group, ...] = ()
        self.down_at: int | None = None


class _GroupState:
    __slots__ = ("comebacks", "down", "rejects", "up")

    def __init__(self) -> None:
        self.up = 0
        self.down: dict[PhoneId, int] = {}
        self.comebacks: deque[tuple[int, PhoneId]] = deque()
        self.rejects: deque[tuple[int, str]] = deque(maxlen=MAX_REJECTS_KEPT)

    @property
    def size(self) -> int:
        return self.up + len(self.down)


@dataclass
class _Incident:
    key: str
    kind: AlertKind
    group: Group
    started_at: int
    population: int
    phones: set[PhoneId] = field(default_factory=set)
    restored: bool = False
    emitted_count: int = 0
    emitted_down: int = 0

    @classmethod
    def opened(cls, c: _Candidate, started_at: int) -> _Incident:
        """The incident a candidate fires as; its key names the group and ``started_at``."""
        return cls(
            key=alert_key(c.kind, c.group[0], c.group[1], started_at),
            kind=c.kind,
            group=c.group,
            started_at=started_at,
            population=c.size,
            phones=set(c.phones),
        )


@dataclass(frozen=True, slots=True)
class _Candidate:
    group: Group
    kind: AlertKind
    phones: frozenset[PhoneId]
    size: int

    @property
    def ratio(self) -> float:
        return len(self.phones) / self.size if self.size else 0.0


def _rank(c: _Candidate) -> tuple[float, int, Group]:
    """Best explanation first: many phones lost, and most of the group (|lost| * share).

    A cut /24 outranks the nodes, user agents and domain its phones belong to
    (fewer of theirs are hit), and also any smaller group inside it that is hit
    as hard (it explains fewer phones), whatever the noise in the early counts.
    """
    return (-len(c.phones) * c.ratio, _TYPE_RANK[c.group[0]], c.group)


def _need(count: int, ratio: float, size: int) -> int:
    return max(count, math.ceil(ratio * size))


# --------------------------------------------------------------------------- the detector


class Detector:
    """Event-time mass-drop, node-down and re-registration-storm detection (module docstring)."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._types = frozenset(self.config.group_types)
        self._all_types = self._types == frozenset(GROUP_TYPES)
        self._phones: dict[PhoneId, _Phone] = {}
        self._where: dict[tuple[str, str], PhoneId] = {}
        self._groups: dict[Group, _GroupState] = {}
        self._down: dict[PhoneId, int] = {}
        self._heap: list[tuple[int, str, str, int]] = []
        self._last_seen: dict[str, int] = {}
        self._now = -(2**62)
        self._max_ts = -(2**62)
        self._pending: dict[Group, int] = {}
        self._incidents: dict[Group, _Incident] = {}
        self._storms: dict[Group, _Incident] = {}
        # Phones of a resolved incident still down: not counted again until back.
        self._settled: set[PhoneId] = set()

    # ------------------------------------------------------------------ inputs

    @property
    def max_event_ts(self) -> int | None:
        """The latest event time observed (the caller's watermark is derived from it)."""
        return None if self._max_ts < -(2**61) else self._max_ts

    @property
    def now(self) -> int:
        """The time of the latest tick."""
        return self._now

    def observe(self, item: BindingEvent | AorState | RegistrationEvent) -> None:
        """Take one record of regstate.binding-events, regstate.bindings or registrations.

        An AorState (a tombstone is an AorState without contacts) supplies the
        population and where each binding comes from; BindingEvents supply
        endings (``expired``/``deactivated`` lose a binding, ``unregistered``
        removes it) and refreshes; RegistrationEvents show which nodes are alive
        and add rejects to the evidence.
        """
        if isinstance(item, BindingEvent):
            self._observe_binding_event(item)
        elif isinstance(item, AorState):
            self._observe_state(item)
        else:
            self._observe_registration(item)

    def _seen(self, node: str, ts: int) -> None:
        if ts > self._max_ts:
            self._max_ts = ts
        if node.startswith(SWEEPER_PREFIX):
            return
        node = front_end_of(node)  # a node's processes: one node alive or silent
        if ts > self._last_seen.get(node, -(2**62)):
            self._last_seen[node] = ts

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
            if g[0] in self._types:
                self._group(g).rejects.append((ev.ts, reason))

    def _observe_state(self, s: AorState) -> None:
        if s.updated_ts > self._max_ts:
            self._max_ts = s.updated_ts
        for c in s.contacts:
            self._seen(c.node, c.refreshed_at)
            net = network_of(c.source)
            pid = (s.aor, net)
            where = self._where.get((s.aor, c.key))
            if where is not None and where != pid:
                self._move(s.aor, c.key, where, pid)
            phone = self._phones.get(pid)
            if phone is None:
                phone = self._phones[pid] = _Phone(s.aor, net)
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
        phone = self._phones[pid]
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

    def _group(self, g: Group) -> _GroupState:
        gs = self._groups.get(g)
        if gs is None:
            gs = self._groups[g] = _GroupState()
        return gs

    def _groups_of(self, phone: _Phone) -> tuple[Group, ...]:
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
        return tuple(g for g in every if g[0] in self._types)

    def _leave_groups(self, phone: _Phone) -> None:
        for g in phone.groups:
            gs = self._groups[g]
            if phone.down_at is None:
                gs.up -= 1
            else:
                gs.down.pop(phone.pid, None)
        phone.groups = ()

    def _join_groups(self, phone: _Phone) -> None:
        phone.groups = self._groups_of(phone)
        for g in phone.groups:
            gs = self._group(g)
            if phone.down_at is None:
                gs.up += 1
            else:
                gs.down[phone.pid] = phone.down_at

    def _settle(self, phone: _Phone, at: int) -> None:
        """Recompute the phone's up/down state and groups after its bindings changed."""
        if not phone.bindings:
            self._leave_groups(phone)
            self._down.pop(phone.pid, None)
            self._settled.discard(phone.pid)
            del self._phones[phone.pid]
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
            self._down.pop(phone.pid, None)
            self._settled.discard(phone.pid)
        else:
            phone.down_at = max(b.down_at for b in phone.bindings.values() if b.down_at is not None)
            self._down[phone.pid] = phone.down_at
        self._join_groups(phone)
        if was_down and phone.down_at is None:
            for g in phone.groups:
                self._groups[g].comebacks.append((at, phone.pid))

    def _refresh(
        self, phone: _Phone, key: str, node: str, ua: str, refreshed_at: int, expires_at: int
    ) -> None:
        node = front_end_of(node)  # grouped by machine, not by process of it
        b = phone.bindings.get(key)
        if b is None:
            b = phone.bindings[key] = _Binding(node, ua, refreshed_at, expires_at)
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

    def _regroup(self, phone: _Phone) -> None:
        if self._groups_of(phone) != phone.groups:
            self._leave_groups(phone)
            self._join_groups(phone)

    def _remove_binding(self, phone: _Phone, key: str) -> None:
        """A planned removal (``unregistered``)."""
        del phone.bindings[key]
        self._where.pop((phone.aor, key), None)
        if all(b.down_at is not None for b in phone.bindings.values()):
            # The phone logged out; what it leaves behind (a binding orphaned by a
            # reboot behind a NAT) is stale, not a phone lost.
            for k in phone.bindings:
                self._where.pop((phone.aor, k), None)
            phone.bindings.clear()
        self._settle(phone, self._now)

    def _move(self, aor: str, key: str, old: PhoneId, new: PhoneId) -> None:
        """A binding now comes from another network (an RFC 5626 flow that moved)."""
        phone = self._phones[old]
        phone.bindings.pop(key, None)
        self._where.pop((aor, key), None)
        self._settle(phone, self._now)

    # ------------------------------------------------------------------ time

    def tick(self, now_ms: int) -> list[AlertChange]:
        """Advance to ``now_ms`` (the caller's watermark) and return what changed, in order.

        Bindings due by ``now_ms`` become overdue as of their due time, so a late
        tick counts them in the window they belong to.
        """
        now = max(now_ms, self._now)
        self._now = now
        self._expire_due(now)
        self._forget(now)
        changes: list[AlertChange] = []
        self._evaluate_drops(now, changes)
        self._evaluate_storms(now, changes)
        return changes

    def _expire_due(self, now: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, aor, key, refreshed_at = heapq.heappop(heap)
            pid = self._where.get((aor, key))
            if pid is None:
                continue
            phone = self._phones[pid]
            b = phone.bindings.get(key)
            if b is None or b.refreshed_at != refreshed_at or b.down_at is not None:
                continue  # refreshed since, or already lost
            b.down_at = due
            self._settle(phone, due)

    def _forget(self, now: int) -> None:
        horizon = now - self.config.forget_ms
        held = {p for inc in self._incidents.values() for p in inc.phones}
        for pid in [p for p, t in self._down.items() if t < horizon and p not in held]:
            phone = self._phones[pid]
            for key in list(phone.bindings):
                self._where.pop((phone.aor, key), None)
            phone.bindings.clear()
            self._settle(phone, now)

    # ------------------------------------------------------------------ drops

    def _silent(self, node: str, now: int) -> bool:
        last = self._last_seen.get(node)
        return last is None or now - last >= self.config.node_silence_ms

    def _drop_candidates(self, now: int) -> list[_Candidate]:
        cfg = self.config
        since = now - cfg.window_ms
        out: list[_Candidate] = []
        for g, gs in self._groups.items():
            if len(gs.down) < cfg.min_count:
                continue
            lost = frozenset(p for p, t in gs.down.items() if t >= since and p not in self._settled)
            if len(lost) >= _need(cfg.min_count, cfg.min_ratio, gs.size):
                silent = g[0] == "node" and self._silent(g[1], now)
                kind: AlertKind = "node_down" if silent else "mass_drop"
                out.append(_Candidate(g, kind, lost, gs.size))
        out.sort(key=lambda c: (c.kind != "node_down", *_rank(c)))
        return out

    def _evaluate_drops(self, now: int, changes: list[AlertChange]) -> None:
        cfg = self.config
        for inc in self._incidents.values():
            if inc.restored:
                # Restored from regstate.alerts after a restart: take the group's
                # down phones as the incident's, now that the inputs are read.
                inc.phones = (
                    set(self._groups[inc.group].down) if inc.group in self._groups else set()
                )
                inc.population = max(inc.population, self._size(inc.group))
                inc.restored = False
        explained: set[PhoneId] = set()
        for inc in self._incidents.values():
            explained |= inc.phones
        accepted: set[Group] = set()
        for c in self._drop_candidates(now):
            if c.group in self._incidents:
                continue  # the open incident of this group
            covered = sum(1 for p in c.phones if p in explained)
            if covered >= cfg.explain_ratio * len(c.phones):
                continue
            explained |= c.phones
            accepted.add(c.group)
            since = self._pending.setdefault(c.group, now)
            if now - since >= cfg.hold_ms:
                del self._pending[c.group]
                inc = _Incident.opened(c, since)
                self._incidents[c.group] = inc
                self._emit(inc, "fired", now, changes)
        for g in [g for g in self._pending if g not in accepted]:
            del self._pending[g]
        for g, inc in list(self._incidents.items()):
            gs = self._groups.get(g)
            if gs is not None:
                since = now - cfg.window_ms
                inc.phones.update(
                    p for p, t in gs.down.items() if t >= since and p not in self._settled
                )
            down = self._still_down(inc)
            if len(inc.phones) - down >= cfg.resolve_ratio * len(inc.phones):
                del self._incidents[g]
                self._settled.update(p for p in inc.phones if p in self._down)
                self._emit(inc, "resolved", now, changes)
            elif self._moved(inc, down):
                self._emit(inc, "updated", now, changes)

    def _still_down(self, inc: _Incident) -> int:
        return sum(1 for p in inc.phones if p in self._down)

    def _moved(self, inc: _Incident, down: int) -> bool:
        step = max(1.0, self.config.update_ratio * max(inc.emitted_count, 1))
        return (
            abs(len(inc.phones) - inc.emitted_count) >= step or abs(down - inc.emitted_down) >= step
        )

    def _size(self, g: Group) -> int:
        gs = self._groups.get(g)
        return gs.size if gs is not None else 0

    # ------------------------------------------------------------------ storms

    def _evaluate_storms(self, now: int, changes: list[AlertChange]) -> None:
        cfg = self.config
        since = now - cfg.storm_window_ms
        candidates: list[_Candidate] = []
        for g, gs in self._groups.items():
            q = gs.comebacks
            while q and q[0][0] < since:
                q.popleft()
            if g in self._storms:
                inc = self._storms[g]
                inc.phones.update(p for _, p in q)
                need = _need(cfg.storm_min_count, cfg.storm_min_ratio, gs.size)
                if len(q) * 2 < need:
                    del self._storms[g]
                    self._emit(inc, "resolved", now, changes)
                elif self._moved(inc, 0):
                    self._emit(inc, "updated", now, changes)
                continue
            if len(q) >= _need(cfg.storm_min_count, cfg.storm_min_ratio, gs.size):
                candidates.append(
                    _Candidate(g, "reregistration_storm", frozenset(p for _, p in q), gs.size)
                )
        candidates.sort(key=_rank)
        explained: set[PhoneId] = set()
        for inc in self._storms.values():
            explained |= inc.phones
        for c in candidates:
            if sum(1 for p in c.phones if p in explained) >= cfg.explain_ratio * len(c.phones):
                continue
            explained |= c.phones
            start = min(t for t, _ in self._groups[c.group].comebacks)
            inc = _Incident.opened(c, start)
            self._storms[c.group] = inc
            self._emit(inc, "fired", now, changes)

    # ------------------------------------------------------------------ alerts

    def _emit(self, inc: _Incident, change: ChangeKind, now: int, out: list[AlertChange]) -> None:
        down = 0 if inc.kind == "reregistration_storm" else self._still_down(inc)
        inc.emitted_count = len(inc.phones)
        inc.emitted_down = down
        out.append(AlertChange(change, self._alert(inc, change, now, down)))

    def _alert(self, inc: _Incident, change: ChangeKind, now: int, down: int) -> Alert:
        gtype, name = inc.group
        gs = self._groups.get(inc.group)
        active = gs.up if gs is not None else 0
        count = len(inc.phones)
        ratio = min(1.0, count / inc.population) if inc.population else 0.0
        resolved = change == "resolved"
        labels = {
            "alertname": _ALERTNAME[inc.kind],
            "kind": inc.kind,
            "group_type": gtype,
            "group": name,
            "severity": "info" if inc.kind == "reregistration_storm" else "page",
        }
        return Alert(
            key=inc.key,
            kind=inc.kind,
            group_type=gtype,
            group=name,
            status="resolved" if resolved else "firing",
            started_at=inc.started_at,
            resolved_at=now if resolved else None,
            count=count,
            active=active,
            ratio=round(ratio, 4),
            summary=self._summary(inc, count, down, ratio, resolved, now),
            labels=labels,
            updated_at=now,
            still_down=down,
        )

    def _summary(
        self, inc: _Incident, count: int, down: int, ratio: float, resolved: bool, now: int
    ) -> str:
        gtype, name = inc.group
        noun = f"{_GROUP_NOUN[gtype]} {name}"
        if inc.kind == "reregistration_storm":
            text = (
                f"re-registration storm on {noun}: {count} phones came back since "
                f"{_iso(inc.started_at)} ({ratio:.0%} of {inc.population})"
            )
            return f"{text}; over" if resolved else text
        if inc.kind == "node_down":
            last = self._last_seen.get(name)
            if resolved:
                heard = "was silent"
            else:
                heard = f"silent since {_iso(last)}" if last is not None else "never heard from"
            head = f"{noun} {heard}: {count} of {inc.population} phones lost ({ratio:.0%})"
        else:
            head = (
                f"{count} of {inc.population} phones of {noun} stopped refreshing or expired "
                f"since {_iso(inc.started_at)} ({ratio:.0%})"
            )
        parts = [head, f"{down} still down"]
        breakdown = self._breakdown(inc, gtype)
        if breakdown:
            parts.append(breakdown)
        rejects = self._rejects(inc.group, now)
        if rejects:
            parts.append(rejects)
        text = "; ".join(parts)
        return f"resolved: {text}" if resolved else text

    def _breakdown(self, inc: _Incident, own: GroupType) -> str:
        """The other groupings the lost phones fall into (top three of each)."""
        tallies: dict[GroupType, dict[str, int]] = {}
        for pid in inc.phones:
            phone = self._phones.get(pid)
            if phone is None:
                continue
            for gtype, gname in phone.groups:
                if gtype != own:
                    t = tallies.setdefault(gtype, {})
                    t[gname] = t.get(gname, 0) + 1
        out = []
        for gtype in GROUP_TYPES:
            tally = tallies.get(gtype)
            if tally:
                top = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
                out.append(f"{_GROUP_NOUN[gtype]}s " + ", ".join(f"{n} ({c})" for n, c in top))
        return "; ".join(out)

    def _rejects(self, g: Group, now: int) -> str:
        gs = self._groups.get(g)
        if gs is None:
            return ""
        since = now - self.config.window_ms
        reasons: dict[str, int] = {}
        for ts, reason in gs.rejects:
            if ts >= since:
                reasons[reason] = reasons.get(reason, 0) + 1
        if not reasons:
            return ""
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        total = sum(reasons.values())
        return f"{total} rejects in the window (" + ", ".join(f"{r} {c}" for r, c in top) + ")"

    # ------------------------------------------------------------------ queries

    def open_alerts(self) -> list[Alert]:
        """Every open incident as its current firing record, ordered by key."""
        out = []
        for inc in [*self._incidents.values(), *self._storms.values()]:
            down = 0 if inc.kind == "reregistration_storm" else self._still_down(inc)
            out.append(self._alert(inc, "updated", self._now, down))
        return sorted(out, key=lambda a: a.key)

    def group_stats(self) -> Iterator[GroupStats]:
        """Active and down phones of every group that has any."""
        for (gtype, name), gs in sorted(self._groups.items()):
            if gs.size:
                yield GroupStats(gtype, name, gs.up, len(gs.down))

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Take over the incidents still firing on regstate.alerts (after a restart).

        Call before observing: the drops keep their keys and resolve as usual;
        their phones are taken to be the group's down phones at the next tick.
        Storms are short and are not carried over.
        """
        for a in alerts:
            if a.status != "firing" or a.kind == "reregistration_storm":
                continue
            g: Group = (a.group_type, a.group)
            population = round(a.count / a.ratio) if a.ratio > 0 else a.count
            self._incidents[g] = _Incident(
                key=a.key,
                kind=a.kind,
                group=g,
                started_at=a.started_at,
                population=population,
                restored=True,
                emitted_count=a.count,
                emitted_down=a.still_down,
            )
