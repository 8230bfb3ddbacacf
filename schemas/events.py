"""RegistrationEvent, schema version 1 (docs/design.md section 4).

One record per SIP request a front-end answered, or per binding that ran out.
The field names are the wire names: msgpack maps on Kafka, JSON objects in
``.jsonl`` files.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

SCHEMA_VERSION: Final = 1

Kind = Literal["register", "expire", "reject", "deactivate"]
KINDS: Final[frozenset[str]] = frozenset({"register", "expire", "reject", "deactivate"})


PROCESS_SEPARATOR: Final = "#"
"""``fe1#2`` is process 2 of front-end node ``fe1`` (processes sharing one SIP port)."""


def front_end_of(node: str) -> str:
    """The front-end node an event's ``node`` belongs to: ``fe1#2`` -> ``fe1``, ``fe1`` -> ``fe1``.

    Each process of a node needs its own ``node`` (``seq`` must increase per
    ``node`` for rule R5), but operators, alerting and the dialer's server map
    think in machines.
    """
    return node.split(PROCESS_SEPARATOR, 1)[0]


class Source(NamedTuple):
    """Where the request came from, after Via ``received``/``rport``."""

    ip: str
    port: int
    transport: str


class ContactEntry(NamedTuple):
    """One Contact of a REGISTER, with the expiry the node granted in its 200 OK."""

    uri: str
    expires: int
    q: float | None = None
    instance: str | None = None
    reg_id: int | None = None


class RegistrationEvent(NamedTuple):
    """A request a front-end answered, or a binding that ran out (``expire``).

    ``id`` is ``<node>:<seq>``; ``seq`` increases per node, also across the
    node's restarts, which is what makes duplicate detection (rule R5) cheap.
    ``ts`` is the node's clock in ms since the Unix epoch.
    """

    kind: Kind
    id: str
    node: str
    seq: int
    ts: int
    aor: str
    call_id: str
    cseq: int
    contacts: tuple[ContactEntry, ...] = ()
    wildcard: bool = False
    expires: int | None = None
    source: Source | None = None
    user_agent: str | None = None
    path: tuple[str, ...] = ()
    contact: str | None = None
    status: int | None = None
    reason: str | None = None
    raw: str | None = None
    v: int = SCHEMA_VERSION


def event_id(node: str, seq: int) -> str:
    """The ``id`` of an event: ``<node>:<seq>`` (the codec refuses any other, D8)."""
    return f"{node}:{seq}"


def ending_event(
    kind: Literal["expire", "deactivate"],
    *,
    node: str,
    seq: int,
    ts: int,
    aor: str,
    call_id: str,
    cseq: int,
    contact: str,
    reason: str | None,
) -> RegistrationEvent:
    """An ``expire`` or ``deactivate`` event: the end of the binding ``contact`` of ``aor``.

    ``call_id`` and ``cseq`` are those of the request that set the binding, so
    the fold leaves a binding refreshed since alone (R6, D7).
    """
    return RegistrationEvent(
        kind=kind,
        id=event_id(node, seq),
        node=node,
        seq=seq,
        ts=ts,
        aor=aor,
        call_id=call_id,
        cseq=cseq,
        contact=contact,
        reason=reason,
    )
