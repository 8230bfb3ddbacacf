"""The local Apache Kafka (KRaft) of regstate, for development, tests and CI.

Kafka comes from Maven Central jars (``kafka/pom.xml``), not from a release tarball:
``mvn dependency:build-classpath`` resolves them into ``~/.m2`` once, and the
resulting classpath is cached under ``<data_dir>/kafka/``, keyed by the pom's hash.

Two layouts exist, and both may run at the same time (their ports differ):

=========  ==========================================  ===========================
nodes      brokers (bootstrap)                          controllers
=========  ==========================================  ===========================
1          127.0.0.1:9092                               127.0.0.1:9093
3          127.0.0.1:19092, 127.0.0.1:19093, :19094     127.0.0.1:19192 .. :19194
=========  ==========================================  ===========================

Every node is a combined broker + controller (``process.roles=broker,controller``)
with Kafka node id 1, or 1..3, and lives in ``<data_dir>/kafka/<n>-node/node-<id>/``:
``server.properties``, ``data/`` (log.dirs), ``server.log`` (log4j2, INFO),
``console.log`` (the JVM's stdout/stderr) and ``kafka.pid`` while it runs.

Guarantees:

* :meth:`LocalKafka.up` returns only once every broker of the layout answers a
  Metadata request listing all the layout's brokers under this data dir's cluster
  id; otherwise it raises :class:`KafkaStartError` carrying the nodes' log tails.
* ``up`` is idempotent: a running, answering cluster is reused, and nodes that are
  down (e.g. after :meth:`LocalKafka.kill_node`) are started again.
* Nodes run detached (their own session): they outlive the calling process and
  are stopped only by ``down``/``stop_node``/``kill_node``.
* Only 127.0.0.1 is ever listened on or connected to.

This module is the harness's front door; the work is split along its seams:
``layout`` (ports, directories, server.properties), ``tools`` (java, mvn),
``wire`` (the ApiVersions/Metadata probe, no aiokafka), ``processes`` (detached
nodes, pids, locks), ``classpath`` (Maven, cached), ``cluster`` (LocalKafka),
``secure`` (CA, certificates, SCRAM users of ``--secure``) and ``acls`` (the
least-privilege ACLs per role).
"""

from __future__ import annotations

from devkafka.classpath import classpath_argfile, resolve_classpath
from devkafka.cluster import (
    FORMAT_JVM_OPTIONS,
    JVM_OPTIONS,
    ClusterStatus,
    LocalKafka,
    NodeStatus,
    dev_data_dir,
    ensure_kafka,
)
from devkafka.errors import KafkaLocalError, KafkaStartError, ToolMissingError
from devkafka.layout import (
    HOST,
    KAFKA_DIR,
    NODE_COUNTS,
    REPO_ROOT,
    ClusterLayout,
    NodeSpec,
    initial_controllers,
    kafka_uuid,
    layout,
    pom_kafka_version,
    render_server_properties,
)
from devkafka.processes import file_lock, port_free, process_alive, spawn_detached, tail
from devkafka.tools import MIN_JAVA, check_java, find_java, find_mvn, parse_java_major
from devkafka.wire import (
    API_VERSIONS,
    METADATA,
    BrokerMetadata,
    ProtocolError,
    metadata_request_body,
    parse_metadata_response,
    probe_broker,
)

__all__ = [
    "API_VERSIONS",
    "FORMAT_JVM_OPTIONS",
    "HOST",
    "JVM_OPTIONS",
    "KAFKA_DIR",
    "METADATA",
    "MIN_JAVA",
    "NODE_COUNTS",
    "REPO_ROOT",
    "BrokerMetadata",
    "ClusterLayout",
    "ClusterStatus",
    "KafkaLocalError",
    "KafkaStartError",
    "LocalKafka",
    "NodeSpec",
    "NodeStatus",
    "ProtocolError",
    "ToolMissingError",
    "check_java",
    "classpath_argfile",
    "dev_data_dir",
    "ensure_kafka",
    "file_lock",
    "find_java",
    "find_mvn",
    "initial_controllers",
    "kafka_uuid",
    "layout",
    "metadata_request_body",
    "parse_java_major",
    "parse_metadata_response",
    "pom_kafka_version",
    "port_free",
    "probe_broker",
    "process_alive",
    "render_server_properties",
    "resolve_classpath",
    "spawn_detached",
    "tail",
]
