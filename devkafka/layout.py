"""Ports, directories and ``server.properties`` of the local Kafka layouts (pure)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout this harness belongs to; it is never installed from the wheel."""
KAFKA_DIR = REPO_ROOT / "kafka"
"""Holds ``pom.xml`` and ``log4j2.xml``."""

NODE_COUNTS = (1, 3)


@dataclass(frozen=True)
class NodeSpec:
    """One combined broker + controller node."""

    node_id: int
    broker_port: int
    controller_port: int

    @property
    def broker_address(self) -> str:
        return f"{HOST}:{self.broker_port}"

    @property
    def controller_address(self) -> str:
        return f"{HOST}:{self.controller_port}"


@dataclass(frozen=True)
class ClusterLayout:
    """The fixed ports and names of a 1-node or 3-node local cluster."""

    nodes: int
    specs: tuple[NodeSpec, ...]
    secure: bool = False
    """SASL_SSL brokers, mutual-TLS controllers, StandardAuthorizer (``up --secure``)."""

    @property
    def name(self) -> str:
        """Directory name under ``<data_dir>/kafka/``."""
        return f"secure-{self.nodes}-node" if self.secure else f"{self.nodes}-node"

    @property
    def bootstrap(self) -> str:
        """Comma-separated broker addresses, in node id order."""
        return ",".join(s.broker_address for s in self.specs)

    @property
    def quorum_bootstrap(self) -> str:
        """``controller.quorum.bootstrap.servers``: every controller address."""
        return ",".join(s.controller_address for s in self.specs)

    @property
    def min_insync_replicas(self) -> int:
        """2 on three nodes (one node may be down for acks=all writes), 1 on one."""
        return 2 if self.nodes >= 3 else 1

    def spec(self, node_id: int) -> NodeSpec:
        """The node with Kafka ``node.id`` ``node_id``; ValueError if there is none."""
        for s in self.specs:
            if s.node_id == node_id:
                return s
        ids = ", ".join(str(s.node_id) for s in self.specs)
        raise ValueError(f"the {self.nodes}-node Kafka has no node {node_id} (node ids: {ids})")


def layout(nodes: int, secure: bool = False) -> ClusterLayout:
    """The layout of ``nodes`` (1 or 3) nodes; ValueError for any other count.

    The secured layouts have ports of their own (29092/29093; 29192-29194 and
    29292-29294), so they run beside the plaintext ones.
    """
    if nodes == 1:
        base = (29092, 29093) if secure else (9092, 9093)
        return ClusterLayout(1, (NodeSpec(1, *base),), secure)
    if nodes == 3:
        broker, controller = (29192, 29292) if secure else (19092, 19192)
        specs = tuple(NodeSpec(i + 1, broker + i, controller + i) for i in range(3))
        return ClusterLayout(3, specs, secure)
    raise ValueError(f"nodes must be 1 or 3, not {nodes}")


def kafka_uuid() -> str:
    """A random Kafka Uuid as Kafka prints it: 22 url-safe base64 characters.

    Like Kafka's ``Uuid.randomUuid()``, never one starting with ``-`` (command-line
    tools would take it for an option).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class BrokerSecurity:
    """What a secured node's ``server.properties`` embeds (see devkafka/secure.py)."""

    key_pem: str
    """The node's unencrypted PKCS#8 private key."""
    cert_chain_pem: str
    """The node's certificate, then the CA's."""
    ca_pem: str
    """The CA certificate every node and client trusts."""
    admin_user: str
    admin_password: str
    """The super user the brokers authenticate to each other as (SCRAM)."""
    node_principal: str
    """CN of the node certificate: the controllers' mutual-TLS super user."""


def _properties_escape(text: str) -> str:
    """``text`` as one java.util.Properties value (newlines as ``\\n``)."""
    return text.strip().replace("\\", "\\\\").replace("\n", "\\n")


