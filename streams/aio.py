"""Stopping asyncio pieces the same way everywhere: a background task, SIP/HEP listeners.

A stop must not raise because the thing it stops already failed or was never
started, and must not leave a task pending (asyncio warns, and the tests turn
warnings into errors).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

CLOSE_TIMEOUT_S = 2.0
"""How long a stop waits for a TCP server's connections to close."""


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def close_listeners(
    udp: asyncio.BaseTransport | None, tcp: asyncio.AbstractServer | None
) -> None:
    """Close a UDP endpoint and a TCP server, waiting a little for open connections."""
    if udp is not None:
        udp.close()
    if tcp is not None:
        tcp.close()
        # A connection stuck in a slow write must not hold the stop forever.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tcp.wait_closed(), CLOSE_TIMEOUT_S)
