"""A deterministic fleet of SIP phones, front-end nodes and the engine's sweeper.

Shared by the alerting and health tests (tests/unit/processors/test_alerting_*.py), the
runner's integration test and bench/alerting_sim.py, so the scenarios are
written once. Phones send REGISTERs (refreshing at a fixed share of their
grant), log in and out, reboot, power off, fail auth, lose replies; networks
and nodes can be cut. Every request a node answers becomes a RegistrationEvent,
folded with :func:`processors.fold.fold_event` in event-time order, so the
BindingEvents and AorStates a consumer sees are real fold output. The sweeper
appends ``expire`` events like the engine's (``engine:w1``, ``grace_ms`` after
expiry). Same seed, same calls: the same events, byte for byte.

Event time is simulated; nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Final, NamedTuple

from processors.alerting import Detector, network_of
from processors.fold import Folded, fold_event
from processors.policy import DEFAULT_POLICY, FoldPolicy
from schemas.alerts import Alert
from schemas.events import ContactEntry, RegistrationEvent, Source
from schemas.state import AorState, BindingEvent

START_TS: Final = 1_767_254_400_000
"""2026-01-01T08:00:00Z: a fixed start, so runs do not depend on the clock."""
SECOND: Final = 1000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
SWEEPER: Final = "engine:w1"
TRANSACTION_TIMEOUT_MS: Final = 32 * SECOND
"""RFC 3261 Timer F: a phone gives up on an unanswered REGISTER after 32 s."""
RETRANSMIT_AT_MS: Final = (500, 1500, 3500, 7500, 11_500, 15_500)
"""When a UDP phone resends an unanswered REGISTER (Timer E doubling up to T2 = 4 s)."""
USER_AGENTS: Final = (
    "Yealink SIP-T46U 108.86.0.20",
    "Poly VVX 450 6.4.3.5018",
    "Grandstream GXP2170 1.0.11.23",
    "Cisco/SPA504G-7.6.2",
)


@dataclass
class Phone:
    """One simulated phone; the fields are what it would keep itself."""

    ext: int
    aor: str
    ip: str
    port: int
    node: str
    user_agent: str
    grant_s: int
    refresh_share: float
    """The phone re-registers after this share of its grant (0.5: halfway)."""
    call_id: str = ""
    cseq: int = 0
    online: bool = False
    """Logged in and powered: it keeps its registration up."""
    wrong_password: bool = False
    replies_dropped: bool = False
    refresh_late_s: int | None = None
    """When set, the phone refreshes this many seconds after each REGISTER,
    whatever its grant (a broken timer: a 20 s grant lapses every time)."""
    token: int = 0
    """Bumped whenever the phone's plans change; older scheduled actions are void."""
    reboots: int = 0

    @property
    def contact(self) -> str:
        return f"sip:{self.ext}@{self.ip}:{self.port}"

    @property
    def net(self) -> str:
        return network_of(Source(self.ip, self.port, "udp"))


class Step(NamedTuple):
    """One event a node (or the sweeper) appended, and what folding it did."""

    event: RegistrationEvent
    folded: Folded


_Action = tuple[int, int, Callable[[int], None]]
"""(event time, order of scheduling, what to do): a plain tuple, the cheapest heap item."""


