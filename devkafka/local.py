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

This module imports neither Faust nor aiokafka: it speaks the two Kafka requests it
needs (ApiVersions, Metadata) itself, synchronously, so it works from a CLI, a
pytest fixture or a running event loop alike.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.settings import Settings

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout this harness belongs to; it is never installed from the wheel."""
KAFKA_DIR = REPO_ROOT / "kafka"
"""Holds ``pom.xml`` and ``log4j2.xml``."""

NODE_COUNTS = (1, 3)
MIN_JAVA = 17
"""Kafka 4.x brokers need Java 17."""

JVM_OPTIONS: tuple[str, ...] = (
    # Small heap: up to four nodes (1-node + 3-node) share a 2-core, 24 GiB machine.
    "-Xms128m",
    "-Xmx512m",
    # The GC flags of Kafka's own kafka-run-class.sh.
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    # A node that runs out of memory should die visibly rather than limp on.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
FORMAT_JVM_OPTIONS: tuple[str, ...] = ("-Xmx256m", "-Djava.awt.headless=true")

JAVA_MISSING = (
    "java not found: install a Java {min}+ JDK or JRE "
    "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless), or set JAVA_HOME"
)
MVN_MISSING = (
    "mvn not found: install Apache Maven (Debian/Ubuntu: apt-get install maven); "
    "it fetches the Kafka jars from Maven Central once"
)


class KafkaLocalError(RuntimeError):
    """The local Kafka could not be brought to the asked state.

    ``exit_code`` is what the CLI exits with; ``detail`` (possibly empty) is extra
    diagnostic text, such as the tail of a node's log.
    """

    exit_code = 1

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class ToolMissingError(KafkaLocalError):
    """``java`` or ``mvn`` is missing or too old; the message says what to install."""

    exit_code = 2


class KafkaStartError(KafkaLocalError):
    """A node did not start, died, or did not answer before the deadline."""


# --------------------------------------------------------------------------- layout


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


# --------------------------------------------------------------------------- tools


def find_java(env: dict[str, str] | None = None) -> str:
    """Path of ``java`` (``$JAVA_HOME/bin/java`` first); ToolMissingError if none."""
    source = os.environ if env is None else env
    java_home = source.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java", path=source.get("PATH"))
    if found is None:
        raise ToolMissingError(JAVA_MISSING.format(min=MIN_JAVA))
    return found


def find_mvn(env: dict[str, str] | None = None) -> str:
    """Path of ``mvn``; ToolMissingError if none."""
    source = os.environ if env is None else env
    found = shutil.which("mvn", path=source.get("PATH"))
    if found is None:
        raise ToolMissingError(MVN_MISSING)
    return found


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output (``"1.8.0_x"`` is 8), or None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def check_java(java: str) -> None:
    """ToolMissingError unless ``java`` runs and is at least Java 17."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, java found on PATH
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissingError(f"{java} -version failed ({exc}): " + JAVA_MISSING) from exc
    major = parse_java_major(done.stderr + done.stdout)
    if major is None or major < MIN_JAVA:
        found = (done.stderr or done.stdout).strip().splitlines()[:1]
        raise ToolMissingError(
            f"Kafka 4 needs Java {MIN_JAVA}+, {java} is {found[0] if found else 'unknown'}: "
            + JAVA_MISSING.format(min=MIN_JAVA).removeprefix("java not found: ")
        )


# --------------------------------------------------------------------------- protocol


class ProtocolError(Exception):
    """A broker answered something this client cannot parse."""


@dataclass(frozen=True)
class BrokerMetadata:
    """What one broker's Metadata response says about the cluster."""

    cluster_id: str | None
    controller_id: int
    broker_ids: frozenset[int]


