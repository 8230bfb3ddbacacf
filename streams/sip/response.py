"""Rendering SIP responses to a parsed request (RFC 3261 section 8.2.6)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from email.utils import formatdate
from typing import Final

from streams.sip.message import SipRequest

REASONS: Final[dict[int, str]] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    420: "Bad Extension",
    423: "Interval Too Brief",
    483: "Too Many Hops",
    500: "Server Internal Error",
    503: "Service Unavailable",
}
SERVER: Final = "regstate-frontend/0.1"
ALLOW: Final = "REGISTER, OPTIONS"


def http_date(now_ms: int) -> str:
    """RFC 1123 date in GMT, as the Date header of a 200 to REGISTER wants it (section 20.17)."""
    return formatdate(now_ms / 1000, usegmt=True)


def render_response(
    request: SipRequest,
    status: int,
    source: tuple[str, int],
    headers: Sequence[tuple[str, str]] = (),
    reason: str | None = None,
) -> bytes:
    """The response bytes: Vias (the top one with ``received``/``rport`` for ``source``),
    From, To (a tag added when absent), Call-ID, CSeq, ``headers``, Server and
    Content-Length 0. The reason phrase is cut to one safe line."""
    phrase = (reason or REASONS.get(status, "Unknown")).replace("\r", " ").replace("\n", " ")
    lines = [f"SIP/2.0 {status} {phrase[:120]}"]
    lines.append(f"Via: {request.top_via.with_source(*source).render()}")
    lines += [f"Via: {v.render()}" for v in request.vias[1:]]
    lines.append(f"From: {request.header('from')}")
    to = request.header("to") or ""
    if not request.to.has_param("tag") and status != 100:
        to += f";tag={secrets.token_hex(6)}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {request.call_id}")
    lines.append(f"CSeq: {request.cseq} {request.method}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Server: {SERVER}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
