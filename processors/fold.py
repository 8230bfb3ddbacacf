"""The fold: ``apply(state, event) -> (new_state, binding_events)`` (docs/design.md section 5).

Pure and deterministic: no clock reads, no I/O, no Faust or Kafka imports. The
engine, ``regstate replay``, the dialer view and the tests all call this one
function, so the same log gives the same table and the same binding events
everywhere, every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from processors import health as diagnosis
from processors.outcomes import Outcome
from processors.policy import DEFAULT_POLICY, FoldPolicy
from processors.sipuri import contact_key, flow_key, uri_equal
from schemas.events import ContactEntry, RegistrationEvent
from schemas.state import AorState, Binding, BindingEvent, BindingEventName, Health


class Folded(NamedTuple):
    """The new state, the binding events it caused (in order), and what happened."""

    state: AorState
    events: tuple[BindingEvent, ...]
    outcome: Outcome


def apply(
    state: AorState | None, event: RegistrationEvent, policy: FoldPolicy = DEFAULT_POLICY
) -> tuple[AorState, tuple[BindingEvent, ...]]:
    """Fold one event into the state of its AOR; see :func:`fold_event`."""
    folded = fold_event(state, event, policy)
    return folded.state, folded.events


def fold_event(
    state: AorState | None, event: RegistrationEvent, policy: FoldPolicy = DEFAULT_POLICY
) -> Folded:
    """Fold one event into the state of its AOR (``None``: the AOR has no state yet).

    Every event not already seen advances the node's ``seq`` mark, even one that
    changes no binding: otherwise redelivering a failed request after a later
    change could make it succeed (R5 must hold for every event, not only
    successful ones).
    """
    if state is None:
        state = AorState(aor=event.aor)
    elif state.aor != event.aor:
        raise ValueError(f"event {event.id} is for {event.aor!r}, state is for {state.aor!r}")
    last = state.seen.get(event.node)
    if last is not None and event.seq <= last:
        return Folded(state, (), Outcome.DUPLICATE)
    seen = dict(state.seen)
    seen[event.node] = event.seq
    kind = event.kind
    if kind == "register":
        return _register(state, event, seen, policy)
    if kind == "reject":
        return _reject(state, event, seen, policy)
    return _end_binding(state, event, seen)


def _unchanged(state: AorState, seen: Mapping[str, int], outcome: Outcome) -> Folded:
    return Folded(
        AorState(state.aor, state.version, state.updated_ts, state.contacts, state.health, seen),
        (),
        outcome,
    )


class _Emitter:
    """Numbers binding events: each one is one more version of the AOR (R11)."""

    __slots__ = ("aor", "event", "events", "version")

    def __init__(self, aor: str, version: int, event: RegistrationEvent) -> None:
        self.aor = aor
        self.version = version
        self.event = event
        self.events: list[BindingEvent] = []

    def emit(self, name: BindingEventName, binding: Binding | None) -> None:
        self.version += 1
        ev = self.event
        self.events.append(
            BindingEvent(
                aor=self.aor,
                version=self.version,
                event=name,
                key=None if binding is None else binding.key,
                uri=None if binding is None else binding.uri,
                ts=ev.ts,
                node=ev.node,
                call_id=ev.call_id,
                cseq=ev.cseq,
                expires_at=None if binding is None else binding.expires_at,
                cause=ev.id,
            )
        )


def find_binding(
    contacts: dict[str, Binding], entry: ContactEntry, key: str, flow: bool
) -> Binding | None:
    """The binding this Contact addresses (R2), or None.

    ``contacts`` is keyed by binding key: the exact key is one dict lookup, so a
    request of n Contacts costs n lookups, not n scans (D83). RFC comparison is
    not transitive, so a URI may be "equal" to several bindings, but it has
    exactly one canonical form: the key decides first.
    """
    found = contacts.get(key)
    if found is not None or flow:
        return found
    for b in contacts.values():
        # Flow bindings are addressed by instance and reg-id only (RFC 5626 section 6).
        if (b.reg_id is None or b.instance is None) and uri_equal(b.uri, entry.uri):
            return b
    return None


def distinct_contacts(
    entries: tuple[ContactEntry, ...],
) -> list[tuple[str, bool, ContactEntry]]:
    """(key, is_flow, entry) per binding the request addresses; a repeated key: last wins."""
    out: dict[str, tuple[str, bool, ContactEntry]] = {}
    for entry in entries:
        instance, reg_id = entry.instance, entry.reg_id
        flow = instance is not None and reg_id is not None
        key = flow_key(instance, reg_id) if flow else contact_key(entry.uri)  # type: ignore[arg-type]
        if len(entries) == 1:
            return [(key, flow, entry)]
        out.pop(key, None)  # keep the request order of the last occurrence
        out[key] = (key, flow, entry)
    return list(out.values())


def bindings_requested(entries: tuple[ContactEntry, ...]) -> int:
    """How many distinct bindings a REGISTER with these Contacts sets (non-zero expiry).

    The front-end answers with this what the fold will decide (R9, D84): more than
    ``max_contacts`` is refused whatever the AOR's state and whatever the policy.
    """
    return sum(1 for _, _, entry in distinct_contacts(entries) if entry.expires > 0)


def _by_key(b: Binding) -> str:
    return b.key


def _stale(binding: Binding, event: RegistrationEvent) -> bool:
    """R4: same Call-ID and a CSeq not above the binding's fails the request."""
    return binding.call_id == event.call_id and event.cseq <= binding.cseq


