"""Why folding one event had the outcome it had: short sentences for analysts.

``regstate replay --timeline`` prints, for every event of an AOR, what the fold
did with it (:class:`processors.outcomes.Outcome`, the binding events it
emitted) and why. The "why" is computed here, next to the fold, from the same
inputs the fold saw (the state before, the event, the fold's result), so the
command line only formats it.

Pure: no clock, no I/O. Times in the sentences are the event times of the log,
rendered in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from processors.fold import Folded, distinct_contacts, find_binding
from processors.outcomes import Outcome
from processors.policy import DEFAULT_POLICY, FoldPolicy
from processors.sipuri import uri_equal
from schemas.events import RegistrationEvent
from schemas.state import AorState, Binding, BindingEvent


def iso_ms(ms: int) -> str:
    """``2026-01-01T08:00:00.000Z``: ms since the epoch as an ISO 8601 UTC time."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _duration(ms: int) -> str:
    """An unsigned duration as a person reads it: ``45 s``, ``12 min 5 s``, ``3 h 2 min``."""
    s = abs(ms) // 1000
    if s < 120:
        return f"{abs(ms) / 1000:g} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def explain(
    state_before: AorState | None,
    event: RegistrationEvent,
    folded: Folded,
    policy: FoldPolicy = DEFAULT_POLICY,
) -> str:
    """One sentence saying why ``fold_event(state_before, event, policy)`` gave ``folded``.

    Guarantees: never raises for a (state, event, result) triple the fold produced;
    the sentence of a ``stale`` outcome names the Call-ID, the event's CSeq and the
    stored CSeq that failed it (R4/R7); a ``duplicate`` names the node and both
    ``seq`` marks (R5); a ``noop`` names which condition of R6/D7 did not hold.
    For ``applied`` it summarizes the binding events (they are also in
    ``folded.events``). Depends only on its arguments.
    """
    outcome = folded.outcome
    before = state_before if state_before is not None else AorState(aor=event.aor)
    if outcome is Outcome.DUPLICATE:
        mark = before.seen.get(event.node)
        return (
            f"duplicate: {event.node} seq {event.seq} <= {mark} already applied to this AOR "
            "(R5); skipped"
        )
    if outcome is Outcome.STALE:
        return _why_stale(before, event)
    if outcome is Outcome.NOOP:
        return _why_noop(before, event)
    if outcome is Outcome.QUERY:
        return "query: REGISTER without Contact, bindings unchanged (R8)"
    if outcome is Outcome.INVALID:
        if event.contacts:
            return "invalid: Contact: * together with other Contacts (R7); ignored"
        return f"invalid: Contact: * needs Expires 0, got {event.expires} (R7); ignored"
    if outcome is Outcome.TOO_MANY_CONTACTS:
        return (
            f"refused: the AOR would hold more than max_contacts={policy.max_contacts} "
            f"active bindings (R9, policy {policy.max_contacts_policy}); nothing changed"
        )
    if outcome is Outcome.REJECTED:
        return f"{event.node} answered {event.status} {event.reason} (R10); bindings unchanged"
    return _why_applied(before, event, folded.events)


def _stale_binding(before: AorState, event: RegistrationEvent) -> Binding | None:
    """The binding that made the fold call this REGISTER stale, found as the fold finds it."""
    if event.wildcard:
        return next(
            (b for b in before.contacts if b.call_id == event.call_id and event.cseq <= b.cseq),
            None,
        )
    # Mirrors the loop of processors.fold._register, including its edits of the
    # bindings (a later Contact of the same request may address what an earlier one set).
    contacts = {b.key: b for b in before.contacts}
    touched: set[str] = set()
    for key, flow, entry in distinct_contacts(event.contacts):
        old = find_binding(contacts, entry, key, flow)
        if old is not None:
            key = old.key
            if old.key not in touched and old.call_id == event.call_id and event.cseq <= old.cseq:
                return old
        if entry.expires == 0:
            if old is not None:
                del contacts[key]
            continue
        placeholder = Binding(
            key, entry.uri, 0, 0, 0, event.call_id, event.cseq, entry.q, entry.instance,
            entry.reg_id, None, None, event.node, (),
        )  # fmt: skip
        contacts[key] = placeholder
        touched.add(key)
    return None


def _why_stale(before: AorState, event: RegistrationEvent) -> str:
    b = _stale_binding(before, event)
    what = "Contact: * " if event.wildcard else ""
    if b is None:  # not reachable for a triple the fold produced; stay truthful anyway
        return f"stale: {what}CSeq {event.cseq} not above a stored CSeq for Call-ID {event.call_id}"
    return (
        f"stale: {what}CSeq {event.cseq} <= stored {b.cseq} for Call-ID {event.call_id} "
        f"(binding {b.key}); the whole request is ignored (R4)"
    )


def _why_noop(before: AorState, event: RegistrationEvent) -> str:
    if event.kind == "register":
        if event.wildcard:
            return "noop: Contact: * but the AOR has no binding"
        return "noop: removes (expires 0) only bindings the AOR does not have"
    target = event.contact or ""
    b = next((b for b in before.contacts if b.key == target), None)
    if b is None:
        b = next((b for b in before.contacts if uri_equal(b.uri, target)), None)
    if b is None:
        return f"noop: no binding {target} (already gone, or never registered)"
    if b.call_id != event.call_id or b.cseq != event.cseq:
        return (
            f"noop: binding {b.key} was set since by Call-ID {b.call_id} CSeq {b.cseq}; "
            f"this {event.kind} names Call-ID {event.call_id} CSeq {event.cseq}"
        )
    if event.kind == "expire" and event.ts < b.expires_at:
        return (
            f"noop: not due, the binding expires at {iso_ms(b.expires_at)}, "
            f"{_duration(b.expires_at - event.ts)} after this expire's ts (R6)"
        )
    return f"noop: {event.kind} of {b.key} changed nothing"


def _why_applied(
    before: AorState, event: RegistrationEvent, events: tuple[BindingEvent, ...]
) -> str:
    old = {b.key: b for b in before.contacts}
    parts: list[str] = []
    for be in events:
        key = be.key or ""
        if be.event in ("registered", "refreshed", "shortened") and be.expires_at is not None:
            text = f"{be.event} {key} until {iso_ms(be.expires_at)}"
            prior = old.get(key)
            if be.event == "registered" and prior is not None:
                if prior.expires_at <= event.ts:
                    text += " (the previous binding had lapsed)"
                elif prior.uri != be.uri:
                    text += f" (flow moved from {prior.uri})"
            parts.append(text)
        elif be.event == "deactivated" and event.kind == "register":
            parts.append(f"deactivated {key} (R9 evict_oldest)")
        elif be.event == "rejected":
            parts.append("rejected")
        else:
            parts.append(f"{be.event} {key}")
    return "; ".join(parts) if parts else "applied"
