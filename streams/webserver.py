"""Every regstate HTTP server's one setup: auth, TLS, and learning the bound port.

The dialer view, the alerting consumer and each front-end process serve small
aiohttp apps through :func:`serve`; the worker's API goes through Faust's web
server and asks :class:`HttpAuth` the same question in each of its views.

Authentication (issue 15): when ``REGSTATE_HTTP_TOKEN_FILE`` is set, every path
but :data:`OPEN_PATHS` needs ``Authorization: Bearer <token>``; the rest answer
401. Open are the health probes (an orchestrator has no token) and ``/metrics``,
which carries counts, partitions and node ids but no AOR, contact, address or
user agent (D91). TLS: ``REGSTATE_HTTP_TLS_CERTFILE`` and ``..._KEYFILE``.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from streams.settings import Settings, SettingsError

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths served without a token: health probes and the phone-data-free metrics."""
CHALLENGE: Final = 'Bearer realm="regstate"'


@dataclass(frozen=True)
class HttpAuth:
    """The bearer token every data endpoint requires (None: no token asked)."""

    token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpAuth:
        """Read ``REGSTATE_HTTP_TOKEN_FILE`` once; SettingsError naming it if unusable."""
        if not settings.http_token_file:
            return cls(None)
        from streams.log.kafka_config import read_secret

        token = read_secret(settings.http_token_file, "REGSTATE_HTTP_TOKEN_FILE")
        if len(token) < 16:
            raise SettingsError(
                f"REGSTATE_HTTP_TOKEN_FILE={settings.http_token_file}: the token is shorter "
                "than 16 characters"
            )
        return cls(token)

    def allows(self, path: str, authorization: str | None) -> bool:
        """Whether a request for ``path`` with this Authorization header may proceed."""
        if self.token is None or path in OPEN_PATHS:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant time: the comparison must not tell how much of a guess was right.
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def client_headers(self) -> dict[str, str]:
        """The header a regstate client (worker forwarding a lookup) sends."""
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}


def unauthorized() -> web.Response:
    """The 401 every server answers (no detail: nothing to learn from it)."""
    return web.json_response(
        {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": CHALLENGE}
    )


def auth_middleware(auth: HttpAuth) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware answering 401 to requests :meth:`HttpAuth.allows` refuses."""

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not auth.allows(request.path, request.headers.get("Authorization")):
            return unauthorized()
        return await handler(request)

    return check


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Server TLS context from ``REGSTATE_HTTP_TLS_*``, or None for plain HTTP."""
    if not settings.http_tls_certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.http_tls_certfile, settings.http_tls_keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"REGSTATE_HTTP_TLS_CERTFILE={settings.http_tls_certfile} / "
            f"REGSTATE_HTTP_TLS_KEYFILE={settings.http_tls_keyfile}: cannot load ({exc})"
        ) from None
    return context


def scheme(settings: Settings) -> str:
    """``https`` when the servers speak TLS, else ``http`` (for URLs they print)."""
    return "https" if settings.http_tls_certfile else "http"


async def serve(
    app: web.Application, host: str, port: int, settings: Settings | None = None
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port``; return its runner (``cleanup()`` stops it) and the port.

    With ``settings``, the app gets the bearer-token check and, when configured, TLS.
    The port is the one bound, which differs from ``port`` only when that was 0.
    """
    context = None
    if settings is not None:
        app.middlewares.append(auth_middleware(HttpAuth.from_settings(settings)))
        context = tls_context(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    # aiohttp does not expose the bound address; its server object knows it.
    server: Any = site._server
    sockets = getattr(server, "sockets", None)
    return runner, int(sockets[0].getsockname()[1]) if sockets else port
