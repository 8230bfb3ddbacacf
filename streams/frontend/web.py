"""The front-end's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

``/readyz`` is 200 only while the node's event log is healthy (connected, the
last record acknowledged, none stuck past the ack timeout; D88): a node that
cannot log answers every REGISTER with 503, so a load balancer or an SRV health
check should send phones elsewhere. ``/healthz`` is 200 while the process runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

import orjson
from aiohttp import web

from streams.aio import cancel_and_wait
from streams.frontend.eventlog import EventLog
from streams.frontend.node import FrontendNode
from streams.metrics import CONTENT_TYPE
from streams.metrics.frontend import FrontendMetrics
from streams.settings import Settings
from streams.webserver import serve

SYNC_INTERVAL_S: Final = 1.0
"""How often the node's plain counters are copied to the exported ones between scrapes."""


async def start_web(
    node: FrontendNode,
    event_log: EventLog,
    host: str,
    port: int,
    node_name: str | None = None,
    settings: Settings | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve the endpoints on ``host:port`` (0: any free port); returns (runner, bound port).

    ``node_name`` labels the metrics (the node's, not the process's, id)."""
    exported = FrontendMetrics(node, node_name or node.node_id)

    async def sync_loop() -> None:
        # Other processes' scrapes read what this one synced last (multiprocess mode).
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            exported.sync()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=exported.render(), headers={"Content-Type": CONTENT_TYPE})

    async def start_sync(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sync_loop())
        yield
        await cancel_and_wait(task)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"status": "ok"}), content_type="application/json")

    async def readyz(request: web.Request) -> web.Response:
        ready = event_log.healthy
        body = orjson.dumps({"ready": ready, "node": node.node_id})
        return web.Response(
            body=body, status=200 if ready else 503, content_type="application/json"
        )

    app = web.Application()
    app.cleanup_ctx.append(start_sync)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    # Only /metrics and the probes: no phone data here, but TLS and any later
    # data endpoint get the shared setup (streams/webserver.py).
    return await serve(app, host, port, settings)
