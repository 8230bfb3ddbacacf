"""Serving an aiohttp app on a port, and learning which port it got (0: any free one).

The dialer view, the alerting consumer and each front-end process serve their
own small HTTP APIs this way; the worker's goes through Faust's web server.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port``; return its runner (``cleanup()`` stops it) and the port.

    The port is the one bound, which differs from ``port`` only when that was 0.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    # aiohttp does not expose the bound address; its server object knows it.
    server: Any = site._server
    sockets = getattr(server, "sockets", None)
    return runner, int(sockets[0].getsockname()[1]) if sockets else port
