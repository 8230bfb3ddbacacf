"""Small builders for RegistrationEvents and fold runs, shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from processors.fold import Folded, fold_event
from processors.policy import DEFAULT_POLICY, FoldPolicy
from schemas.events import ContactEntry, RegistrationEvent, Source, event_id
from schemas.state import AorState

AOR = "sip:1001@pbx.example.com"
T0 = 1_700_000_000_000
"""A fixed event time (ms since the epoch): 2023-11-14."""

SOURCE = Source("192.0.2.10", 5060, "udp")


def contact(
    uri: str,
    expires: int = 3600,
    *,
    q: float | None = None,
    instance: str | None = None,
    reg_id: int | None = None,
) -> ContactEntry:
    return ContactEntry(uri, expires, q, instance, reg_id)


@dataclass
class Log:
    """Builds events of one AOR with a per-node increasing ``seq`` and ``id = node:seq``."""

    aor: str = AOR
    seqs: dict[str, int] = field(default_factory=dict)

    def _next(self, node: str) -> int:
        seq = self.seqs.get(node, 0) + 1
        self.seqs[node] = seq
        return seq

    def register(
        self,
        *contacts: ContactEntry | str,
        call_id: str = "call-1",
        cseq: int = 1,
        ts: int = T0,
        node: str = "fe1",
        expires: int | None = None,
        wildcard: bool = False,
    ) -> RegistrationEvent:
        entries = tuple(contact(c) if isinstance(c, str) else c for c in contacts)
        seq = self._next(node)
        return RegistrationEvent(
            kind="register",
            id=event_id(node, seq),
            node=node,
            seq=seq,
            ts=ts,
            aor=self.aor,
            call_id=call_id,
            cseq=cseq,
            contacts=entries,
            wildcard=wildcard,
            expires=expires,
            source=SOURCE,
            user_agent="Yealink SIP-T46S",
        )

    def end(
        self,
        kind: str,
        target: str,
        *,
        call_id: str = "call-1",
        cseq: int = 1,
        ts: int = T0,
        node: str = "engine:w1",
        reason: str | None = None,
    ) -> RegistrationEvent:
        assert kind in ("expire", "deactivate")
        seq = self._next(node)
        return RegistrationEvent(
            kind=kind,  # type: ignore[arg-type]
            id=event_id(node, seq),
            node=node,
            seq=seq,
            ts=ts,
            aor=self.aor,
            call_id=call_id,
            cseq=cseq,
            contact=target,
            reason=reason,
        )

    def expire(
        self, target: str, *, call_id: str = "call-1", cseq: int = 1, ts: int = T0
    ) -> RegistrationEvent:
        return self.end("expire", target, call_id=call_id, cseq=cseq, ts=ts)

    def deactivate(
        self,
        target: str,
        *,
        call_id: str = "call-1",
        cseq: int = 1,
        ts: int = T0,
        reason: str = "flow_lost",
    ) -> RegistrationEvent:
        return self.end(
            "deactivate", target, call_id=call_id, cseq=cseq, ts=ts, node="fe1", reason=reason
        )

    def reject(
        self,
        status: int = 401,
        reason: str = "auth_failed",
        *,
        call_id: str = "call-1",
        cseq: int = 1,
        ts: int = T0,
        node: str = "fe1",
    ) -> RegistrationEvent:
        seq = self._next(node)
        return RegistrationEvent(
            kind="reject",
            id=event_id(node, seq),
            node=node,
            seq=seq,
            ts=ts,
            aor=self.aor,
            call_id=call_id,
            cseq=cseq,
            source=SOURCE,
            status=status,
            reason=reason,
        )


def fold_all(
    events: Iterable[RegistrationEvent],
    state: AorState | None = None,
    policy: FoldPolicy = DEFAULT_POLICY,
) -> tuple[AorState, list[Folded]]:
    """Fold events of one AOR in order; the final state and every step's result."""
    steps: list[Folded] = []
    for event in events:
        folded = fold_event(state, event, policy)
        steps.append(folded)
        state = folded.state
    assert state is not None, "fold_all needs at least one event"
    return state, steps


def keys(state: AorState) -> list[str]:
    return [b.key for b in state.contacts]


def uris(state: AorState) -> list[str]:
    return [b.uri for b in state.contacts]
