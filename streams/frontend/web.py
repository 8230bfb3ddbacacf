"""The front-end's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

``/readyz`` is 200 only while the node's event log is connected: a node that
cannot log answers every REGISTER with 503, so a load balancer or an SRV health
check should send phones elsewhere. ``/healthz`` is 200 while the process runs.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from streams.frontend.eventlog import EventLog
from streams.frontend.node import FrontendNode
from streams.metrics import PromText
from streams.webserver import serve


def render_metrics(node: FrontendNode) -> str:
    """Prometheus text of one node process."""
    s = node.stats
    own = [("node", node.node_id)]
    w = PromText()
    counters = (
        ("requests", s.received, "SIP requests received (after the source limit)."),
        ("malformed", s.malformed, "Requests refused by the parser (400 when answerable)."),
        ("retransmissions", s.retransmissions, "Resent requests answered from the cache."),
        ("absorbed", s.absorbed, "Resent requests dropped while the first was in progress."),
        ("expired", s.expired, "Granted bindings this node expired (expire events)."),
        ("flows_lost", s.flows_lost, "Outbound (RFC 5626) bindings whose TCP flow closed."),
        ("tcp_closed", s.tcp_closed, "TCP connections closed."),
        ("rate_limited", node.limiter.dropped, "Packets dropped by the per-source limit or a ban."),
        ("bans", node.limiter.bans, "Sources banned after repeated auth failures."),
    )
    for name, value, text in counters:
        w.family(f"regstate_frontend_{name}_total", "counter", text)
        w.sample(f"regstate_frontend_{name}_total", value, own)
    w.family("regstate_frontend_responses_total", "counter", "Final responses sent, by status.")
    for status, n in sorted(s.answered.items()):
        w.sample("regstate_frontend_responses_total", n, [*own, ("status", status)])
    w.family("regstate_frontend_events_total", "counter", "Events handed to Kafka, by result.")
    w.sample("regstate_frontend_events_total", s.events, [*own, ("result", "acked")])
    w.sample("regstate_frontend_events_total", s.event_failures, [*own, ("result", "failed")])
    w.family("regstate_frontend_bindings", "gauge", "Bindings this node granted and will expire.")
    w.sample("regstate_frontend_bindings", len(node.bindings), own)
    w.family("regstate_frontend_event_log_ready", "gauge", "1 while Kafka can take events.")
    w.sample("regstate_frontend_event_log_ready", 1 if node.event_log.ready else 0, own)
    return w.text()


async def start_web(
    node: FrontendNode, event_log: EventLog, host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve the endpoints on ``host:port`` (0: any free port); returns (runner, bound port)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=render_metrics(node), content_type="text/plain", charset="utf-8")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"status": "ok"}), content_type="application/json")

    async def readyz(request: web.Request) -> web.Response:
        ready = event_log.ready
        body = orjson.dumps({"ready": ready, "node": node.node_id})
        return web.Response(
            body=body, status=200 if ready else 503, content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return await serve(app, host, port)
