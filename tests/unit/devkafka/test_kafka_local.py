"""devkafka.local without a broker: layout, configs, tools, protocol, processes."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkafka import local as kl
from devkafka import wire
from streams.cli import main
from tests.helpers import wait_until


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {k: v for k, v in pairs}


# ------------------------------------------------------------------ layout and config


def test_layouts_use_the_documented_loopback_ports() -> None:
    one = kl.layout(1)
    assert one.bootstrap == "127.0.0.1:9092"
    assert one.quorum_bootstrap == "127.0.0.1:9093"
    three = kl.layout(3)
    assert three.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert three.quorum_bootstrap == "127.0.0.1:19192,127.0.0.1:19193,127.0.0.1:19194"
    assert [s.node_id for s in three.specs] == [1, 2, 3]
    assert three.spec(2).broker_port == 19093
    with pytest.raises(ValueError, match="no node 4"):
        three.spec(4)
    with pytest.raises(ValueError, match="1 or 3"):
        kl.layout(2)


def test_single_node_config(tmp_path: Path) -> None:
    cluster = kl.layout(1)
    props = _props(kl.render_server_properties(cluster, cluster.spec(1), tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == props["listeners"]
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in props  # --standalone forbids it
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_three_node_config_differs_only_where_it_must(tmp_path: Path) -> None:
    cluster = kl.layout(3)
    configs = [
        _props(kl.render_server_properties(cluster, s, tmp_path / f"n{s.node_id}"))
        for s in cluster.specs
    ]
    for spec, props in zip(cluster.specs, configs, strict=True):
        assert props["node.id"] == str(spec.node_id)
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{spec.broker_port},CONTROLLER://127.0.0.1:{spec.controller_port}"
        )
        assert props["controller.quorum.bootstrap.servers"] == cluster.quorum_bootstrap
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["min.insync.replicas"] == "2"
    per_node = {"node.id", "listeners", "advertised.listeners", "log.dirs"}
    shared = [{k: v for k, v in p.items() if k not in per_node} for p in configs]
    assert shared[0] == shared[1] == shared[2]


def test_every_address_is_loopback(tmp_path: Path) -> None:
    for n in kl.NODE_COUNTS:
        cluster = kl.layout(n)
        for spec in cluster.specs:
            text = kl.render_server_properties(cluster, spec, tmp_path)
            hosts = {part.split(":")[0].lstrip("/") for part in text.split("//")[1:]}
            hosts |= {a.split(":")[0] for a in cluster.quorum_bootstrap.split(",")}
            assert hosts == {"127.0.0.1"}


def test_kafka_uuid_is_a_kafka_uuid() -> None:
    ids = {kl.kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    for text in ids:
        assert len(text) == 22
        assert not text.startswith("-")
        assert len(base64.urlsafe_b64decode(text + "==")) == 16


def test_initial_controllers_lists_every_controller() -> None:
    text = kl.initial_controllers(kl.layout(3), ["AAAAAAAAAAAAAAAAAAAAAA", "B" * 22, "C" * 22])
    assert text == (
        "1@127.0.0.1:19192:AAAAAAAAAAAAAAAAAAAAAA,"
        f"2@127.0.0.1:19193:{'B' * 22},3@127.0.0.1:19194:{'C' * 22}"
    )
    with pytest.raises(ValueError):
        kl.initial_controllers(kl.layout(3), ["x"])


def test_pom_pins_kafka_and_a_log4j2_backend() -> None:
    pom = kl.KAFKA_DIR / "pom.xml"
    assert kl.pom_kafka_version(pom) == "4.4.0"
    text = pom.read_text()
    for artifact in ("kafka_2.13", "log4j-api", "log4j-core", "log4j-slf4j2-impl"):
        assert f"<artifactId>{artifact}</artifactId>" in text
    assert (kl.KAFKA_DIR / "log4j2.xml").is_file()


# ------------------------------------------------------------------ tools


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("something else", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert kl.parse_java_major(output) == major


def test_missing_java_says_what_to_install() -> None:
    with pytest.raises(kl.ToolMissingError) as info:
        kl.find_java({"PATH": ""})
    assert info.value.exit_code == 2
    assert "java not found" in str(info.value)
    assert "openjdk-17-jre-headless" in str(info.value)


def test_java_home_wins(tmp_path: Path) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    assert kl.find_java({"PATH": "", "JAVA_HOME": str(tmp_path)}) == str(java)


def test_too_old_java_is_refused(tmp_path: Path) -> None:
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    java.chmod(0o755)
    with pytest.raises(kl.ToolMissingError, match="needs Java 17"):
        kl.check_java(str(java))


def test_missing_mvn_says_what_to_install() -> None:
    with pytest.raises(kl.ToolMissingError, match=r"mvn not found.*apt-get install maven"):
        kl.find_mvn({"PATH": ""})


def test_cached_classpath_needs_no_maven(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    jars = [tmp_path / "a.jar", tmp_path / "b.jar"]
    for jar in jars:
        jar.write_bytes(b"")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    root = tmp_path / "kafka"
    root.mkdir()
    (root / f"classpath-{digest}.txt").write_text(os.pathsep.join(map(str, jars)))
    env = {"PATH": ""}
    assert kl.resolve_classpath(root, pom, log=False, env=env) == os.pathsep.join(map(str, jars))
    # A jar gone from ~/.m2 invalidates the cache: Maven is needed (and missing here).
    jars[1].unlink()
    with pytest.raises(kl.ToolMissingError, match="mvn not found"):
        kl.resolve_classpath(root, pom, log=False, env=env)


def test_cli_up_without_java_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGSTATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert main(["kafka", "up"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "java not found: install a Java 17+" in err


def test_cli_status_of_an_empty_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGSTATE_DATA_DIR", str(tmp_path))
    assert main(["kafka", "status"]) == 1
    assert capsys.readouterr().out == "not running\n"
    assert main(["kafka", "down"]) == 0
    assert main(["kafka", "down", "--all"]) == 0


# ------------------------------------------------------------------ protocol


def _response(correlation_id: int, body: bytes) -> bytes:
    payload = struct.pack(">i", correlation_id) + body
    return struct.pack(">i", len(payload)) + payload


def _string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(s)) + s.encode()


def _metadata_v8_body(brokers: list[int], cluster_id: str, controller: int) -> bytes:
    body = struct.pack(">i", 0)  # throttle
    body += struct.pack(">i", len(brokers))
    for b in brokers:
        body += struct.pack(">i", b) + _string("127.0.0.1") + struct.pack(">i", 9000 + b)
        body += _string(None)
    body += _string(cluster_id) + struct.pack(">i", controller)
    body += struct.pack(">i", 0) + struct.pack(">i", 0)  # topics, cluster operations
    return body


def _read_request(conn: socket.socket) -> tuple[int, int, int]:
    (size,) = struct.unpack(">i", wire._recv_exact(conn, 4))
    data = wire._recv_exact(conn, size)
    key, version, correlation = struct.unpack(">hhi", data[:8])
    return key, version, correlation


@pytest.fixture
def fake_broker() -> Iterator[tuple[str, list[tuple[int, int]], dict[str, tuple[int, int]]]]:
    """A one-connection fake broker: ApiVersions v0, then Metadata v8."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[tuple[int, int]] = []
    config = {"metadata": (0, 13)}

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            key, version, corr = _read_request(conn)
            seen.append((key, version))
            low, high = config["metadata"]
            apis = [(18, 0, 4), (3, low, high)]
            body = struct.pack(">hi", 0, len(apis))
            body += b"".join(struct.pack(">hhh", *a) for a in apis)
            conn.sendall(_response(corr, body))
            try:
                key, version, corr = _read_request(conn)
            except kl.ProtocolError:
                return
            seen.append((key, version))
            conn.sendall(_response(corr, _metadata_v8_body([1, 2, 3], "abcdefghijklmnopqrstuv", 2)))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", seen, config
    finally:
        server.close()
        thread.join(5)


