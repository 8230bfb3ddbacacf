"""schemas.alerts: the Alert record of regstate.alerts and its JSON codec."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from schemas.alerts import Alert, alert_key, alert_to_dict, decode_alert, encode_alert
from schemas.codec import Rejection

T = 1_767_254_400_000
ALERT = Alert(
    key=alert_key("node_down", "node", "fe2", T),
    kind="node_down",
    group_type="node",
    group="fe2",
    status="firing",
    started_at=T,
    resolved_at=None,
    count=500,
    active=0,
    ratio=1.0,
    summary="front-end node fe2 silent since 2026-01-01T08:00:00Z: 500 of 500 phones lost",
    labels={"alertname": "RegstateNodeDown", "severity": "page"},
    updated_at=T + 5000,
    still_down=500,
)


def test_key_names_kind_group_and_start() -> None:
    assert ALERT.key == f"node_down:node=fe2@{T}"
    assert alert_key("mass_drop", "net", "10.0.3.0/24", 5) == "mass_drop:net=10.0.3.0/24@5"


def test_round_trip() -> None:
    data = encode_alert(ALERT)
    m = orjson.loads(data)
    assert {
        "key", "kind", "group_type", "group", "status", "started_at", "resolved_at",
        "count", "active", "ratio", "summary", "labels",
    } <= set(m)  # fmt: skip
    assert decode_alert(data) == ALERT
    resolved = replace(ALERT, status="resolved", resolved_at=T + 60_000, still_down=10)
    assert decode_alert(encode_alert(resolved)) == resolved


def test_unknown_fields_are_ignored_and_optional_ones_default() -> None:
    m = alert_to_dict(ALERT)
    m["future_field"] = {"x": 1}
    del m["updated_at"], m["still_down"], m["v"]
    decoded = decode_alert(orjson.dumps(m))
    assert isinstance(decoded, Alert)
    assert decoded == replace(ALERT, updated_at=0, still_down=0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "unknown_version"),
        ({"kind": "meltdown"}, "invalid_value"),
        ({"status": "pending"}, "invalid_value"),
        ({"count": "12"}, "invalid_alert"),
        ({"key": None}, "invalid_alert"),
        ({"labels": {"a": 1}}, "invalid_alert"),
    ],
)
def test_bad_records_are_rejections(change: dict[str, object], reason: str) -> None:
    m = {**alert_to_dict(ALERT), **change}
    got = decode_alert(orjson.dumps(m))
    assert isinstance(got, Rejection)
    assert got.reason == reason


def test_tombstones_and_garbage_are_rejections() -> None:
    assert isinstance(decode_alert(None), Rejection)
    assert isinstance(decode_alert(b"{nope"), Rejection)
    assert isinstance(decode_alert(b"[1]"), Rejection)