def _register(
    state: AorState, event: RegistrationEvent, seen: dict[str, int], policy: FoldPolicy
) -> Folded:
    if event.wildcard:
        return _unregister_all(state, event, seen)
    if not event.contacts:
        return _unchanged(state, seen, Outcome.QUERY)  # R8

    requested = distinct_contacts(event.contacts)
    contacts = {b.key: b for b in state.contacts}
    if sum(1 for _, _, entry in requested if entry.expires > 0) > policy.max_contacts:
        # R9, checked before any binding is built (D83): the request alone sets more
        # bindings than the cap, so no state and no policy can let it through. R4
        # still comes first: a request addressing a binding it is stale against fails
        # as STALE, as it would have in the loop below.
        for key, flow, entry in requested:
            old = find_binding(contacts, entry, key, flow)
            if old is not None and _stale(old, event):
                return _unchanged(state, seen, Outcome.STALE)
        return _refuse(state, event, seen, policy, Outcome.TOO_MANY_CONTACTS)

    emitter = _Emitter(state.aor, state.version, event)
    touched: set[str] = set()
    ts = event.ts
    resort = False
    for key, flow, entry in requested:
        old = find_binding(contacts, entry, key, flow)
        if old is not None:
            # The binding keeps its identity when the phone writes its Contact
            # differently but equivalently (RFC 3261 section 19.1.4).
            key = old.key
        # A binding this request already set is being set again, not replayed.
        if old is not None and old.key not in touched and _stale(old, event):
            return _unchanged(state, seen, Outcome.STALE)  # R3: nothing of it applies
        if entry.expires == 0:
            if old is not None:
                del contacts[key]
                emitter.emit("unregistered", old)
            continue
        expires_at = ts + entry.expires * 1000
        name: BindingEventName
        if old is None or old.expires_at <= ts or (flow and old.uri != entry.uri):
            name, registered_at = "registered", ts
        else:
            name = "shortened" if expires_at < old.expires_at else "refreshed"
            registered_at = old.registered_at
        # Positional: this runs once per contact per event, the hottest line of the engine.
        binding = Binding(
            key, entry.uri, expires_at, registered_at, ts, event.call_id, event.cseq,
            entry.q, entry.instance, entry.reg_id, event.source, event.user_agent,
            event.node, event.path,
        )  # fmt: skip
        if old is None:
            resort = True
        # A replaced binding keeps its place (dicts keep insertion order); a new one goes last.
        contacts[key] = binding
        touched.add(key)
        emitter.emit(name, binding)

    # R9: lapsed bindings the sweeper has not expired yet do not count.
    active = [b for b in contacts.values() if b.expires_at > ts]
    excess = len(active) - policy.max_contacts
    if excess > 0:
        victims = sorted(
            (b for b in active if b.key not in touched), key=lambda b: (b.refreshed_at, b.key)
        )[:excess]
        if policy.max_contacts_policy == "reject" or len(victims) < excess:
            return _refuse(state, event, seen, policy, Outcome.TOO_MANY_CONTACTS)
        for b in victims:
            del contacts[b.key]
        for b in victims:
            emitter.emit("deactivated", b)

    if not emitter.events:
        # Only removals of bindings that did not exist: the request changed nothing.
        return _unchanged(state, seen, Outcome.NOOP)
    # Kept in key order so equal states are equal tuples, whatever the arrival order.
    final = tuple(sorted(contacts.values(), key=_by_key)) if resort else tuple(contacts.values())
    if any(c.expires > 0 for c in event.contacts):
        new_health = diagnosis.after_register(state.health, event, final, policy)
    else:
        new_health = diagnosis.after_unregister(state.health, event, final)
    return Folded(
        AorState(state.aor, emitter.version, ts, final, new_health, seen),
        tuple(emitter.events),
        Outcome.APPLIED,
    )


