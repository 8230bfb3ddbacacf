"""HTTP security without a broker: the bearer token, HTTPS, and the Alertmanager webhook's
auth and several receivers (real aiohttp servers and clients on 127.0.0.1).

The worker's and the dialer view's data endpoints are checked against the real engine
path in tests/integration/test_kafka_secure.py.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from devkafka.layout import layout
from devkafka.secure import SecretsDir, ensure_material
from streams.alerting.runner import AlertingRunner, AlertingSettings
from streams.settings import Settings, SettingsError
from streams.webserver import HttpAuth
from tests.helpers import wait_until_async
from tests.unit.alerting.test_alerting_webhook import ALERT

pytestmark = pytest.mark.timeout(60)

TOKEN = "t0ken-for-the-tests-only-3f9a"  # noqa: S105 - a test fixture


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SecretsDir:
    """A CA and a certificate for 127.0.0.1 (the local Kafka's ``--secure`` material)."""
    material = SecretsDir(tmp_path_factory.mktemp("tls"))
    ensure_material(material, layout(1, secure=True))
    return material


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "http.token"
    path.write_text(TOKEN + "\n")
    return path


def test_the_token_check() -> None:
    auth = HttpAuth(TOKEN)
    assert auth.allows("/v1/aors/x", f"Bearer {TOKEN}")
    assert auth.allows("/v1/aors/x", f"bearer  {TOKEN}")
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "):
        assert not auth.allows("/v1/aors/x", header)
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert auth.allows(probe, None)
    assert HttpAuth(None).allows("/v1/aors/x", None)


def test_a_bad_token_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"REGSTATE_HTTP_TOKEN_FILE=.*cannot read"):
        HttpAuth.from_settings(Settings(http_token_file=str(tmp_path / "missing")))
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(SettingsError, match="shorter than 16"):
        HttpAuth.from_settings(Settings(http_token_file=str(short)))
    with pytest.raises(SettingsError, match="REGSTATE_HTTP_TLS_CERTFILE and"):
        Settings(http_tls_certfile="x").validate()


async def _status(url: str, context: ssl.SSLContext, token: str | None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(ssl=context)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers=headers) as resp,
    ):
        return resp.status


async def test_alerting_serves_https_and_alerts_need_the_token(
    tls: SecretsDir, token_file: Path
) -> None:
    settings = AlertingSettings(
        alerting_port=0,
        http_token_file=str(token_file),
        http_tls_certfile=str(tls.node_cert),
        http_tls_keyfile=str(tls.node_key),
    )
    runner = AlertingRunner(settings)
    await runner.start_http()
    try:
        base = f"https://127.0.0.1:{runner.port}"
        context = ssl.create_default_context(cafile=str(tls.ca))
        assert await _status(base + "/alerts", context, None) == 401
        assert await _status(base + "/alerts", context, "wrong-token-wrong-token") == 401
        assert await _status(base + "/alerts", context, TOKEN) == 200
        assert await _status(base + "/healthz", context, None) == 200
        assert await _status(base + "/metrics", context, None) == 200
        # Plain HTTP gets nowhere: the port speaks TLS only.
        with pytest.raises(aiohttp.ClientError):
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{runner.port}/healthz") as resp,
            ):
                await resp.read()
    finally:
        await runner.stop_http()


@pytest.fixture
async def receivers() -> AsyncIterator[list[tuple[str, list[str]]]]:
    """Two Alertmanager stand-ins (an HA pair); each records the Authorization it got."""
    out: list[tuple[str, list[str]]] = []
    runners = []
    for _ in range(2):
        seen: list[str] = []

        async def post(request: web.Request, seen: list[str] = seen) -> web.Response:
            seen.append(request.headers.get("Authorization", ""))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/api/v2/alerts", post)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        out.append((f"http://127.0.0.1:{port}", seen))
        runners.append(runner)
    yield out
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["basic", "bearer"])
async def test_every_alertmanager_gets_each_alert_with_its_auth(
    receivers: list[tuple[str, list[str]]], tmp_path: Path, kind: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    base = AlertingSettings(alerting_webhook_url=",".join(url for url, _ in receivers))
    if kind == "basic":
        settings = replace(
            base, alerting_webhook_username="am", alerting_webhook_password_file=str(secret)
        )
        expected = "Basic YW06czNjcjN0LXZhbHVl"  # base64("am:s3cr3t-value")
    else:
        settings = replace(base, alerting_webhook_token_file=str(secret))
        expected = "Bearer s3cr3t-value"
    settings.validate()
    runner = AlertingRunner(settings)
    assert len(runner.webhooks) == 2
    for webhook in runner.webhooks:
        webhook.start()
        webhook.submit(ALERT)
    try:
        await wait_until_async(lambda: all(seen for _, seen in receivers), 10, 0.01, "POSTs")
    finally:
        for webhook in runner.webhooks:
            await webhook.close()
    assert [seen[0] for _, seen in receivers] == [expected, expected]
    assert "s3cr3t" not in runner.render_metrics()


def test_webhook_auth_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="go together"):
        AlertingSettings(alerting_webhook_username="am").validate()
    with pytest.raises(SettingsError, match="choose one"):
        AlertingSettings(
            alerting_webhook_username="am",
            alerting_webhook_password_file="p",  # noqa: S106 - a path, never read
            alerting_webhook_token_file="t",  # noqa: S106 - a path, never read
        ).validate()
