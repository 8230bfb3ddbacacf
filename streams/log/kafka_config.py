"""The one place every Kafka client's connection settings come from (issue 15).

Every aiokafka producer, consumer and admin client of regstate, and the worker's
Faust app, take their bootstrap servers, security protocol, SASL login and TLS
context from here, built from :class:`streams.settings.Settings`:

* :func:`client_config` -> keyword arguments for ``AIOKafkaProducer`` /
  ``AIOKafkaConsumer`` / ``AIOKafkaAdminClient``;
* :func:`faust_broker_options` -> ``broker`` and ``broker_credentials`` of a Faust app;
* :func:`explain_failure` -> when a client could not connect, one connection attempt
  of our own that says which ``REGSTATE_KAFKA_*`` setting to fix (aiokafka itself
  only says "Unable to bootstrap").

The SASL password is read from ``REGSTATE_KAFKA_SASL_PASSWORD_FILE`` when a
client is built; it is never an argument, an environment value or a log line.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from streams.settings import Settings, SettingsError


class KafkaAccessError(RuntimeError):
    """Kafka refused or could not be reached; the message names the setting to fix."""


def read_secret(path: str, setting: str) -> str:
    """The first line of the file ``path``; SettingsError naming ``setting`` if unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{setting}={path}: cannot read it ({exc.strerror})") from None
    value = text.splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise SettingsError(f"{setting}={path}: the file is empty")
    return value


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol.startswith("SASL_")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the SSL protocols (server verified against the CA file), else None."""
    if not uses_tls(settings):
        return None
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"REGSTATE_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile}: not a readable PEM CA "
            f"file ({exc})"
        ) from None
    if settings.kafka_ssl_certfile:
        try:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"REGSTATE_KAFKA_SSL_CERTFILE={settings.kafka_ssl_certfile} / "
                f"REGSTATE_KAFKA_SSL_KEYFILE={settings.kafka_ssl_keyfile}: cannot load ({exc})"
            ) from None
    return context


def security_config(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keyword arguments (no bootstrap, no client id)."""
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    if uses_sasl(settings):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = read_secret(
            settings.kafka_sasl_password_file, "REGSTATE_KAFKA_SASL_PASSWORD_FILE"
        )
    return config


def client_config(settings: Settings, client_id: str | None = None) -> dict[str, Any]:
    """Keyword arguments every aiokafka client of regstate starts from."""
    config: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers}
    if client_id is not None:
        config["client_id"] = client_id
    config.update(security_config(settings))
    return config


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` of the worker's Faust app."""
    import faust  # the worker's dependency; the other clients never import it

    servers = [f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",") if s.strip()]
    options: dict[str, Any] = {"broker": servers}
    context = ssl_context(settings)
    if uses_sasl(settings):
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=read_secret(
                settings.kafka_sasl_password_file, "REGSTATE_KAFKA_SASL_PASSWORD_FILE"
            ),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def _first_broker(settings: Settings) -> tuple[str, int]:
    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host, int(port)


async def explain_failure(settings: Settings, timeout_s: float = 10.0) -> str:
    """Connect once to the first bootstrap server as configured; say what is wrong.

    Returns a sentence naming the ``REGSTATE_*`` setting to fix, or ``""`` when the
    connection and login succeed (then the failure was something else).
    """
    from aiokafka.conn import create_conn  # type: ignore[import-untyped]
    from aiokafka.errors import (  # type: ignore[import-untyped]
        KafkaConnectionError,
        KafkaError,
        UnsupportedSaslMechanismError,
    )

    try:
        config = security_config(settings)
    except SettingsError as exc:
        return str(exc)
    host, port = _first_broker(settings)
    protocol = settings.kafka_security_protocol
    where = f"Kafka at {host}:{port}"
    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **config),
            timeout_s,
        )
    except ssl.SSLCertVerificationError as exc:
        return (
            f"{where}: its TLS certificate is not trusted ({exc.verify_message}): set "
            "REGSTATE_KAFKA_SSL_CAFILE to the CA that signed the brokers' certificates"
        )
    except ssl.SSLError as exc:
        return (
            f"{where}: TLS handshake failed ({exc.reason}): check "
            f"REGSTATE_KAFKA_SECURITY_PROTOCOL={protocol} (does this listener speak TLS?)"
        )
    except UnsupportedSaslMechanismError as exc:
        return f"{where}: {exc}: set REGSTATE_KAFKA_SASL_MECHANISM to one the broker enables"
    except KafkaConnectionError as exc:
        if "authenticat" in str(exc).lower():
            return _login_refused(where, settings)
        return _protocol_mismatch(where, protocol, exc)
    except (TimeoutError, KafkaError, OSError) as exc:
        text = f"{type(exc).__name__}: {exc}"
        if "authenticat" in text.lower() or "sasl" in text.lower():
            return _login_refused(where, settings)
        return _protocol_mismatch(where, protocol, exc)
    conn.close()
    return ""


def _login_refused(where: str, settings: Settings) -> str:
    return (
        f"{where}: SASL login of {settings.kafka_sasl_username!r} refused: check "
        "REGSTATE_KAFKA_SASL_USERNAME and the password in REGSTATE_KAFKA_SASL_PASSWORD_FILE "
        f"(mechanism REGSTATE_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism})"
    )


def _protocol_mismatch(where: str, protocol: str, exc: BaseException) -> str:
    return (
        f"{where}: no Kafka answer over {protocol} ({type(exc).__name__}: {exc}): is "
        f"REGSTATE_KAFKA_SECURITY_PROTOCOL={protocol} what this listener speaks, and "
        "REGSTATE_BOOTSTRAP_SERVERS the right address?"
    )


async def describe_failure(settings: Settings, exc: BaseException) -> str:
    """``exc`` of a Kafka client, with the setting to fix when the cause is access."""
    from aiokafka.errors import KafkaConnectionError

    base = f"Kafka at {settings.bootstrap_servers}: {type(exc).__name__}: {exc}"
    if isinstance(exc, KafkaConnectionError | OSError | asyncio.TimeoutError):
        explained = await explain_failure(settings)
        if explained:
            return explained
    return base


def failure_message(settings: Settings, exc: BaseException) -> str:
    """:func:`describe_failure` for a command's error path (outside any event loop)."""
    return asyncio.run(describe_failure(settings, exc))