class PhoneSim:
    """The simulated world. Schedule things, then iterate :meth:`run`."""

    def __init__(
        self,
        seed: int = 1,
        start: int = START_TS,
        *,
        domain: str = "pbx.example.com",
        grace_ms: int = 5 * SECOND,
        policy: FoldPolicy = DEFAULT_POLICY,
    ) -> None:
        self.rng = random.Random(seed)
        self.start = start
        self.domain = domain
        self.grace_ms = grace_ms
        self.policy = policy
        self.states: dict[str, AorState] = {}
        self.phones: list[Phone] = []
        self._queue: list[_Action] = []
        self._order = 0
        self._node_seq: dict[str, int] = {}
        self._out: list[Step] = []
        self._cuts: list[tuple[str, int, int]] = []
        self._silent: list[tuple[str, int, int]] = []
        self._next_ext = 1000
        self._hosts: dict[str, int] = {}

    # ------------------------------------------------------------------ set-up

    def add_phones(
        self,
        count: int,
        *,
        net: str = "10.0.1",
        nodes: Iterable[str] = ("fe1",),
        grant_s: int = 600,
        online_at: int | None = None,
        spread_ms: int = 5 * MINUTE,
        user_agents: Iterable[str] = USER_AGENTS,
    ) -> list[Phone]:
        """``count`` phones in ``net`` (the first three octets of a /24), spread over
        ``nodes`` and user agents in turn (each node gets each user agent), logging
        in within ``spread_ms`` of ``online_at`` (default: the start);
        ``online_at=-1`` leaves them offline."""
        node_list, uas = list(nodes), list(user_agents)
        made = []
        for i in range(count):
            self._next_ext += 1
            # Hosts .10 to .249, then the same hosts again on other ports (phones behind a NAT).
            host = self._hosts.get(net, 0)
            self._hosts[net] = host + 1
            phone = Phone(
                ext=self._next_ext,
                aor=f"sip:{self._next_ext}@{self.domain}",
                ip=f"{net}.{10 + host % 240}",
                port=5060 + host // 240,
                node=node_list[i % len(node_list)],
                # Not in step with the nodes: every node serves every user agent.
                user_agent=uas[(i // len(node_list)) % len(uas)],
                grant_s=grant_s,
                refresh_share=self.rng.uniform(0.45, 0.55),
            )
            self.phones.append(phone)
            made.append(phone)
        if online_at != -1:
            self.login(made, self.start if online_at is None else online_at, spread_ms)
        return made

    def login(self, phones: Iterable[Phone], at: int, spread_ms: int = 0) -> None:
        """Each phone comes online (a new Call-ID) at a random time in ``[at, at + spread]``."""
        for p in phones:
            self._at(at + self._spread(spread_ms), partial(self._login, p))

    def logout(self, phones: Iterable[Phone], at: int, spread_ms: int = 0) -> None:
        """Each phone unregisters (Expires 0) and goes offline: a planned logout."""
        for p in phones:
            self._at(at + self._spread(spread_ms), partial(self._logout, p))

    def power_off(self, phones: Iterable[Phone], at: int, spread_ms: int = 0) -> None:
        """Each phone stops without unregistering (its binding lapses)."""
        for p in phones:
            self._at(at + self._spread(spread_ms), partial(self._power_off, p))

    def reboot(self, phone: Phone, at: int, down_ms: int, *, new_port: bool = False) -> None:
        """The phone goes quiet for ``down_ms`` then registers with a new Call-ID
        (and, behind a NAT that rebinds, a new source port: a new Contact)."""

        def back(t: int) -> None:
            if new_port:
                phone.port += 1
            self._login(phone, t)

        self._at(at, partial(self._power_off, phone))
        self._at(at + down_ms, back)

    def cut_network(self, net: str, start: int, end: int) -> None:
        """Requests from ``net`` (three octets) reach no node during ``[start, end)``."""
        self._cuts.append((net + ".", start, end))

    def silence_node(self, node: str, start: int, end: int) -> None:
        """``node`` answers and publishes nothing during ``[start, end)`` (the sweeper goes on)."""
        self._silent.append((node, start, end))

    # ------------------------------------------------------------------ running

    def run(self, until: int) -> Iterator[Step]:
        """Every event appended up to ``until`` (inclusive), folded, in event-time order."""
        while self._queue and self._queue[0][0] <= until:
            ts, _, run = heapq.heappop(self._queue)
            run(ts)
            if self._out:
                yield from self._out
                self._out.clear()

    # ------------------------------------------------------------------ internals

    def _spread(self, spread_ms: int) -> int:
        return self.rng.randrange(spread_ms) if spread_ms > 0 else 0

    def _at(self, ts: int, run: Callable[[int], None]) -> None:
        self._order += 1
        heapq.heappush(self._queue, (ts, self._order, run))

    def _later(self, phone: Phone, ts: int, run: Callable[[int], None]) -> None:
        """Schedule a step of the phone's current plan (void once its token moves)."""
        token = phone.token

        def guarded(t: int) -> None:
            if phone.token == token:
                run(t)

        self._at(ts, guarded)

    def _reachable(self, phone: Phone, ts: int) -> bool:
        cut = any(phone.ip.startswith(n) and s <= ts < e for n, s, e in self._cuts)
        silent = any(phone.node == n and s <= ts < e for n, s, e in self._silent)
        return not (cut or silent)

    def _append(self, event: RegistrationEvent) -> None:
        folded = fold_event(self.states.get(event.aor), event, self.policy)
        self.states[event.aor] = folded.state
        self._out.append(Step(event, folded))
        for be in folded.events:
            if be.event in ("registered", "refreshed", "shortened") and be.expires_at is not None:
                self._plan_sweep(be)

    def _plan_sweep(self, be: BindingEvent) -> None:
        """The engine's sweeper: an ``expire`` ``grace_ms`` after the expiry, if still due."""
        assert be.expires_at is not None and be.key is not None
        key, call_id, cseq, aor = be.key, be.call_id, be.cseq, be.aor

        def sweep(t: int) -> None:
            state = self.states.get(aor)
            b = next((b for b in state.contacts if b.key == key), None) if state else None
            if b is not None and b.call_id == call_id and b.cseq == cseq:
                self._append(self._event("expire", SWEEPER, t, aor, call_id, cseq, contact=key))

        self._at(be.expires_at + self.grace_ms, sweep)

    def _event(
        self,
        kind: str,
        node: str,
        ts: int,
        aor: str,
        call_id: str,
        cseq: int,
        **fields: object,
    ) -> RegistrationEvent:
        seq = self._node_seq.get(node, 0) + 1
        self._node_seq[node] = seq
        return RegistrationEvent(
            kind=kind,  # type: ignore[arg-type]
            id=f"{node}:{seq}",
            node=node,
            seq=seq,
            ts=ts,
            aor=aor,
            call_id=call_id,
            cseq=cseq,
            **fields,  # type: ignore[arg-type]
        )

    def _login(self, phone: Phone, ts: int) -> None:
        phone.token += 1
        phone.online = True
        phone.reboots += 1
        phone.call_id = f"{phone.ext}-{phone.reboots}@{phone.ip}"
        self._attempt(phone, ts)

    def _logout(self, phone: Phone, ts: int) -> None:
        phone.token += 1
        if phone.online and self._reachable(phone, ts):
            phone.cseq += 1
            self._append(self._register(phone, ts, expires=0))
        phone.online = False

    def _power_off(self, phone: Phone, ts: int = 0) -> None:
        phone.token += 1
        phone.online = False

    def _register(self, phone: Phone, ts: int, expires: int) -> RegistrationEvent:
        return self._event(
            "register",
            phone.node,
            ts,
            phone.aor,
            phone.call_id,
            phone.cseq,
            contacts=(ContactEntry(phone.contact, expires),),
            expires=expires,
            source=Source(phone.ip, phone.port, "udp"),
            user_agent=phone.user_agent,
        )

    def _reject(self, phone: Phone, ts: int, status: int, reason: str) -> RegistrationEvent:
        return self._event(
            "reject",
            phone.node,
            ts,
            phone.aor,
            phone.call_id,
            phone.cseq,
            source=Source(phone.ip, phone.port, "udp"),
            user_agent=phone.user_agent,
            status=status,
            reason=reason,
        )

    def _attempt(self, phone: Phone, ts: int) -> None:
        """One REGISTER transaction of an online phone, and what it schedules next."""
        if not phone.online:
            return
        phone.cseq += 1
        retry = TRANSACTION_TIMEOUT_MS + self.rng.randrange(60 * SECOND)
        if not self._reachable(phone, ts):
            # Nothing reaches a node: no event at all. Time out, then try again.
            self._later(phone, ts + retry, lambda t: self._attempt(phone, t))
            return
        if phone.wrong_password:
            self._append(self._reject(phone, ts, 401, "auth_failed"))
            self._later(phone, ts + retry, lambda t: self._attempt(phone, t))
            return
        self._append(self._register(phone, ts, phone.grant_s))
        if phone.replies_dropped:
            # The node accepted it; the 200 never arrives, so the phone resends the
            # same request (the node re-answers it: a `retransmission`), then gives up.
            cseq = phone.cseq

            def resend(t: int) -> None:
                self._append(self._reject(phone, t, 200, "retransmission")._replace(cseq=cseq))

            for offset in RETRANSMIT_AT_MS:
                self._later(phone, ts + offset, resend)
            self._later(phone, ts + retry, lambda t: self._attempt(phone, t))
            return
        if phone.refresh_late_s is not None:
            wait = phone.refresh_late_s * SECOND
        else:
            wait = int(phone.grant_s * phone.refresh_share * SECOND)
        self._later(phone, ts + wait, lambda t: self._attempt(phone, t))


# --------------------------------------------------------------------------- driving a detector


class Timed(NamedTuple):
    """An alert change and the event time of the tick that produced it."""

    at: int
    change: str
    alert: Alert


def feed(detector: Detector, step: Step, *, events_first: bool = False) -> None:
    """Give the detector what the engine publishes for one folded event.

    The registration itself (liveness, rejects); then the AorState (a tombstone,
    i.e. an AorState without contacts, when none is left) and the BindingEvents,
    in the engine's order, or the other way round with ``events_first`` (the two
    topics interleave arbitrarily at a consumer).
    """
    detector.observe(step.event)
    if not step.folded.events:
        return
    state = step.folded.state
    public = state if state.contacts else AorState(state.aor)
    if events_first:
        for be in step.folded.events:
            detector.observe(be)
        detector.observe(public)
    else:
        detector.observe(public)
        for be in step.folded.events:
            detector.observe(be)


def drive(
    sim: PhoneSim,
    detector: Detector,
    until: int,
    *,
    tick_ms: int = 5 * SECOND,
    events_first: bool = False,
    on_step: Callable[[Step], None] | None = None,
) -> list[Timed]:
    """Run the simulation to ``until``, ticking the detector every ``tick_ms`` of event time.

    The watermark is the event time itself (the simulation has no lateness).
    Returns every alert change with the tick time that produced it.
    """
    out: list[Timed] = []
    next_tick = (detector.now // tick_ms + 1) * tick_ms if detector.now > 0 else sim.start
    for step in sim.run(until):
        while step.event.ts >= next_tick:
            out += [Timed(next_tick, c.change, c.alert) for c in detector.tick(next_tick)]
            next_tick += tick_ms
        feed(detector, step, events_first=events_first)
        if on_step is not None:
            on_step(step)
    while next_tick <= until:
        out += [Timed(next_tick, c.change, c.alert) for c in detector.tick(next_tick)]
        next_tick += tick_ms
    return out
