"""Metrics of HEP capture ingest (``regstate hep``): defined here, for its processes.

The listener and its tracker keep plain counters (:class:`streams.hep.listener.ListenerStats`,
:class:`streams.hep.tracker.TrackerStats`); :class:`HepMetrics` turns them into
families at scrape time. The histogram answers "how long from the capture agent
seeing a REGISTER to its event being logged": the HEP header's capture time to
the Kafka acknowledgement.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from streams import metrics as m
from streams.metrics import Family

if TYPE_CHECKING:
    from streams.hep.listener import HepListener

CAPTURE_TO_EVENT = m.Family(
    "regstate_hep_capture_to_event_seconds",
    "histogram",
    "HEP capture time to the event acknowledged by regstate.registrations.",
)
PACKETS = Family(
    "regstate_hep_packets_total", "counter", "HEP packets received, by transport.", ("transport",)
)
DROPPED = Family(
    "regstate_hep_dropped_total",
    "counter",
    "HEP packets not used, by reason (hep2, not_hep3, truncated, auth, not_sip, duplicate...).",
    ("reason",),
)
KERNEL_DROPS = Family(
    "regstate_hep_kernel_drops",
    "gauge",
    "UDP datagrams the kernel dropped on the listener's port (receive buffer full).",
)
TRACKER: Final = (
    ("requests", Family("regstate_hep_requests_total", "counter",
                        "REGISTER requests seen.")),
    ("responses", Family("regstate_hep_responses_total", "counter",
                         "Final responses to REGISTER seen.")),
    ("other_methods", Family("regstate_hep_other_messages_total", "counter",
                             "Other methods and provisional responses (skipped).")),
    ("unparsable", Family("regstate_hep_unparsable_total", "counter",
                          "SIP payloads the parser refused.")),
    ("challenges", Family("regstate_hep_challenges_total", "counter",
                          "Plain 401/407 challenges (no event).")),
    ("orphan_responses", Family("regstate_hep_orphan_responses_total", "counter",
                                "Final responses whose REGISTER was not captured.")),
    ("duplicate_finals", Family("regstate_hep_duplicate_finals_total", "counter",
                                "Second final responses of one transaction (no event).")),
    ("retransmissions", Family("regstate_hep_retransmissions_total", "counter",
                               "REGISTERs seen again with the same branch.")),
    ("timeouts", Family("regstate_hep_timeouts_total", "counter",
                        "REGISTERs without a final response within 32 s.")),
)  # fmt: skip
"""``TrackerStats`` attribute -> counter family."""
LATE = Family(
    "regstate_hep_late_total",
    "counter",
    "Captures that arrived more than 250 ms of capture time out of order (not reordered).",
)
TRANSACTIONS = Family("regstate_hep_transactions", "gauge", "REGISTER transactions being followed.")
EVENTS = Family(
    "regstate_hep_events_total",
    "counter",
    "Events handed to Kafka, by result (acked, failed, dropped: Kafka away too long).",
    ("result",),
)
FORWARDED = Family(
    "regstate_hep_forwarded_total", "counter", "Packets re-sent to REGSTATE_HEP_FORWARD."
)
FORWARD_ERRORS = Family("regstate_hep_forward_errors_total", "counter", "Re-sends that failed.")
EVENT_LOG_READY = Family("regstate_hep_event_log_ready", "gauge", "1 while Kafka can take events.")
FAMILIES: Final = (
    CAPTURE_TO_EVENT,
    PACKETS,
    DROPPED,
    KERNEL_DROPS,
    *(f for _, f in TRACKER),
    LATE,
    TRANSACTIONS,
    EVENTS,
    FORWARDED,
    FORWARD_ERRORS,
    EVENT_LOG_READY,
)


def capture_to_event(registry: CollectorRegistry | None) -> Histogram:
    """The histogram, in ``registry`` (None: a multiprocess node's shared files)."""
    return Histogram(
        CAPTURE_TO_EVENT.name, CAPTURE_TO_EVENT.help, registry=registry, buckets=m.LAG_BUCKETS
    )


class HepMetrics(Collector):
    """The registry of one listener process: its counters at scrape time, and the histogram."""

    def __init__(self, listener: HepListener) -> None:
        self.listener = listener
        self.registry = m.new_registry("hep")
        self.capture_to_event = capture_to_event(self.registry)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        from streams.hep.listener import kernel_drops

        lis = self.listener
        s, t = lis.stats, lis.tracker.stats
        c = PACKETS.counter()
        for transport in ("udp", "tcp"):
            c.add_metric([transport], s.packets[transport])
        yield c
        c = DROPPED.counter()
        for reason, n in sorted(s.dropped.items()):
            c.add_metric([reason], n)
        yield c
        g = KERNEL_DROPS.gauge()
        g.add_metric([], kernel_drops(lis.udp_port))
        yield g
        for attr, fam in TRACKER:
            c = fam.counter()
            c.add_metric([], getattr(t, attr))
            yield c
        c = LATE.counter()
        c.add_metric([], lis.order.late)
        yield c
        g = TRANSACTIONS.gauge()
        g.add_metric([], len(lis.tracker))
        yield g
        c = EVENTS.counter()
        for result, n in (
            ("acked", s.events_acked),
            ("failed", s.events_failed),
            ("dropped", s.events_dropped),
        ):
            c.add_metric([result], n)
        yield c
        for fam, value in ((FORWARDED, s.forwarded), (FORWARD_ERRORS, s.forward_errors)):
            c = fam.counter()
            c.add_metric([], value)
            yield c
        g = EVENT_LOG_READY.gauge()
        g.add_metric([], 1 if lis.event_log.ready else 0)
        yield g
