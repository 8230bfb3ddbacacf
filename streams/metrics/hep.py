"""Metrics of HEP capture ingest (``regstate hep``): defined here, for its processes.

The histogram answers "how long from the capture agent seeing a REGISTER to its
event being logged": the HEP header's capture time to the Kafka acknowledgement.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Histogram

from streams import metrics as m

CAPTURE_TO_EVENT = m.Family(
    "regstate_hep_capture_to_event_seconds",
    "histogram",
    "HEP capture time to the event acknowledged by regstate.registrations.",
)
FAMILIES: Final = (CAPTURE_TO_EVENT,)


def capture_to_event(registry: CollectorRegistry | None) -> Histogram:
    """The histogram, in ``registry`` (None: a multiprocess node's shared files)."""
    return Histogram(
        CAPTURE_TO_EVENT.name, CAPTURE_TO_EVENT.help, registry=registry, buckets=m.LAG_BUCKETS
    )
