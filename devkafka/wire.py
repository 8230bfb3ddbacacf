"""The two Kafka requests the harness speaks itself (ApiVersions, Metadata), synchronously.

No Faust or aiokafka here, so a probe works from a CLI, a pytest fixture or a running
event loop alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
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

    def bytes_(self) -> bytes | None:
        size = self.int32()
        return None if size < 0 else self._take(size)

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


@dataclass(frozen=True)
class ProbeAuth:
    """How to reach a secured broker: TLS against ``cafile``, then SCRAM-SHA-512."""

    cafile: str
    username: str
    password: str


SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36


def _str16(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">h", len(data)) + data


def _sasl_step(sock: socket.socket, correlation_id: int, token: bytes) -> bytes:
    body = struct.pack(">i", len(token)) + token
    reader = _roundtrip(sock, _request(SASL_AUTHENTICATE, 0, correlation_id, body), correlation_id)
    error, message = reader.int16(), reader.string()
    if error != 0:
        raise ProtocolError(f"SASL authentication failed (error {error}): {message}")
    return reader.bytes_() or b""


def scram_login(sock: socket.socket, username: str, password: str) -> None:
    """SCRAM-SHA-512 (RFC 5802) over SaslHandshake v1 + SaslAuthenticate v0."""
    reader = _roundtrip(sock, _request(SASL_HANDSHAKE, 1, 10, _str16("SCRAM-SHA-512")), 10)
    if (error := reader.int16()) != 0:
        raise ProtocolError(f"SaslHandshake SCRAM-SHA-512 refused (error {error})")
    client_nonce = secrets.token_urlsafe(18)
    first_bare = f"n={username},r={client_nonce}"
    server_first = _sasl_step(sock, 11, ("n,," + first_bare).encode()).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
    if not nonce.startswith(client_nonce):
        raise ProtocolError("SCRAM: the server's nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha512")
    stored_key = hashlib.sha512(client_key).digest()
    without_proof = f"c=biws,r={nonce}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha512")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{without_proof},p={base64.b64encode(proof).decode()}"
    server_final = _sasl_step(sock, 12, final.encode()).decode()
    server_key = hmac.digest(salted, b"Server Key", "sha512")
    expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha512")).decode()
    if server_final != f"v={expected}":
        raise ProtocolError("SCRAM: the server's signature is wrong")


def probe_broker(
    address: str, timeout: float = 2.0, auth: ProbeAuth | None = None
) -> BrokerMetadata:
    """Ask the broker at ``host:port`` for cluster metadata.

    Raises OSError (refused, timeout) or ProtocolError; returns only what the broker
    itself answered, which in KRaft lists registered, unfenced brokers only.
    """
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
        raw.settimeout(timeout)
        if auth is None:
            return _metadata(raw)
        context = ssl.create_default_context(cafile=auth.cafile)
        with context.wrap_socket(raw, server_hostname=host) as sock:
            scram_login(sock, auth.username, auth.password)
            return _metadata(sock)


def _metadata(sock: socket.socket) -> BrokerMetadata:
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
