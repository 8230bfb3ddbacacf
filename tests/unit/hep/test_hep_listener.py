"""The HEP listener on loopback sockets: UDP and TCP, auth key, forward, counters, /metrics."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from schemas import RegistrationEvent
from streams.hep.decode import encode
from streams.hep.listener import HepListener, kernel_drops, parse_forward
from streams.hep.tracker import Tracker
from streams.hep.web import render_metrics
from tests.helpers import wait_until_async
from tests.unit.hep_builders import PBX, capture, register, response

PHONE = ("203.0.113.9", 41000)
T0 = 1_796_130_000_000_000


class FakeLog:
    """An EventLog that acknowledges at once."""

    ready = True
    healthy = True

    def __init__(self) -> None:
        self.events: list[RegistrationEvent] = []

    def append(self, event: RegistrationEvent) -> asyncio.Future[None]:
        self.events.append(event)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def login(user: str, auth_key: bytes | None = None) -> list[bytes]:
    r = register(user, branch=f"z9hG4bK{user}", cseq=1)
    ok = response(r, 200, contacts=[f"<sip:{user}@10.0.0.5:5062>;expires=60"])
    return [
        encode(capture(r, PHONE, PBX, T0)._replace(auth_key=auth_key)),
        encode(capture(ok, PBX, PHONE, T0 + 900)._replace(auth_key=auth_key)),
    ]


@pytest.fixture
async def forward_sink() -> AsyncIterator[socket.socket]:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    yield sink
    sink.close()


async def test_udp_and_tcp_feed_one_tracker_and_everything_is_forwarded(
    forward_sink: socket.socket,
) -> None:
    log = FakeLog()
    listener = HepListener(
        Tracker(), log, auth_key="k3y", forward=("127.0.0.1", forward_sink.getsockname()[1])
    )
    await listener.start("127.0.0.1", 0)
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for packet in login("1001", b"k3y"):
            udp.sendto(packet, ("127.0.0.1", listener.udp_port))
        udp.sendto(login("1001", b"k3y")[1], ("127.0.0.1", listener.udp_port))  # duplicate
        udp.sendto(login("1002", b"wrong")[0], ("127.0.0.1", listener.udp_port))
        udp.sendto(login("1003")[0], ("127.0.0.1", listener.udp_port))
        rtp = capture(b"\x80\x00", PHONE, PBX, T0)._replace(proto_type=4, auth_key=b"k3y")
        udp.sendto(encode(rtp), ("127.0.0.1", listener.udp_port))
        udp.sendto(bytes([2, 31]) + bytes(40), ("127.0.0.1", listener.udp_port))
        udp.close()
        _, writer = await asyncio.open_connection("127.0.0.1", listener.tcp_port)
        stream = b"".join(login("2001", b"k3y"))
        writer.write(stream[:10])
        await writer.drain()
        writer.write(stream[10:])
        await writer.drain()
        await wait_until_async(lambda: len(log.events) == 2, 10)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")  # out of step: the connection is closed
        await writer.drain()
        await wait_until_async(lambda: listener.stats.dropped["not_hep3"] == 1, 10)
        await wait_until_async(lambda: listener.stats.packets["udp"] == 7, 10)
        await wait_until_async(lambda: listener.stats.forwarded == 9, 10)
        writer.close()
    finally:
        await listener.stop()
    assert sorted(e.aor for e in log.events) == ["sip:1001@pbx.example", "sip:2001@pbx.example"]
    s = listener.stats
    assert s.packets == {"udp": 7, "tcp": 2}
    assert dict(s.dropped) == {
        "duplicate": 1, "auth": 2, "not_sip": 1, "hep2": 1, "not_hep3": 1,
    }  # fmt: skip
    assert s.events_acked == 2 and s.forwarded == 9
    forwarded = []
    while True:
        try:
            forwarded.append(forward_sink.recv(65535))
        except BlockingIOError:
            break
    assert forwarded[:2] == login("1001", b"k3y")  # unchanged bytes, in order
    text = render_metrics(listener.metrics)
    assert 'regstate_hep_dropped_total{reason="auth"} 2' in text
    assert 'regstate_hep_events_total{result="acked"} 2' in text
    assert 'regstate_hep_packets_total{transport="tcp"} 2' in text


def test_forward_addresses() -> None:
    assert parse_forward("") is None
    assert parse_forward("homer.example:9060") == ("homer.example", 9060)
    assert parse_forward("[2001:db8::1]:9060") == ("2001:db8::1", 9060)
    for bad in ("homer", "homer:x", ":9060", "homer:70000"):
        with pytest.raises(ValueError):
            parse_forward(bad)


def test_kernel_drops_reads_proc_for_a_bound_port() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        assert kernel_drops(s.getsockname()[1]) == 0
    finally:
        s.close()
