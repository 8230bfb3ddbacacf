"""The HEP listener: UDP and TCP sockets feeding the pure decoder, filter and tracker.

Thin on purpose: every decision is in :mod:`streams.hep.decode`,
:mod:`streams.hep.dedup` and :mod:`streams.hep.tracker`. Per packet, in order:
forward it unchanged (``REGSTATE_HEP_FORWARD``), decode it, check the auth key,
drop non-SIP payloads, drop a duplicated capture, put it back in capture-time
order (a 250 ms buffer, D57), then let the tracker turn it into events, which
go to regstate.registrations through the front-end's event log (one producer
setup, key = canonical AOR, acks=all, idempotence).

The tracker's clock is the capture time of the packets; once a second the
wall clock moves it on too, so that a REGISTER nobody answers times out even
when the mirror falls silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from schemas import RegistrationEvent
from streams.aio import cancel_and_wait, close_listeners
from streams.clock import now_us
from streams.frontend.eventlog import EventLog
from streams.hep.decode import PROTOCOL_SIP, HepError, decode, packet_length
from streams.hep.dedup import DuplicateFilter
from streams.hep.reorder import CaptureOrder
from streams.hep.tracker import Tracker

log = logging.getLogger("regstate.hep")

TICK_S: Final = 1.0
MAX_PENDING: Final = 200_000
"""Events handed to the event log and not yet settled; beyond this (Kafka down for
long) new events are dropped and counted rather than held without bound."""
_READ_CHUNK: Final = 64 * 1024
RCVBUF_BYTES: Final = 8 * 1024 * 1024
"""Asked-for UDP receive buffer: a mirror comes in bursts (the kernel caps it at
net.core.rmem_max)."""


@dataclass
class ListenerStats:
    """Counters for /metrics and the tests."""

    packets: Counter[str] = field(default_factory=Counter)
    """Packets received, by transport (udp, tcp)."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Packets not used, by reason (hep2, not_hep3, truncated, auth, not_sip, duplicate...)."""
    forwarded: int = 0
    forward_errors: int = 0
    events_acked: int = 0
    events_failed: int = 0
    events_dropped: int = 0
    tcp_connections: int = 0


class HepListener:
    """One listener process; :meth:`start` binds UDP and TCP on ``host:port`` (0: any free)."""

    def __init__(
        self,
        tracker: Tracker,
        event_log: EventLog,
        *,
        auth_key: str = "",
        forward: tuple[str, int] | None = None,
        dedup: DuplicateFilter | None = None,
        clock_us: Callable[[], int] = now_us,
    ) -> None:
        self.tracker = tracker
        self.event_log = event_log
        self.auth_key = auth_key.encode() if auth_key else None
        self.forward = forward
        self.dedup = dedup or DuplicateFilter()
        self.order = CaptureOrder()
        self.clock_us = clock_us
        self.stats = ListenerStats()
        self.udp_port = 0
        self.tcp_port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._forward_sock: socket.socket | None = None
        self._tick: asyncio.Task[None] | None = None
        self._latest_us = 0
        self._pending = 0
        from streams.metrics.hep import HepMetrics

        self.metrics = HepMetrics(self)

    async def start(self, host: str, port: int) -> None:
        """Bind UDP, then TCP on the same port (port 0: retried until both are free)."""
        loop = asyncio.get_running_loop()
        for attempt in range(20):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port)
            )
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            udp_port = transport.get_extra_info("sockname")[1]
            try:
                server = await asyncio.start_server(self._serve_tcp, host, udp_port)
            except OSError:
                transport.close()
                if port != 0 or attempt == 19:
                    raise
                continue
            break
        self._udp, self._tcp = transport, server
        self.udp_port = udp_port
        self.tcp_port = server.sockets[0].getsockname()[1]
        if self.forward is not None:
            family = socket.AF_INET6 if ":" in self.forward[0] else socket.AF_INET
            self._forward_sock = socket.socket(family, socket.SOCK_DGRAM)
            self._forward_sock.setblocking(False)
        self._tick = asyncio.create_task(self._ticker(), name="hep-tick")

    async def stop(self) -> None:
        """Close the sockets and the ticker."""
        await close_listeners(self._udp, self._tcp)
        await cancel_and_wait(self._tick)
        if self._forward_sock is not None:
            self._forward_sock.close()

    # ---- packets

    def packet(self, data: bytes, transport: str) -> None:
        """One HEP packet (a UDP datagram, or one framed from a TCP stream)."""
        self.stats.packets[transport] += 1
        if self._forward_sock is not None and self.forward is not None:
            try:
                self._forward_sock.sendto(data, self.forward)
                self.stats.forwarded += 1
            except OSError:
                self.stats.forward_errors += 1
        try:
            hep = decode(data)
        except HepError as exc:
            self.stats.dropped[exc.reason] += 1
            return
        if self.auth_key is not None and not hmac.compare_digest(
            hep.auth_key or b"", self.auth_key
        ):
            self.stats.dropped["auth"] += 1
            return
        if hep.proto_type != PROTOCOL_SIP:
            self.stats.dropped["not_sip"] += 1
            return
        if self.dedup.seen(hep):
            self.stats.dropped["duplicate"] += 1
            return
        self._latest_us = max(self._latest_us, hep.capture_us)
        for ready in self.order.push(hep):
            for event in self.tracker.observe(ready):
                self._publish(event)

    def _publish(self, event: RegistrationEvent) -> None:
        if self._pending >= MAX_PENDING or not self.event_log.ready:
            self.stats.events_dropped += 1
            return
        self._pending += 1
        captured_s = event.ts / 1000
        self.event_log.append(event).add_done_callback(lambda f: self._settled(f, captured_s))

    def _settled(self, future: asyncio.Future[None], captured_s: float) -> None:
        self._pending -= 1
        if future.cancelled() or future.exception() is not None:
            self.stats.events_failed += 1
        else:
            self.stats.events_acked += 1
            lag = self.clock_us() / 1e6 - captured_s
            self.metrics.capture_to_event.observe(max(0.0, lag))

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self) -> None:
        """Release what waited long enough for reordering, then time out what is due."""
        now = max(self._latest_us, self.clock_us())
        for ready in self.order.release(now - self.order.window_us):
            for event in self.tracker.observe(ready):
                self._publish(event)
        for event in self.tracker.expire(now - self.order.window_us):
            self._publish(event)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.tcp_connections += 1
        buffer = bytearray()
        try:
            while chunk := await reader.read(_READ_CHUNK):
                buffer += chunk
                while (n := packet_length(buffer)) > 0:
                    self.packet(bytes(buffer[:n]), "tcp")
                    del buffer[:n]
        except HepError as exc:
            # A stream out of step cannot be resynchronized: close it, the agent reconnects.
            self.stats.dropped[exc.reason] += 1
            log.info("closing HEP TCP connection: %s", exc)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: HepListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.listener.packet(data, "udp")

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


def parse_forward(spec: str) -> tuple[str, int] | None:
    """``REGSTATE_HEP_FORWARD`` (``host:port``, ``[v6]:port``) as an address; ValueError if bad."""
    if not spec:
        return None
    host, sep, port = spec.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{spec!r} is not host:port")
    return host, int(port)


def kernel_drops(port: int) -> int:
    """UDP datagrams the kernel dropped on sockets bound to ``port`` (``/proc/net/udp*``).

    The ``drops`` column counts receive-buffer overflows: packets that never
    reached the listener. Linux only; 0 where the files do not exist.
    """
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 12 and int(cols[1].rsplit(":", 1)[1], 16) == port:
                total += int(cols[12])
    return total
