"""The Detector: mass-deregistration detection in event time (docs/design.md section 9 trap 9).

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

from collections.abc import Iterable, Iterator

from processors.alerting.config import AlertChange, ChangeKind, DetectorConfig, Group, GroupStats
from processors.alerting.evaluation import Drops, Evaluator, Incident, Storms
from processors.alerting.population import Population
from processors.alerting.text import render_alert, trunk_alert
from processors.sipuri import is_trunk
from processors.trunks import TrunkChange, TrunkWatch
from schemas.alerts import Alert
from schemas.events import RegistrationEvent
from schemas.state import AorState, BindingEvent


class Detector:
    """Event-time mass-drop, node-down and re-registration-storm detection (module docstring).

    Three parts: the :class:`Population` (who is registered where), the
    evaluators (when a group's figures open, move or close an incident), and
    :func:`render_alert` (what the record says).
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._population = Population(self.config)
        self._drops = Drops(self.config, self._population)
        self._storms = Storms(self.config, self._population)
        # Evaluated in this order at every tick; a new kind of alert adds its own.
        self._evaluators: tuple[Evaluator, ...] = (self._drops, self._storms)
        # Trunks (D50) are no phones: watched one by one, never in a group (D55).
        self.trunks = TrunkWatch()

    # ------------------------------------------------------------------ inputs

    @property
    def max_event_ts(self) -> int | None:
        """The latest event time observed (the caller's watermark is derived from it)."""
        ts = self._population.max_ts
        return None if ts < -(2**61) else ts

    @property
    def now(self) -> int:
        """The time of the latest tick."""
        return self._population.now

    def observe(self, item: BindingEvent | AorState | RegistrationEvent) -> None:
        """Take one record of regstate.binding-events, regstate.bindings or registrations.

        An AorState (a tombstone is an AorState without contacts) supplies the
        population and where each binding comes from; BindingEvents supply
        endings (``expired``/``deactivated`` lose a binding, ``unregistered``
        removes it) and refreshes; RegistrationEvents show which nodes are alive
        and add rejects to the evidence.
        """
        if is_trunk(item.aor):
            self._observe_trunk(item)
        else:
            self._population.observe(item)

    def _observe_trunk(self, item: BindingEvent | AorState | RegistrationEvent) -> None:
        pop = self._population
        if isinstance(item, AorState):
            pop.max_ts = max(pop.max_ts, item.updated_ts)
            self.trunks.observe_state(item)
            return
        pop.seen(item.node, item.ts)  # the node is alive, whatever it reports on
        if isinstance(item, BindingEvent):
            self.trunks.observe_binding_event(item)

    # ------------------------------------------------------------------ time

    def tick(self, now_ms: int) -> list[AlertChange]:
        """Advance to ``now_ms`` (the caller's watermark) and return what changed, in order.

        Bindings due by ``now_ms`` become overdue as of their due time, so a late
        tick counts them in the window they belong to.
        """
        now = self._population.advance(now_ms)
        self._population.forget(now, self._drops.held())
        changes: list[AlertChange] = []

        def emit(inc: Incident, change: ChangeKind) -> None:
            down = self._down(inc)
            inc.emitted_count = len(inc.phones)
            inc.emitted_down = down
            changes.append(AlertChange(change, self._render(inc, change, now, down)))

        for evaluator in self._evaluators:
            evaluator.evaluate(now, emit)
        for t in self.trunks.tick(now):
            changes.append(AlertChange(t.change, trunk_alert(t, now)))
        return changes

    def _down(self, inc: Incident) -> int:
        if inc.kind == "reregistration_storm":
            return 0
        return self._population.still_down(inc.phones)

    def _render(self, inc: Incident, change: ChangeKind, now: int, down: int) -> Alert:
        return render_alert(inc, change, now, down, self._population, self.config.window_ms)

    # ------------------------------------------------------------------ queries

    def open_alerts(self) -> list[Alert]:
        """Every open incident as its current firing record, ordered by key."""
        now = self._population.now
        out = [
            self._render(inc, "updated", now, self._down(inc))
            for evaluator in self._evaluators
            for inc in evaluator.incidents.values()
        ]
        for aor, since, reason in self.trunks.open():
            out.append(trunk_alert(TrunkChange("updated", aor, since, reason), now))
        return sorted(out, key=lambda a: a.key)

    def group_stats(self) -> Iterator[GroupStats]:
        """Active and down phones of every group that has any."""
        for (gtype, name), gs in sorted(self._population.groups.items()):
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
            if a.kind == "trunk_down":
                self.trunks.restore(a.group, a.started_at)
                continue
            g: Group = (a.group_type, a.group)
            population = round(a.count / a.ratio) if a.ratio > 0 else a.count
            self._drops.restore(
                Incident(
                    key=a.key,
                    kind=a.kind,
                    group=g,
                    started_at=a.started_at,
                    population=population,
                    restored=True,
                    emitted_count=a.count,
                    emitted_down=a.still_down,
                )
            )
