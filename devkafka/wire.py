"""The two Kafka requests the harness speaks itself (ApiVersions, Metadata), synchronously.

No Faust or aiokafka here, so a probe works from a CLI, a pytest fixture or a running
event loop alike.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass


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