class _Reader:
    """Big-endian reader over one Kafka response."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise ProtocolError("response too short")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def int16(self) -> int:
        value: int = struct.unpack(">h", self._take(2))[0]
        return value

    def int32(self) -> int:
        value: int = struct.unpack(">i", self._take(4))[0]
        return value

    def string(self) -> str | None:
        size = self.int16()
        return None if size < 0 else self._take(size).decode("utf-8")


API_VERSIONS = 18
METADATA = 3
# Non-flexible Metadata versions this client can encode; Kafka 4.x serves v0..v13.
_METADATA_VERSIONS = range(8, 0, -1)


def _request(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    client_id = b"regstate-kafka-local"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ProtocolError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def _roundtrip(sock: socket.socket, request: bytes, correlation_id: int) -> _Reader:
    sock.sendall(request)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if not 4 <= size <= 16 * 1024 * 1024:
        raise ProtocolError(f"implausible response size {size}")
    reader = _Reader(_recv_exact(sock, size))
    if reader.int32() != correlation_id:
        raise ProtocolError("correlation id mismatch")
    return reader


def metadata_request_body(version: int) -> bytes:
    """Body of a Metadata request for no topic (brokers and controller only)."""
    body = struct.pack(">i", 0)  # topics: empty array means "none" from v1 on
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation
    if version >= 8:
        body += b"\x00\x00"  # include cluster / topic authorized operations
    return body


def parse_metadata_response(reader: _Reader, version: int) -> BrokerMetadata:
    """Parse the brokers, cluster id and controller of a Metadata v1..v8 response."""
    if version >= 3:
        reader.int32()  # throttle_time_ms
    broker_ids: set[int] = set()
    for _ in range(reader.int32()):
        broker_ids.add(reader.int32())
        reader.string()  # host
        reader.int32()  # port
        reader.string()  # rack
    cluster_id = reader.string() if version >= 2 else None
    controller_id = reader.int32()
    return BrokerMetadata(cluster_id, controller_id, frozenset(broker_ids))


def probe_broker(address: str, timeout: float = 2.0) -> BrokerMetadata:
    """Ask the broker at ``host:port`` for cluster metadata.

    Raises OSError (refused, timeout) or ProtocolError; returns only what the broker
    itself answered, which in KRaft lists registered, unfenced brokers only.
    """
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        reader = _roundtrip(sock, _request(API_VERSIONS, 0, 1, b""), 1)
        error = reader.int16()
        if error != 0:
            raise ProtocolError(f"ApiVersions error code {error}")
        supported: dict[int, tuple[int, int]] = {}
        for _ in range(reader.int32()):
            key, low, high = reader.int16(), reader.int16(), reader.int16()
            supported[key] = (low, high)
        low, high = supported.get(METADATA, (0, -1))
        version = next((v for v in _METADATA_VERSIONS if low <= v <= high), None)
        if version is None:
            raise ProtocolError(f"broker serves Metadata v{low}..v{high} only")
        reader = _roundtrip(sock, _request(METADATA, version, 2, metadata_request_body(version)), 2)
        return parse_metadata_response(reader, version)


def port_free(port: int) -> bool:
    """True if 127.0.0.1:``port`` can be listened on now (as a JVM would, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- processes


def process_alive(pid: int, marker: str | None = None) -> bool:
    """True if ``pid`` runs, is no zombie, and (when given) has ``marker`` in its command line.

    The marker (the node's server.properties path) guards against a recycled pid.
    """
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        state = stat.rpartition(")")[2].split()[:1]
        if state == ["Z"]:
            return False
        return marker is None or marker in cmdline
    if sys.platform.startswith("linux"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spawn_detached(command: Sequence[str], log_path: Path, cwd: Path) -> int:
    """Start ``command`` in its own session, output appended to ``log_path``; return its pid.

    A shell backgrounds the command and exits at once, so the command is re-parented
    to init: it outlives the CLI, and no Popen object stays behind in a long-lived
    caller (pytest) to warn "subprocess is still running" or leave a zombie.
    """
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    done = subprocess.run(  # noqa: S603 - argv list, no shell interpolation of arguments
        ["/bin/sh", "-c", script, "sh", str(log_path), *command],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        start_new_session=True,
    )
    return int(done.stdout.strip())


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or ``""`` if it does not exist."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock: serializes up/down of one layout across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- classpath


def resolve_classpath(
    kafka_root: Path, pom: Path, *, log: bool = True, env: dict[str, str] | None = None
) -> str:
    """The Kafka runtime classpath, from the cache or from Maven.

    The cache file is ``kafka_root/classpath-<pom sha256 prefix>.txt``; it is used only
    if every jar it lists still exists (``~/.m2`` may have been wiped).
    """
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cache = kafka_root / f"classpath-{digest}.txt"
    with file_lock(kafka_root / "classpath.lock"):
        cached = _read_classpath(cache)
        if cached is not None:
            return cached
        mvn = find_mvn(env)
        if log:
            print(
                f"regstate: resolving Kafka {pom_kafka_version(pom)} jars with Maven "
                "(about 70 MB into ~/.m2, downloaded once)",
                file=sys.stderr,
            )
        tmp = cache.with_suffix(".tmp")
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={tmp}",
            "-Dmdep.includeScope=runtime",
        ]
        try:
            done = subprocess.run(  # noqa: S603 - argv list
                command, capture_output=True, text=True, timeout=900, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaLocalError("mvn dependency:build-classpath timed out") from exc
        if done.returncode != 0 or not tmp.exists():
            raise KafkaLocalError(
                f"mvn dependency:build-classpath failed (exit {done.returncode})",
                detail="\n".join((done.stdout + done.stderr).splitlines()[-40:]),
            )
        os.replace(tmp, cache)
        resolved = _read_classpath(cache)
        if resolved is None:
            raise KafkaLocalError(f"Maven wrote an empty or broken classpath to {cache}")
        return resolved


def classpath_argfile(kafka_root: Path, classpath: str) -> Path:
    """A java ``@argfile`` holding ``-cp <classpath>``; returns its path.

    Keeps the 4 KB classpath out of the command line, so ``ps`` shows which node a
    JVM is. Named by the classpath's hash, written atomically: concurrent callers agree.
    """
    digest = hashlib.sha256(classpath.encode()).hexdigest()[:16]
    path = kafka_root / f"classpath-{digest}.args"
    if not path.exists():
        # Inside double quotes an argfile treats backslash as an escape character.
        quoted = classpath.replace("\\", "\\\\").replace('"', '\\"')
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(f'-cp "{quoted}"\n')
        os.replace(tmp, path)
    return path


def _read_classpath(cache: Path) -> str | None:
    try:
        text = cache.read_text().strip()
    except OSError:
        return None
    jars = [j for j in text.split(os.pathsep) if j]
    if not jars or not all(Path(j).is_file() for j in jars):
        return None
    return os.pathsep.join(jars)


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class NodeStatus:
    """One node as seen now: its process and what its broker answered."""

    node_id: int
    pid: int | None
    """The pid of a live node process, else None."""
    answering: bool
    """Its broker answered Metadata with this cluster's id."""
    broker_ids: frozenset[int]
    """Brokers that its Metadata response listed (empty if not answering)."""


@dataclass(frozen=True)
class ClusterStatus:
    """A layout as seen now."""

    nodes: tuple[NodeStatus, ...]
    expected: int

    @property
    def running(self) -> bool:
        """Every node alive, answering, and seeing every broker."""
        return len(self.nodes) == self.expected and all(
            n.pid is not None and n.answering and len(n.broker_ids) == self.expected
            for n in self.nodes
        )

    @property
    def any_alive(self) -> bool:
        return any(n.pid is not None for n in self.nodes)

    @property
    def answering_ids(self) -> list[int]:
        return [n.node_id for n in self.nodes if n.answering]


class LocalKafka:
    """A 1-node or 3-node local Kafka whose state lives in ``<data_dir>/kafka/``.

    Methods that change state take a per-layout file lock, so concurrent callers
    (two test sessions, a CLI and a fixture) do not start a node twice.
    """

    def __init__(
        self,
        nodes: int = 1,
        data_dir: Path | str | None = None,
        *,
        kafka_dir: Path = KAFKA_DIR,
        log: bool = True,
    ) -> None:
        self.layout = layout(nodes)
        base = Path(data_dir if data_dir is not None else dev_data_dir())
        self.kafka_root = base.resolve() / "kafka"
        self.cluster_dir = self.kafka_root / self.layout.name
        self.pom = kafka_dir / "pom.xml"
        self.log4j_config = kafka_dir / "log4j2.xml"
        self._log = log

    # ----------------------------------------------------------------- paths

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers of this layout (whether or not it runs)."""
        return self.layout.bootstrap

    def node_dir(self, node_id: int) -> Path:
        self.layout.spec(node_id)
        return self.cluster_dir / f"node-{node_id}"

    def _props(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def _pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.pid"

    def _data(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "data"

    @property
    def _cluster_id_file(self) -> Path:
        return self.cluster_dir / "cluster.id"

    @property
    def _controllers_file(self) -> Path:
        return self.cluster_dir / "initial-controllers"

    def _say(self, message: str) -> None:
        if self._log:
            print(f"regstate: {message}", file=sys.stderr)

    # ----------------------------------------------------------------- inspection

    def node_pid(self, node_id: int) -> int | None:
        """The pid of node ``node_id`` if its process is alive, else None."""
        try:
            pid = int(self._pid_file(node_id).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid, str(self._props(node_id))) else None

    def node_rss_bytes(self, node_id: int) -> int | None:
        """Resident memory of a live node (Linux), else None."""
        pid = self.node_pid(node_id)
        if pid is None:
            return None
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def cluster_id(self) -> str | None:
        """The id this layout was formatted with, or None before the first ``up``."""
        try:
            return self._cluster_id_file.read_text().strip() or None
        except OSError:
            return None

    def status(self, probe_timeout: float = 2.0) -> ClusterStatus:
        """Each node's process and broker, probed now."""
        cluster_id = self.cluster_id()
        result = []
        for spec in self.layout.specs:
            pid = self.node_pid(spec.node_id)
            answering, brokers = False, frozenset[int]()
            if pid is not None:
                try:
                    meta = probe_broker(spec.broker_address, probe_timeout)
                except (OSError, ProtocolError):
                    pass
                else:
                    if meta.cluster_id == cluster_id:
                        answering, brokers = True, meta.broker_ids
            result.append(NodeStatus(spec.node_id, pid, answering, brokers))
        return ClusterStatus(tuple(result), self.layout.nodes)

    def is_running(self) -> bool:
        """Every node alive and every broker answering with all brokers registered."""
        return self.status().running

    # ----------------------------------------------------------------- up

    def up(self, timeout: float = 60.0) -> str:
        """Start whatever nodes are down, wait until all answer, return the bootstrap.

        Reuses a running cluster. Raises ToolMissingError (no java/mvn) or
        KafkaStartError (a port taken by another process, a node died, or the deadline
        passed; ``detail`` holds the log tails).
        """
        with file_lock(self.kafka_root / f"{self.layout.name}.lock"):
            if self.is_running():
                return self.bootstrap
            deadline = time.monotonic() + timeout
            self._start_nodes([s.node_id for s in self.layout.specs])
            self._wait_answering([s.node_id for s in self.layout.specs], deadline)
            return self.bootstrap

    def start_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Start node ``node_id`` if it is down and wait until its broker answers.

        On return the node's broker answers and lists every broker of the layout
        (so it is registered and unfenced); its replicas may still be catching up.
        """
        self.layout.spec(node_id)
        with file_lock(self.kafka_root / f"{self.layout.name}.lock"):
            deadline = time.monotonic() + timeout
            self._start_nodes([node_id])
            self._wait_answering([node_id], deadline)

    def _start_nodes(self, node_ids: Sequence[int]) -> None:
        down = [i for i in node_ids if self.node_pid(i) is None]
        if not down:
            return
        # Tools first: "install java" is the more useful message on a fresh machine.
        java = find_java()
        check_java(java)
        for i in down:
            spec = self.layout.spec(i)
            for port in (spec.broker_port, spec.controller_port):
                if not port_free(port):
                    raise KafkaStartError(
                        f"{HOST}:{port} (node {i} of the {self.layout.nodes}-node Kafka) is in "
                        "use by another process: stop it, or `regstate kafka down` with the "
                        "REGSTATE_DATA_DIR that started it"
                    )
        classpath = resolve_classpath(self.kafka_root, self.pom, log=self._log)
        classpath_args = classpath_argfile(self.kafka_root, classpath)
        self._ensure_formatted(java, classpath_args)
        self._say(
            f"starting {self.layout.nodes}-node Kafka {pom_kafka_version(self.pom)} "
            f"(node {', '.join(map(str, down))}) in {self.cluster_dir}"
        )
        for i in down:
            node_dir = self.node_dir(i)
            self._write_props(i)
            command = [
                java,
                *JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={self.log4j_config}",
                f"-Dkafka.node.dir={node_dir}",
                f"@{classpath_args}",
                "kafka.Kafka",
                str(self._props(i)),
            ]
            pid = spawn_detached(command, node_dir / "console.log", node_dir)
            self._pid_file(i).write_text(f"{pid}\n")

    def _write_props(self, node_id: int) -> None:
        node_dir = self.node_dir(node_id)
        node_dir.mkdir(parents=True, exist_ok=True)
        text = render_server_properties(self.layout, self.layout.spec(node_id), self._data(node_id))
        self._props(node_id).write_text(text)

    def _ensure_formatted(self, java: str, classpath_args: Path) -> None:
        """Format every node's data dir that has no meta.properties, with one cluster id."""
        todo = [
            s.node_id
            for s in self.layout.specs
            if not (self._data(s.node_id) / "meta.properties").exists()
        ]
        if not todo:
            return
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = self.cluster_id()
        if cluster_id is None:
            cluster_id = kafka_uuid()
            self._cluster_id_file.write_text(cluster_id + "\n")
        if self.layout.nodes == 1:
            quorum = ["--standalone"]
        else:
            # The same --initial-controllers on every node (directory ids included):
            # written once so a node formatted later joins the same quorum.
            if not self._controllers_file.exists():
                ids = [kafka_uuid() for _ in self.layout.specs]
                self._controllers_file.write_text(initial_controllers(self.layout, ids) + "\n")
            quorum = ["--initial-controllers", self._controllers_file.read_text().strip()]
        # The nodes are formatted in parallel: each format is a JVM start (about 1.5 s).
        running: list[tuple[int, subprocess.Popen[str]]] = []
        for i in todo:
            self._write_props(i)
            node_dir = self.node_dir(i)
            command = [
                java,
                *FORMAT_JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={self.log4j_config}",
                f"-Dkafka.node.dir={node_dir}",
                f"@{classpath_args}",
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(self._props(i)),
                "--cluster-id",
                cluster_id,
                "--ignore-formatted",
                *quorum,
            ]
            proc = subprocess.Popen(  # noqa: S603 - argv list
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            running.append((i, proc))
        failures = []
        for i, proc in running:
            try:
                output, _ = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            if proc.returncode != 0:
                failures.append(f"--- node {i} (exit {proc.returncode}) ---\n{output[-3000:]}")
        if failures:
            raise KafkaStartError("formatting Kafka storage failed", detail="\n".join(failures))

    def _wait_answering(self, node_ids: Sequence[int], deadline: float) -> None:
        cluster_id = self.cluster_id()
        waiting = list(node_ids)
        while True:
            for i in list(waiting):
                if self.node_pid(i) is None:
                    self._pid_file(i).unlink(missing_ok=True)
                    raise KafkaStartError(
                        f"Kafka node {i} exited during start-up", detail=self._log_tails([i])
                    )
                try:
                    meta = probe_broker(self.layout.spec(i).broker_address, 1.0)
                except (OSError, ProtocolError):
                    continue
                if meta.cluster_id == cluster_id and len(meta.broker_ids) == self.layout.nodes:
                    waiting.remove(i)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise KafkaStartError(
                    f"Kafka node(s) {', '.join(map(str, waiting))} did not answer in time",
                    detail=self._log_tails(waiting),
                )
            time.sleep(0.2)

    def _log_tails(self, node_ids: Sequence[int]) -> str:
        parts = []
        for i in node_ids:
            for name in ("server.log", "console.log"):
                path = self.node_dir(i) / name
                text = tail(path)
                if text:
                    parts.append(f"--- {path} (last lines) ---\n{text}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- down

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """SIGTERM node ``node_id`` (a controlled shutdown), SIGKILL it after ``timeout``.

        On return its process is gone and its pid file removed.
        """
        self.layout.spec(node_id)
        with file_lock(self.kafka_root / f"{self.layout.name}.lock"):
            self._stop([node_id], signal.SIGTERM, timeout)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (a crash); on return its process is gone."""
        self.layout.spec(node_id)
        with file_lock(self.kafka_root / f"{self.layout.name}.lock"):
            self._stop([node_id], signal.SIGKILL, 10.0)

    def down(self, purge: bool = False, timeout: float = 30.0) -> list[int]:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout``); return the ids stopped.

        Data stays unless ``purge``, which deletes this layout's directory (the cached
        classpath and the other layout stay).
        """
        with file_lock(self.kafka_root / f"{self.layout.name}.lock"):
            ids = [s.node_id for s in self.layout.specs]
            stopped = self._stop(ids, signal.SIGTERM, timeout)
            if purge and self.cluster_dir.exists():
                shutil.rmtree(self.cluster_dir)
            return stopped

    def _stop(self, node_ids: Sequence[int], sig: signal.Signals, timeout: float) -> list[int]:
        pids = {i: pid for i in node_ids if (pid := self.node_pid(i)) is not None}
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while any(self._alive(i, p) for i, p in pids.items()) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftovers = [p for i, p in pids.items() if self._alive(i, p)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10.0
        while any(self._alive(i, p) for i, p in pids.items()):
            if time.monotonic() > kill_deadline:
                raise KafkaLocalError(f"could not stop pid(s) {sorted(pids.values())}")
            time.sleep(0.05)
        if leftovers:
            self._say(f"Kafka pid(s) {leftovers} ignored SIGTERM for {timeout:.0f} s: killed")
        for i in node_ids:
            self._pid_file(i).unlink(missing_ok=True)
        return sorted(pids)

    def _alive(self, node_id: int, pid: int) -> bool:
        return process_alive(pid, str(self._props(node_id)))


# --------------------------------------------------------------------------- functions


def ensure_kafka(nodes: int = 1, data_dir: Path | str | None = None, timeout: float = 60.0) -> str:
    """Start (or reuse) the local ``nodes``-node Kafka; return its bootstrap servers.

    ``data_dir`` defaults to ``Settings.from_env().data_dir``. See :meth:`LocalKafka.up`.
    """
    return LocalKafka(nodes, data_dir).up(timeout)


def dev_data_dir() -> str:
    """``REGSTATE_DATA_DIR`` when set, else ``<checkout>/.regstate``.

    A development broker belongs to its checkout (the tests, ``./dev`` and a
    developer typing ``regstate kafka up`` must find the same one), so this one
    default differs from :attr:`Settings.data_dir`'s user data directory.
    """
    if "REGSTATE_DATA_DIR" in os.environ:
        return Settings.from_env().data_dir
    return str(REPO_ROOT / ".regstate")
