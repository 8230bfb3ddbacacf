"""Per-AOR diagnosis (rule R12): why a phone is or is not reachable.

Pure: the next Health is a function of the previous one, the event, and the
bindings after the event. Event time only; no clock.

The states and what moves an AOR into and out of them (thresholds are
:class:`~processors.policy.FoldPolicy` fields):

* ``auth_failing``: ``auth_fail_threshold`` auth rejects (``auth_failed``,
  ``unauthorized``, ``forbidden``) with no successful REGISTER since: the phone
  with a wrong password that retries forever. Left on the next success.
* ``unreachable``: one request (same Call-ID and CSeq) retransmitted
  ``retransmission_threshold`` times: the node answers, the answers do not get
  back (NAT, firewall). Left on a *clean* success: one not preceded by a
  retransmission of a request the node had already accepted (``reply_lost``),
  because such a phone's next REGISTER succeeds at the node just as well while
  the phone still never sees the 200.
* ``flapping``: ``flap_threshold`` successive REGISTERs that were each granted
  less than ``short_expiry_ms`` or came within ``flap_window_ms`` of an expiry of
  the AOR. Kept while its bindings lapse (that is the flap); left on a REGISTER
  with a normal grant and no recent lapse, or on a successful unregister.
* otherwise ``registered`` (some binding held) or ``unregistered``.

``auth_failing`` outranks ``unreachable``, which outranks ``flapping``. Bindings
ending without the phone asking (``expire``, ``deactivate``) never clear a
diagnosis: only the phone succeeding does.
"""

from __future__ import annotations

from typing import Any, Final

from processors.policy import FoldPolicy
from schemas.events import RegistrationEvent
from schemas.state import Binding, Health, HealthState, Reject

AUTH_REASONS: Final = frozenset({"auth_failed", "unauthorized", "forbidden"})
"""Reject reasons that count as a failed authentication."""
RETRANSMISSION: Final = "retransmission"
"""Reject reason of a request the node saw again (it re-sent its answer)."""
PROBLEM_STATES: Final[frozenset[HealthState]] = frozenset(
    {"auth_failing", "unreachable", "flapping"}
)


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
    """A REGISTER that grants at least one binding took effect (the node answered 200).

    Always clears the auth evidence (the credentials worked). Clears the
    retransmission evidence only when the exchange was clean (no ``reply_lost``).
    """
    short_cycles = h.short_cycles
    granted = [c.expires for c in event.contacts if c.expires > 0]
    shortest = min(granted) if granted else h.last_grant_s
    # A too-short grant, or coming back soon after an expiry, is one flap cycle.
    lapsed_recently = (
        h.last_expired_at is not None and event.ts - h.last_expired_at <= policy.flap_window_ms
    )
    if granted and (min(granted) * 1000 < policy.short_expiry_ms or lapsed_recently):
        short_cycles += 1
    elif granted:
        short_cycles = 0
    state: HealthState = _resting_state(contacts)
    # The node accepted an earlier request that the phone then retransmitted:
    # this success is no proof that replies reach the phone now.
    still_unreachable = h.reply_lost and h.state == "unreachable"
    if still_unreachable:
        state = "unreachable"
    elif state == "registered" and short_cycles >= policy.flap_threshold:
        state = "flapping"
    if (
        state == h.state
        and short_cycles == h.short_cycles
        and shortest == h.last_grant_s
        and h.auth_failures == 0
        and h.retransmissions == 0
        and not h.reply_lost
        and h.retransmitted_request is None
    ):
        return h  # the steady refresh: nothing to diagnose
    return _with_state(
        h,
        state,
        event.ts,
        auth_failures=0,
        # Evidence of a phone still unreachable stays visible; a clean success clears it.
        retransmissions=h.retransmissions if h.reply_lost else 0,
        request_retransmissions=0,
        retransmitted_request=None,
        reply_lost=False,
        short_cycles=short_cycles,
        last_grant_s=shortest,
    )


def after_unregister(h: Health, event: RegistrationEvent, contacts: tuple[Binding, ...]) -> Health:
    """A REGISTER removed bindings and was answered 200: a success, so failures clear."""
    state: HealthState = _resting_state(contacts)
    if h.state == "flapping" and contacts:
        state = "flapping"
    return _with_state(
        h,
        state,
        event.ts,
        auth_failures=0,
        retransmissions=0,
        request_retransmissions=0,
        retransmitted_request=None,
        reply_lost=False,
    )


def after_removal(
    h: Health, event: RegistrationEvent, contacts: tuple[Binding, ...], expired: bool
) -> Health:
    """A binding ended without the phone asking (expire or deactivate).

    A diagnosis stays: the phone did not succeed, so nothing it showed is
    disproved; a flapping phone's lapses are the flap itself.
    """
    last_expired_at = event.ts if expired else h.last_expired_at
    state: HealthState = h.state if h.state in PROBLEM_STATES else _resting_state(contacts)
    return _with_state(h, state, event.ts, last_expired_at=last_expired_at)


def after_reject(
    h: Health, event: RegistrationEvent, contacts: tuple[Binding, ...], policy: FoldPolicy
) -> Health:
    """R10/R12: a node answered a final failure (or re-sent one); bindings are unchanged.

    A reject never clears a diagnosis; it can only raise one.
    """
    reason = event.reason or ""
    reject = Reject(event.ts, event.status or 0, reason, event.node, event.source)
    auth = h.auth_failures + (1 if reason in AUTH_REASONS else 0)
    changes: dict[str, Any] = {"auth_failures": auth, "last_reject": reject}
    same_request = h.request_retransmissions
    if reason == RETRANSMISSION:
        request = f"{event.call_id} {event.cseq}"
        same_request = same_request + 1 if request == h.retransmitted_request else 1
        # The node accepted this very request (a binding carries its Call-ID and
        # CSeq), yet the phone sends it again: the 200 did not get back.
        bound = any(b.call_id == event.call_id and b.cseq == event.cseq for b in contacts)
        changes.update(
            retransmissions=h.retransmissions + 1,
            request_retransmissions=same_request,
            retransmitted_request=request,
            reply_lost=h.reply_lost or bound,
        )
    state: HealthState = h.state
    if auth >= policy.auth_fail_threshold:
        state = "auth_failing"
    elif state != "auth_failing" and same_request >= policy.retransmission_threshold:
        state = "unreachable"
    return _with_state(h, state, event.ts, **changes)
