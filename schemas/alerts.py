"""Alert: the record on regstate.alerts (compacted, key = alert key), and its JSON codec.

One alert is one incident: it is written when it fires, again when its figures
move, and a last time when it resolves, always under the same key, so the
compacted topic keeps the final word on every incident. Times are event time,
ms since the Unix epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import orjson

from schemas.codec import Rejection

ALERT_SCHEMA_VERSION: Final = 1

AlertKind = Literal["mass_drop", "node_down", "reregistration_storm", "trunk_down"]
ALERT_KINDS: Final[tuple[AlertKind, ...]] = (
    "mass_drop",
    "node_down",
    "reregistration_storm",
    "trunk_down",
)
AlertStatus = Literal["firing", "resolved"]
ALERT_STATUSES: Final[tuple[AlertStatus, ...]] = ("firing", "resolved")
GroupType = Literal["node", "net", "ua", "domain", "trunk"]
GROUP_TYPES: Final[tuple[GroupType, ...]] = ("node", "net", "ua", "domain")
"""Front-end node, source /24 (IPv6 /64), user-agent family, AOR domain: how phones group."""
ALERT_GROUP_TYPES: Final[tuple[GroupType, ...]] = (*GROUP_TYPES, "trunk")
"""Also ``trunk``: a ``trunk_down`` alert's group is the trunk's AOR (D55)."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One incident of one group (immutable: every change is a new record).

    ``count``: bindings lost in the incident so far (``mass_drop``,
    ``node_down``) or come back (``reregistration_storm``). ``active``: the
    group's active bindings at ``updated_at``. ``ratio``: ``count`` over the
    group's size when the incident fired (at most 1). ``still_down``: bindings
    of the incident not back yet. ``labels`` identify the incident's group for
    pagers (the same for every record of one key).
    """

    key: str
    kind: AlertKind
    group_type: GroupType
    group: str
    status: AlertStatus
    started_at: int
    resolved_at: int | None
    count: int
    active: int
    ratio: float
    summary: str
    labels: Mapping[str, str]
    updated_at: int = 0
    still_down: int = 0
    v: int = ALERT_SCHEMA_VERSION


def alert_key(kind: AlertKind, group_type: GroupType, group: str, started_at: int) -> str:
    """The stable key of one incident, e.g. ``mass_drop:net=10.0.3.0/24@1767225600000``."""
    return f"{kind}:{group_type}={group}@{started_at}"


def alert_to_dict(a: Alert) -> dict[str, Any]:
    """The JSON map of an alert (every field, ``labels`` as an object)."""
    return {
        "v": a.v,
        "key": a.key,
        "kind": a.kind,
        "group_type": a.group_type,
        "group": a.group,
        "status": a.status,
        "started_at": a.started_at,
        "resolved_at": a.resolved_at,
        "updated_at": a.updated_at,
        "count": a.count,
        "active": a.active,
        "still_down": a.still_down,
        "ratio": a.ratio,
        "summary": a.summary,
        "labels": dict(a.labels),
    }


def encode_alert(a: Alert) -> bytes:
    """JSON bytes of an alert, as written to regstate.alerts."""
    return orjson.dumps(alert_to_dict(a))


def _field(d: Mapping[str, Any], name: str, typ: type, optional: bool = False) -> Any:
    value = d.get(name)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} is required")
    ok = type(value) is typ or (typ is float and type(value) is int)
    if not ok:
        raise ValueError(f"{name} must be {typ.__name__}, got {type(value).__name__}")
    return value


def alert_from_dict(d: object) -> Alert | Rejection:
    """Validate a decoded JSON object into an Alert; unknown fields are ignored.

    Returns a Rejection (never raises) for a record of another version, with a
    required field missing or mistyped, or with an unknown kind, status or group type.
    """
    if not isinstance(d, Mapping):
        return Rejection("not_a_map", f"record is {type(d).__name__}, not a map")
    try:
        v = d.get("v", ALERT_SCHEMA_VERSION)
        if v != ALERT_SCHEMA_VERSION or type(v) is not int:
            return Rejection("unknown_version", f"alert schema version {v!r} is not known")
        kind = _field(d, "kind", str)
        status = _field(d, "status", str)
        group_type = _field(d, "group_type", str)
        if (
            kind not in ALERT_KINDS
            or status not in ALERT_STATUSES
            or group_type not in ALERT_GROUP_TYPES
        ):
            return Rejection(
                "invalid_value", f"kind/status/group_type {kind}/{status}/{group_type}"
            )
        labels = d.get("labels") or {}
        if not isinstance(labels, Mapping) or not all(
            type(k) is str and type(x) is str for k, x in labels.items()
        ):
            raise ValueError("labels must map strings to strings")
        return Alert(
            key=_field(d, "key", str),
            kind=cast(AlertKind, kind),
            group_type=cast(GroupType, group_type),
            group=_field(d, "group", str),
            status=cast(AlertStatus, status),
            started_at=_field(d, "started_at", int),
            resolved_at=_field(d, "resolved_at", int, optional=True),
            count=_field(d, "count", int),
            active=_field(d, "active", int),
            ratio=float(_field(d, "ratio", float)),
            summary=_field(d, "summary", str),
            labels=dict(labels),
            updated_at=_field(d, "updated_at", int, optional=True) or 0,
            still_down=_field(d, "still_down", int, optional=True) or 0,
        )
    except ValueError as exc:
        return Rejection("invalid_alert", str(exc))


def decode_alert(data: bytes | None) -> Alert | Rejection:
    """Decode one regstate.alerts value; a tombstone or bad JSON is a Rejection."""
    if data is None:
        return Rejection("empty", "record value is null")
    try:
        m = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return Rejection("not_json", f"cannot decode JSON: {exc}")
    return alert_from_dict(m)
