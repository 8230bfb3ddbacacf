"""The worker's counters and gauges, rendered as Prometheus text (pure; no Faust).

The agent and the sweeper update one :class:`EngineMetrics`; ``GET /metrics``
renders it with :func:`render` together with what is only known at scrape time
(consumer lag, readiness). Counters only ever increase within a process; they
restart from zero with it, as Prometheus expects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

MAX_SKEW_NODES: Final = 1000
"""Most nodes whose clock skew is tracked: a bound on label cardinality."""


@dataclass
class NodeSkew:
    """Clock skew of one node: event ``ts`` minus the Kafka record timestamp, in ms."""

    last_ms: int = 0
    max_abs_ms: int = 0
    samples: int = 0


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
    """Clock skew per node (DESIGN section 6)."""

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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, object]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return f"{{{inner}}}" if inner else ""


class PromText:
    """Prometheus text exposition, one family at a time (every /metrics endpoint uses it)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Iterable[tuple[str, object]] = ()) -> None:
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
        self.lines.append(f"{name}{_labels(labels)} {text}")

    def text(self) -> str:
        """The exposition, newline-terminated."""
        return "\n".join(self.lines) + "\n"


def render(
    m: EngineMetrics,
    *,
    worker: str,
    lag: Mapping[int, int],
    bindings: Mapping[int, int],
    ready: bool,
    pending_expires: int = 0,
) -> str:
    """Prometheus text exposition (format 0.0.4) of ``m`` plus scrape-time values.

    ``lag``: records behind the end of each owned partition of regstate.registrations;
    ``bindings``: bindings held in the table per owned partition.
    """
    w = PromText()
    w.family("regstate_events_folded_total", "counter", "Events folded, by kind and outcome.")
    for (kind, outcome), n in sorted(m.folded.items()):
        w.sample("regstate_events_folded_total", n, [("kind", kind), ("outcome", outcome)])
    w.family("regstate_stale_total", "counter", "Requests refused as stale (R4, R7).")
    w.sample("regstate_stale_total", m.outcome_total("stale"))
    w.family("regstate_duplicate_total", "counter", "Events skipped as already applied (R5).")
    w.sample("regstate_duplicate_total", m.outcome_total("duplicate"))
    w.family("regstate_binding_events_total", "counter", "Binding events published, by event.")
    for name, n in sorted(m.binding_events.items()):
        w.sample("regstate_binding_events_total", n, [("event", name)])
    w.family("regstate_deadletters_total", "counter", "Records sent to the dead-letter topic.")
    for reason, n in sorted(m.deadletters.items()):
        w.sample("regstate_deadletters_total", n, [("reason", reason)])
    w.family(
        "regstate_republished_total", "counter", "States re-published for a redelivered event."
    )
    w.sample("regstate_republished_total", m.republished)
    w.family("regstate_expires_sent_total", "counter", "expire events the sweeper appended.")
    w.sample("regstate_expires_sent_total", m.expires_sent)
    w.family("regstate_expire_send_errors_total", "counter", "Sweeper appends that failed.")
    w.sample("regstate_expire_send_errors_total", m.expire_send_errors)
    w.family("regstate_expires_pending", "gauge", "expire events sent, not yet seen applied.")
    w.sample("regstate_expires_pending", pending_expires)
    w.family(
        "regstate_active_bindings",
        "gauge",
        "Bindings in the table of this worker's partitions, not yet expired by the sweeper.",
    )
    for partition, n in sorted(bindings.items()):
        w.sample("regstate_active_bindings", n, [("partition", partition)])
    w.family(
        "regstate_clock_skew_ms", "gauge", "Last event ts minus Kafka record timestamp, per node."
    )
    for node, s in sorted(m.skew.items()):
        w.sample("regstate_clock_skew_ms", s.last_ms, [("node", node)])
    w.family(
        "regstate_clock_skew_max_abs_ms", "gauge", "Largest absolute clock skew seen, per node."
    )
    for node, s in sorted(m.skew.items()):
        w.sample("regstate_clock_skew_max_abs_ms", s.max_abs_ms, [("node", node)])
    w.family("regstate_consumer_lag", "gauge", "Records of regstate.registrations not yet folded.")
    for partition, n in sorted(lag.items()):
        w.sample("regstate_consumer_lag", n, [("partition", partition)])
    w.family("regstate_ready", "gauge", "1 when recovered and not rebalancing.")
    w.sample("regstate_ready", 1 if ready else 0, [("worker", worker)])
    return w.text()
