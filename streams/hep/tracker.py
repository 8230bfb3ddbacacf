"""REGISTER transactions seen on a HEP mirror, turned into RegistrationEvents. Pure.

No I/O and no clock: every method takes the capture (or ``now_us``) it works
with, so the same captures give the same events in any process, any time.

What a transaction becomes (issue 11, decisions D51-D54):

* final 2xx: ``register`` with the contacts and expiries the *registrar*
  granted (its 200's Contact list and ``expires`` parameters, else its
  Expires header), the REGISTER's source address as seen on the wire, the
  capture time as ``ts``;
* 401/407 to a request without credentials, or with a stale nonce
  (``stale=true``): the normal challenge, nothing;
* 401/407/403 to a request with credentials: ``reject`` ``auth_failed``;
  403 without: ``reject`` ``forbidden`` (both count as auth failures, R12);
* any other final: ``reject`` with its status;
* the same REGISTER (same Call-ID, CSeq, top Via branch) seen again, answered
  or not: ``reject`` ``retransmission`` (feeds ``unreachable`` as on the
  front-end, D13); a second final response for it: nothing;
* no final response within :data:`TIMEOUT_US`: ``reject`` ``timeout`` (408),
  unless the phone sent a later CSeq of the same Call-ID meanwhile (it was
  answered; the answer's capture was lost).

Event identity (D52): ``node`` is named after the capture agent, ``seq`` is
the capture time in microseconds of the packet that decided the event (the
deadline for a timeout). Two listeners fed the same mirror therefore write
identical events, and the fold's per-node ``seq`` rule (R5) keeps one of each.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from processors.sipuri import AorError, canonical_aor, trunk_aor, uri_equal
from schemas import ContactEntry, RegistrationEvent, Source
from streams.hep.decode import HepPacket
from streams.sip.message import (
    Contact,
    SipParseError,
    SipRequest,
    SipResponse,
    parse_request,
    parse_response,
)

TIMEOUT_US: Final = 32_000_000
"""RFC 3261 Timer F (64*T1): a REGISTER with no final response by then has failed."""
NO_ANSWER: Final = 0
"""The status of a retransmission reject when no final response was captured yet."""
SUPERSEDED: Final = 0
"""The final status of a transaction whose answer was not captured but the phone went on."""
DEFAULT_EXPIRES: Final = 3600
"""RFC 3261 section 10.2.1.1: what a registrar grants when nothing is asked."""
_REASONS: Final[dict[int, str]] = {
    400: "bad_request",
    404: "not_found",
    420: "bad_extension",
    423: "interval_too_brief",
    480: "unavailable",
    500: "server_error",
    503: "unavailable",
}


def agent_nodes(spec: str) -> dict[int, str]:
    """``REGSTATE_HEP_NODES`` (``2001=ast1,2002=ast2``) as agent id -> node; ValueError if bad."""
    out: dict[int, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        agent, sep, node = item.partition("=")
        if not sep or not agent.strip().isdigit() or not node.strip():
            raise ValueError(f"{item!r} is not <capture agent id>=<node>")
        if ":" in node:
            raise ValueError(f"node {node.strip()!r} must not contain ':' (event ids are node:seq)")
        out[int(agent)] = node.strip()
    return out


def node_of(agent_id: int, nodes: Mapping[int, str]) -> str:
    """The node an agent's captures are logged as: configured, else ``hep-<agent id>``."""
    return nodes.get(agent_id) or f"hep-{agent_id}"


class TxnKey(NamedTuple):
    """A REGISTER client transaction as one capture agent saw it."""

    agent_id: int
    call_id: str
    cseq: int
    branch: str


@dataclass(slots=True)
class _Txn:
    request: SipRequest
    aor: str
    source: Source
    first_us: int
    credentials: bool
    final_status: int | None = None


@dataclass
class TrackerStats:
    """What the tracker did with the SIP messages it was given."""

    requests: int = 0
    responses: int = 0
    other_methods: int = 0
    unparsable: int = 0
    bad_aor: int = 0
    challenges: int = 0
    orphan_responses: int = 0
    """Final responses to a REGISTER never seen (its capture was lost)."""
    duplicate_finals: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    events: dict[str, int] = field(default_factory=dict)

    def count(self, event: RegistrationEvent) -> None:
        name = event.kind if event.kind != "reject" else f"reject:{event.reason}"
        self.events[name] = self.events.get(name, 0) + 1


