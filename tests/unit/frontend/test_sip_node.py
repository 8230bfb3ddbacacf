"""A front-end node on 127.0.0.1 with an in-memory event log: registrar, auth, events.

No Kafka here: the log is a fake whose acknowledgements the tests control.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from schemas import ContactEntry, RegistrationEvent, decode_event, encode_event
from streams.frontend.node import FrontendNode, SeqCounter
from streams.frontend.registrar import ExpiryPolicy, Registrar
from streams.frontend.tables import SourceLimiter
from streams.frontend.users import hashes_for
from streams.sip.digest import DigestAuthenticator, NonceIssuer
from streams.sip.message import response_status
from tests.helpers import wait_until_async
from tests.sip_client import EXPIRES_RE, Phone, Response, UdpClient, options, parse_response

REALM = "pbx.example"


class FakeLog:
    """An EventLog that acknowledges at once (``auto``) or when told."""

    def __init__(self) -> None:
        self.ready = True
        self.auto = True
        self.events: list[RegistrationEvent] = []
        self.held: list[asyncio.Future[None]] = []
        self.failing = False
        """Appends fail at once (Kafka refusing records) while the log stays connected."""

    @property
    def healthy(self) -> bool:
        return self.ready

    def append(self, event: RegistrationEvent) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failing:
            future.set_exception(ConnectionError("refused"))
        elif self.auto:
            self.events.append(event)
            future.set_result(None)
        else:
            self.held.append(future)
        return future

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(e.kind, e.reason) for e in self.events]


class Clock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log() -> FakeLog:
    return FakeLog()


@pytest.fixture
async def node(log: FakeLog, clock: Clock) -> AsyncIterator[FrontendNode]:
    users = {u: hashes_for(u, REALM, f"pw{u}") for u in ("1001", "1002")}
    auth = DigestAuthenticator(REALM, users, NonceIssuer(b"s" * 32, REALM, 300_000, clock))
    n = FrontendNode(
        node_id="fe1",
        registrar=Registrar(auth, ExpiryPolicy(3600, 60, 7200)),
        event_log=log,
        limiter=SourceLimiter(rate_per_s=1, burst=8, ban_failures=5, ban_ms=60_000),
        now_ms=clock,
        seq=SeqCounter(100),
        ack_timeout_s=0.3,
        source_key=lambda ip, port: f"{ip}:{port}",
    )
    await n.start("127.0.0.1", 0)
    yield n
    await n.stop()


@pytest.fixture
async def client(node: FrontendNode) -> AsyncIterator[UdpClient]:
    c = await UdpClient.open(node.udp_port)
    yield c
    c.close()


def phone(client: UdpClient, user: str = "1001") -> Phone:
    return Phone(user, f"pw{user}", local_port=client.port)


async def authorized(client: UdpClient, p: Phone, password: str | None = None) -> str:
    challenge = await client.request(p.register())
    assert challenge.status == 401
    assert len(challenge.all("www-authenticate")) == 2
    return p.answer(challenge.all("www-authenticate")[-1], password)


async def test_options(client: UdpClient, log: FakeLog) -> None:
    r = await client.request(options(client.port))
    assert r.status == 200 and "REGISTER" in (r.get("allow") or "")
    assert log.events == []


async def test_register_challenge_then_200_with_event(
    client: UdpClient, log: FakeLog, node: FrontendNode
) -> None:
    p = phone(client)
    auth = await authorized(client, p)
    assert log.events == []  # a challenge logs nothing
    contact = f"<sip:1001@127.0.0.1:{client.port};transport=udp>;expires=120"
    r = await client.request(p.register(contacts=[contact], authorization=auth))
    assert r.status == 200, r.raw
    assert r.get("date")
    (granted,) = r.all("contact")
    assert granted.startswith(f"<sip:1001@127.0.0.1:{client.port};transport=udp>")
    assert EXPIRES_RE.search(granted).group(1) == "120"  # type: ignore[union-attr]
    via = r.get("via") or ""
    assert f"rport={client.port}" in via and "received=127.0.0.1" not in via.split("rport")[0]
    (event,) = log.events
    assert event.kind == "register" and event.aor == "sip:1001@pbx.example"
    assert event.id == "fe1:100" and event.seq == 100 and event.node == "fe1"
    assert event.cseq == p.cseq and event.call_id == p.call_id
    assert [(c.uri, c.expires) for c in event.contacts] == [
        (f"sip:1001@127.0.0.1:{client.port};transport=udp", 120)
    ]
    assert event.source is not None and event.source.port == client.port
    assert event.source.transport == "udp" and event.expires == 3600
    assert (
        event.raw is not None and "Authorization" not in event.raw and "response=" not in event.raw
    )
    assert len(node.bindings) == 1


async def test_expiry_policy(client: UdpClient, log: FakeLog) -> None:
    p = phone(client)
    r = await client.request(p.register(expires=30, authorization=await authorized(client, p)))
    assert r.status == 423 and r.get("min-expires") == "60"
    assert log.kinds() == [("reject", "interval_too_brief")]
    assert log.events[0].status == 423
    r = await client.request(p.register(expires=99999, authorization=await authorized(client, p)))
    assert r.status == 200 and log.events[-1].contacts[0].expires == 7200


async def test_wrong_password_and_unknown_user(client: UdpClient, log: FakeLog) -> None:
    p = phone(client)
    r = await client.request(p.register(authorization=await authorized(client, p, "nope")))
    assert r.status == 401 and len(r.all("www-authenticate")) == 2
    ghost = Phone("9999", "x", local_port=client.port)
    r2 = await client.request(ghost.register(authorization=await authorized(client, ghost)))
    assert r2.status == 401
    # An unknown user's failure is answered the same but not logged (D87).
    assert [(e.kind, e.reason, e.status) for e in log.events] == [("reject", "auth_failed", 401)]


async def test_other_users_aor_is_forbidden(client: UdpClient, log: FakeLog) -> None:
    p = phone(client)
    auth = await authorized(client, p)
    r = await client.request(p.register(authorization=auth, aor_user="1002"))
    assert r.status == 403 and log.kinds() == [("reject", "forbidden")]


async def test_wildcard(client: UdpClient, log: FakeLog, node: FrontendNode) -> None:
    p = phone(client)
    assert (
        await client.request(p.register(authorization=await authorized(client, p)))
    ).status == 200
    r = await client.request(
        p.register(contacts=["*"], expires=0, authorization=await authorized(client, p))
    )
    assert r.status == 200 and not r.all("contact")
    assert log.events[-1].wildcard and log.events[-1].contacts == ()
    assert len(node.bindings) == 0
    r = await client.request(
        p.register(contacts=["*"], expires=5, authorization=await authorized(client, p))
    )
    assert r.status == 400 and log.kinds()[-1] == ("reject", "bad_wildcard")


async def test_retransmission_answered_from_cache_and_logged(
    client: UdpClient, log: FakeLog
) -> None:
    p = phone(client)
    request = p.register(authorization=await authorized(client, p))
    first = await client.request(request)
    again = await client.request(request)
    assert first.status == 200 and again.raw == first.raw
    assert [(e.kind, e.reason, e.status) for e in log.events] == [
        ("register", None, None),
        ("reject", "retransmission", 200),
    ]
    assert log.events[1].cseq == p.cseq and log.events[1].call_id == p.call_id
    assert log.events[1].seq == log.events[0].seq + 1


async def test_resent_unauthenticated_register_is_reported(client: UdpClient, log: FakeLog) -> None:
    """A phone that never receives the 401 keeps resending its first REGISTER."""
    p = phone(client)
    request = p.register()
    first = await client.request(request)
    for _ in range(3):
        assert (await client.request(request)).raw == first.raw
    assert first.status == 401
    assert [(e.kind, e.reason, e.status, e.cseq) for e in log.events] == [
        ("reject", "retransmission", 401, p.cseq)
    ] * 3


async def test_no_200_without_kafka(client: UdpClient, log: FakeLog) -> None:
    p = phone(client)
    log.ready = False
    r = await client.request(p.register(authorization=await authorized(client, p)))
    assert r.status == 503 and r.get("retry-after")
    log.ready, log.auto = True, False  # connected, but the ack never comes
    r = await client.request(p.register(authorization=await authorized(client, p)))
    assert r.status == 503
    assert log.events == []


async def test_expire_events_for_granted_bindings(
    client: UdpClient, log: FakeLog, clock: Clock, node: FrontendNode
) -> None:
    p = phone(client)
    contact = f"<sip:1001@127.0.0.1:{client.port}>;expires=60"
    r = await client.request(
        p.register(contacts=[contact], authorization=await authorized(client, p))
    )
    assert r.status == 200
    clock.ms += 61_000
    node._wakeup.set()
    await wait_until_async(lambda: len(log.events) == 2, 5, 0.02, "expire event")
    expire = log.events[1]
    assert expire.kind == "expire" and expire.contact == f"sip:1001@127.0.0.1:{client.port}"
    assert (expire.call_id, expire.cseq) == (p.call_id, p.cseq)
    assert len(node.bindings) == 0


async def test_malformed_gets_400_and_huge_is_dropped(client: UdpClient, log: FakeLog) -> None:
    p = phone(client)
    bad = p.register().replace(b"Expires: 3600", b"Expires: soon")
    r = await client.request(bad)
    assert r.status == 400 and "Expires" in r.reason
    huge = p.register(extra=[f"X-Pad: {'a' * 1000}"] * 47)
    assert len(huge) > 46 * 1024
    client.send(huge)
    after = await client.request(options(client.port))  # the next answer is the OPTIONS one
    assert after.status == 200 and log.events == []


async def test_flooding_source_is_limited_others_are_not(node: FrontendNode) -> None:
    flooder, other = await UdpClient.open(node.udp_port), await UdpClient.open(node.udp_port)
    try:
        for _ in range(50):
            flooder.send(options(flooder.port))
        assert (await other.request(options(other.port))).status == 200
        answered = 0
        while True:
            try:
                await flooder.recv(timeout=0.3)
            except TimeoutError:
                break
            answered += 1
        assert answered <= 9  # burst 8, refill 1/s
        assert node.limiter.dropped >= 40
        p = phone(other)
        assert (
            await other.request(p.register(authorization=await authorized(other, p)))
        ).status == 200
    finally:
        flooder.close()
        other.close()


async def test_ban_after_repeated_auth_failures(client: UdpClient, node: FrontendNode) -> None:
    p = phone(client)
    for _ in range(3):  # 3 x (challenge + failure) uses 6 of the 8 tokens
        r = await client.request(p.register(authorization=await authorized(client, p, "bad")))
        assert r.status == 401
    node.limiter.ban_failures = 1
    r = await client.request(p.register(authorization=await authorized(client, p, "bad")))
    assert r.status == 401
    assert node.limiter.banned(f"127.0.0.1:{client.port}", "1001", node.now_ms())
    client.send(p.register())
    with pytest.raises(TimeoutError):
        await client.recv(timeout=0.3)


async def test_tcp_register(node: FrontendNode, log: FakeLog) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.tcp_port)
    port = writer.get_extra_info("sockname")[1]
    p = Phone("1002", "pw1002", local_port=port, transport="TCP")

    async def ask(data: bytes) -> bytes:
        writer.write(b"\r\n\r\n" + data)  # a keep-alive first: its pong comes first
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return head

    try:
        challenge = parse_response(await ask(p.register()))
        assert challenge.status == 401
        auth = p.answer(challenge.all("www-authenticate")[0], algorithm="SHA-256")
        ok = parse_response(await ask(p.register(authorization=auth)))
        assert ok.status == 200
        assert log.events[-1].source is not None and log.events[-1].source.transport == "tcp"
    finally:
        writer.close()


async def test_kafka_unreachable_means_503_never_200(clock: Clock) -> None:
    """Scenario: a node whose Kafka cannot be reached answers OPTIONS, challenges, and
    answers a correctly authenticated REGISTER with 503 and Retry-After."""
    from streams.frontend.eventlog import KafkaEventLog
    from streams.settings import Settings
    from tests.integration.engine_harness import free_port

    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix="nowhere.")
    event_log = KafkaEventLog(settings)
    users = {"1001": hashes_for("1001", REALM, "pw1001")}
    auth = DigestAuthenticator(REALM, users, NonceIssuer(b"s" * 32, REALM, 300_000, clock))
    n = FrontendNode(
        node_id="fe1",
        registrar=Registrar(auth, ExpiryPolicy()),
        event_log=event_log,
        limiter=SourceLimiter(100, 100, 10, 1000),
        now_ms=clock,
    )
    await event_log.start()
    await n.start("127.0.0.1", 0)
    c = await UdpClient.open(n.udp_port)
    try:
        assert not await event_log.wait_ready(0.3)
        assert (await c.request(options(c.port))).status == 200
        p = phone(c)
        r = await c.request(p.register(authorization=await authorized(c, p)))
        assert r.status == 503 and r.get("retry-after") == "10"
    finally:
        c.close()
        await n.stop()
        await event_log.stop()


async def test_simulated_fleet_registers_and_unregisters(node: FrontendNode, log: FakeLog) -> None:
    import argparse

    from streams.frontend.simulate_cli import sim_password, simulate, user_name

    users = node.registrar.auth.users
    assert isinstance(users, dict)
    for i in range(6):
        user = user_name("sim", i)
        users[user] = hashes_for(user, REALM, sim_password(user))
    args = argparse.Namespace(
        phones=6,
        server=f"127.0.0.1:{node.udp_port}",
        prefix="sim",
        rate=200.0,
        expires=300,
        duration=0.0,
        wrong_password_share=0.0,
        no_unregister=False,
        bind="127.0.0.1",
    )
    report = await simulate(args, REALM)
    assert report.statuses == {200: 12} and report.timeouts == 0
    registered = [e for e in log.events if e.kind == "register"]
    assert len(registered) == 12
    assert sorted(e.contacts[0].expires for e in registered) == [0] * 6 + [300] * 6
    assert len(node.bindings) == 0


async def test_node_survives_mutated_torture_messages(log: FakeLog, clock: Clock) -> None:
    """3000 mutated corpus messages through the whole request path: nothing raises,
    nothing is a 500 (an internal error), every answer is a SIP response."""
    import random

    from schemas import Source
    from tests.unit.sip_corpus import corpus

    users = {"1001": hashes_for("1001", REALM, "pw1001")}
    auth = DigestAuthenticator(REALM, users, NonceIssuer(b"s" * 32, REALM, 300_000, clock))
    n = FrontendNode(
        node_id="fe1",
        registrar=Registrar(auth, ExpiryPolicy()),
        event_log=log,
        limiter=SourceLimiter(10**6, 10**6, 10**6, 1),
        now_ms=clock,
    )
    seeds = [*corpus().values(), Phone("1001", "pw1001").register()]
    rng = random.Random(4475)
    tokens = [b"\r\n", b",", b";", b'"', b"<", b">", b"*", b"%", b"\x00", b"\xff", b"=", b":"]
    sent: list[bytes] = []
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randint(0, len(data))
            op = rng.randrange(4)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                del data[pos : pos + rng.randint(1, 30)]
            elif op == 2:
                data[pos:pos] = rng.choice(tokens)
            else:
                data[pos:pos] = data[pos : pos + rng.randint(1, 100)]
        await n.handle(bytes(data), Source("127.0.0.1", 5060, "udp"), sent.append, stream=False)
    assert n.stats.received == 3000
    assert 500 not in n.stats.answered, n.stats
    # A 400 echoes the mutated headers as received, so only its status line is read.
    assert sent and all(response_status(r) in (200, 400, 401, 405, 420, 423) for r in sent)


async def test_path_is_logged_and_echoed_to_a_ua_that_supports_it(
    client: UdpClient, log: FakeLog
) -> None:
    p = phone(client)
    path = ["Path: <sip:edge1.example;lr>, <sip:edge2.example;lr>"]
    auth = await authorized(client, p)
    r = await client.request(p.register(authorization=auth, extra=[*path, "Supported: path"]))
    assert r.status == 200 and r.get("path") == "<sip:edge1.example;lr>, <sip:edge2.example;lr>"
    assert log.events[-1].path == ("<sip:edge1.example;lr>", "<sip:edge2.example;lr>")
    r = await client.request(p.register(authorization=await authorized(client, p), extra=path))
    assert r.status == 200 and r.get("path") is None


async def test_foreign_domain_is_404_and_not_logged(
    client: UdpClient, log: FakeLog, node: FrontendNode
) -> None:
    node.registrar.domains = frozenset({"pbx.example"})
    p = Phone("1001", "pw1001", domain="elsewhere.example", local_port=client.port)
    r = await client.request(p.register())
    assert r.status == 404 and log.events == []
    ok = phone(client)
    assert (
        await client.request(ok.register(authorization=await authorized(client, ok)))
    ).status == 200


async def test_metrics_and_readiness_over_http(
    client: UdpClient, log: FakeLog, node: FrontendNode
) -> None:
    """GET /metrics counts what the node answered; /readyz follows the event log."""
    import aiohttp

    from streams.frontend.web import start_web

    runner, port = await start_web(node, log, "127.0.0.1", 0)
    try:
        p = phone(client)
        r = await client.request(p.register(authorization=await authorized(client, p)))
        assert r.status == 200
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200
            log.ready = False
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 503
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
        assert 'regstate_frontend_responses_total{node="fe1",status="401"} 1' in text
        assert 'regstate_frontend_responses_total{node="fe1",status="200"} 1' in text
        assert 'regstate_frontend_events_total{node="fe1",result="acked"} 1' in text
        assert 'regstate_frontend_bindings{node="fe1"} 1' in text
        assert 'regstate_frontend_event_log_ready{node="fe1"} 1' in text
    finally:
        await runner.cleanup()


async def _tcp_register(node: FrontendNode, contact: str) -> tuple[asyncio.StreamWriter, Phone]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.tcp_port)
    port = writer.get_extra_info("sockname")[1]
    p = Phone("1002", "pw1002", local_port=port, transport="TCP")

    async def ask(data: bytes) -> Response:
        writer.write(data)
        return parse_response(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))

    challenge = await ask(p.register(contacts=[contact]))
    auth = p.answer(challenge.all("www-authenticate")[0])
    ok = await ask(
        p.register(contacts=[contact], authorization=auth, extra=["Supported: outbound"])
    )
    assert ok.status == 200, ok.raw
    return writer, p


async def test_an_outbound_flow_that_closes_deactivates_its_binding(
    node: FrontendNode, log: FakeLog
) -> None:
    """RFC 5626: a binding with +sip.instance and reg-id registered over TCP lives on that
    connection; when it closes the node logs `deactivate` (flow_lost), and the fold
    removes the binding as `deactivated`."""
    from processors.fold import fold_event

    instance = '"<urn:uuid:00000000-0000-0000-0000-0000000a1002>"'
    contact = f"<sip:1002@127.0.0.1:5099;transport=tcp;ob>;reg-id=1;+sip.instance={instance}"
    writer, p = await _tcp_register(node, contact)
    register = log.events[-1]
    writer.close()
    await wait_until_async(lambda: log.events[-1].kind == "deactivate", 5, 0.01, "deactivate")
    lost = log.events[-1]
    assert (lost.reason, lost.call_id, lost.cseq) == ("flow_lost", p.call_id, p.cseq)
    assert lost.node == "fe1" and lost.id == f"fe1:{lost.seq}" and lost.seq > register.seq
    assert len(node.bindings) == 0 and node.stats.flows_lost == 1
    assert decode_event(encode_event(lost)) == lost  # what the engine admits
    state, _ = fold_event(None, register)[:2]
    folded = fold_event(state, lost)
    assert folded.state.contacts == ()
    assert [e.event for e in folded.events] == ["deactivated"]


async def test_a_plain_tcp_binding_outlives_its_connection(
    node: FrontendNode, log: FakeLog
) -> None:
    """Without RFC 5626 (no instance and reg-id) a closed connection says nothing about
    the phone: RFC 3261 phones may open a new connection for every request."""
    writer, _ = await _tcp_register(node, "<sip:1002@127.0.0.1:5099;transport=tcp>")
    writer.close()
    await wait_until_async(lambda: node.stats.tcp_closed == 1, 5, 0.01, "the close seen")
    assert [e.kind for e in log.events] == ["register"]
    assert len(node.bindings) == 1


async def test_more_contacts_than_the_fold_allows_get_403_and_no_binding(
    client: UdpClient, log: FakeLog, node: FrontendNode
) -> None:
    """Issue 14 defect 1: 11 Contacts (cap 10) got 200 and 11 local bindings while the
    fold refused the request. Now the registrar answers what the fold decides (D84)."""
    from processors.fold import fold_event
    from processors.outcomes import Outcome
    from processors.policy import FoldPolicy

    p = phone(client)
    contacts = [f"<sip:1001@127.0.0.{i}:{client.port}>" for i in range(1, 12)]
    r = await client.request(
        p.register(contacts=contacts, authorization=await authorized(client, p))
    )
    assert r.status == 403
    assert log.kinds() == [("reject", "too_many_contacts")]
    assert len(node.bindings) == 0
    # The fold, given the REGISTER the node would have logged, refuses it too.
    folded = fold_event(None, log.events[0]._replace(kind="register", contacts=tuple(
        ContactEntry(c.strip("<>"), 3600) for c in contacts
    ), status=None, reason=None), FoldPolicy())  # fmt: skip
    assert folded.outcome == Outcome.TOO_MANY_CONTACTS
    # Ten fit; an eleventh from a later REGISTER does not (reject policy: this node's own).
    r = await client.request(
        p.register(contacts=contacts[:10], authorization=await authorized(client, p))
    )
    assert r.status == 200 and len(node.bindings) == 10
    r = await client.request(
        p.register(contacts=contacts[10:], authorization=await authorized(client, p))
    )
    assert r.status == 403 and len(node.bindings) == 10
    assert log.kinds()[-1] == ("reject", "too_many_contacts")


def garbage_auth(user: str = "1001") -> str:
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", '
        'uri="sip:pbx.example", response="0123456789abcdef0123456789abcdef", qop=auth, '
        'nc=00000001, cnonce="x", algorithm=MD5'
    )


async def test_garbage_credentials_never_ban_and_the_phone_next_door_registers(
    node: FrontendNode, log: FakeLog
) -> None:
    """Issue 14 defect 5: 20 REGISTERs with garbage Authorization banned 127.0.0.1 and the
    next phone there got no answer. Only failures with a valid nonce of ours count (D85)."""
    node.limiter.ban_failures = 3
    node.limiter.burst = node.limiter.rate_per_ms = 10**6  # the rate limit is not tested here
    attacker = await UdpClient.open(node.udp_port)
    victim = await UdpClient.open(node.udp_port)
    node.source_key = lambda ip, _port: ip  # production keying: one address for both
    try:
        a = phone(attacker)
        for _ in range(20):
            r = await attacker.request(a.register(authorization=garbage_auth()))
            assert r.status == 401
        assert node.limiter.bans == 0
        v = phone(victim, "1002")
        r = await victim.request(v.register(authorization=await authorized(victim, v)))
        assert r.status == 200
        # Wrong passwords with our nonce do ban, but only that user at that address.
        for _ in range(3):
            r = await attacker.request(a.register(authorization=await authorized(attacker, a, "x")))
        assert node.limiter.bans == 1
        r = await victim.request(v.register(authorization=await authorized(victim, v)))
        assert r.status == 200
    finally:
        attacker.close()
        victim.close()


async def test_rejects_are_budgeted_per_aor_and_source_and_raw_is_cut(
    client: UdpClient, log: FakeLog, node: FrontendNode
) -> None:
    """Issue 14 defect 4: every resend of a challenged REGISTER wrote a full event."""
    node.limiter.burst = node.limiter.rate_per_ms = 10**6
    p = phone(client)
    request = p.register(extra=["X-Pad: " + "x" * 3000])
    for _ in range(30):
        assert (await client.request(request)).status == 401
    kinds = log.kinds()
    assert kinds == [("reject", "retransmission")] * node.reject_budget.budget
    assert all(e.raw is not None and len(e.raw.encode()) <= 1024 for e in log.events)
    assert node.reject_budget.suppressed == 29 - node.reject_budget.budget
    # An unknown user's resends write nothing at all.
    ghost = Phone("9999", "x", local_port=client.port)
    resend = ghost.register()
    for _ in range(10):
        assert (await client.request(resend)).status == 401
    assert len(log.events) == node.reject_budget.budget


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """EOF or a reset (a refused connection is aborted) within 5 s."""
    try:
        return await asyncio.wait_for(reader.read(10), 5) == b""
    except ConnectionResetError:
        return True


async def test_tcp_connection_caps_pong_and_message_deadline(node: FrontendNode) -> None:
    """Issue 14 defect 7: 400 idle connections from one address all stayed open, any byte
    reset the idle timer, a double-CRLF ping got no pong (D89)."""
    node.tcp_max_per_address = 5
    node.tcp_message_timeout_s = 0.5
    conns = [await asyncio.open_connection("127.0.0.1", node.tcp_port) for _ in range(8)]
    try:
        # The sixth and later are closed at accept (EOF); the first five stay open.
        for reader, _ in conns[5:]:
            assert await closed_by_peer(reader)
        assert node.stats.tcp_refused == 3 and node._tcp_open == 5
        reader, writer = conns[0]
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        # A message started and never finished: closed after the message deadline.
        writer.write(b"REGISTER sip:pbx.example SIP/2.0\r\nVia: x")
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        await wait_until_async(lambda: node._tcp_open == 4, timeout=5)
        assert node.stats.tcp_timeouts == 1
    finally:
        for _, w in conns:
            w.close()
    await wait_until_async(lambda: node._tcp_open == 0, timeout=5)
    assert node._tcp_per_address == {}


async def test_a_due_binding_whose_expire_fails_is_kept_and_expired_later(
    client: UdpClient, log: FakeLog, clock: Clock, node: FrontendNode
) -> None:
    """Defect 6: due bindings whose expire events failed were dropped (D88)."""
    p = phone(client)
    contact = f"<sip:1001@127.0.0.1:{client.port}>;expires=60"
    r = await client.request(
        p.register(contacts=[contact], authorization=await authorized(client, p))
    )
    assert r.status == 200 and len(log.events) == 1
    log.failing = True
    clock.ms += 61_000
    node._wakeup.set()
    await wait_until_async(lambda: node.stats.event_failures >= 1, 5, 0.02, "a failed expire")
    await wait_until_async(lambda: len(node.bindings) == 1, 5, 0.02, "the binding put back")
    log.failing = False
    await wait_until_async(lambda: len(log.events) == 2, 5, 0.05, "the expire, later")
    assert log.events[1].kind == "expire" and len(node.bindings) == 0


async def test_a_trusted_proxy_is_limited_per_original_source(
    client: UdpClient, node: FrontendNode
) -> None:
    """D85: relayed requests are banned per original source (bottom Via), not per proxy."""
    node.trusted_proxy = lambda ip: ip == "127.0.0.1"
    node.source_key = lambda ip, _port: ip
    node.limiter.ban_failures = 3
    p = phone(client)
    relayed = ["Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKorig;received=10.9.9.9"]
    for _ in range(3):
        challenge = await client.request(p.register(extra=relayed))
        auth = p.answer(challenge.all("www-authenticate")[-1], "wrong")
        assert (await client.request(p.register(authorization=auth, extra=relayed))).status == 401
    assert node.limiter.banned("10.9.9.9", "1001", node.now_ms())
    assert not node.limiter.banned("127.0.0.1", "1001", node.now_ms())
    # The same user relayed for another phone is still answered.
    other = ["Via: SIP/2.0/UDP 10.9.9.10:5060;branch=z9hG4bKother"]
    assert (await client.request(p.register(extra=other))).status == 401
