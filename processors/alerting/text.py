"""Alert text: an incident as the Alert record pagers read, with its summary and labels."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from processors.alerting.config import ChangeKind, Group
from processors.alerting.evaluation import Incident
from processors.alerting.population import Population
from processors.trunks import TrunkChange
from schemas.alerts import GROUP_TYPES, Alert, AlertKind, GroupType, alert_key

_GROUP_NOUN: Final[Mapping[GroupType, str]] = {
    "node": "front-end node",
    "net": "network",
    "ua": "user agent",
    "domain": "domain",
    "trunk": "trunk",
}
_ALERTNAME: Final[Mapping[AlertKind, str]] = {
    "mass_drop": "RegstateMassDeregistration",
    "node_down": "RegstateNodeDown",
    "reregistration_storm": "RegstateReregistrationStorm",
    "trunk_down": "RegstateTrunkDown",
}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_alert(
    inc: Incident, change: ChangeKind, now: int, down: int, pop: Population, window_ms: int
) -> Alert:
    """The record of ``inc`` after ``change`` at ``now``; ``down``: its phones still down."""
    gtype, name = inc.group
    gs = pop.groups.get(inc.group)
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
        summary=_summary(inc, count, down, ratio, resolved, now, pop, window_ms),
        labels=labels,
        updated_at=now,
        still_down=down,
    )


def _summary(
    inc: Incident,
    count: int,
    down: int,
    ratio: float,
    resolved: bool,
    now: int,
    pop: Population,
    window_ms: int,
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
        last = pop.last_seen.get(name)
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
    breakdown = _breakdown(inc, gtype, pop)
    if breakdown:
        parts.append(breakdown)
    rejects = _rejects(inc.group, now - window_ms, pop)
    if rejects:
        parts.append(rejects)
    text = "; ".join(parts)
    return f"resolved: {text}" if resolved else text


def _breakdown(inc: Incident, own: GroupType, pop: Population) -> str:
    """The other groupings the lost phones fall into (top three of each)."""
    tallies: dict[GroupType, dict[str, int]] = {}
    for pid in inc.phones:
        phone = pop.phones.get(pid)
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


def _rejects(g: Group, since: int, pop: Population) -> str:
    """The group's rejects since ``since``, by reason (top three)."""
    gs = pop.groups.get(g)
    if gs is None:
        return ""
    reasons: dict[str, int] = {}
    for ts, reason in gs.rejects:
        if ts >= since:
            reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        return ""
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    total = sum(reasons.values())
    return f"{total} rejects in the window (" + ", ".join(f"{r} {c}" for r, c in top) + ")"


def trunk_alert(t: TrunkChange, now: int) -> Alert:
    """The record of one trunk outage (D55): its group is the trunk's AOR."""
    resolved = t.change == "resolved"
    why = {
        "auth_failing": "the carrier refuses its credentials",
        "unreachable": "the carrier's answers do not come back",
        "expired": "its registration expired",
    }.get(t.reason, t.reason)
    summary = f"trunk {t.aor} down since {_iso(t.started_at)}: {why}"
    return Alert(
        key=alert_key("trunk_down", "trunk", t.aor, t.started_at),
        kind="trunk_down",
        group_type="trunk",
        group=t.aor,
        status="resolved" if resolved else "firing",
        started_at=t.started_at,
        resolved_at=now if resolved else None,
        count=1,
        active=0 if not resolved else 1,
        ratio=1.0,
        summary=f"resolved: {summary}" if resolved else summary,
        labels={
            "alertname": _ALERTNAME["trunk_down"],
            "kind": "trunk_down",
            "group_type": "trunk",
            "group": t.aor,
            "severity": "page",
        },
        updated_at=now,
        still_down=0 if resolved else 1,
    )
