"""The alerting runner's metrics: :func:`render` of a :class:`Snapshot` of the runner."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from processors.alerting import GroupStats
from schemas.alerts import Alert
from streams import metrics as m
from streams.metrics import Family

ALERT_KINDS: Final = ("mass_drop", "node_down", "reregistration_storm")
MAX_GROUP_SERIES: Final = 2000
"""Most groups exported per metric (the largest first): a bound on label cardinality."""

OPEN_ALERTS = Family(
    "regstate_alerting_open_alerts", "gauge", "Open incidents, by kind.", ("kind",)
)
CHANGES = Family(
    "regstate_alerting_alert_changes_total",
    "counter",
    "Alert changes, by kind and change.",
    ("kind", "change"),
)
GROUP_ACTIVE = Family(
    "regstate_alerting_group_active_bindings",
    "gauge",
    "Active bindings (phones: an AOR at one network) per group.",
    ("group_type", "group"),
)
GROUP_DOWN = Family(
    "regstate_alerting_group_down_bindings",
    "gauge",
    "Lost, not yet back, per group.",
    ("group_type", "group"),
)
RECORDS = Family(
    "regstate_alerting_records_total", "counter", "Records read, by input.", ("input",)
)
DECODE_ERRORS = Family(
    "regstate_alerting_decode_errors_total", "counter", "Records skipped, by input.", ("input",)
)
SKIPPED = Family(
    "regstate_alerting_skipped_total",
    "counter",
    "Records skipped, by input and reason (D82).",
    ("input", "reason"),
)
WATERMARK = Family(
    "regstate_alerting_watermark_timestamp_seconds", "gauge", "Event-time watermark."
)
INPUT_IDLE = Family(
    "regstate_alerting_input_idle_seconds", "gauge", "Seconds since the last record."
)
SINK_ERRORS = Family(
    "regstate_alerting_sink_errors_total", "counter", "Alert records not delivered.", ("sink",)
)
WEBHOOK_PENDING = Family(
    "regstate_alerting_webhook_pending", "gauge", "Alerts waiting to be posted."
)
READY = Family("regstate_alerting_ready", "gauge", "1 once the inputs were read up to the start.")
FAMILIES: Final = (
    OPEN_ALERTS,
    CHANGES,
    GROUP_ACTIVE,
    GROUP_DOWN,
    RECORDS,
    DECODE_ERRORS,
    SKIPPED,
    WATERMARK,
    INPUT_IDLE,
    SINK_ERRORS,
    WEBHOOK_PENDING,
    READY,
)


@dataclass(frozen=True)
class Snapshot:
    """What the runner knows at scrape time."""

    open_alerts: Sequence[Alert]
    changes: Mapping[tuple[str, str], int]
    groups: Sequence[GroupStats]
    records: Mapping[str, int]
    decode_errors: Mapping[str, int]
    watermark_ms: int
    idle_s: float
    kafka_sink_errors: int
    webhook_failures: int
    webhook_pending: int
    ready: bool
    skipped: Mapping[tuple[str, str], int] = field(default_factory=dict)


class _AlertingCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.s = snap

    def collect(self) -> Iterator[Metric]:
        s = self.s
        g = OPEN_ALERTS.gauge()
        for kind in ALERT_KINDS:
            g.add_metric([kind], sum(1 for a in s.open_alerts if a.kind == kind))
        yield g
        c = CHANGES.counter()
        for (kind, change), n in sorted(s.changes.items()):
            c.add_metric([kind, change], n)
        yield c
        stats = sorted(s.groups, key=lambda g: -(g.active + g.down))[:MAX_GROUP_SERIES]
        active, down = GROUP_ACTIVE.gauge(), GROUP_DOWN.gauge()
        for gs in stats:
            active.add_metric([gs.group_type, gs.group], gs.active)
            down.add_metric([gs.group_type, gs.group], gs.down)
        yield active
        yield down
        for fam, by_input in ((RECORDS, s.records), (DECODE_ERRORS, s.decode_errors)):
            c = fam.counter()
            for role, n in sorted(by_input.items()):
                c.add_metric([role], n)
            yield c
        c = SKIPPED.counter()
        for (role, reason), n in sorted(s.skipped.items()):
            c.add_metric([role, reason], n)
        yield c
        for gfam, value in (
            (WATERMARK, s.watermark_ms / 1000),
            (INPUT_IDLE, s.idle_s),
            (WEBHOOK_PENDING, s.webhook_pending),
            (READY, 1 if s.ready else 0),
        ):
            g = gfam.gauge()
            g.add_metric([], value)
            yield g
        c = SINK_ERRORS.counter()
        c.add_metric(["kafka"], s.kafka_sink_errors)
        c.add_metric(["webhook"], s.webhook_failures)
        yield c


def render(snap: Snapshot) -> str:
    """Prometheus text of the alerting runner."""
    registry = m.new_registry("alerting")
    registry.register(_AlertingCollector(snap))
    return m.exposition(registry)
