"""The worker's metrics: :class:`EngineMetrics` (what the agent and sweeper count)
and :func:`render` (its exposition with what is only known at scrape time)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from streams import metrics as m

MAX_SKEW_NODES: Final = 1000
"""Most nodes whose clock skew is tracked: a bound on label cardinality."""

FOLDED = m.Family(
    "regstate_events_folded_total",
    "counter",
    "Events folded, by kind and outcome (stale: R4/R7, duplicate: R5).",
    ("kind", "outcome"),
)
BINDING_EVENTS = m.Family(
    "regstate_binding_events_total", "counter", "Binding events published, by event.", ("event",)
)
DEADLETTERS = m.Family(
    "regstate_deadletters_total", "counter", "Records sent to the dead-letter topic.", ("reason",)
)
REPUBLISHED = m.Family(
    "regstate_republished_total", "counter", "States re-published for a redelivered event."
)
EXPIRES_SENT = m.Family(
    "regstate_expires_sent_total", "counter", "expire events the sweeper appended."
)
EXPIRE_SEND_ERRORS = m.Family(
    "regstate_expire_send_errors_total", "counter", "Sweeper appends that failed."
)
EXPIRES_PENDING = m.Family(
    "regstate_expires_pending", "gauge", "expire events sent, not yet seen applied."
)
ACTIVE_BINDINGS = m.Family(
    "regstate_active_bindings",
    "gauge",
    "Bindings in the table of this worker's partitions, not yet expired by the sweeper.",
    ("partition",),
)
SKEW = m.Family(
    "regstate_clock_skew_seconds",
    "gauge",
    "Last event ts minus Kafka record timestamp, per node.",
    ("node",),
)
SKEW_MAX = m.Family(
    "regstate_clock_skew_max_abs_seconds",
    "gauge",
    "Largest absolute clock skew seen, per node.",
    ("node",),
)
LAG = m.Family(
    "regstate_consumer_lag",
    "gauge",
    "Records of regstate.registrations not yet folded, per owned partition.",
    ("partition",),
)
READY = m.Family("regstate_ready", "gauge", "1 when recovered and not rebalancing.", ("worker",))
FOLD_SECONDS = m.Family(
    "regstate_fold_batch_seconds",
    "histogram",
    "Time to fold one batch of records and hand its outputs to the producer.",
)
PUBLISH_TO_BINDINGS = m.Family(
    "regstate_publish_to_bindings_seconds",
    "histogram",
    "Event ts (front-end publish) to its new state handed to regstate.bindings.",
)
FAMILIES: Final = (
    FOLDED,
    BINDING_EVENTS,
    DEADLETTERS,
    REPUBLISHED,
    EXPIRES_SENT,
    EXPIRE_SEND_ERRORS,
    EXPIRES_PENDING,
    ACTIVE_BINDINGS,
    SKEW,
    SKEW_MAX,
    LAG,
    READY,
    FOLD_SECONDS,
    PUBLISH_TO_BINDINGS,
)


@dataclass
class NodeSkew:
    """Clock skew of one node: event ``ts`` minus the Kafka record timestamp, in ms."""

    last_ms: int = 0
    max_abs_ms: int = 0
    samples: int = 0


@dataclass
class Scrape:
    """What only the worker knows at scrape time."""

    worker: str = ""
    lag: Mapping[int, int] = field(default_factory=dict)
    bindings: Mapping[int, int] = field(default_factory=dict)
    ready: bool = False
    pending_expires: int = 0


@dataclass
class EngineMetrics:
    """Everything the worker counts. Mutated only from the event loop thread."""

    folded: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Events folded, by ``(kind, outcome)``."""
    binding_events: Counter[str] = field(default_factory=Counter)
    """Binding events published, by event name (registered, expired, ...)."""
    deadletters: Counter[str] = field(default_factory=Counter)
    """Records sent to regstate.deadletter, by reason."""
    republished: int = 0
    """States re-published for a duplicate (redelivery after a crash)."""
    expires_sent: int = 0
    """``expire`` events the sweeper appended."""
    expire_send_errors: int = 0
    """Sweeper appends that failed (they are re-planned after the resend interval)."""
    skew: dict[str, NodeSkew] = field(default_factory=dict)
    """Clock skew per node (docs/design.md section 6)."""
    registry: CollectorRegistry = field(init=False, repr=False)
    fold_seconds: Histogram = field(init=False, repr=False)
    """Per fold batch."""
    publish_to_bindings: m.LoopHistogram = field(
        default_factory=lambda: m.LoopHistogram(m.LAG_BUCKETS), repr=False
    )
    """Per AOR state handed to regstate.bindings (observed on the event loop)."""
    scrape: Scrape = field(default_factory=Scrape, repr=False)

    def __post_init__(self) -> None:
        self.registry = m.new_registry("worker")
        self.registry.register(_EngineCollector(self))
        self.fold_seconds = Histogram(
            FOLD_SECONDS.name, FOLD_SECONDS.help, registry=self.registry, buckets=m.FOLD_BUCKETS
        )

    def observe_fold(self, kind: str, outcome: str) -> None:
        """Count one folded event."""
        self.folded[(kind, outcome)] += 1

    def observe_skew(self, node: str, skew_ms: int) -> None:
        """Record one event's ``ts - record timestamp`` for its node."""
        s = self.skew.get(node)
        if s is None:
            if len(self.skew) >= MAX_SKEW_NODES:
                return
            s = self.skew[node] = NodeSkew()
        s.last_ms = skew_ms
        s.samples += 1
        if abs(skew_ms) > s.max_abs_ms:
            s.max_abs_ms = abs(skew_ms)

    def outcome_total(self, outcome: str) -> int:
        """Events folded with ``outcome``, every kind together."""
        return sum(n for (_, o), n in self.folded.items() if o == outcome)


