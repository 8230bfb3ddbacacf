"""The dialer view's metrics: :class:`DialerMetrics` and :func:`render_metrics`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from streams import metrics as m
from streams.metrics import Family

_C = (
    ("records_applied", Family("regstate_dialer_records_applied_total", "counter",
                               "Records of regstate.bindings applied.")),
    ("records_reread", Family("regstate_dialer_records_reread_total", "counter",
                              "Records delivered again below the stored offset after a "
                              "restart (skipped).")),
    ("decode_errors", Family("regstate_dialer_decode_errors_total", "counter",
                             "Records that were not an AorState or a binding event.")),
    ("batches", Family("regstate_dialer_batches_total", "counter", "Transactions committed.")),
    ("events_pushed", Family("regstate_dialer_events_pushed_total", "counter",
                             "Binding events sent to SSE clients.")),
    ("sse_dropped", Family("regstate_dialer_sse_dropped_total", "counter",
                           "SSE clients cut for falling behind or not reading.")),
    ("phones_refreshes", Family("regstate_dialer_phones_refreshes_total", "counter",
                                "Phones source re-reads applied.")),
    ("phones_refresh_errors", Family("regstate_dialer_phones_refresh_errors_total", "counter",
                                     "Phones source re-reads that failed (the previous "
                                     "phones stay in use).")),
    ("sse_refused", Family("regstate_dialer_sse_refused_total", "counter",
                           "SSE clients refused past the subscriber cap.")),
)  # fmt: skip
RESUMED_FROM = Family(
    "regstate_dialer_resumed_from_offset", "gauge", "Stored next offset at start.", ("partition",)
)
BOOTSTRAP_TARGET = Family(
    "regstate_dialer_bootstrap_target_offset",
    "gauge",
    "End offset seen at start.",
    ("partition",),
)
ROWS = Family("regstate_dialer_rows", "gauge", "Contact rows stored (lapsed ones included).")
SSE_CLIENTS = Family("regstate_dialer_sse_clients", "gauge", "Connected SSE clients.")
READY = Family("regstate_dialer_ready", "gauge", "1 once caught up with the end seen at start.")
PHONES_EXPECTED = Family(
    "regstate_dialer_phones_expected", "gauge", "Extensions in the last phones read."
)
APPLY_LAG = Family(
    "regstate_dialer_apply_lag_seconds",
    "histogram",
    "A regstate.bindings record's timestamp to its transaction committed in the store.",
)
FAMILIES: Final = (
    *(f for _, f in _C),
    RESUMED_FROM,
    BOOTSTRAP_TARGET,
    ROWS,
    SSE_CLIENTS,
    READY,
    PHONES_EXPECTED,
    APPLY_LAG,
)


@dataclass
class DialerMetrics:
    """Counters of one dialer-view process (they restart from zero with it)."""

    records_applied: int = 0
    """Records of regstate.bindings applied to the store by this process."""
    records_reread: int = 0
    """Records delivered below a partition's stored next offset (already applied before a
    restart); skipped, never re-applied. Stays 0 when resuming works."""
    resumed_from: dict[int, int] = field(default_factory=dict)
    """Stored next offset per partition when this process started (0: from the beginning)."""
    bootstrap_target: dict[int, int] = field(default_factory=dict)
    """End offset per partition when this process started (the readiness target)."""
    decode_errors: int = 0
    batches: int = 0
    events_pushed: int = 0
    sse_clients: int = 0
    sse_dropped: int = 0
    phones_refreshes: int = 0
    phones_refresh_errors: int = 0
    phones_expected: int = 0
    sse_refused: int = 0
    registry: CollectorRegistry = field(init=False, repr=False)
    apply_lag: Histogram = field(init=False, repr=False)
    """Observed once per applied record, from the writer thread (prometheus_client locks)."""
    _ready: bool = field(default=False, repr=False)
    _rows: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.registry = m.new_registry("dialer-view")
        self.registry.register(_DialerCollector(self))
        self.apply_lag = Histogram(
            APPLY_LAG.name, APPLY_LAG.help, registry=self.registry, buckets=m.LAG_BUCKETS
        )


class _DialerCollector(Collector):
    def __init__(self, metrics: DialerMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        dm = self.m
        for attr, fam in _C:
            f = fam.counter()
            f.add_metric([], getattr(dm, attr))
            yield f
        for fam, offsets in (
            (RESUMED_FROM, dm.resumed_from),
            (BOOTSTRAP_TARGET, dm.bootstrap_target),
        ):
            g = fam.gauge()
            for p, o in sorted(offsets.items()):
                g.add_metric([str(p)], o)
            yield g
        for fam, value in (
            (ROWS, dm._rows),
            (SSE_CLIENTS, dm.sse_clients),
            (READY, dm._ready),
            (PHONES_EXPECTED, dm.phones_expected),
        ):
            g = fam.gauge()
            g.add_metric([], int(value))
            yield g


def render_metrics(metrics: DialerMetrics, *, ready: bool, rows: int) -> str:
    """Prometheus text of one dialer view."""
    metrics._ready, metrics._rows = ready, rows
    return m.exposition(metrics.registry)
