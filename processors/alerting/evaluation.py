"""Evaluation: which groups lost (or got back) enough phones to open, update or resolve an incident.

Each evaluator reads the :class:`~processors.alerting.population.Population`
at a tick and reports changes through ``emit(incident, change)``; the detector
turns them into Alert records (``text.py``). A new kind of alert is one more
evaluator with the same two members (``incidents`` and ``evaluate``), listed in
:class:`~processors.alerting.detector.Detector`, plus its wording in ``text.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from processors.alerting.config import TYPE_RANK, ChangeKind, DetectorConfig, Group, PhoneId
from processors.alerting.population import Population
from schemas.alerts import AlertKind, alert_key


@dataclass
class Incident:
    """One open incident of one group; ``phones`` are the ones it counts."""

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
    def opened(cls, c: Candidate, started_at: int) -> Incident:
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
class Candidate:
    """A group whose figures meet a condition at this tick (it may still be explained away)."""

    group: Group
    kind: AlertKind
    phones: frozenset[PhoneId]
    size: int

    @property
    def ratio(self) -> float:
        return len(self.phones) / self.size if self.size else 0.0


def rank(c: Candidate) -> tuple[float, int, Group]:
    """Best explanation first: many phones lost, and most of the group (|lost| * share).

    A cut /24 outranks the nodes, user agents and domain its phones belong to
    (fewer of theirs are hit), and also any smaller group inside it that is hit
    as hard (it explains fewer phones), whatever the noise in the early counts.
    """
    return (-len(c.phones) * c.ratio, TYPE_RANK[c.group[0]], c.group)


def need(count: int, ratio: float, size: int) -> int:
    """The threshold ``max(N_min, ceil(p * size))``."""
    return max(count, math.ceil(ratio * size))


Emit = Callable[[Incident, ChangeKind], None]
"""Reports one change of one incident, at once (its figures are read as they are now)."""


class Evaluator(Protocol):
    """One kind of incident: its open incidents, and how a tick changes them."""

    @property
    def incidents(self) -> Mapping[Group, Incident]: ...

    def evaluate(self, now: int, emit: Emit) -> None: ...


def moved(inc: Incident, down: int, update_ratio: float) -> bool:
    """Whether a figure of ``inc`` moved enough since it was last emitted to emit it again."""
    step = max(1.0, update_ratio * max(inc.emitted_count, 1))
    return abs(len(inc.phones) - inc.emitted_count) >= step or abs(down - inc.emitted_down) >= step


class Drops:
    """``mass_drop`` and ``node_down``: a group lost many of its phones within the window."""

    def __init__(self, config: DetectorConfig, population: Population) -> None:
        self.config = config
        self._pop = population
        self._incidents: dict[Group, Incident] = {}
        self._pending: dict[Group, int] = {}

    @property
    def incidents(self) -> Mapping[Group, Incident]:
        return self._incidents

    def held(self) -> set[PhoneId]:
        """Phones an open incident counts (they are not forgotten while it is open)."""
        return {p for inc in self._incidents.values() for p in inc.phones}

    def restore(self, inc: Incident) -> None:
        """Take over an incident still firing after a restart (its phones come at the next tick)."""
        self._incidents[inc.group] = inc

    def _candidates(self, now: int) -> list[Candidate]:
        cfg = self.config
        pop = self._pop
        since = now - cfg.window_ms
        out: list[Candidate] = []
        for g, gs in pop.groups.items():
            if len(gs.down) < cfg.min_count:
                continue
            lost = frozenset(p for p, t in gs.down.items() if t >= since and p not in pop.settled)
            if len(lost) >= need(cfg.min_count, cfg.min_ratio, gs.size):
                silent = g[0] == "node" and pop.silent(g[1], now)
                kind: AlertKind = "node_down" if silent else "mass_drop"
                out.append(Candidate(g, kind, lost, gs.size))
        out.sort(key=lambda c: (c.kind != "node_down", *rank(c)))
        return out

    def evaluate(self, now: int, emit: Emit) -> None:
        cfg = self.config
        pop = self._pop
        for inc in self._incidents.values():
            if inc.restored:
                # Restored from regstate.alerts after a restart: take the group's
                # down phones as the incident's, now that the inputs are read.
                inc.phones = set(pop.groups[inc.group].down) if inc.group in pop.groups else set()
                inc.population = max(inc.population, pop.size(inc.group))
                inc.restored = False
        explained: set[PhoneId] = set()
        for inc in self._incidents.values():
            explained |= inc.phones
        accepted: set[Group] = set()
        for c in self._candidates(now):
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
                inc = Incident.opened(c, since)
                self._incidents[c.group] = inc
                emit(inc, "fired")
        for g in [g for g in self._pending if g not in accepted]:
            del self._pending[g]
        for g, inc in list(self._incidents.items()):
            gs = pop.groups.get(g)
            if gs is not None:
                since = now - cfg.window_ms
                inc.phones.update(
                    p for p, t in gs.down.items() if t >= since and p not in pop.settled
                )
            down = pop.still_down(inc.phones)
            if len(inc.phones) - down >= cfg.resolve_ratio * len(inc.phones):
                del self._incidents[g]
                pop.settled.update(p for p in inc.phones if p in pop.down)
                emit(inc, "resolved")
            elif moved(inc, down, cfg.update_ratio):
                emit(inc, "updated")


class Storms:
    """``reregistration_storm``: many phones of a group came back within the storm window."""

    def __init__(self, config: DetectorConfig, population: Population) -> None:
        self.config = config
        self._pop = population
        self._incidents: dict[Group, Incident] = {}

    @property
    def incidents(self) -> Mapping[Group, Incident]:
        return self._incidents

    def evaluate(self, now: int, emit: Emit) -> None:
        cfg = self.config
        since = now - cfg.storm_window_ms
        candidates: list[Candidate] = []
        for g, gs in self._pop.groups.items():
            q = gs.comebacks
            while q and q[0][0] < since:
                q.popleft()
            if g in self._incidents:
                inc = self._incidents[g]
                inc.phones.update(p for _, p in q)
                threshold = need(cfg.storm_min_count, cfg.storm_min_ratio, gs.size)
                if len(q) * 2 < threshold:
                    del self._incidents[g]
                    emit(inc, "resolved")
                elif moved(inc, 0, cfg.update_ratio):
                    emit(inc, "updated")
                continue
            if len(q) >= need(cfg.storm_min_count, cfg.storm_min_ratio, gs.size):
                candidates.append(
                    Candidate(g, "reregistration_storm", frozenset(p for _, p in q), gs.size)
                )
        candidates.sort(key=rank)
        explained: set[PhoneId] = set()
        for inc in self._incidents.values():
            explained |= inc.phones
        for c in candidates:
            if sum(1 for p in c.phones if p in explained) >= cfg.explain_ratio * len(c.phones):
                continue
            explained |= c.phones
            start = min(t for t, _ in self._pop.groups[c.group].comebacks)
            inc = Incident.opened(c, start)
            self._incidents[c.group] = inc
            emit(inc, "fired")
