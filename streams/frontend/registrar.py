"""Registrar policy: what to answer a REGISTER and what to log (RFC 3261 section 10.3).

Pure: :meth:`Registrar.decide` reads only its arguments and the user table and
returns a :class:`Decision`; the node sends the response and publishes the
event. What it guarantees:

* 200 only with valid Digest credentials whose user is the AOR's user part.
* Every Contact is granted ``contact expires`` else ``Expires`` else the
  default, capped at the maximum; a non-zero request below the minimum fails
  the whole request with 423 and ``Min-Expires`` (section 10.3 step 7).
* ``Contact: *`` only with ``Expires: 0`` (and, by the parser, no other
  Contact); otherwise 400.
* A decision whose kind is ``reject`` names a short machine reason:
  ``auth_failed``, ``forbidden``, ``interval_too_brief``, ``bad_wildcard``,
  ``bad_extension``, ``too_many_contacts`` (403: more Contacts than the fold's
  cap, or than this node's own bindings leave room for under the ``reject`` policy).
  A plain challenge (no credentials, or a stale nonce) is
  not a final outcome for the phone and logs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from processors.fold import bindings_requested
from processors.policy import DEFAULT_POLICY, FoldPolicy
from processors.sipuri import AorError, canonical_aor
from schemas import ContactEntry, RegistrationEvent, Source, event_id
from streams.sip.digest import AuthOutcome, DigestAuthenticator
from streams.sip.message import SipRequest
from streams.sip.response import ALLOW

MAX_AOR_CHARS: Final = 256
"""Longest canonical AOR accepted (parameters are dropped, so real AORs are short)."""
MAX_REQUEST_CONTACTS: Final = 64
"""Contacts one REGISTER may carry at all (a hard cap above any sane ``max_contacts``)."""
SUPPORTED: Final = ("path",)
_canonical_aor = canonical_aor.__wrapped__
"""Option tags this registrar implements (RFC 3327 Path); a Require of any other is 420."""


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """Default, minimum and maximum expiry in seconds (checked by :meth:`validate`)."""

    default: int = 3600
    minimum: int = 60
    maximum: int = 7200

    def validate(self) -> None:
        """Raise ValueError unless 1 <= minimum <= default <= maximum."""
        if not 1 <= self.minimum <= self.default <= self.maximum:
            raise ValueError(
                f"expiry policy needs 1 <= min ({self.minimum}) <= default "
                f"({self.default}) <= max ({self.maximum})"
            )


@dataclass(frozen=True, slots=True)
class Decision:
    """The final response to send and, when ``kind`` is set, the event to log."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    kind: Literal["register", "reject"] | None = None
    reason: str | None = None
    aor: str | None = None
    granted: tuple[ContactEntry, ...] = ()
    auth_failed: bool = False
    """Credentials carrying a valid nonce of ours were wrong (feeds the ban, D85)."""
    unknown_user: bool = False
    """The AOR's user is not in the user table: nothing about it is logged (D87)."""


def aor_user(aor: str) -> str | None:
    """The user part of a canonical ``sip:user@host`` AOR; None without one."""
    rest = aor.split(":", 1)[1]
    return rest.rsplit("@", 1)[0] if "@" in rest else None


def aor_host(aor: str) -> str:
    """The host (and port, if any) of a canonical ``sip:[user@]host`` AOR."""
    return aor.split(":", 1)[1].rsplit("@", 1)[-1]