class _EngineCollector(Collector):
    def __init__(self, metrics: EngineMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        em, s = self.m, self.m.scrape
        f = FOLDED.counter()
        for (kind, outcome), n in sorted(em.folded.items()):
            f.add_metric([kind, outcome], n)
        yield f
        f = BINDING_EVENTS.counter()
        for name, n in sorted(em.binding_events.items()):
            f.add_metric([name], n)
        yield f
        f = DEADLETTERS.counter()
        for reason, n in sorted(em.deadletters.items()):
            f.add_metric([reason], n)
        yield f
        for fam, value in (
            (REPUBLISHED, em.republished),
            (EXPIRES_SENT, em.expires_sent),
            (EXPIRE_SEND_ERRORS, em.expire_send_errors),
        ):
            f = fam.counter()
            f.add_metric([], value)
            yield f
        g = EXPIRES_PENDING.gauge()
        g.add_metric([], s.pending_expires)
        yield g
        g = ACTIVE_BINDINGS.gauge()
        for partition, n in sorted(s.bindings.items()):
            g.add_metric([str(partition)], n)
        yield g
        g, gmax = SKEW.gauge(), SKEW_MAX.gauge()
        for node, sk in sorted(em.skew.items()):
            g.add_metric([node], sk.last_ms / 1000)
            gmax.add_metric([node], sk.max_abs_ms / 1000)
        yield g
        yield gmax
        g = LAG.gauge()
        for partition, n in sorted(s.lag.items()):
            g.add_metric([str(partition)], n)
        yield g
        g = READY.gauge()
        g.add_metric([s.worker], 1 if s.ready else 0)
        yield g
        yield em.publish_to_bindings.family(PUBLISH_TO_BINDINGS)


def render(
    metrics: EngineMetrics,
    *,
    worker: str,
    lag: Mapping[int, int],
    bindings: Mapping[int, int],
    ready: bool,
    pending_expires: int = 0,
) -> str:
    """Prometheus text of ``metrics`` plus scrape-time values.

    ``lag``: records behind the end of each owned partition of regstate.registrations;
    ``bindings``: bindings held in the table per owned partition.
    """
    metrics.scrape = Scrape(worker, lag, bindings, ready, pending_expires)
    return m.exposition(metrics.registry)
