"""Why an AOR does not ring, in one line a dialer operator reads (issue 16, point 6).

``not registered: wrong password, 3 failed attempts since 08:01``: the worker's
404 for ``GET /v1/aors/{aor}`` carries it (with the health it comes from),
``./dev run`` prints it, ``regstate where`` ends its line with it. Pure: the
line is a function of the AOR's last :class:`~schemas.state.Health` and of the
time its last binding lapsed; times are UTC wall-clock ``HH:MM`` of event time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.codec import health_to_dict
from schemas.state import AorState, Health

AUTH_WORDS = {"auth_failed": "wrong password", "unauthorized": "wrong password"}
"""Reject reasons as a person says them (others are shown as they are)."""


def hhmm(ms: int) -> str:
    """``08:01``: ms since the epoch as UTC hours and minutes."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def why_not_registered(health: Health) -> str:
    """The reason part: ``wrong password, 3 failed attempts since 08:01``.

    Names the diagnosis and its evidence: failed attempts (auth_failing),
    retransmissions (unreachable), short grants (flapping), else the last expiry,
    the last reject or the unregister, whichever the health holds.
    """
    h = health
    reject = h.last_reject
    if h.state == "auth_failing":
        word = AUTH_WORDS.get(reject.reason, reject.reason) if reject else "wrong password"
        return f"{word}, {_plural(h.auth_failures, 'failed attempt')} since {hhmm(h.since)}"
    if h.state == "unreachable":
        n = max(h.request_retransmissions, h.retransmissions)
        return (
            f"unreachable, {_plural(n, 'retransmission')} of one request since {hhmm(h.since)} "
            "(its answers do not reach the phone)"
        )
    if h.state == "flapping":
        grant = f", last grant {h.last_grant_s} s" if h.last_grant_s is not None else ""
        return f"flapping, {_plural(h.short_cycles, 'short grant')} since {hhmm(h.since)}{grant}"
    if h.last_expired_at is not None and h.last_expired_at >= h.since:
        return f"binding expired at {hhmm(h.last_expired_at)} (the phone stopped refreshing)"
    if reject is not None and reject.ts >= h.since:
        word = AUTH_WORDS.get(reject.reason, reject.reason)
        return f"last REGISTER refused at {hhmm(reject.ts)}: {reject.status} {word}"
    if h.state == "registered":
        return f"no active contact (registered since {hhmm(h.since)}, then lapsed or removed)"
    if h.since:
        return f"unregistered since {hhmm(h.since)}"
    return "never registered"


def not_registered_line(health: Health | None) -> str:
    """``not registered: <why>`` (``not registered: no record`` without any health)."""
    if health is None:
        return "not registered: no record of this AOR"
    return f"not registered: {why_not_registered(health)}"


def not_found_body(aor: str, state: AorState | None) -> dict[str, Any]:
    """The 404 body of ``GET /v1/aors/{aor}`` for an AOR without an active contact.

    ``health`` is the AOR's last health as the table holds it (state, since, the
    evidence: failed attempts, retransmissions, short grants, last expiry, last
    reject), ``why`` the line above; both absent parts mean no record at all.
    """
    body: dict[str, Any] = {"error": "not_found", "aor": aor}
    if state is not None:
        body["health"] = health_to_dict(state.health)
    body["why"] = not_registered_line(None if state is None else state.health)
    return body
