"""LocalKafka: bring a layout up, probe it, stop it (see devkafka/local.py for the contract)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devkafka.classpath import classpath_argfile, resolve_classpath
from devkafka.errors import KafkaLocalError, KafkaStartError
from devkafka.layout import (
    HOST,
    KAFKA_DIR,
    REPO_ROOT,
    initial_controllers,
    kafka_uuid,
    layout,
    pom_kafka_version,
    render_server_properties,
)
from devkafka.processes import file_lock, port_free, process_alive, spawn_detached, tail
from devkafka.secure import (
    SecretsDir,
    broker_security,
    ensure_material,
    principal,
    scram_arguments,
    write_argfile,
)
from devkafka.tools import check_java, find_java
from devkafka.wire import ProbeAuth, ProtocolError, probe_broker
from streams.settings import Settings

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
        secure: bool = False,
    ) -> None:
        self.layout = layout(nodes, secure)
        base = Path(data_dir if data_dir is not None else dev_data_dir())
        self.kafka_root = base.resolve() / "kafka"
        self.cluster_dir = self.kafka_root / self.layout.name
        self.pom = kafka_dir / "pom.xml"
        self.log4j_config = kafka_dir / "log4j2.xml"
        self._log = log
        self.secrets = SecretsDir(self.cluster_dir / "secrets")
        """The CA, node certificate and per-role SCRAM credentials of a secured layout."""

    # ----------------------------------------------------------------- paths

    def probe_auth(self) -> ProbeAuth | None:
        """The admin's TLS + SCRAM login for probing a secured layout (None: plaintext)."""
        if not self.layout.secure:
            return None
        return ProbeAuth(str(self.secrets.ca), principal("admin"), self.secrets.password("admin"))

    def client_env(self, role: str = "admin") -> str:
        """``export REGSTATE_...`` lines of ``role``'s client settings (secured layouts)."""
        return self.secrets.env_file(role).read_text()

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

    def _auth(self) -> ProbeAuth | None:
        try:
            return self.probe_auth()
        except OSError:
            return None  # secrets not made yet: the probe fails, as for a node that is down

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
                    meta = probe_broker(spec.broker_address, probe_timeout, self._auth())
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
        security = broker_security(self.secrets) if self.layout.secure else None
        spec = self.layout.spec(node_id)
        text = render_server_properties(self.layout, spec, self._data(node_id), security)
        # A secured node's file holds its private key and the admin's password.
        fd = os.open(self._props(node_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

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
        users: list[str] = []
        if self.layout.secure:
            ensure_material(self.secrets, self.layout)
            users = scram_arguments(self.secrets)
        # The nodes are formatted in parallel: each format is a JVM start (about 1.5 s).
        running: list[tuple[int, subprocess.Popen[str]]] = []
        argfiles: list[Path] = []
        for i in todo:
            self._write_props(i)
            node_dir = self.node_dir(i)
            tool = [
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(self._props(i)),
                "--cluster-id",
                cluster_id,
                "--ignore-formatted",
                *quorum,
                *users,
            ]
            if users:
                # SCRAM passwords go through a private @argfile, never the process title.
                argfile = node_dir / "format.args"
                write_argfile(argfile, tool)
                argfiles.append(argfile)
                tool = [f"@{argfile}"]
            command = [
                java,
                *FORMAT_JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={self.log4j_config}",
                f"-Dkafka.node.dir={node_dir}",
                f"@{classpath_args}",
                *tool,
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
        for argfile in argfiles:
            argfile.unlink(missing_ok=True)
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
                    meta = probe_broker(self.layout.spec(i).broker_address, 1.0, self._auth())
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