def test_probe_broker_reads_brokers_cluster_and_controller(
    fake_broker: tuple[str, list[tuple[int, int]], dict[str, tuple[int, int]]],
) -> None:
    address, seen, _ = fake_broker
    meta = kl.probe_broker(address, timeout=5)
    assert meta == kl.BrokerMetadata("abcdefghijklmnopqrstuv", 2, frozenset({1, 2, 3}))
    assert seen == [(kl.API_VERSIONS, 0), (kl.METADATA, 8)]


def test_probe_broker_refuses_unknown_metadata_versions(
    fake_broker: tuple[str, list[tuple[int, int]], dict[str, tuple[int, int]]],
) -> None:
    address, _, config = fake_broker
    config["metadata"] = (9, 13)
    with pytest.raises(kl.ProtocolError, match=r"Metadata v9\.\.v13 only"):
        kl.probe_broker(address, timeout=5)


@pytest.mark.parametrize("version", [1, 2, 3, 4, 8])
def test_metadata_request_and_response_per_version(version: int) -> None:
    body = kl.metadata_request_body(version)
    assert len(body) == 4 + (1 if version >= 4 else 0) + (2 if version >= 8 else 0)
    response = b""
    if version >= 3:
        response += struct.pack(">i", 0)
    response += struct.pack(">i", 1) + struct.pack(">i", 7) + _string("h") + struct.pack(">i", 1)
    response += _string("rack")
    if version >= 2:
        response += _string("cid")
    response += struct.pack(">i", 7) + struct.pack(">i", 0)
    meta = kl.parse_metadata_response(wire._Reader(response), version)
    assert meta == kl.BrokerMetadata("cid" if version >= 2 else None, 7, frozenset({7}))


