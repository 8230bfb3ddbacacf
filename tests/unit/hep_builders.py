"""SIP messages and HEP captures for the HEP tests (pure, no sockets)."""

from __future__ import annotations

from streams.hep.decode import AF_INET, PROTO_UDP, HepPacket

PBX = ("192.0.2.1", 5060)


def register(
    user: str,
    *,
    branch: str,
    cseq: int,
    call_id: str | None = None,
    contact: str | None = None,
    expires: int | None = 300,
    auth: bool = False,
    domain: str = "pbx.example",
) -> bytes:
    contact_line = contact or f"<sip:{user}@10.0.0.5:5062>"
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        f"Via: SIP/2.0/UDP 10.0.0.5:5062;rport;branch={branch}",
        f"From: <sip:{user}@{domain}>;tag=t{user}",
        f"To: <sip:{user}@{domain}>",
        f"Call-ID: {call_id or f'call-{user}'}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: {contact_line}",
        "User-Agent: test-phone",
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if auth:
        lines.append(f'Authorization: Digest username="{user}", realm="r", nonce="n", uri="x"')
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(
    request: bytes,
    status: int,
    *,
    contacts: list[str] | None = None,
    expires: int | None = None,
    extra: list[str] | None = None,
) -> bytes:
    """A response to ``request``, echoing Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6)."""
    head = request.decode().split("\r\n")
    keep = [h for h in head if h.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
    lines = [f"SIP/2.0 {status} Whatever", *keep]
    lines += [f"Contact: {c}" for c in contacts or []]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += extra or []
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def capture(
    payload: bytes,
    src: tuple[str, int],
    dst: tuple[str, int],
    at_us: int,
    agent: int = 2001,
) -> HepPacket:
    return HepPacket(
        family=AF_INET,
        ip_proto=PROTO_UDP,
        src_ip=src[0],
        src_port=src[1],
        dst_ip=dst[0],
        dst_port=dst[1],
        ts_sec=at_us // 1_000_000,
        ts_usec=at_us % 1_000_000,
        proto_type=1,
        agent_id=agent,
        payload=payload,
    )