def security_properties(sec: BrokerSecurity) -> list[str]:
    """SASL_SSL for clients and brokers, mutual TLS for controllers, StandardAuthorizer."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{sec.admin_user}" password="{sec.admin_password}";'
    )
    return [
        "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        # The inter-broker client logs in as the admin; the server side needs an entry
        # per mechanism even though SCRAM's credentials live in the metadata log.
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
        f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={jaas}",
        # PEM inline (KIP-651): an unencrypted key needs no ssl.key.password.
        "ssl.keystore.type=PEM",
        f"ssl.keystore.key={_properties_escape(sec.key_pem)}",
        f"ssl.keystore.certificate.chain={_properties_escape(sec.cert_chain_pem)}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.certificates={_properties_escape(sec.ca_pem)}",
        # Controllers accept only nodes holding a certificate of this CA; the
        # certificate's CN becomes the principal (a super user below).
        "listener.name.controller.ssl.client.auth=required",
        "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{sec.admin_user};User:{sec.node_principal}",
        "allow.everyone.if.no.acl.found=false",
    ]


def render_server_properties(
    cluster: ClusterLayout,
    node: NodeSpec,
    log_dir: Path,
    security: BrokerSecurity | None = None,
) -> str:
    """The ``server.properties`` of one node; pure, so it is unit-tested.

    ``security`` is required by (and only used for) a secured layout.
    """
    n = cluster.nodes
    if cluster.secure != (security is not None):
        raise ValueError("a secured layout needs BrokerSecurity, a plaintext one none")
    broker, controller = ("SASL_SSL", "SSL") if cluster.secure else ("PLAINTEXT", "PLAINTEXT")
    lines = [
        "# Written by regstate kafka up (devkafka/); rewritten at every start.",
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        f"listeners={broker}://{node.broker_address},CONTROLLER://{node.controller_address}",
        f"advertised.listeners={broker}://{node.broker_address},"
        f"CONTROLLER://{node.controller_address}",
        f"listener.security.protocol.map={broker}:{broker},CONTROLLER:{controller}",
        f"inter.broker.listener.name={broker}",
        "controller.listener.names=CONTROLLER",
        # Dynamic quorum (KIP-853): formatted with --standalone or --initial-controllers.
        f"controller.quorum.bootstrap.servers={cluster.quorum_bootstrap}",
        f"log.dirs={log_dir}",
        # Topics are created on purpose (regstate topics ensure, Faust), never by a typo.
        "auto.create.topics.enable=false",
        "num.partitions=1",
        f"default.replication.factor={n}",
        f"min.insync.replicas={cluster.min_insync_replicas}",
        f"offsets.topic.replication.factor={n}",
        f"transaction.state.log.replication.factor={n}",
        f"transaction.state.log.min.isr={cluster.min_insync_replicas}",
        f"share.coordinator.state.topic.replication.factor={n}",
        f"share.coordinator.state.topic.min.isr={cluster.min_insync_replicas}",
        # Tests start consumer groups all the time: no 3 s wait for more members.
        "group.initial.rebalance.delay.ms=0",
        # Fewer threads and a smaller compaction buffer (default 128 MiB of heap)
        # keep a node within its 512 MiB heap on a 2-core machine.
        "num.network.threads=2",
        "num.io.threads=4",
        "log.cleaner.dedupe.buffer.size=33554432",
    ]
    if security is not None:
        lines += security_properties(security)
    return "\n".join(lines) + "\n"


def initial_controllers(cluster: ClusterLayout, directory_ids: Sequence[str]) -> str:
    """``--initial-controllers`` of the storage tool: ``id@host:port:directory-id,...``."""
    if len(directory_ids) != cluster.nodes:
        raise ValueError("one directory id per controller")
    return ",".join(
        f"{s.node_id}@{s.controller_address}:{d}"
        for s, d in zip(cluster.specs, directory_ids, strict=True)
    )


def pom_kafka_version(pom: Path) -> str:
    """The ``kafka.version`` property of the pom, or ``"?"``."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    return match.group(1) if match else "?"
