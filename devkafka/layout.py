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

    @property
    def name(self) -> str:
        """Directory name under ``<data_dir>/kafka/``."""
        return f"{self.nodes}-node"

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


def layout(nodes: int) -> ClusterLayout:
    """The layout of ``nodes`` (1 or 3) nodes; ValueError for any other count."""
    if nodes == 1:
        return ClusterLayout(1, (NodeSpec(1, 9092, 9093),))
    if nodes == 3:
        return ClusterLayout(3, tuple(NodeSpec(i + 1, 19092 + i, 19192 + i) for i in range(3)))
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


def render_server_properties(cluster: ClusterLayout, node: NodeSpec, log_dir: Path) -> str:
    """The ``server.properties`` of one node; pure, so it is unit-tested."""
    n = cluster.nodes
    lines = [
        "# Written by regstate kafka up (devkafka/local.py); rewritten at every start.",
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        f"listeners=PLAINTEXT://{node.broker_address},CONTROLLER://{node.controller_address}",
        f"advertised.listeners=PLAINTEXT://{node.broker_address},"
        f"CONTROLLER://{node.controller_address}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
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