def _unregister_all(state: AorState, event: RegistrationEvent, seen: dict[str, int]) -> Folded:
    """R7: ``Contact: *`` removes every binding, unless one is as new as the request."""
    if event.contacts or event.expires != 0:
        return _unchanged(state, seen, Outcome.INVALID)
    if any(_stale(b, event) for b in state.contacts):
        return _unchanged(state, seen, Outcome.STALE)
    if not state.contacts:
        return _unchanged(state, seen, Outcome.NOOP)
    emitter = _Emitter(state.aor, state.version, event)
    for b in state.contacts:
        emitter.emit("unregistered", b)
    new_health = diagnosis.after_unregister(state.health, event, ())
    return Folded(
        AorState(state.aor, emitter.version, event.ts, (), new_health, seen),
        tuple(emitter.events),
        Outcome.APPLIED,
    )


def _refuse(
    state: AorState,
    event: RegistrationEvent,
    seen: dict[str, int],
    policy: FoldPolicy,
    outcome: Outcome,
) -> Folded:
    """A request the registrar policy refuses whole: one ``rejected`` event, no binding change."""
    emitter = _Emitter(state.aor, state.version, event)
    emitter.emit("rejected", None)
    return Folded(
        AorState(state.aor, emitter.version, event.ts, state.contacts, state.health, seen),
        tuple(emitter.events),
        outcome,
    )


def _reject(
    state: AorState, event: RegistrationEvent, seen: dict[str, int], policy: FoldPolicy
) -> Folded:
    """R10: a node's final failure changes no binding; it feeds the health (R12)."""
    emitter = _Emitter(state.aor, state.version, event)
    emitter.emit("rejected", None)
    new_health: Health = diagnosis.after_reject(state.health, event, state.contacts, policy)
    return Folded(
        AorState(state.aor, emitter.version, event.ts, state.contacts, new_health, seen),
        tuple(emitter.events),
        Outcome.REJECTED,
    )


def _end_binding(state: AorState, event: RegistrationEvent, seen: dict[str, int]) -> Folded:
    """R6 (``expire``) and flow failure (``deactivate``): end one binding if still current.

    The event names the binding by key or Contact URI, and carries the Call-ID and
    CSeq that set it; a binding refreshed since is left alone. An ``expire`` also
    needs its ts at or past the binding's expiry, so a clock-skewed node cannot
    expire a live binding early.
    """
    target = event.contact or ""
    i = next((i for i, b in enumerate(state.contacts) if b.key == target), -1)
    if i < 0:
        i = next((i for i, b in enumerate(state.contacts) if uri_equal(b.uri, target)), -1)
    if i < 0:
        return _unchanged(state, seen, Outcome.NOOP)
    b = state.contacts[i]
    if b.call_id != event.call_id or b.cseq != event.cseq:
        return _unchanged(state, seen, Outcome.NOOP)
    expired = event.kind == "expire"
    if expired and event.ts < b.expires_at:
        return _unchanged(state, seen, Outcome.NOOP)
    emitter = _Emitter(state.aor, state.version, event)
    emitter.emit("expired" if expired else "deactivated", b)
    remaining = state.contacts[:i] + state.contacts[i + 1 :]
    new_health = diagnosis.after_removal(state.health, event, remaining, expired=expired)
    return Folded(
        AorState(state.aor, emitter.version, event.ts, remaining, new_health, seen),
        tuple(emitter.events),
        Outcome.APPLIED,
    )
