"""The detector's thresholds, its output records and the names every part of it shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from schemas.alerts import GROUP_TYPES, Alert, GroupType

SWEEPER_PREFIX: Final = "engine:"
"""Node ids of the engine's sweeper (docs/design.md section 6): not front-ends, never silent."""
UNKNOWN: Final = "unknown"
MAX_REJECTS_KEPT: Final = 10_000
"""Rejects remembered per group (evidence in summaries; the oldest go first)."""

Group = tuple[GroupType, str]
PhoneId = tuple[str, str]
"""(AOR, network)."""
ChangeKind = Literal["fired", "updated", "resolved"]

TYPE_RANK: Final[Mapping[GroupType, int]] = {"net": 0, "node": 1, "ua": 2, "domain": 3}
"""Tie-break between equally hit groups: the network is the likeliest cause."""


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds of the detector (all times event time, ms)."""

    window_ms: int = 600_000
    """Sliding window over which losses are counted."""
    hold_ms: int = 60_000
    """How long a candidate must stay one before it fires (Prometheus ``for``)."""
    min_count: int = 10
    """N_min: fewest lost phones that can page, whatever the group size."""
    min_ratio: float = 0.2
    """p: smallest share of a group's phones lost within the window that pages."""
    resolve_ratio: float = 0.8
    """Share of an incident's lost phones that must be back before it resolves."""
    explain_ratio: float = 0.8
    """A candidate whose lost phones are at least this share of a better one's is explained."""
    node_silence_ms: int = 120_000
    """A node that sent nothing for this long is silent (node_down instead of mass_drop)."""
    overdue_margin_ms: int = 2_000
    """A binding is overdue at the latest this long before it expires."""
    refresh_tolerance: float = 1.25
    """Overdue after this many learned refresh intervals (plus the slack) without a refresh."""
    refresh_slack_ms: int = 30_000
    """Added to the learned interval: a refresh retransmitted for up to 32 s is not late."""
    storm_window_ms: int = 60_000
    """Window over which phones coming back are counted as a re-registration storm."""
    storm_min_count: int = 10
    """Fewest phones back within the storm window that make a storm."""
    storm_min_ratio: float = 0.2
    """Smallest share of a group back within the storm window that makes a storm."""
    forget_ms: int = 6 * 3600 * 1000
    """A phone down this long leaves its groups (unless an open incident holds it)."""
    update_ratio: float = 0.1
    """An open incident is re-emitted (``updated``) when a figure moved by this share."""
    group_types: tuple[GroupType, ...] = GROUP_TYPES
    """Which groupings are watched."""

    def __post_init__(self) -> None:
        for name in ("window_ms", "min_count", "storm_window_ms", "storm_min_count", "forget_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("hold_ms", "node_silence_ms", "overdue_margin_ms", "refresh_slack_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("min_ratio", "resolve_ratio", "explain_ratio", "storm_min_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
        if self.refresh_tolerance < 1.0:
            raise ValueError("refresh_tolerance must be at least 1")
        if not set(self.group_types) <= set(GROUP_TYPES) or not self.group_types:
            raise ValueError(f"group_types must be some of {GROUP_TYPES}")


class AlertChange(NamedTuple):
    """What happened to one incident at one tick; ``alert`` is its whole new record."""

    change: ChangeKind
    alert: Alert


class GroupStats(NamedTuple):
    """A group's phones at the last tick (for metrics)."""

    group_type: GroupType
    group: str
    active: int
    down: int