class Tracker:
    """Follows REGISTER transactions; :meth:`observe` and :meth:`expire` return events.

    ``servers``: addresses of the monitored servers, each an IP (any port) or
    ``ip:port`` (``[v6]:port``); a REGISTER one of them *sends* is a trunk
    registration, logged under ``trunk:<AOR>`` (D50).
    """

    def __init__(
        self,
        nodes: Mapping[int, str] | None = None,
        servers: frozenset[str] = frozenset(),
        timeout_us: int = TIMEOUT_US,
    ) -> None:
        self.nodes = dict(nodes or {})
        self.servers = servers
        self.timeout_us = timeout_us
        self.stats = TrackerStats()
        self._txns: dict[TxnKey, _Txn] = {}
        self._deadlines: list[tuple[int, TxnKey]] = []
        """(deadline, key) of every transaction followed, a heap: expiry is O(log n)."""
        self._dialogs: dict[tuple[int, str], list[TxnKey]] = {}
        """Open transactions per (agent, Call-ID): a later CSeq supersedes them."""

    def __len__(self) -> int:
        return len(self._txns)

    def observe(self, packet: HepPacket) -> list[RegistrationEvent]:
        """One captured SIP message; the events it completes (timeouts due before it first)."""
        events = self.expire(packet.capture_us)
        payload = packet.payload
        if not _about_register(payload):
            # Most of a mirror is calls and keep-alives: skipped without a parse.
            self.stats.other_methods += 1
            return events
        fast = self._known(packet)
        if fast is not None:
            if isinstance(fast, RegistrationEvent):
                events.append(self._counted(fast))
            return events
        try:
            if payload.lstrip(b"\r\n").startswith(b"SIP/"):
                self.stats.responses += 1
                event = self._response(packet, parse_response(payload))
            else:
                request = parse_request(payload, stream=packet.ip_proto != 17)
                self.stats.requests += 1
                event = self._request(packet, request)
        except SipParseError:
            self.stats.unparsable += 1
            return events
        if event is not None:
            events.append(self._counted(event))
        return events

    def expire(self, now_us: int) -> list[RegistrationEvent]:
        """Timeouts of transactions unanswered past their deadline; forgets answered ones.

        An answered transaction is kept until its deadline too, so that its
        retransmissions and duplicated answers are recognized.
        """
        events: list[RegistrationEvent] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now_us:
            _, key = heapq.heappop(heap)
            txn = self._txns.pop(key, None)
            if txn is None:
                continue
            dialog = self._dialogs.get((key.agent_id, key.call_id))
            if dialog is not None:
                dialog.remove(key)
                if not dialog:
                    del self._dialogs[(key.agent_id, key.call_id)]
            if txn.final_status is None:
                self.stats.timeouts += 1
                at = txn.first_us + self.timeout_us
                events.append(self._counted(self._reject(key, txn, at, 408, "timeout")))
        return events

    # ---- the fast path: messages of a transaction already followed

    def _known(self, packet: HepPacket) -> RegistrationEvent | object | None:
        """The outcome of a message of a known transaction that needs no parse, else None.

        A retransmitted REGISTER, and a challenge to a REGISTER without
        credentials, are a quarter to a half of a registrar's mirror; their
        transaction key is read with three regular expressions instead of a
        full parse. A key that matches no transaction (or a message that needs
        its content) goes the full way, so this can only save work.
        """
        key = _fast_key(packet)
        if key is None:
            return None
        txn = self._txns.get(key)
        if txn is None:
            return None
        payload = packet.payload.lstrip(b"\r\n")
        if payload.startswith(b"REGISTER "):
            self.stats.requests += 1
            self.stats.retransmissions += 1
            status = txn.final_status or NO_ANSWER
            return self._reject(key, txn, packet.capture_us, status, "retransmission", packet)
        if payload[8:11] in (b"401", b"407") and not txn.credentials and txn.final_status is None:
            self.stats.responses += 1
            self.stats.challenges += 1
            txn.final_status = int(payload[8:11])
            return _NOTHING
        return None

    # ---- requests

    def _request(self, packet: HepPacket, request: SipRequest) -> RegistrationEvent | None:
        if request.method != "REGISTER":
            self.stats.other_methods += 1
            return None
        key = TxnKey(packet.agent_id, request.call_id, request.cseq, request.top_via.branch or "")
        txn = self._txns.get(key)
        if txn is not None:
            self.stats.retransmissions += 1
            # 0: no final response captured yet (a reject always carries a status).
            status = txn.final_status or NO_ANSWER
            return self._reject(key, txn, packet.capture_us, status, "retransmission", packet)
        try:
            aor = canonical_aor(request.to.uri)
        except AorError:
            self.stats.bad_aor += 1
            return None
        if self._is_server(packet.src_ip, packet.src_port):
            aor = trunk_aor(aor)
        credentials = bool(
            request.header_values("authorization") or request.header_values("proxy-authorization")
        )
        source = Source(packet.src_ip, packet.src_port, packet.transport)
        dialog = self._dialogs.setdefault((key.agent_id, key.call_id), [])
        for earlier in dialog:
            older = self._txns[earlier]
            if older.final_status is None and earlier.cseq < key.cseq:
                # The phone moved on to a later CSeq: it got an answer we did not
                # capture (a lost 401), so the earlier request did not time out.
                older.final_status = SUPERSEDED
        dialog.append(key)
        self._txns[key] = _Txn(request, aor, source, packet.capture_us, credentials)
        heapq.heappush(self._deadlines, (packet.capture_us + self.timeout_us, key))
        return None

    # ---- responses

    def _response(self, packet: HepPacket, response: SipResponse) -> RegistrationEvent | None:
        if response.method != "REGISTER" or response.status < 200:
            if response.method != "REGISTER":
                self.stats.other_methods += 1
            return None
        key = TxnKey(
            packet.agent_id, response.call_id, response.cseq, response.top_via.branch or ""
        )
        txn = self._txns.get(key)
        if txn is None:
            return self._orphan(key, packet, response)
        if txn.final_status is not None and txn.final_status != SUPERSEDED:
            self.stats.duplicate_finals += 1
            return None
        txn.final_status = response.status
        status = response.status
        at = packet.capture_us
        if status < 300:
            return self._register(key, txn.aor, txn.source, txn.request, response, at)
        if status in (401, 407):
            if not txn.credentials or _stale(response):
                self.stats.challenges += 1
                return None
            return self._reject(key, txn, at, status, "auth_failed")
        if status == 403:
            reason = "auth_failed" if txn.credentials else "forbidden"
            return self._reject(key, txn, at, status, reason)
        return self._reject(key, txn, at, status, _REASONS.get(status, "rejected"))

    def _orphan(
        self, key: TxnKey, packet: HepPacket, response: SipResponse
    ) -> RegistrationEvent | None:
        """A final response whose REGISTER was not captured (lossy mirror).

        A 2xx still tells what the registrar granted, and it was sent to the
        phone's address as seen on the wire: it is logged. A failure is not: a
        401 without its request cannot be told from a plain challenge.
        """
        self.stats.orphan_responses += 1
        if response.status >= 300:
            return None
        try:
            aor = canonical_aor(response.to.uri)
        except AorError:
            self.stats.bad_aor += 1
            return None
        if self._is_server(packet.dst_ip, packet.dst_port):
            aor = trunk_aor(aor)
        source = Source(packet.dst_ip, packet.dst_port, packet.transport)
        return self._register(key, aor, source, None, response, packet.capture_us)

    def _register(
        self,
        key: TxnKey,
        aor: str,
        source: Source,
        request: SipRequest | None,
        response: SipResponse,
        at_us: int,
    ) -> RegistrationEvent:
        node = node_of(key.agent_id, self.nodes)
        wildcard = request is not None and request.wildcard
        contacts = () if wildcard else granted(request, response)
        return RegistrationEvent(
            kind="register",
            id=f"{node}:{at_us}",
            node=node,
            seq=at_us,
            ts=at_us // 1000,
            aor=aor,
            call_id=key.call_id,
            cseq=key.cseq,
            contacts=contacts,
            wildcard=wildcard,
            expires=0 if wildcard else response.expires,
            source=source,
            user_agent=None if request is None else request.user_agent,
            path=() if request is None else tuple(p.render() for p in request.path),
            raw=None if request is None else request.raw_without_credentials(),
        )

    def _reject(
        self,
        key: TxnKey,
        txn: _Txn,
        at_us: int,
        status: int,
        reason: str,
        packet: HepPacket | None = None,
    ) -> RegistrationEvent:
        node = node_of(key.agent_id, self.nodes)
        source = txn.source
        if packet is not None:
            source = Source(packet.src_ip, packet.src_port, packet.transport)
        return RegistrationEvent(
            kind="reject",
            id=f"{node}:{at_us}",
            node=node,
            seq=at_us,
            ts=at_us // 1000,
            aor=txn.aor,
            call_id=key.call_id,
            cseq=key.cseq,
            source=source,
            user_agent=txn.request.user_agent,
            status=status,
            reason=reason,
            raw=txn.request.raw_without_credentials(),
        )

    def _is_server(self, ip: str, port: int) -> bool:
        if not self.servers:
            return False
        host = f"[{ip}]" if ":" in ip else ip
        return ip in self.servers or f"{host}:{port}" in self.servers

    def _counted(self, event: RegistrationEvent) -> RegistrationEvent:
        self.stats.count(event)
        return event


