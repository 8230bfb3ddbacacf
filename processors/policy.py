"""Registrar policy the fold applies: contact cap (R9) and health thresholds (R12)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CapPolicy = Literal["reject", "evict_oldest"]


@dataclass(frozen=True, slots=True)
class FoldPolicy:
    """Settings the fold reads. Every worker and every replay must use the same ones."""

    max_contacts: int = 10
    """R9: most active bindings per AOR."""
    max_contacts_policy: CapPolicy = "reject"
    """R9: ``reject`` fails the request; ``evict_oldest`` deactivates the stalest binding."""
    auth_fail_threshold: int = 3
    """R12: auth rejects with no success since before the AOR is ``auth_failing``."""
    retransmission_threshold: int = 3
    """R12: retransmission rejects with no success since before it is ``unreachable``."""
    short_expiry_ms: int = 30_000
    """R12: a granted expiry below this counts toward ``flapping``."""
    flap_window_ms: int = 600_000
    """R12: an expire followed by a register within this window is one flap cycle."""
    flap_threshold: int = 3
    """R12: flap cycles (or short grants) before the AOR is ``flapping``."""


DEFAULT_POLICY = FoldPolicy()
