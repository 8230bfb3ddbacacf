"""Every Prometheus metric of regstate, written with prometheus_client (one writer).

One module per wing defines its metrics (:mod:`.engine`, :mod:`.frontend`,
:mod:`.dialer`, :mod:`.alerting`, :mod:`.hep`); this one holds what they share:
a registry per process (:func:`new_registry`, which also carries
``regstate_build_info``), the exposition (:func:`exposition`), the histogram
buckets, and :data:`CATALOGUE`, every family each process exports with its
label names, which the dashboard and rules tests check their queries against.

Units are seconds (``_seconds``, ``_timestamp_seconds``); counters end in
``_total``. Each component keeps its counters in plain attributes (tests and
log lines read them) and a collector turns them into families at scrape time;
histograms are prometheus_client ``Histogram`` objects observed as things
happen, except on the worker's per-AOR path (:class:`LoopHistogram`). The
front-end's processes share one scrape target through prometheus_client's
multiprocess mode (:mod:`.frontend`).
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# ``*_created`` series double every counter and histogram and no panel reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""What :func:`exposition` writes (Prometheus text format 0.0.4)."""

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""A request answered within a few ms to a few s (REGISTER -> 200 with the Kafka ack)."""
FOLD_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5
)  # fmt: skip
"""One fold batch: tens of µs per record up to a slow table read."""
LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Time through Kafka from one stage to the next (ms when healthy, s when behind)."""


@dataclass(frozen=True)
class Family:
    """One exported metric family: its full name as scraped, type and label names."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        """The name prometheus_client's metric families take (without ``_total``)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    def counter(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.base, self.help, labels=self.labels)

    def gauge(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)


class LoopHistogram:
    """A histogram observed from one event loop only, exported by its owner's collector.

    prometheus_client's ``Histogram.observe`` takes a lock and walks its buckets;
    once per AOR written by the worker's fold that was about 3 % of its CPU.
    Here an observation is a bisect and two additions; the scrape runs on the
    same loop, so no lock is needed.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.total += value

    def family(self, fam: Family) -> HistogramMetricFamily:
        buckets, cumulative = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            le: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
            buckets.append((le, cumulative))
        return HistogramMetricFamily(fam.name, fam.help, buckets=buckets, sum_value=self.total)


BUILD_INFO: Final = Family(
    "regstate_build_info",
    "gauge",
    "Always 1; the labels say which regstate and Python this process runs.",
    ("version", "python", "component"),
)


class BuildInfo(Collector):
    """``regstate_build_info{version,python,component} 1``."""

    def __init__(self, component: str) -> None:
        self.component = component
        from streams.cli import version  # the one version lookup (regstate --version)

        self.values = [version(), platform.python_version(), component]

    def collect(self) -> Iterator[Metric]:
        g = BUILD_INFO.gauge()
        g.add_metric(self.values, 1)
        yield g


def new_registry(component: str) -> CollectorRegistry:
    """The registry of one process (or one component in a test), with build info."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BuildInfo(component))
    return registry


def exposition(registry: CollectorRegistry) -> str:
    """The registry in Prometheus text format 0.0.4."""
    return generate_latest(registry).decode()


def catalogue() -> dict[str, Family]:
    """Every family some regstate process exports, by its scraped name."""
    from streams.metrics import alerting, dialer, engine, frontend, hep

    out = {BUILD_INFO.name: BUILD_INFO}
    for module in (engine, frontend, dialer, alerting, hep):
        for fam in module.FAMILIES:
            out[fam.name] = fam
    return out


__all__ = [
    "BUILD_INFO",
    "CONTENT_TYPE",
    "FOLD_BUCKETS",
    "LAG_BUCKETS",
    "LATENCY_BUCKETS",
    "Family",
    "LoopHistogram",
    "catalogue",
    "exposition",
    "new_registry",
]
