"""Per-AOR diagnosis (rule R12): why a phone is or is not reachable.

Pure: the next Health is a function of the previous one, the event, and the
bindings after the event. Event time only.
"""

from __future__ import annotations

from typing import Any

from processors.policy import FoldPolicy
from schemas.events import RegistrationEvent
from schemas.state import Binding, Health, HealthState, Reject

_AUTH_REASONS = frozenset({"auth_failed", "unauthorized", "forbidden"})


def _with_state(h: Health, state: HealthState, ts: int, **changes: Any) -> Health:
    # `since` moves only when the diagnosis changes, so it reads "in this state since".
    since = h.since if h.state == state else ts
    return h._replace(state=state, since=since, **changes)


def _resting_state(contacts: tuple[Binding, ...]) -> HealthState:
    return "registered" if contacts else "unregistered"


def after_register(
    h: Health,
    event: RegistrationEvent,
    contacts: tuple[Binding, ...],
    policy: FoldPolicy,
) -> Health:
    """A REGISTER took effect: auth and reachability evidence is cleared."""
    short_cycles = h.short_cycles
    granted = [c.expires for c in event.contacts if c.expires > 0]
    # A too-short grant, or coming back soon after an expiry, is one flap cycle.
    lapsed_recently = (
        h.last_expired_at is not None and event.ts - h.last_expired_at <= policy.flap_window_ms
    )
    if granted and (min(granted) * 1000 < policy.short_expiry_ms or lapsed_recently):
        short_cycles += 1
    elif granted:
        short_cycles = 0
    state: HealthState = _resting_state(contacts)
    if state == "registered" and short_cycles >= policy.flap_threshold:
        state = "flapping"
    if (
        state == h.state
        and short_cycles == h.short_cycles
        and h.auth_failures == 0
        and h.retransmissions == 0
    ):
        return h  # the steady refresh: nothing to diagnose
    return _with_state(
        h, state, event.ts, auth_failures=0, retransmissions=0, short_cycles=short_cycles
    )


def after_unregister(h: Health, event: RegistrationEvent, contacts: tuple[Binding, ...]) -> Health:
    """A REGISTER removed bindings and was answered 200: a success, so failures clear."""
    state: HealthState = _resting_state(contacts)
    if h.state == "flapping" and contacts:
        state = "flapping"
    return _with_state(h, state, event.ts, auth_failures=0, retransmissions=0)


def after_removal(
    h: Health, event: RegistrationEvent, contacts: tuple[Binding, ...], expired: bool
) -> Health:
    """A binding ended without the phone asking (expire or deactivate)."""
    last_expired_at = event.ts if expired else h.last_expired_at
    state: HealthState = _resting_state(contacts)
    if h.state in ("auth_failing", "unreachable") and not contacts:
        state = h.state
    elif h.state == "flapping" and contacts:
        state = "flapping"
    return _with_state(h, state, event.ts, last_expired_at=last_expired_at)


def after_reject(
    h: Health, event: RegistrationEvent, contacts: tuple[Binding, ...], policy: FoldPolicy
) -> Health:
    """R10/R12: a node answered a final failure; bindings are unchanged."""
    reason = event.reason or ""
    reject = Reject(event.ts, event.status or 0, reason, event.node, event.source)
    auth = h.auth_failures + (1 if reason in _AUTH_REASONS else 0)
    retrans = h.retransmissions + (1 if reason == "retransmission" else 0)
    state: HealthState = h.state
    if auth >= policy.auth_fail_threshold:
        state = "auth_failing"
    elif retrans >= policy.retransmission_threshold:
        state = "unreachable"
    elif state not in ("flapping",):
        state = _resting_state(contacts)
    return _with_state(
        h, state, event.ts, auth_failures=auth, retransmissions=retrans, last_reject=reject
    )
