"""A SIP front-end node: UDP and TCP listeners, registrar, transaction cache, event log.

Guarantees:

* Per packet, the source limit is checked before parsing (a flood from one
  address is dropped at the cost of a dict lookup), then the size and header
  caps of the parser.
* A 200 to REGISTER is sent only after its ``register`` event was acknowledged
  by Kafka (acks=all); when that does not happen within ``ack_timeout_s``, or
  Kafka is not reachable, the answer is 503 with Retry-After.
* Every other final response to a REGISTER with a valid AOR that is not a
  plain challenge is logged as a ``reject`` (not waited for). A retransmission
  of an answered request gets the same response again from the transaction
  cache and is logged as a ``reject`` with reason ``retransmission`` (D13);
  retransmissions of a request still in progress are absorbed.
* Bindings this node granted are expired by it (``expire`` events) when their
  time runs out, as long as it runs.
* Responses go back to the packet's source address and port (UDP), or on the
  same connection (TCP), whether or not the phone asked for ``rport``.

Clock and event log are injected, so tests can run a node on loopback with an
in-memory log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from schemas import Source, ending_event
from streams.aio import cancel_and_wait, close_listeners
from streams.clock import Clock, now_ms, now_us
from streams.frontend.eventlog import EventLog
from streams.frontend.registrar import Decision, Registrar, build_event
from streams.frontend.tables import (
    Answered,
    LocalBinding,
    LocalBindings,
    RejectBudget,
    SourceLimiter,
    TransactionCache,
    TransactionKey,
)
from streams.sip.message import (
    MAX_MESSAGE_BYTES,
    FramingError,
    NotARequest,
    SipParseError,
    SipRequest,
    frame_stream,
    parse_request,
)
from streams.sip.response import SERVER, http_date, render_response

log = logging.getLogger("regstate.frontend")

ACK_TIMEOUT_S: Final = 2.0
"""Longest a REGISTER waits for Kafka's acknowledgement before 503. Phones resend
after 0.5, 1 and 2 s (T1 doubling); those resends are absorbed meanwhile."""
RETRY_AFTER_S: Final = 10
_READ_CHUNK: Final = 16 * 1024
TCP_IDLE_S: Final = 600.0
"""A TCP connection with nothing received for this long is closed."""


class SeqCounter:
    """Per-node ``seq``: starts at the clock in µs, then +1 per event (docs/design.md section 4).

    Increases across restarts as long as the node emits under a million
    events per second on average and its clock does not step back.
    """

    def __init__(self, start_us: int | None = None) -> None:
        self._next = now_us() if start_us is None else start_us

    def __call__(self) -> int:
        value = self._next
        self._next += 1
        return value


@dataclass
class NodeStats:
    """Counters for the log line at exit and for tests."""

    received: int = 0
    malformed: int = 0
    answered: dict[int, int] = field(default_factory=dict)
    retransmissions: int = 0
    absorbed: int = 0
    events: int = 0
    event_failures: int = 0
    expired: int = 0
    flows_lost: int = 0
    tcp_closed: int = 0
    tcp_refused: int = 0
    tcp_timeouts: int = 0
    pongs: int = 0

    rejects: dict[str, int] = field(default_factory=dict)
    """REGISTERs refused, by reason (the reject event's)."""
    on_register: Callable[[float], None] = field(default=lambda seconds: None, repr=False)
    """Called with the seconds from a REGISTER received to its 200 (the metrics histogram)."""

    def count(self, status: int) -> None:
        self.answered[status] = self.answered.get(status, 0) + 1


class FrontendNode:
    """One node; :meth:`start` binds UDP and TCP on ``host:port`` (port 0: any free)."""

    def __init__(
        self,
        *,
        node_id: str,
        registrar: Registrar,
        event_log: EventLog,
        limiter: SourceLimiter,
        now_ms: Clock = now_ms,
        seq: Callable[[], int] | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        retry_after_s: int = RETRY_AFTER_S,
        max_bytes: int = MAX_MESSAGE_BYTES,
        source_key: Callable[[str, int], str] | None = None,
        trusted_proxy: Callable[[str], bool] | None = None,
        reject_budget: RejectBudget | None = None,
        tcp_max_connections: int = 2000,
        tcp_max_per_address: int = 50,
        tcp_message_timeout_s: float = 10.0,
    ) -> None:
        self.node_id = node_id
        self.registrar = registrar
        self.event_log = event_log
        self.limiter = limiter
        self.now_ms = now_ms
        self.seq = seq or SeqCounter()
        self.ack_timeout_s = ack_timeout_s
        self.retry_after_s = retry_after_s
        self.max_bytes = max_bytes
        # Limits are per source IP; tests on loopback key them by IP and port instead.
        self.source_key = source_key or (lambda ip, _port: ip)
        # Proxies and load balancers whose relayed requests are limited per original
        # source (the bottom Via), not per proxy address (D85).
        self.trusted_proxy = trusted_proxy or (lambda _ip: False)
        self.reject_budget = reject_budget or RejectBudget(5, 60_000)
        self.tcp_max_connections = tcp_max_connections
        self.tcp_max_per_address = tcp_max_per_address
        self.tcp_message_timeout_s = tcp_message_timeout_s
        self._tcp_open = 0
        self._tcp_per_address: dict[str, int] = {}
        self.transactions = TransactionCache()
        self.bindings = LocalBindings()
        self.stats = NodeStats()
        self.udp_port = 0
        self.tcp_port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._expiry_task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._flows = itertools.count(1)

    # ---- lifecycle

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Bind UDP, then TCP on the same port, and start the expiry loop.

        With port 0 the OS picks the UDP port; if that port is taken for TCP,
        another one is tried (up to 20 times). Raises OSError otherwise.
        ``reuse_port`` lets several processes share the port (SO_REUSEPORT).
        """
        loop = asyncio.get_running_loop()
        reuse = True if reuse_port else None
        for attempt in range(20):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port), reuse_port=reuse
            )
            udp_port = transport.get_extra_info("sockname")[1]
            try:
                server = await asyncio.start_server(
                    self._serve_tcp, host, udp_port, reuse_port=reuse
                )
            except OSError:
                transport.close()
                if port != 0 or attempt == 19:
                    raise
                continue
            break
        self._udp, self._tcp = transport, server
        self.udp_port = udp_port
        self.tcp_port = server.sockets[0].getsockname()[1]
        self._expiry_task = asyncio.create_task(self._expire_loop(), name="frontend-expiry")

    async def stop(self) -> None:
        """Close the listeners and wait for requests in progress (at most the ack timeout)."""
        await close_listeners(self._udp, self._tcp)
        await cancel_and_wait(self._expiry_task)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.ack_timeout_s + 1)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- transports

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """A UDP datagram arrived (called by the protocol)."""
        if not self.trusted_proxy(addr[0]) and not self.limiter.allow(
            self.source_key(addr[0], addr[1]), self.now_ms()
        ):
            return
        udp = self._udp

        def send(response: bytes) -> None:
            if udp is not None and not udp.is_closing():
                udp.sendto(response, addr)

        self._spawn(self.handle(data, Source(addr[0], addr[1], "udp"), send, stream=False))

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = Source(peer[0], peer[1], "tcp")
        address = peer[0]
        exempt = self.trusted_proxy(address) or self.limiter.exempt(address)
        if self._tcp_open >= self.tcp_max_connections or (
            not exempt and self._tcp_per_address.get(address, 0) >= self.tcp_max_per_address
        ):
            # D89: refused at accept, before any buffer or task is spent on it.
            self.stats.tcp_refused += 1
            writer.transport.abort()
            return
        self._tcp_open += 1
        self._tcp_per_address[address] = self._tcp_per_address.get(address, 0) + 1
        flow = next(self._flows)

        def send(response: bytes) -> None:
            if not writer.is_closing():
                writer.write(response)

        buffer = bytearray()
        loop = asyncio.get_running_loop()
        idle_until = loop.time() + TCP_IDLE_S
        message_until: float | None = None
        try:
            while True:
                # Idle: phones send a CRLF keep-alive at least every few minutes (RFC
                # 5626 section 4.4.1); a message once started must be complete within
                # the message deadline, so a byte a minute cannot hold a connection.
                deadline = idle_until if message_until is None else message_until
                chunk = await asyncio.wait_for(
                    reader.read(_READ_CHUNK), max(0.0, deadline - loop.time())
                )
                if not chunk:
                    break
                buffer += chunk
                while True:
                    if buffer.startswith(b"\r\n\r\n"):
                        del buffer[:4]  # RFC 5626 section 3.5.1: a ping gets a CRLF pong
                        self.stats.pongs += 1
                        send(b"\r\n")
                        idle_until = loop.time() + TCP_IDLE_S
                        continue
                    if bytes(buffer) in (b"\r", b"\r\n", b"\r\n\r"):
                        break  # maybe a ping cut in two: wait for the rest
                    if buffer.startswith(b"\r\n"):
                        del buffer[:2]  # a lone CRLF (a pong, or stray): nothing to answer
                        continue
                    n = frame_stream(buffer, self.max_bytes)
                    if n == 0:
                        break
                    message = bytes(buffer[:n])
                    del buffer[:n]
                    idle_until = loop.time() + TCP_IDLE_S
                    if self.trusted_proxy(source.ip) or self.limiter.allow(
                        self.source_key(source.ip, source.port), self.now_ms()
                    ):
                        # In order per connection: a phone's REGISTERs stay ordered.
                        await self.handle(message, source, send, stream=True, flow=flow)
                if buffer and message_until is None:
                    message_until = loop.time() + self.tcp_message_timeout_s
                elif not buffer:
                    message_until = None
                await writer.drain()
        except FramingError as exc:
            log.info("closing TCP %s:%s: %s", source.ip, source.port, exc)
        except TimeoutError:
            self.stats.tcp_timeouts += 1
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self.stats.tcp_closed += 1
            self._tcp_open -= 1
            left = self._tcp_per_address.get(address, 1) - 1
            if left:
                self._tcp_per_address[address] = left
            else:
                self._tcp_per_address.pop(address, None)
            self._flow_lost(flow)

    # ---- requests

    async def handle(
        self,
        data: bytes,
        source: Source,
        send: Callable[[bytes], None],
        *,
        stream: bool,
        flow: int | None = None,
    ) -> None:
        """Answer one request (and log it); never raises for bad input.

        ``flow`` names the TCP connection it came over (RFC 5626 flows)."""
        self.stats.received += 1
        try:
            request = parse_request(data, max_bytes=self.max_bytes, stream=stream)
        except NotARequest:
            return
        except SipParseError as exc:
            self.stats.malformed += 1
            response = bad_request(data, exc, source)
            if response is not None:
                self.stats.count(400)
                send(response)
            return
        if request.method == "ACK":
            return
        now = self.now_ms()
        limit_key = self._limit_key(request, source)
        if limit_key != self.source_key(source.ip, source.port) and not self.limiter.allow(
            limit_key, now
        ):
            return  # relayed by a trusted proxy: limited per original source
        if self.limiter.banned(limit_key, _to_user(request), now):
            return  # D85: this source failed this user's credentials too often
        key: TransactionKey = (
            request.call_id,
            request.cseq,
            request.method,
            request.top_via.branch or "",
        )
        found, answered = self.transactions.lookup(key, now)
        if found:
            if answered is None:
                self.stats.absorbed += 1
                return
            self.stats.retransmissions += 1
            send(answered.response)
            if request.method == "REGISTER" and answered.aor is not None:
                decision = Decision(answered.status, kind="reject", aor=answered.aor)
                self._log_nowait(decision, request, source, now, reason="retransmission")
            return
        self.transactions.begin(key, now)
        started = time.perf_counter()
        try:
            response, status, aor = await self._decide_and_log(
                request, source, now, flow, limit_key
            )
        except Exception:
            log.exception("request failed")
            response, status, aor = self._respond(request, source, 500), 500, None
        self.transactions.complete(key, self.now_ms(), Answered(response, status, aor))
        self.stats.count(status)
        send(response)
        if status == 200 and request.method == "REGISTER":
            self.stats.on_register(time.perf_counter() - started)

    def _limit_key(self, request: SipRequest, source: Source) -> str:
        """The source rate limits and bans count: the packet's, or for a request relayed
        by a trusted proxy the original client's (its bottom Via: ``received``, else the
        sent-by host)."""
        if not self.trusted_proxy(source.ip) or len(request.vias) < 2:
            return self.source_key(source.ip, source.port)
        origin = request.vias[-1]
        received = next((v for n, v in origin.params if n == "received" and v), None)
        return self.source_key(received or origin.host, origin.port or 5060)

    async def _decide_and_log(
        self,
        request: SipRequest,
        source: Source,
        now: int,
        flow: int | None = None,
        limit_key: str | None = None,
    ) -> tuple[bytes, int, str | None]:
        decision = self.registrar.decide(request)
        if limit_key is None:
            limit_key = self.source_key(source.ip, source.port)
        user = _to_user(request)
        if decision.auth_failed and self.limiter.auth_failed(limit_key, user, now):
            log.warning("banning %s for user %s after repeated auth failures", limit_key, user)
        if decision.kind is None:
            # A challenge keeps its AOR: a phone that never sees the 401 resends the
            # unauthenticated REGISTER, and those resends are the evidence (D13). Not
            # for a user the table does not know: anyone can send those (D87).
            return (
                self._respond(request, source, decision.status, decision.headers),
                decision.status,
                None if decision.unknown_user else decision.aor,
            )
        if decision.kind == "reject":
            reason = decision.reason or "unknown"
            self.stats.rejects[reason] = self.stats.rejects.get(reason, 0) + 1
            self._log_nowait(decision, request, source, now)
            response = self._respond(request, source, decision.status, decision.headers)
            return response, decision.status, decision.aor
        policy = self.registrar.fold_policy
        if (
            policy.max_contacts_policy == "reject"
            and decision.aor is not None
            and self.bindings.active_after(
                decision.aor, decision.granted, wildcard=request.wildcard, now_ms=now
            )
            > policy.max_contacts
        ):
            # The fold would refuse it against the bindings this node granted (R9, D84):
            # a 200 here would leave a phone that believes it is registered in no table.
            refused = Decision(403, (), "reject", "too_many_contacts", decision.aor)
            self._log_nowait(refused, request, source, now)
            return self._respond(request, source, 403), 403, decision.aor
        # register: 200 only once the event is durable.
        if not self.event_log.ready:
            return self._unavailable(request, source)
        event = build_event(decision, request, source, node=self.node_id, seq=self.seq(), ts=now)
        future = self.event_log.append(event)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.ack_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure to log means no 200
            self.stats.event_failures += 1
            future.add_done_callback(_consume)
            log.warning("register %s not logged (%s): 503", event.id, type(exc).__name__)
            return self._unavailable(request, source)
        self.stats.events += 1
        assert decision.aor is not None
        self.bindings.apply(
            decision.aor,
            decision.granted,
            wildcard=request.wildcard,
            call_id=request.call_id,
            cseq=request.cseq,
            ts=now,
            flow=flow,
        )
        self._wakeup.set()
        after = self.now_ms()
        headers = [
            ("Contact", f"<{uri}>;expires={left}")
            for uri, left in self.bindings.active(decision.aor, after)
        ]
        headers.append(("Date", http_date(after)))
        if request.path and "path" in request.supported:
            # RFC 3327 section 5.3: the Path goes back only to a UA that supports it.
            headers.append(("Path", ", ".join(p.render() for p in request.path)))
        return self._respond(request, source, 200, headers), 200, decision.aor

    def _unavailable(self, request: SipRequest, source: Source) -> tuple[bytes, int, None]:
        retry = (("Retry-After", str(self.retry_after_s)),)
        return self._respond(request, source, 503, retry), 503, None

    def _respond(
        self,
        request: SipRequest,
        source: Source,
        status: int,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
    ) -> bytes:
        return render_response(request, status, (source.ip, source.port), headers)

    def _log_nowait(
        self,
        decision: Decision,
        request: SipRequest,
        source: Source,
        now: int,
        reason: str | None = None,
    ) -> None:
        if decision.aor is not None and not self.reject_budget.take(
            decision.aor, self.source_key(source.ip, source.port), now
        ):
            return  # answered, counted, not logged: a flood writes no log (D87)
        if not self.event_log.ready:
            self.stats.event_failures += 1
            return
        event = build_event(
            decision, request, source, node=self.node_id, seq=self.seq(), ts=now, reason=reason
        )
        self.event_log.append(event).add_done_callback(self._count_event)

    def _count_event(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.stats.event_failures += 1
        else:
            self.stats.events += 1

    # ---- expiry

    async def _expire_loop(self) -> None:
        while True:
            due_at = self.bindings.next_due()
            now = self.now_ms()
            wait = 1.0 if due_at is None else max(0.0, min(1.0, (due_at - now) / 1000))
            if not self.event_log.healthy:
                wait = 1.0  # failed expires are due again at once: retry once a second
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)
            now = self.now_ms()
            if not self.event_log.ready:
                continue  # keep them due: they are expired once Kafka is back
            for binding in self.bindings.pop_due(now):
                self.stats.expired += 1
                self._end(binding, "expire", now)

    def _flow_lost(self, flow: int) -> None:
        """RFC 5626: the connection of outbound bindings closed; they are unreachable now.

        Each gets a ``deactivate`` event (reason ``flow_lost``): the phone
        registers again over a new flow, and until then nobody should ring it.
        """
        lost = self.bindings.drop_flow(flow)
        if not lost:
            return
        if not self.event_log.ready:
            # The engine's sweeper expires them in time; nothing better can be done.
            self.stats.event_failures += len(lost)
            return
        now = self.now_ms()
        for binding in lost:
            self.stats.flows_lost += 1
            self._end(binding, "deactivate", now, reason="flow_lost")

    def _end(
        self,
        binding: LocalBinding,
        kind: Literal["expire", "deactivate"],
        now: int,
        reason: str | None = None,
    ) -> None:
        seq = self.seq()
        event = ending_event(
            kind,
            node=self.node_id,
            seq=seq,
            ts=now,
            aor=binding.aor,
            call_id=binding.call_id,
            cseq=binding.cseq,
            # Expiry names the URI as granted; a flow names its RFC 5626 key (R2).
            contact=binding.uri if kind == "expire" else binding.key,
            reason=reason,
        )
        future = self.event_log.append(event)
        future.add_done_callback(self._count_event)
        if kind == "expire":
            # A due binding whose expire event failed is kept and tried again (D88).
            future.add_done_callback(functools.partial(self._expire_sent, binding))

    def _expire_sent(self, binding: LocalBinding, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.bindings.restore(binding)


def _to_user(request: SipRequest) -> str:
    """The user part of the To URI as sent (the ban key's user; no canonicalization)."""
    uri = request.to.uri
    rest = uri.split(":", 1)[-1]
    return rest.split("@", 1)[0][:64] if "@" in rest else ""


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, node: FrontendNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.node.datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a phone that went away: nothing to do.
        log.debug("UDP error: %s", exc)


_ECHO_HEADERS: Final = re.compile(
    rb"^(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*([^\r\n]*)\r?$", re.IGNORECASE | re.MULTILINE
)


def bad_request(data: bytes, error: SipParseError, source: Source) -> bytes | None:
    """A best-effort 400 for a request the parser refused, or None when it cannot be answered.

    It echoes the Via, From, To, Call-ID and CSeq lines as received (RFC 3261
    section 8.2.6) when they are all there, in ASCII, and the message is within
    the size cap; otherwise the datagram is dropped (a 400 could not be matched
    to a transaction anyway).
    """
    if len(data) > MAX_MESSAGE_BYTES or isinstance(error, NotARequest):
        return None
    found: dict[str, list[bytes]] = {}
    compact = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}
    for m in _ECHO_HEADERS.finditer(data):
        name = m.group(1).lower()
        found.setdefault(compact.get(name, name).decode(), []).append(m.group(2))
    if not all(found.get(h) for h in ("via", "from", "to", "call-id", "cseq")):
        return None
    try:
        echo = {k: [v.decode("ascii") for v in vals] for k, vals in found.items()}
    except UnicodeDecodeError:
        return None
    detail = str(error).replace("\r", " ").replace("\n", " ")[:100]
    detail = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in detail)
    lines = [f"SIP/2.0 400 Bad Request ({detail})"]
    lines += [f"Via: {v}" for v in echo["via"]]
    lines += [
        f"From: {echo['from'][0]}",
        f"To: {echo['to'][0]}",
        f"Call-ID: {echo['call-id'][0]}",
        f"CSeq: {echo['cseq'][0]}",
        f"Server: {SERVER}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
