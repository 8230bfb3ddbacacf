"""A SIP client for tests: :mod:`streams.sip.uac` plus a UDP socket with deadlines.

127.0.0.1 only; every receive has a deadline.
"""

from __future__ import annotations

import asyncio
import re

from streams.sip.message import response_status
from streams.sip.uac import Phone, Response, options, parse_response

__all__ = ["EXPIRES_RE", "Phone", "Response", "UdpClient", "options", "parse_response"]

EXPIRES_RE = re.compile(r";expires=(\d+)")


class UdpClient(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 with a queue of received responses."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def open(cls, server_port: int) -> UdpClient:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            cls, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", server_port)
        )
        proto.transport = transport
        proto.port = transport.get_extra_info("sockname")[1]
        return proto

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def recv(self, timeout: float = 5.0) -> Response:  # noqa: ASYNC109
        return parse_response(await asyncio.wait_for(self.queue.get(), timeout))

    async def request(self, data: bytes, timeout: float = 5.0) -> Response:  # noqa: ASYNC109
        self.send(data)
        return await self.recv(timeout)

    async def request_status(self, data: bytes, timeout: float = 5.0) -> int:  # noqa: ASYNC109
        """Send ``data``; the status of the answer, read from its status line only.

        For hostile requests: a 400 echoes the request's headers, over-long ones
        included, which the full response parser refuses."""
        self.send(data)
        return response_status(await asyncio.wait_for(self.queue.get(), timeout))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