class Registrar:
    """Decides REGISTER and OPTIONS outcomes for one realm."""

    def __init__(
        self,
        auth: DigestAuthenticator,
        policy: ExpiryPolicy,
        domains: frozenset[str] = frozenset(),
        fold_policy: FoldPolicy = DEFAULT_POLICY,
    ) -> None:
        """``domains``: lower-case hosts whose AORs are accepted; empty accepts any.

        ``fold_policy``: the engine's (the same Settings), so the contact cap this
        registrar answers with is the one the fold applies (R9, D84).
        """
        policy.validate()
        self.auth = auth
        self.policy = policy
        self.domains = domains
        self.fold_policy = fold_policy

    def decide(self, request: SipRequest) -> Decision:
        """The outcome of one request that is not a retransmission."""
        if request.method == "OPTIONS":
            return Decision(
                200,
                (
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Supported", ", ".join(SUPPORTED)),
                ),
            )
        if request.method != "REGISTER":
            return Decision(405, (("Allow", ALLOW),))
        try:
            # Uncached: this runs before authentication, and the engine's 65,536-entry
            # cache would keep every attacker's To URI (D86).
            aor = _canonical_aor(request.to.uri)
        except AorError:
            return Decision(400, reason="invalid_aor")
        if aor.startswith("tel:") or len(aor) > MAX_AOR_CHARS:
            # Within the codec's limit (1,024), with room: the event must decode (D86).
            return Decision(400, reason="invalid_aor")
        if self.domains and aor_host(aor) not in self.domains:
            # RFC 3261 section 10.3 step 3: an AOR outside our domains is not found.
            # Not logged: the AOR is not ours, and anyone can send these.
            return Decision(404, reason="unknown_domain")
        unsupported = [tag for tag in request.require if tag not in SUPPORTED]
        if unsupported:
            return Decision(
                420, (("Unsupported", ", ".join(unsupported)),), "reject", "bad_extension", aor
            )

        result = self.auth.verify("REGISTER", request.uri, request.header_values("authorization"))
        # The AOR's user, not the claimed one: a user the table does not know is an
        # AOR nobody can register, and anyone can send those (D87).
        unknown = aor_user(aor) not in self.auth.users
        if result.outcome is AuthOutcome.ABSENT or result.outcome is AuthOutcome.STALE:
            stale = result.outcome is AuthOutcome.STALE
            return Decision(401, self._challenge(stale), aor=aor, unknown_user=unknown)
        if result.outcome is AuthOutcome.FAILED:
            return Decision(
                401,
                self._challenge(False),
                None if unknown else "reject",
                None if unknown else "auth_failed",
                aor,
                auth_failed=result.nonce_ours,
                unknown_user=unknown,
            )
        if result.username != aor_user(aor):
            return Decision(403, (), "reject", "forbidden", aor)

        if request.wildcard:
            if request.expires != 0:
                return Decision(400, (), "reject", "bad_wildcard", aor)
            return Decision(200, kind="register", aor=aor)
        if len(request.contacts) > MAX_REQUEST_CONTACTS:
            # A hard per-request cap, whatever the policy: the fold would refuse it,
            # and granting costs work per Contact.
            return Decision(403, (), "reject", "too_many_contacts", aor)
        granted: list[ContactEntry] = []
        for contact in request.contacts:
            asked = contact.expires if contact.expires is not None else request.expires
            if asked is None:
                asked = self.policy.default
            if 0 < asked < self.policy.minimum:
                return Decision(
                    423,
                    (("Min-Expires", str(self.policy.minimum)),),
                    "reject",
                    "interval_too_brief",
                    aor,
                )
            granted.append(
                ContactEntry(
                    uri=contact.uri,
                    expires=min(asked, self.policy.maximum),
                    q=contact.q,
                    instance=contact.instance,
                    reg_id=contact.reg_id,
                )
            )
        if bindings_requested(tuple(granted)) > self.fold_policy.max_contacts:
            # The fold refuses such a request against any state (R9): answer it so.
            return Decision(403, (), "reject", "too_many_contacts", aor)
        return Decision(200, kind="register", aor=aor, granted=tuple(granted))

    def _challenge(self, stale: bool) -> tuple[tuple[str, str], ...]:
        return tuple(("WWW-Authenticate", value) for value in self.auth.challenges(stale))


def build_event(
    decision: Decision,
    request: SipRequest,
    source: Source,
    *,
    node: str,
    seq: int,
    ts: int,
    reason: str | None = None,
) -> RegistrationEvent:
    """The RegistrationEvent (docs/design.md section 4) of a decision that has a ``kind`` and AOR.

    ``reason`` overrides the decision's (the node reports resent requests as
    ``retransmission``). ``raw`` never contains Authorization or
    Proxy-Authorization.
    """
    assert decision.kind is not None and decision.aor is not None
    kind: Literal["register", "reject"] = decision.kind if reason is None else "reject"
    is_register = kind == "register"
    return RegistrationEvent(
        kind=kind,
        id=event_id(node, seq),
        node=node,
        seq=seq,
        ts=ts,
        aor=decision.aor,
        call_id=request.call_id,
        cseq=request.cseq,
        contacts=decision.granted if is_register else (),
        wildcard=request.wildcard if is_register else False,
        expires=request.expires if is_register else None,
        source=source,
        user_agent=request.user_agent,
        path=tuple(p.render() for p in request.path),
        status=None if is_register else decision.status,
        reason=None if is_register else (reason or decision.reason),
        raw=_raw_for(kind, request.raw_without_credentials()),
    )


MAX_REJECT_RAW: Final = 1024
"""Bytes of the request kept in a ``reject`` event (D87): the start line and the first
headers say what was refused; a 7.6 KB copy per refused packet only fills the log."""


def _raw_for(kind: str, raw: str) -> str:
    if kind == "register" or len(raw) <= MAX_REJECT_RAW:
        return raw
    return raw.encode("utf-8")[:MAX_REJECT_RAW].decode("utf-8", errors="ignore")
