"""Kafka security without a broker: client settings, the secured layouts, the ACL table.

The secured broker itself is exercised in tests/integration/test_kafka_secure.py.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from devkafka.acls import role_acls
from devkafka.layout import BrokerSecurity, layout, render_server_properties
from devkafka.secure import ROLES, SecretsDir, client_env, ensure_material, scram_arguments
from streams.log.kafka_config import client_config, faust_broker_options
from streams.settings import Settings, SettingsError


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {k: v for k, v in pairs}


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> SecretsDir:
    secrets_dir = SecretsDir(tmp_path_factory.mktemp("secrets"))
    ensure_material(secrets_dir, layout(1, secure=True))
    return secrets_dir


def test_plaintext_is_the_default() -> None:
    config = client_config(Settings(), "c")
    assert config == {
        "bootstrap_servers": "127.0.0.1:9092",
        "client_id": "c",
        "security_protocol": "PLAINTEXT",
    }
    assert "broker_credentials" not in faust_broker_options(Settings())


def test_sasl_ssl_reads_the_password_file_and_trusts_the_ca(
    material: SecretsDir, tmp_path: Path
) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="regstate-worker",
        kafka_sasl_password_file=str(material.password_file("worker")),
        kafka_ssl_cafile=str(material.ca),
    )
    settings.validate()
    config = client_config(settings, "c")
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "regstate-worker"
    assert config["sasl_plain_password"] == material.password("worker")
    assert isinstance(config["ssl_context"], ssl.SSLContext)
    assert config["ssl_context"].verify_mode is ssl.CERT_REQUIRED
    creds = faust_broker_options(settings)["broker_credentials"]
    assert creds.protocol.value == "SASL_SSL" and creds.username == "regstate-worker"
    assert material.password("worker") not in repr(creds)
    missing = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="u",
        kafka_sasl_password_file=str(tmp_path / "nope"),
    )
    with pytest.raises(SettingsError, match=r"REGSTATE_KAFKA_SASL_PASSWORD_FILE=.*cannot read"):
        client_config(missing)
    bad_ca = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "nope"))
    with pytest.raises(SettingsError, match="REGSTATE_KAFKA_SSL_CAFILE"):
        client_config(bad_ca)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"REGSTATE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "REGSTATE_KAFKA_SECURITY_PROTOCOL='TLS'"),
        ({"REGSTATE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs REGSTATE_KAFKA_SASL_USERNAME"),
        (
            {
                "REGSTATE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "REGSTATE_KAFKA_SASL_MECHANISM": "GSSAPI",
            },
            "REGSTATE_KAFKA_SASL_MECHANISM='GSSAPI'",
        ),
        ({"REGSTATE_KAFKA_SSL_CERTFILE": "c.pem"}, "go together"),
    ],
)
def test_unusable_security_settings_are_named(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        Settings.from_env(env)


def test_secured_layouts_have_ports_of_their_own() -> None:
    used = {p for n in (1, 3) for s in layout(n).specs for p in (s.broker_port, s.controller_port)}
    for n in (1, 3):
        secure = layout(n, secure=True)
        assert secure.name == f"secure-{n}-node" and secure.nodes == n
        ports = {p for s in secure.specs for p in (s.broker_port, s.controller_port)}
        assert len(ports) == 2 * n and not ports & used
    assert layout(1, secure=True).bootstrap == "127.0.0.1:29092"


def test_secured_server_properties(material: SecretsDir, tmp_path: Path) -> None:
    cluster = layout(3, secure=True)
    sec = BrokerSecurity(
        key_pem=material.node_key.read_text(),
        cert_chain_pem=material.node_cert.read_text(),
        ca_pem=material.ca.read_text(),
        admin_user="regstate-admin",
        admin_password="pw-x",  # noqa: S106 - a test value
        node_principal="regstate-node",
    )
    props = _props(render_server_properties(cluster, cluster.specs[1], tmp_path, sec))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:29193,CONTROLLER://127.0.0.1:29293"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:regstate-admin;User:regstate-node"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    # One line each: java.util.Properties reads \n back as a newline.
    assert props["ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----\\n")
    assert "\n" not in props["ssl.truststore.certificates"]
    with pytest.raises(ValueError, match="BrokerSecurity"):
        render_server_properties(cluster, cluster.specs[0], tmp_path)
    with pytest.raises(ValueError, match="BrokerSecurity"):
        render_server_properties(layout(1), layout(1).specs[0], tmp_path, sec)


def test_material_is_private_and_env_files_hold_paths_only(material: SecretsDir) -> None:
    assert material.root.stat().st_mode & 0o777 == 0o700
    for path in material.root.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    for role in ROLES:
        text = client_env(material, layout(1, secure=True), role)
        assert f"REGSTATE_KAFKA_SASL_USERNAME=regstate-{role}\n" in text
        assert material.password(role) not in text
        assert len(material.password(role)) >= 24
    args = scram_arguments(material)
    assert args.count("--add-scram") == 2 * len(ROLES)


def test_acls_are_least_privilege() -> None:
    acls = role_acls(Settings(topic_prefix="p."))
    by_role: dict[str, set[tuple[str, str, str, str]]] = {}
    for a in acls:
        by_role.setdefault(a.principal, set()).add(
            (a.resource_type, a.pattern, a.name, a.operation)
        )
    assert set(by_role) == {f"User:regstate-{r}" for r in ROLES if r != "admin"}
    dialer = by_role["User:regstate-dialer"]
    assert dialer == {
        ("TOPIC", "LITERAL", "p.bindings", "READ"),
        ("TOPIC", "LITERAL", "p.binding-events", "READ"),
        ("TOPIC", "PREFIXED", "p.", "DESCRIBE"),
        ("TOPIC", "PREFIXED", "p.", "DESCRIBE_CONFIGS"),
    }
    frontend = by_role["User:regstate-frontend"]
    writes = {name for _, _, name, op in frontend if op in ("WRITE", "ALL", "CREATE")}
    assert writes == {"p.registrations"}
    analyst = by_role["User:regstate-analyst"]
    assert {op for *_, op in analyst} == {"READ", "DESCRIBE"}
    # Nobody but the worker writes bindings, and only on its own prefix does it get ALL.
    for principal, entries in by_role.items():
        for _, pattern, name, op in entries:
            if op in ("WRITE", "ALL") and name in ("p.bindings", "p.binding-events"):
                assert principal == "User:regstate-worker"
            if op == "ALL":
                assert (principal, pattern, name) == (
                    "User:regstate-worker",
                    "PREFIXED",
                    "p.engine-",
                )
