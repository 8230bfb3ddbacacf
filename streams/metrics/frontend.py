"""The front-end's metrics, one scrape target per node however many processes it runs.

A node of several processes (``REGSTATE_SIP_PROCESSES``) uses prometheus_client's
multiprocess mode: the supervisor gives every process the same
``PROMETHEUS_MULTIPROC_DIR`` (it must be in the environment before
prometheus_client is imported), each process writes its values there, and any
process's ``/metrics`` answers the sum over all of them. Scrape the first
process's port (``REGSTATE_FRONTEND_WEB_PORT``) only. A node of one process
keeps its values in its own registry.

The node keeps plain counters (:class:`streams.frontend.node.NodeStats`);
:meth:`FrontendMetrics.sync` adds what they gained since the last sync to the
prometheus_client counters, at every scrape and every second (so a scrape of
process 0 sees the others at most a second late).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client import multiprocess as mp

from streams import metrics as m
from streams.metrics import Family

if TYPE_CHECKING:
    from streams.frontend.node import FrontendNode

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

_NODE = ("node",)
COUNTERS: Final = (
    ("received", Family("regstate_frontend_requests_total", "counter",
                        "SIP requests received (after the source limit).", _NODE)),
    ("malformed", Family("regstate_frontend_malformed_total", "counter",
                         "Requests refused by the parser (400 when answerable).", _NODE)),
    ("retransmissions", Family("regstate_frontend_retransmissions_total", "counter",
                               "Resent requests answered from the cache.", _NODE)),
    ("absorbed", Family("regstate_frontend_absorbed_total", "counter",
                        "Resent requests dropped while the first was in progress.", _NODE)),
    ("expired", Family("regstate_frontend_expired_total", "counter",
                       "Granted bindings this node expired (expire events).", _NODE)),
    ("flows_lost", Family("regstate_frontend_flows_lost_total", "counter",
                          "Outbound (RFC 5626) bindings whose TCP flow closed.", _NODE)),
    ("tcp_closed", Family("regstate_frontend_tcp_closed_total", "counter",
                          "TCP connections closed.", _NODE)),
    ("tcp_refused", Family("regstate_frontend_tcp_refused_total", "counter",
                           "TCP connections refused at accept past a connection cap (D89).",
                           _NODE)),
    ("tcp_timeouts", Family("regstate_frontend_tcp_timeouts_total", "counter",
                            "TCP connections closed idle or mid-message past the deadline.",
                            _NODE)),
    ("pongs", Family("regstate_frontend_pongs_total", "counter",
                     "CRLF pongs sent to double-CRLF keep-alives (RFC 5626 section 3.5.1).",
                     _NODE)),
)  # fmt: skip
"""``NodeStats`` attribute -> counter family."""
RATE_LIMITED = Family(
    "regstate_frontend_rate_limited_total",
    "counter",
    "Packets dropped by the per-source limit.",
    _NODE,
)
BANS = Family(
    "regstate_frontend_bans_total",
    "counter",
    "(Source, user) pairs banned after repeated auth failures with our nonce (D85).",
    _NODE,
)
BANNED_DROPS = Family(
    "regstate_frontend_banned_drops_total",
    "counter",
    "Requests dropped because their (source, user) pair is banned.",
    _NODE,
)
REJECTS_SUPPRESSED = Family(
    "regstate_frontend_rejects_suppressed_total",
    "counter",
    "Rejects answered but not logged: over the per-AOR and source budget (D87).",
    _NODE,
)
ANY_DOMAIN = Family(
    "regstate_frontend_any_domain",
    "gauge",
    "1 when REGSTATE_SIP_DOMAINS is empty: any domain accepted (development only).",
    _NODE,
)
RESPONSES = Family(
    "regstate_frontend_responses_total",
    "counter",
    "Final responses sent, by status.",
    ("node", "status"),
)
REJECTS = Family(
    "regstate_frontend_rejects_total",
    "counter",
    "REGISTERs refused (logged as reject events), by reason.",
    ("node", "reason"),
)
EVENTS = Family(
    "regstate_frontend_events_total",
    "counter",
    "Events handed to Kafka, by result (acked, failed).",
    ("node", "result"),
)
BINDINGS = Family(
    "regstate_frontend_bindings", "gauge", "Bindings this node granted and will expire.", _NODE
)
EVENT_LOG_READY = Family(
    "regstate_frontend_event_log_ready",
    "gauge",
    "1 while Kafka takes the node's events: connected, the last record acknowledged, none "
    "stuck past the ack timeout (every process of the node; D88).",
    _NODE,
)
REGISTER_SECONDS = Family(
    "regstate_frontend_register_seconds",
    "histogram",
    "REGISTER received to 200 sent, the Kafka acknowledgement included.",
    _NODE,
)
FAMILIES: Final = (
    *(f for _, f in COUNTERS),
    RATE_LIMITED,
    BANS,
    BANNED_DROPS,
    REJECTS_SUPPRESSED,
    ANY_DOMAIN,
    RESPONSES,
    REJECTS,
    EVENTS,
    BINDINGS,
    EVENT_LOG_READY,
    REGISTER_SECONDS,
)


def multiprocess_dir() -> str | None:
    """The shared directory of a multi-process node, None for a single process."""
    return os.environ.get(MULTIPROC_ENV) or None


class FrontendMetrics:
    """The prometheus_client metrics of one front-end process (see the module docstring)."""

    def __init__(self, node: FrontendNode, node_name: str) -> None:
        self.node = node
        self.labels = (node_name,)
        self.shared = multiprocess_dir()
        # Multiprocess values live in files; the metrics then belong to no registry.
        own = None if self.shared else m.new_registry("frontend")
        self._own = own
        self.counters = {
            attr: Counter(f.base, f.help, f.labels, registry=own) for attr, f in COUNTERS
        }
        self.rate_limited = Counter(RATE_LIMITED.base, RATE_LIMITED.help, _NODE, registry=own)
        self.bans = Counter(BANS.base, BANS.help, _NODE, registry=own)
        self.banned_drops = Counter(BANNED_DROPS.base, BANNED_DROPS.help, _NODE, registry=own)
        self.rejects_suppressed = Counter(
            REJECTS_SUPPRESSED.base, REJECTS_SUPPRESSED.help, _NODE, registry=own
        )
        self.any_domain = Gauge(
            ANY_DOMAIN.name, ANY_DOMAIN.help, _NODE, registry=own, multiprocess_mode="livemax"
        )
        self.responses = Counter(RESPONSES.base, RESPONSES.help, RESPONSES.labels, registry=own)
        self.rejects = Counter(REJECTS.base, REJECTS.help, REJECTS.labels, registry=own)
        self.events = Counter(EVENTS.base, EVENTS.help, EVENTS.labels, registry=own)
        self.bindings = Gauge(
            BINDINGS.name, BINDINGS.help, _NODE, registry=own, multiprocess_mode="livesum"
        )
        self.ready = Gauge(
            EVENT_LOG_READY.name,
            EVENT_LOG_READY.help,
            _NODE,
            registry=own,
            multiprocess_mode="livemin",
        )
        self.register_seconds = Histogram(
            REGISTER_SECONDS.name,
            REGISTER_SECONDS.help,
            _NODE,
            registry=own,
            buckets=m.LATENCY_BUCKETS,
        )
        self._last: dict[object, int] = {}
        node.stats.on_register = self.register_seconds.labels(node_name).observe

    def _add(self, counter: Counter, key: object, labels: tuple[str, ...], total: int) -> None:
        delta = total - self._last.get(key, 0)
        if delta > 0:
            counter.labels(*labels).inc(delta)
            self._last[key] = total
        elif key not in self._last:
            counter.labels(*labels)  # a zero sample, so the series exists from the start
            self._last[key] = total

    def sync(self) -> None:
        """Add what the node's plain counters gained since the last call; set the gauges."""
        node, s, lb = self.node, self.node.stats, self.labels
        for attr, counter in self.counters.items():
            self._add(counter, attr, lb, getattr(s, attr))
        self._add(self.rate_limited, "rate_limited", lb, node.limiter.dropped)
        self._add(self.bans, "bans", lb, node.limiter.bans)
        self._add(self.banned_drops, "banned_drops", lb, node.limiter.banned_drops)
        self._add(self.rejects_suppressed, "rejects_suppressed", lb, node.reject_budget.suppressed)
        self.any_domain.labels(*lb).set(0 if node.registrar.domains else 1)
        for status, n in list(s.answered.items()):
            self._add(self.responses, ("status", status), (*lb, str(status)), n)
        for reason, n in list(s.rejects.items()):
            self._add(self.rejects, ("reject", reason), (*lb, reason), n)
        self._add(self.events, "acked", (*lb, "acked"), s.events)
        self._add(self.events, "failed", (*lb, "failed"), s.event_failures)
        self.bindings.labels(*lb).set(len(node.bindings))
        self.ready.labels(*lb).set(1 if node.event_log.healthy else 0)

    def render(self) -> str:
        """The node's exposition: this process's, or every process's of the node."""
        self.sync()
        if self._own is not None:
            return m.exposition(self._own)
        registry = m.new_registry("frontend")
        registry.register(_Multiprocess(self.shared or ""))
        return m.exposition(registry)


class _Multiprocess(mp.MultiProcessCollector):
    """prometheus_client's collector of the shared directory, registered by hand."""

    def __init__(self, path: str) -> None:
        super().__init__(registry=None, path=path)  # type: ignore[no-untyped-call]
