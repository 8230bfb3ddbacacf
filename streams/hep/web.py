"""The HEP listener's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``.

``/readyz`` is 200 only while the event log is connected: without it the
listener counts events as dropped.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from streams import metrics as m
from streams.hep.listener import HepListener
from streams.metrics.hep import HepMetrics
from streams.webserver import serve


def render_metrics(metrics: HepMetrics) -> str:
    """Prometheus text of one listener process."""
    return m.exposition(metrics.registry)


async def start_web(listener: HepListener, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the endpoints on ``host:port`` (0: any free port); returns (runner, bound port)."""

    metrics = listener.metrics

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(
            text=render_metrics(metrics), content_type="text/plain", charset="utf-8"
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
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return await serve(app, host, port)
