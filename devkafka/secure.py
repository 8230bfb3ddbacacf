"""The secrets of ``regstate kafka up --secure``: a CA, the node certificate, SCRAM users.

Everything lives in ``<cluster dir>/secrets/`` (mode 0700, files 0600), made once
with ``openssl`` before the first format and reused afterwards:

* ``ca.pem`` (clients' ``REGSTATE_KAFKA_SSL_CAFILE``) and ``ca.key``;
* ``node.pem`` / ``node.key``: one certificate for every node (all listen on
  127.0.0.1; SAN ``IP:127.0.0.1``, ``DNS:localhost``), CN ``regstate-node``, which
  the controllers' mutual TLS maps to the node super user;
* ``<role>.password`` and ``<role>.env`` for every role of :data:`ROLES`: the
  SCRAM-SHA-512 (and -256) user ``regstate-<role>``, created at format time.

Passwords never appear on a command line: the storage tool gets its
``--add-scram`` arguments from a java ``@argfile`` (0600) removed after use.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devkafka.errors import KafkaLocalError, ToolMissingError
from devkafka.layout import BrokerSecurity, ClusterLayout

ROLES = ("admin", "frontend", "worker", "dialer", "alerting", "analyst")
"""One principal per role (README "Kafka security"); ``admin`` is the super user."""
NODE_PRINCIPAL = "regstate-node"
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
OPENSSL_MISSING = "openssl not found: install it (Debian/Ubuntu: apt-get install openssl)"


def principal(role: str) -> str:
    """The SASL user name of ``role``."""
    return f"regstate-{role}"


@dataclass(frozen=True)
class SecretsDir:
    """Paths of one secured layout's secrets."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def node_cert(self) -> Path:
        return self.root / "node.pem"

    @property
    def node_key(self) -> Path:
        return self.root / "node.key"

    def password_file(self, role: str) -> Path:
        return self.root / f"{role}.password"

    def env_file(self, role: str) -> Path:
        return self.root / f"{role}.env"

    def password(self, role: str) -> str:
        return self.password_file(role).read_text().strip()


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _openssl(args: list[str], cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ToolMissingError(OPENSSL_MISSING)
    done = subprocess.run(  # noqa: S603 - argv list, fixed arguments
        [openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise KafkaLocalError(f"openssl {args[0]} failed", detail=done.stderr[-2000:])


def ensure_material(secrets_dir: SecretsDir, cluster: ClusterLayout) -> None:
    """Make the CA, the node certificate and every role's password, unless they exist."""
    root = secrets_dir.root
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    if not secrets_dir.ca.exists():
        _openssl(
            ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "ca.key"],
            root,
        )
        _openssl(
            [
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "825",
                "-subj",
                "/CN=regstate local Kafka CA",
                "-out",
                "ca.pem.tmp",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            root,
        )
        (root / "ca.pem.tmp").replace(secrets_dir.ca)
        (root / "node.pem").unlink(missing_ok=True)
    if not secrets_dir.node_cert.exists():
        _openssl(
            [
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "node.key",
            ],
            root,
        )
        _openssl(
            [
                "req",
                "-new",
                "-key",
                "node.key",
                "-subj",
                f"/CN={NODE_PRINCIPAL}",
                "-out",
                "node.csr",
            ],
            root,
        )
        (root / "node.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                "node.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "825",
                "-sha256",
                "-extfile",
                "node.ext",
                "-out",
                "node.pem.tmp",
            ],
            root,
        )
        (root / "node.pem.tmp").replace(secrets_dir.node_cert)
    for path in root.iterdir():
        path.chmod(0o600)
    for role in ROLES:
        if not secrets_dir.password_file(role).exists():
            _private(secrets_dir.password_file(role), secrets.token_urlsafe(24) + "\n")
        _private(secrets_dir.env_file(role), client_env(secrets_dir, cluster, role))


def client_env(secrets_dir: SecretsDir, cluster: ClusterLayout, role: str) -> str:
    """``export REGSTATE_...=...`` lines a shell can ``eval`` to act as ``role``."""
    values = {
        "REGSTATE_BOOTSTRAP_SERVERS": cluster.bootstrap,
        "REGSTATE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "REGSTATE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "REGSTATE_KAFKA_SASL_USERNAME": principal(role),
        "REGSTATE_KAFKA_SASL_PASSWORD_FILE": str(secrets_dir.password_file(role)),
        "REGSTATE_KAFKA_SSL_CAFILE": str(secrets_dir.ca),
    }
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


def broker_security(secrets_dir: SecretsDir) -> BrokerSecurity:
    """What each node's server.properties embeds."""
    ca = secrets_dir.ca.read_text()
    return BrokerSecurity(
        key_pem=secrets_dir.node_key.read_text(),
        cert_chain_pem=secrets_dir.node_cert.read_text().strip() + "\n" + ca,
        ca_pem=ca,
        admin_user=principal("admin"),
        admin_password=secrets_dir.password("admin"),
        node_principal=NODE_PRINCIPAL,
    )


def scram_arguments(secrets_dir: SecretsDir) -> list[str]:
    """``--add-scram`` arguments of the storage tool: every role, both mechanisms."""
    args: list[str] = []
    for role in ROLES:
        for mechanism in MECHANISMS:
            entry = f"{mechanism}=[name={principal(role)},password={secrets_dir.password(role)}]"
            args += ["--add-scram", entry]
    return args


def write_argfile(path: Path, args: list[str]) -> None:
    """A java ``@argfile`` (0600) holding ``args``, each double-quoted."""
    quoted = (a.replace("\\", "\\\\").replace('"', '\\"') for a in args)
    _private(path, "".join(f'"{a}"\n' for a in quoted))
