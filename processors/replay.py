"""Fold a sequence of events into the table, as every replica and every replay does."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from processors.fold import fold_event
from processors.outcomes import Outcome
from processors.policy import DEFAULT_POLICY, FoldPolicy
from schemas.events import RegistrationEvent
from schemas.state import AorState, BindingEvent


@dataclass
class Table:
    """Every AOR's state after a fold, with the outcome counts and (optionally) binding events."""

    states: dict[str, AorState] = field(default_factory=dict)
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    events: list[BindingEvent] = field(default_factory=list)
    keep_events: bool = False
    fold_errors: list[tuple[str, str]] = field(default_factory=list)
    """(event id, error) of events the fold raised on: the engine dead-letters those
    (``fold_error``) and keeps the state, so a replay skips them the same way (D82)."""

    def apply(self, event: RegistrationEvent, policy: FoldPolicy = DEFAULT_POLICY) -> None:
        """Fold one event into the AOR it belongs to."""
        try:
            folded = fold_event(self.states.get(event.aor), event, policy)
        except Exception as exc:  # noqa: BLE001 - a fold bug must not end a replay
            self.fold_errors.append((event.id, f"{type(exc).__name__}: {exc}"))
            return
        self.states[event.aor] = folded.state
        self.outcomes[folded.outcome] += 1
        if self.keep_events:
            self.events.extend(folded.events)


def replay(
    events: Iterable[RegistrationEvent],
    policy: FoldPolicy = DEFAULT_POLICY,
    *,
    until_ms: int | None = None,
    keep_events: bool = False,
) -> Table:
    """Fold events in log order; those with ``ts`` after ``until_ms`` are left out."""
    table = Table(keep_events=keep_events)
    for event in events:
        if until_ms is not None and event.ts > until_ms:
            continue
        table.apply(event, policy)
    return table


def snapshot_at(
    states: dict[str, AorState], at_ms: int, *, include_empty: bool = False
) -> dict[str, AorState]:
    """AorStates holding only contacts active at ``at_ms`` (R6), keyed and sorted by AOR.

    AORs left with no active contact are dropped unless ``include_empty``: that is
    what regstate.bindings shows once the sweeper has expired them (a tombstone).
    """
    out: dict[str, AorState] = {}
    for aor in sorted(states):
        s = states[aor].only_active(at_ms)
        if s.contacts or include_empty:
            out[aor] = s
    return out
