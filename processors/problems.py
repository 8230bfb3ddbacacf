"""Phones with a health problem (R12): the logic of ``GET /v1/problems`` and ``regstate problems``.

Pure functions over an iterable of AorStates: the worker passes the states of
the table partitions it owns, ``regstate problems`` the last value of every key
of regstate.bindings (or a folded log file). No Faust, no Kafka, no clock: the
caller passes ``now_ms`` when it wants active contacts counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, cast

from schemas.codec import health_to_dict
from schemas.state import AorState, Health, HealthState

HEALTH_STATES: Final[tuple[HealthState, ...]] = (
    "registered",
    "unregistered",
    "auth_failing",
    "unreachable",
    "flapping",
)
PROBLEM_STATES: Final[frozenset[HealthState]] = frozenset(
    {"auth_failing", "unreachable", "flapping"}
)
"""What ``/v1/problems`` and ``regstate problems`` list when no state is asked for."""
MAX_LIMIT: Final = 10_000
"""Most entries one answer carries (``limit`` is capped to it)."""


class ProblemQueryError(ValueError):
    """A query parameter that cannot be used; ``reason`` is a short machine word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_states(values: Iterable[str]) -> frozenset[HealthState]:
    """The health states named by ``values`` (each may be comma-separated).

    No value at all means :data:`PROBLEM_STATES`. Raises ProblemQueryError on an
    unknown name.
    """
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        return PROBLEM_STATES
    unknown = sorted(set(names) - set(HEALTH_STATES))
    if unknown:
        raise ProblemQueryError(
            "invalid_state", f"unknown state {', '.join(unknown)}; use {', '.join(HEALTH_STATES)}"
        )
    return frozenset(cast(HealthState, n) for n in names)


def parse_limit(value: str | None) -> int:
    """``limit`` as an int in 1..MAX_LIMIT (default MAX_LIMIT); ProblemQueryError otherwise."""
    if value is None or value == "":
        return MAX_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise ProblemQueryError("invalid_limit", f"limit {value!r} is not an integer") from None
    if limit < 1:
        raise ProblemQueryError("invalid_limit", "limit must be at least 1")
    return min(limit, MAX_LIMIT)


_RANK: Final[dict[str, int]] = {
    "auth_failing": 0,
    "unreachable": 1,
    "flapping": 2,
    "unregistered": 3,
    "registered": 4,
}


def _order(s: AorState) -> tuple[int, int, str]:
    # Problem states first, then the longest-standing problem first within a state.
    return (_RANK.get(s.health.state, 5), s.health.since, s.aor)


def select(
    states: Iterable[AorState],
    wanted: frozenset[HealthState] = PROBLEM_STATES,
    limit: int = MAX_LIMIT,
) -> tuple[list[AorState], int]:
    """The AorStates whose ``health.state`` is in ``wanted``, ordered, at most ``limit``.

    Returns them with the total number that matched (which may exceed ``limit``).
    Order: auth_failing, unreachable, flapping, unregistered, registered; then by
    ``since`` (the longest-standing problem first); then AOR.
    """
    matched = [s for s in states if s.health.state in wanted]
    matched.sort(key=_order)
    return matched[:limit], len(matched)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def summarize(h: Health) -> str:
    """One line of evidence for an operator: what the diagnosis rests on."""
    r = h.last_reject
    last = ""
    if r is not None:
        where = f" from {r.source.ip}" if r.source is not None else ""
        last = f"; last reject {r.status} {r.reason} at {_iso(r.ts)} on {r.node}{where}"
    if h.state == "auth_failing":
        return f"{h.auth_failures} auth rejects with no success since{last}"
    if h.state == "unreachable":
        lost = "; the node accepted a request the phone then resent" if h.reply_lost else ""
        return (
            f"{h.retransmissions} retransmissions, {h.request_retransmissions} of request "
            f"{h.retransmitted_request or '?'}{lost}{last}"
        )
    if h.state == "flapping":
        grant = f"last grant {h.last_grant_s} s" if h.last_grant_s is not None else "grant unknown"
        lapse = f", last expiry {_iso(h.last_expired_at)}" if h.last_expired_at else ""
        return f"{h.short_cycles} short or lapsing cycles in a row ({grant}{lapse})"
    return h.state


def problem_to_dict(s: AorState, now_ms: int | None = None) -> dict[str, Any]:
    """One entry of the answer: the AOR, its diagnosis with evidence, and where it was seen.

    ``contacts`` counts the bindings active at ``now_ms`` (every binding held
    when ``now_ms`` is None). ``node``/``source``/``user_agent`` come from the most
    recently refreshed binding, else from the last reject.
    """
    h = s.health
    held = s.contacts if now_ms is None else s.active_contacts(now_ms)
    latest = max(s.contacts, key=lambda b: b.refreshed_at, default=None)
    node = source = user_agent = None
    if latest is not None:
        node, user_agent = latest.node, latest.user_agent
        source = latest.source.ip if latest.source is not None else None
    elif h.last_reject is not None:
        node = h.last_reject.node
        source = h.last_reject.source.ip if h.last_reject.source is not None else None
    return {
        "aor": s.aor,
        "state": h.state,
        "since": h.since,
        "summary": summarize(h),
        "contacts": len(held),
        "node": node,
        "source": source,
        "user_agent": user_agent,
        "health": health_to_dict(h),
    }


def problems_response(
    states: Iterable[AorState],
    *,
    state_params: Sequence[str] = (),
    limit_param: str | None = None,
    now_ms: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """``GET /v1/problems?state=...&limit=N`` as ``(HTTP status, JSON body)``.

    ``state`` may repeat or be comma-separated; absent, it means the problem
    states. 200: ``{"states": [...], "count": matched, "problems": [...]}`` with
    ``count`` the number matched before ``limit``. 400: ``{"error", "detail"}``.
    ``states`` is consumed only on success.
    """
    try:
        wanted = parse_states(state_params)
        limit = parse_limit(limit_param)
    except ProblemQueryError as exc:
        return 400, {"error": exc.reason, "detail": exc.detail}
    selected, total = select(states, wanted, limit)
    return 200, {
        "states": sorted(wanted),
        "count": total,
        "problems": [problem_to_dict(s, now_ms) for s in selected],
    }
