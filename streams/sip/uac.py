"""A minimal registering user agent: builds REGISTER/OPTIONS and answers Digest challenges.

Used by ``regstate simulate`` and by the tests. Not a general SIP stack: one
transaction at a time per phone, UDP or TCP framing left to the caller.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

from streams.sip import message
from streams.sip.digest import auth_params, compute_ha1, compute_response

_branches = itertools.count(1)


@dataclass
class Response:
    """A response as received: status, reason, headers (lower-case long names, in order), bytes."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    raw: bytes

    def all(self, name: str) -> list[str]:
        """Every value of a header, in order."""
        return [v for n, v in self.headers if n == name.lower()]

    def get(self, name: str) -> str | None:
        """The first value of a header."""
        values = self.all(name)
        return values[0] if values else None


def parse_response(data: bytes) -> Response:
    """Status line and headers of a response (raises SipParseError, a ValueError, on
    anything else); the project's one SIP parser (:func:`streams.sip.message.parse_response`)."""
    parsed = message.parse_response(data)
    return Response(parsed.status, parsed.reason, list(parsed.headers), data)


@dataclass
class Phone:
    """One phone: an AOR user, a password, its own Call-ID and CSeq counter."""

    user: str
    password: str
    domain: str = "pbx.example"
    local_host: str = "127.0.0.1"
    local_port: int = 5062
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@regstate-uac")
    cseq: int = 0
    transport: str = "UDP"

    def register(
        self,
        *,
        contacts: list[str] | None = None,
        expires: int | None = 3600,
        authorization: str | None = None,
        extra: list[str] | None = None,
        aor_user: str | None = None,
        same_cseq: bool = False,
    ) -> bytes:
        """A REGISTER; the CSeq goes up by one unless ``same_cseq``."""
        if not same_cseq:
            self.cseq += 1
        aor = f"sip:{aor_user or self.user}@{self.domain}"
        if contacts is None:
            contacts = [f"<sip:{self.user}@{self.local_host}:{self.local_port}>"]
        lines = [
            f"REGISTER sip:{self.domain} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {self.local_host}:{self.local_port};"
            f"branch=z9hG4bK{next(_branches)}x{self.cseq};rport",
            "Max-Forwards: 70",
            f"From: <{aor}>;tag=t{self.user}",
            f"To: <{aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            *[f"Contact: {c}" for c in contacts],
            "User-Agent: regstate-uac",
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines += extra or []
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def answer(
        self,
        challenges: str | list[str],
        password: str | None = None,
        algorithm: str | None = None,
    ) -> str:
        """The Authorization value for the first challenge whose algorithm we know
        (or is ``algorithm``)."""
        if isinstance(challenges, str):
            challenges = [challenges]
        for challenge in challenges:
            params = auth_params(challenge.split(" ", 1)[1])
            offered = params.get("algorithm", "MD5").upper()
            if offered in ("MD5", "SHA-256") and algorithm in (None, offered):
                algorithm = offered
                break
        else:
            raise ValueError("no usable MD5 or SHA-256 challenge")
        ha1 = compute_ha1(algorithm, self.user, params["realm"], password or self.password)
        uri = f"sip:{self.domain}"
        cnonce = uuid.uuid4().hex[:12]
        response = compute_response(
            algorithm, ha1, "REGISTER", uri, params["nonce"], "00000001", cnonce
        )
        return (
            f'Digest username="{self.user}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
            f'algorithm={algorithm}, qop=auth, nc=00000001, cnonce="{cnonce}"'
        )


def options(port: int, host: str = "127.0.0.1", domain: str = "pbx.example") -> bytes:
    """An OPTIONS ping."""
    n = next(_branches)
    return (
        f"OPTIONS sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKo{n}\r\n"
        f"From: <sip:ping@{domain}>;tag=o{n}\r\nTo: <sip:{domain}>\r\n"
        f"Call-ID: opt{n}@{host}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