_CSEQ_REGISTER = re.compile(rb"^cseq[ \t]*:[ \t]*[0-9]+[ \t]+REGISTER[ \t]*\r?$", re.M | re.I)


_NOTHING: Final = object()
"""The fast path handled the message and it makes no event."""
_TOP_BRANCH = re.compile(rb"^(?:via|v)[ \t]*:[^\r\n]*?;[ \t]*branch=([^;,\s]+)", re.M | re.I)
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)[ \t]*\r?$", re.M | re.I)
_CSEQ_NUMBER = re.compile(rb"^cseq[ \t]*:[ \t]*([0-9]{1,10})[ \t]", re.M | re.I)


def _fast_key(packet: HepPacket) -> TxnKey | None:
    payload = packet.payload
    branch = _TOP_BRANCH.search(payload)
    call_id = _CALL_ID.search(payload)
    cseq = _CSEQ_NUMBER.search(payload)
    if branch is None or call_id is None or cseq is None:
        return None
    try:
        return TxnKey(
            packet.agent_id,
            call_id.group(1).decode(),
            int(cseq.group(1)),
            branch.group(1).decode(),
        )
    except UnicodeDecodeError:
        return None


def _about_register(payload: bytes) -> bool:
    """A REGISTER, or a final response to one (by its CSeq), before any parse.

    Cheap and conservative: a message it lets through is parsed and checked
    properly; one it stops (a provisional response, another method) the
    tracker would ignore anyway.
    """
    head = payload.lstrip(b"\r\n")[:12]
    if head.startswith(b"REGISTER "):
        return True
    if not head.startswith(b"SIP/2.0 ") or head[8:9] == b"1":
        return False
    return _CSEQ_REGISTER.search(payload) is not None


