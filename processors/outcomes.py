"""What folding one event did; the engine counts these per kind."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The result of folding one RegistrationEvent."""

    APPLIED = "applied"
    """Bindings changed (a register, expire or deactivate that took effect)."""
    DUPLICATE = "duplicate"
    """R5: this event (node, seq) was already applied to the AOR."""
    STALE = "stale"
    """R4/R7: same Call-ID with a CSeq not above the binding's; the request failed whole."""
    QUERY = "query"
    """R8: a REGISTER without contacts; nothing changes."""
    NOOP = "noop"
    """Nothing to do: an expire/deactivate for a binding that is gone, refreshed or not
    yet due (R6), or a removal of bindings that do not exist."""
    REJECTED = "rejected"
    """R10: a ``reject`` event; bindings unchanged, health fed."""
    TOO_MANY_CONTACTS = "too_many_contacts"
    """R9 with policy ``reject``: the request would exceed max_contacts."""
    INVALID = "invalid"
    """R7: ``Contact: *`` with other contacts or an expiry other than 0."""
