"""Trunk watch: ``trunk_down`` once per trunk outage (D55). Pure: no clock, no I/O.

A trunk (an AOR in the ``trunk:`` namespace, D50) is one registration a dialer
server keeps with its carrier; when it fails every outbound call fails, so
there is no mass-drop arithmetic: a trunk is *down* once its health is
``auth_failing`` or ``unreachable``, or it holds no binding that is still
live (expired, deactivated, or past its expiry at the watermark), and *up*
while it holds a live binding with any other health. The first tick that finds
a trunk down fires one ``trunk_down`` incident (for a lapsed binding only if
the trunk was ever up: a trunk never seen registered has not gone down); it resolves the first tick
that finds it up again. Going from auth_failing to expired within one outage
is the same incident: it pages once.

Inputs are the detector's: AorStates of regstate.bindings (contacts and
health; a tombstone has no contacts) and BindingEvents (an ending is seen
before the state that follows it). Older inputs than the one held are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from schemas.state import AorState, BindingEvent, HealthState

DOWN_HEALTH: frozenset[HealthState] = frozenset({"auth_failing", "unreachable"})


class TrunkChange(NamedTuple):
    """A trunk outage that began (``fired``) or ended (``resolved``) at this tick."""

    change: Literal["fired", "updated", "resolved"]
    aor: str
    started_at: int
    reason: str
    """Why it is down: ``auth_failing``, ``unreachable`` or ``expired``."""


@dataclass
class _Trunk:
    updated_ts: int = -(2**62)
    last_ts: int = 0
    """Event time of the latest input taken (state or binding event)."""
    health: HealthState = "unregistered"
    expires: dict[str, int] = field(default_factory=dict)
    """Binding key -> expiry of the bindings held."""
    ever_up: bool = False
    down_since: int | None = None
    reason: str = ""


class TrunkWatch:
    """Feeds on states and binding events of trunk AORs; :meth:`tick` reports outages."""

    def __init__(self) -> None:
        self._trunks: dict[str, _Trunk] = {}

    def __len__(self) -> int:
        return len(self._trunks)

    def observe_state(self, s: AorState) -> None:
        t = self._trunks.setdefault(s.aor, _Trunk())
        if s.updated_ts < t.updated_ts:
            return
        t.updated_ts = s.updated_ts
        t.last_ts = max(t.last_ts, s.updated_ts)
        t.health = s.health.state
        t.expires = {b.key: b.expires_at for b in s.contacts}
        if any(at > s.updated_ts for at in t.expires.values()):
            t.ever_up = True  # registered at some point, even if no tick saw it

    def observe_binding_event(self, e: BindingEvent) -> None:
        t = self._trunks.setdefault(e.aor, _Trunk())
        if e.ts < t.updated_ts or e.key is None:
            return
        t.last_ts = max(t.last_ts, e.ts)
        if e.event in ("expired", "deactivated", "unregistered"):
            t.expires.pop(e.key, None)
        elif e.expires_at is not None:
            t.expires[e.key] = e.expires_at
            t.ever_up = True

    def tick(self, now: int) -> list[TrunkChange]:
        """The outages that began or ended by ``now`` (the watermark), in AOR order."""
        out: list[TrunkChange] = []
        for aor in sorted(self._trunks):
            t = self._trunks[aor]
            live = any(at > now for at in t.expires.values())
            if t.health in DOWN_HEALTH:
                down, reason = True, str(t.health)
            else:
                down, reason = not live, "expired"
            if not down:
                t.ever_up = True
                if t.down_since is not None:
                    out.append(TrunkChange("resolved", aor, t.down_since, t.reason))
                    t.down_since = None
                continue
            if t.down_since is None and (t.ever_up or reason != "expired"):
                # Since when the evidence says: the last expiry passed, else the
                # input that showed it; never later than now.
                lapsed = [at for at in t.expires.values() if at <= now]
                since = max(lapsed) if reason == "expired" and lapsed else t.last_ts
                t.down_since = min(now, since)
                t.reason = reason
                out.append(TrunkChange("fired", aor, t.down_since, reason))
            elif t.down_since is not None:
                t.reason = reason  # the same outage, now for this reason
        return out

    def restore(self, aor: str, since: int) -> None:
        """An outage still firing on regstate.alerts (a restart): it is not fired again."""
        t = self._trunks.setdefault(aor, _Trunk())
        t.down_since, t.ever_up = since, True

    def open(self) -> list[tuple[str, int, str]]:
        """(AOR, down since, reason) of every trunk down now."""
        return [
            (aor, t.down_since, t.reason)
            for aor, t in sorted(self._trunks.items())
            if t.down_since is not None
        ]