def test_probe_of_a_closed_port_raises_oserror() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        kl.probe_broker(f"127.0.0.1:{port}", timeout=2)


def test_port_free() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
        assert not kl.port_free(port)


# ------------------------------------------------------------------ processes


def test_spawn_detached_runs_apart_from_the_caller(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    marker = f"regstate-test-{os.getpid()}-{id(tmp_path)}"
    command = [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(60)"]
    pid = kl.spawn_detached([*command, marker], log, tmp_path)
    try:
        assert kl.process_alive(pid, marker)
        assert not kl.process_alive(pid, "some-other-marker")
        # Not our child: re-parented, so no zombie or ResourceWarning can come from it here.
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        assert ppid != os.getpid()
        wait_until(lambda: "up" in log.read_text(), 10, message="child output in the log")
    finally:
        os.kill(pid, 15)
    wait_until(lambda: not kl.process_alive(pid, marker), 10, message="child gone")


def test_node_pid_ignores_stale_pid_files(tmp_path: Path) -> None:
    kafka = kl.LocalKafka(3, tmp_path, log=False)
    assert kafka.node_dir(2) == tmp_path.resolve() / "kafka" / "3-node" / "node-2"
    kafka.node_dir(2).mkdir(parents=True)
    (kafka.node_dir(2) / "kafka.pid").write_text(f"{os.getpid()}\n")  # alive, but not Kafka
    assert kafka.node_pid(2) is None
    (kafka.node_dir(2) / "kafka.pid").write_text("garbage\n")
    assert kafka.node_pid(2) is None
    status = kafka.status()
    assert not status.running and not status.any_alive
    with pytest.raises(ValueError):
        kafka.node_dir(4)


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
def test_classpath_argfile_is_read_by_java(tmp_path: Path) -> None:
    classpath = os.pathsep.join([str(tmp_path / "a dir" / "x.jar"), str(tmp_path / 'q"uote.jar')])
    argfile = kl.classpath_argfile(tmp_path, classpath)
    assert kl.classpath_argfile(tmp_path, classpath) == argfile  # same name, not rewritten
    done = subprocess.run(
        ["java", f"@{argfile}", "-XshowSettings:properties", "-version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # -XshowSettings prints one path entry per line: "java.class.path = a", then "    b".
    lines = done.stderr.splitlines()
    start = next(i for i, x in enumerate(lines) if "java.class.path = " in x)
    entries = [lines[start].split(" = ", 1)[1], lines[start + 1].strip()]
    assert os.pathsep.join(entries) == classpath
