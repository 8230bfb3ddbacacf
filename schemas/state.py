"""AorState (the table value) and BindingEvent (the change feed), docs/design.md section 4.

All times are ms since the Unix epoch, taken from event time, never a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple

from schemas.events import Source

BindingEventName = Literal[
    "registered", "refreshed", "shortened", "expired", "deactivated", "unregistered", "rejected"
]

_NO_MARKS: Mapping[str, int] = MappingProxyType({})

HealthState = Literal["registered", "unregistered", "auth_failing", "unreachable", "flapping"]


class Binding(NamedTuple):
    """One contact bound to an AOR: where the phone rings, and what set it."""

    key: str
    uri: str
    expires_at: int
    registered_at: int
    refreshed_at: int
    call_id: str
    cseq: int
    q: float | None
    instance: str | None
    reg_id: int | None
    source: Source | None
    user_agent: str | None
    node: str
    path: tuple[str, ...]

    def active_at(self, at_ms: int) -> bool:
        """R6: a reader at time T counts only bindings whose expiry is after T."""
        return self.expires_at > at_ms


class Reject(NamedTuple):
    """The last final failure a node answered for this AOR (R10)."""

    ts: int
    status: int
    reason: str
    node: str
    source: Source | None


class Health(NamedTuple):
    """Diagnosis of the AOR (R12). ``since`` is the event time the state began."""

    state: HealthState = "unregistered"
    since: int = 0
    auth_failures: int = 0
    last_reject: Reject | None = None
    # Evidence for the diagnosis; filled by processors.health.
    retransmissions: int = 0
    short_cycles: int = 0
    last_expired_at: int | None = None
    # Added with issue 6; every field has a default so table values written
    # before it still decode (schemas.codec.state_from_dict).
    request_retransmissions: int = 0
    """Retransmissions seen of the one request named by ``retransmitted_request``."""
    retransmitted_request: str | None = None
    """``"<call_id> <cseq>"`` of the request last retransmitted (Call-IDs hold no space)."""
    reply_lost: bool = False
    """A request that the node accepted (it holds a binding) was retransmitted after:
    the phone never saw the 200, so the next success alone does not prove it reachable."""
    last_grant_s: int | None = None
    """Shortest expiry (s) granted by the last REGISTER that set a binding."""


class AorState(NamedTuple):
    """Every binding of one address-of-record, plus what keeps the fold idempotent.

    ``version`` counts the binding events ever emitted for the AOR, so a reader
    of regstate.binding-events can detect a gap. ``seen`` maps each node to the
    highest ``seq`` of that node applied to this AOR (R5); it lives in the same
    table value, hence in the same changelog record, as the bindings.
    """

    aor: str
    version: int = 0
    updated_ts: int = 0
    contacts: tuple[Binding, ...] = ()
    health: Health = Health()
    # Shared default; the fold copies `seen` before changing it, never mutates it.
    seen: Mapping[str, int] = _NO_MARKS

    def active_contacts(self, at_ms: int) -> tuple[Binding, ...]:
        """The bindings still active at ``at_ms`` (R6)."""
        return tuple(b for b in self.contacts if b.expires_at > at_ms)

    def only_active(self, at_ms: int) -> AorState:
        """A copy holding only the contacts active at ``at_ms``."""
        active = self.active_contacts(at_ms)
        if len(active) == len(self.contacts):
            return self
        return AorState(self.aor, self.version, self.updated_ts, active, self.health, self.seen)


class BindingEvent(NamedTuple):
    """One change of one AOR (RFC 3680 vocabulary), caused by RegistrationEvent ``cause``."""

    aor: str
    version: int
    event: BindingEventName
    key: str | None
    uri: str | None
    ts: int
    node: str
    call_id: str
    cseq: int
    expires_at: int | None
    cause: str
