"""The HEP listener's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``.

``/readyz`` is 200 only while the event log is connected: without it the
listener counts events as dropped.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from streams.hep.listener import HepListener, kernel_drops
from streams.metrics import PromText
from streams.webserver import serve


def render_metrics(listener: HepListener) -> str:
    """Prometheus text of one listener process."""
    s = listener.stats
    t = listener.tracker.stats
    w = PromText()
    w.family("regstate_hep_packets_total", "counter", "HEP packets received, by transport.")
    for transport in ("udp", "tcp"):
        w.sample("regstate_hep_packets_total", s.packets[transport], [("transport", transport)])
    w.family("regstate_hep_dropped_total", "counter", "HEP packets not used, by reason.")
    for reason, n in sorted(s.dropped.items()):
        w.sample("regstate_hep_dropped_total", n, [("reason", reason)])
    w.family("regstate_hep_kernel_drops", "gauge", "UDP datagrams the kernel dropped on this port.")
    w.sample("regstate_hep_kernel_drops", kernel_drops(listener.udp_port))
    sip = (
        ("requests", t.requests, "SIP requests seen (REGISTER and others)."),
        ("responses", t.responses, "SIP responses seen."),
        ("unparsable", t.unparsable, "SIP payloads the parser refused."),
        ("challenges", t.challenges, "Plain 401/407 challenges (no event)."),
        ("orphan_responses", t.orphan_responses, "Final responses whose REGISTER was not seen."),
        ("duplicate_finals", t.duplicate_finals, "Second final responses of a transaction."),
        ("retransmissions", t.retransmissions, "REGISTERs seen again with the same branch."),
        ("timeouts", t.timeouts, "REGISTERs without a final response within 32 s."),
    )
    for name, value, text in sip:
        w.family(f"regstate_hep_{name}_total", "counter", text)
        w.sample(f"regstate_hep_{name}_total", value)
    w.family("regstate_hep_transactions", "gauge", "REGISTER transactions being followed.")
    w.sample("regstate_hep_transactions", len(listener.tracker))
    w.family("regstate_hep_events_total", "counter", "Events handed to Kafka, by result.")
    for result, n in (
        ("acked", s.events_acked),
        ("failed", s.events_failed),
        ("dropped", s.events_dropped),
    ):
        w.sample("regstate_hep_events_total", n, [("result", result)])
    w.family("regstate_hep_forwarded_total", "counter", "Packets re-sent to REGSTATE_HEP_FORWARD.")
    w.sample("regstate_hep_forwarded_total", s.forwarded)
    w.family("regstate_hep_forward_errors_total", "counter", "Re-sends that failed.")
    w.sample("regstate_hep_forward_errors_total", s.forward_errors)
    w.family("regstate_hep_event_log_ready", "gauge", "1 while Kafka can take events.")
    w.sample("regstate_hep_event_log_ready", 1 if listener.event_log.ready else 0)
    return w.text()


async def start_web(listener: HepListener, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the endpoints on ``host:port`` (0: any free port); returns (runner, bound port)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            text=render_metrics(listener), content_type="text/plain", charset="utf-8"
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"status": "ok"}), content_type="application/json")

    async def readyz(request: web.Request) -> web.Response:
        ready = listener.event_log.ready
        return web.Response(
            body=orjson.dumps({"ready": ready}),
            status=200 if ready else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return await serve(app, host, port)