def _stale(response: SipResponse) -> bool:
    """A challenge with ``stale=true``: the nonce was old, the password right (RFC 2617)."""
    values = response.header_values("www-authenticate") + response.header_values(
        "proxy-authenticate"
    )
    return any("stale=true" in v.replace(" ", "").replace('"', "").lower() for v in values)


def _first(*values: int | None) -> int:
    return next(v for v in values if v is not None)


def _entry(contact: Contact, uri: str, expires: int) -> ContactEntry:
    return ContactEntry(uri, expires, contact.q, contact.instance, contact.reg_id)


def granted(request: SipRequest | None, response: SipResponse) -> tuple[ContactEntry, ...]:
    """The bindings a 2xx granted for this request (D51).

    The registrar's 200 lists every binding of the AOR with its expiry; those
    that are the request's own Contacts are this request's grant (each with
    its ``expires`` parameter, else the 200's Expires header). A Contact the
    request removed (expiry 0) is absent from the 200 and is logged with 0.
    When none of the request's Contacts is listed (a registrar that rewrote
    them), or the request is unknown, the 200's list is the grant; when the
    200 lists none at all, the request's Contacts are.
    """
    default = response.expires
    listed = [
        (c, c.expires if c.expires is not None else default)
        for c in response.contacts
        if c.expires is not None or default is not None
    ]
    everything = tuple(_entry(c, c.uri, x) for c, x in listed if x)
    if request is None:
        return everything
    if not response.contacts:
        # A registrar that lists no Contact in its 200: the request's, with the
        # 200's Expires, else what was asked, else the RFC 3261 default.
        return tuple(
            _entry(rc, rc.uri, _first(default, rc.expires, request.expires, DEFAULT_EXPIRES))
            for rc in request.contacts
        )
    out: list[ContactEntry] = []
    for rc in request.contacts:
        asked = rc.expires if rc.expires is not None else request.expires
        grant = next((x for c, x in listed if uri_equal(c.uri, rc.uri)), None)
        if grant is not None:
            out.append(_entry(rc, rc.uri, grant))
        elif asked == 0:
            out.append(_entry(rc, rc.uri, 0))  # removed: the 200 no longer lists it
    wanted = any(
        (rc.expires if rc.expires is not None else request.expires) != 0 for rc in request.contacts
    )
    if wanted and not any(e.expires > 0 for e in out):
        return everything
    return tuple(out)
