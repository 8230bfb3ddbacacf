"""HTTP Digest authentication for SIP (RFC 7616, RFC 8760 for SHA-256; RFC 3261 section 22).

What is guaranteed:

* Only HA1 hashes are ever needed (``H(username:realm:password)``, one per
  algorithm); the password never reaches this module.
* Nonces are stateless: ``base64url(8-byte issue time in ms || 6-byte issuer
  tag || first 16 bytes of HMAC-SHA256(secret, time || tag || realm))``. The
  tag names the issuing process: a hash of its node and process name (``fe1#0``)
  and a random id drawn at start (D95). Nothing is stored per client. A nonce
  older than the lifetime, one we did not issue, or one another process or node
  issued (or this process before a restart), with an otherwise correct digest,
  gets ``stale=true`` (the phone retries without asking its user); with a wrong
  digest it is a failure.
* An unknown user follows the same code path as a known one with a wrong
  password: a digest is computed against a per-process random HA1 and compared
  with :func:`hmac.compare_digest`, so the answer and its timing do not tell
  whether the user exists.
* qop=auth only. Each process remembers the (nonce, cnonce, nc) triples it
  accepted for the nonce lifetime: the same credentials in a new transaction get
  a fresh challenge (``stale=true``). Since only the issuing process accepts a
  nonce at all, a captured Authorization is refused everywhere but once: by the
  issuer's memory, and by every other process and node through the tag.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from streams.sip.message import quote, unquote

ALGORITHMS: Final[dict[str, Callable[[bytes], hashlib._Hash]]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
"""Supported algorithms, in the order challenges offer them is :data:`CHALLENGE_ORDER`."""
CHALLENGE_ORDER: Final = ("SHA-256", "MD5")
"""RFC 7616 section 3.7: the preferred algorithm first; MD5 for the many phones that
know nothing else."""
_NONCE_MAC_BYTES: Final = 16
_NONCE_TAG_BYTES: Final = 6
MAX_TRACKED_NONCE_USES: Final = 200_000
"""Bound of the replay memory (about 100 bytes each); the oldest entries go first."""


class DigestError(ValueError):
    """An Authorization header that is not a well-formed Digest credential."""


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode("utf-8")).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``H(username ":" realm ":" password)`` as lower-case hex."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def compute_response(
    algorithm: str,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """The ``response`` a client computes for qop=auth (RFC 7616 section 3.4.1)."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True, slots=True)
class Credentials:
    """The parameters of one ``Authorization: Digest ...`` value, unquoted."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def auth_params(text: str) -> dict[str, str]:
    """``name=value`` pairs separated by commas; values may be quoted (with commas inside)."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq == -1:
            raise DigestError(f"parameter without '=' at {text[i : i + 20]!r}")
        name = text[i:eq].strip(" \t").lower()
        if not name or any(c in name for c in ' \t,"'):
            raise DigestError(f"bad parameter name {name[:20]!r}")
        j = eq + 1
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == '"':
            k = j + 1
            while k < n and text[k] != '"':
                k += 2 if text[k] == "\\" else 1
            if k >= n:
                raise DigestError(f"unterminated quoted value of {name}")
            value, i = unquote(text[j : k + 1]), k + 1
        else:
            k = text.find(",", j)
            k = n if k == -1 else k
            value, i = text[j:k].strip(" \t"), k
        if name in params:
            raise DigestError(f"parameter {name} repeated")
        params[name] = value
    return params


def parse_authorization(value: str) -> Credentials | None:
    """Digest credentials of an Authorization value; None for another scheme.

    Raises DigestError when the value claims Digest but is malformed or lacks
    username, realm, nonce, uri or response.
    """
    scheme, _, rest = value.strip(" \t").partition(" ")
    if scheme.lower() != "digest":
        return None
    p = auth_params(rest)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise DigestError(f"Digest credentials lack {', '.join(missing)}")
    algorithm = p.get("algorithm", "MD5")
    for known in ALGORITHMS:
        if algorithm.upper() == known:
            algorithm = known
    return Credentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"].lower(),
        algorithm=algorithm,
        qop=p.get("qop"),
        nc=p.get("nc"),
        cnonce=p.get("cnonce"),
        opaque=p.get("opaque"),
    )


class NonceCheck(Enum):
    """What :meth:`NonceIssuer.check` found."""

    VALID = "valid"
    EXPIRED = "expired"
    FOREIGN = "foreign"
    """Not issued with our secret (another deployment, a restart with a new key, or forged)."""
    OTHER_ISSUER = "other_issuer"
    """Issued with our secret by another node or process (or by this one before a restart)."""


class NonceIssuer:
    """Stateless HMAC nonces with a lifetime (see the module docstring)."""

    def __init__(
        self,
        secret: bytes,
        realm: str,
        lifetime_ms: int,
        now_ms: Callable[[], int],
        issuer: str = "",
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self._secret = secret
        self._realm = realm.encode("utf-8")
        self.lifetime_ms = lifetime_ms
        self.now_ms = now_ms
        self.issuer = issuer
        """Node and process name (``fe1#0``), for logs; the tag also holds a random id."""
        boot = secrets.token_bytes(16)
        self.tag = hashlib.sha256(issuer.encode("utf-8") + b"\0" + boot).digest()[:_NONCE_TAG_BYTES]

    def _mac(self, stamp: bytes, tag: bytes) -> bytes:
        return hmac.new(self._secret, stamp + tag + self._realm, hashlib.sha256).digest()[
            :_NONCE_MAC_BYTES
        ]

    def issue(self) -> str:
        """A fresh nonce (40 URL-safe base64 characters)."""
        stamp = max(0, self.now_ms()).to_bytes(8, "big")
        raw = stamp + self.tag + self._mac(stamp, self.tag)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def check(self, nonce: str) -> NonceCheck:
        """VALID when we issued it less than ``lifetime_ms`` ago (and not in the future)."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return NonceCheck.FOREIGN
        if len(raw) != 8 + _NONCE_TAG_BYTES + _NONCE_MAC_BYTES:
            return NonceCheck.FOREIGN
        stamp, tag, mac = raw[:8], raw[8 : 8 + _NONCE_TAG_BYTES], raw[8 + _NONCE_TAG_BYTES :]
        if not hmac.compare_digest(mac, self._mac(stamp, tag)):
            return NonceCheck.FOREIGN
        if tag != self.tag:
            return NonceCheck.OTHER_ISSUER
        age = self.now_ms() - int.from_bytes(stamp, "big")
        # A nonce from slightly in the future: another node's clock; allow 5 s.
        if age > self.lifetime_ms or age < -5000:
            return NonceCheck.EXPIRED
        return NonceCheck.VALID


def _registrar_uri(uri: str) -> bool:
    """A SIP URI with no user part: what a REGISTER's Request-URI looks like.

    Some clients sign the address they sent to instead of the Request-URI
    (SIPp 3.6 signs ``sip:<remote ip>:<port>``); the digest still binds method,
    nonce and user, so such a URI is accepted for REGISTER.
    """
    lower = uri.lower()
    return lower.startswith(("sip:", "sips:")) and "@" not in uri and " " not in uri


class AuthOutcome(Enum):
    """Result of checking a request's credentials."""

    OK = "ok"
    ABSENT = "absent"
    """No Digest credentials for our realm: challenge (not an auth failure)."""
    STALE = "stale"
    """Correct digest, old or foreign nonce: challenge with ``stale=true``."""
    FAILED = "failed"
    """Wrong password, unknown user, or credentials that do not fit the request."""


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What :meth:`DigestAuthenticator.verify` decided, and for which user (as claimed)."""

    outcome: AuthOutcome
    username: str | None = None
    detail: str = ""
    nonce_ours: bool = False
    """The credentials carry a nonce this deployment issued, still within its lifetime.
    Only such a failure counts toward a ban (D85): anyone can send garbage credentials,
    but only a client that received our challenge holds a valid nonce."""
    known_user: bool = False
    """The claimed user is in the user table (never told to the client, D35)."""


@dataclass(frozen=True, slots=True)
class UserHashes:
    """The stored secrets of one user: HA1 per algorithm, lower-case hex."""

    md5: str
    sha256: str

    def for_algorithm(self, algorithm: str) -> str:
        """The HA1 for ``algorithm`` (``MD5`` or ``SHA-256``)."""
        return self.md5 if algorithm == "MD5" else self.sha256


class DigestAuthenticator:
    """Challenges and verifies Digest credentials against HA1 hashes of one realm."""

    def __init__(
        self,
        realm: str,
        users: Mapping[str, UserHashes],
        nonces: NonceIssuer,
        algorithms: tuple[str, ...] = CHALLENGE_ORDER,
    ) -> None:
        if not algorithms or any(a not in ALGORITHMS for a in algorithms):
            raise ValueError(f"digest algorithms must be among {', '.join(ALGORITHMS)}")
        self.algorithms = algorithms
        self.realm = realm
        self.users = users
        self.nonces = nonces
        # Unknown users are checked against these, so they take the known-user path.
        self._decoy = UserHashes(secrets.token_hex(16), secrets.token_hex(32))
        # (nonce, cnonce, nc) accepted within the nonce lifetime, oldest first.
        self._used: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    def challenges(self, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, one per algorithm, preferred first, same nonce."""
        nonce = self.nonces.issue()
        tail = ", stale=true" if stale else ""
        return [
            f"Digest realm={quote(self.realm)}, nonce={quote(nonce)}, "
            f'algorithm={algorithm}, qop="auth"{tail}'
            for algorithm in self.algorithms
        ]

    def verify(self, method: str, request_uri: str, authorization: list[str]) -> AuthResult:
        """Check the Authorization values of a request (the one for our realm counts).

        ABSENT when none is Digest for our realm; FAILED when it is malformed,
        names another URI, an unknown algorithm or qop, or has a wrong digest
        (unknown users included); STALE for a correct digest on an expired or
        foreign nonce; OK otherwise.
        """
        creds: Credentials | None = None
        for value in authorization:
            try:
                parsed = parse_authorization(value)
            except DigestError as exc:
                return AuthResult(AuthOutcome.FAILED, None, f"malformed credentials: {exc}")
            if parsed is not None and parsed.realm == self.realm:
                creds = parsed
                break
        if creds is None:
            return AuthResult(AuthOutcome.ABSENT)
        user = creds.username
        if creds.algorithm not in self.algorithms:
            return AuthResult(AuthOutcome.FAILED, user, f"algorithm {creds.algorithm[:20]}")
        if creds.qop != "auth" or not creds.nc or not creds.cnonce:
            return AuthResult(AuthOutcome.FAILED, user, "qop=auth with nc and cnonce required")
        if creds.uri != request_uri and not _registrar_uri(creds.uri):
            return AuthResult(AuthOutcome.FAILED, user, "digest uri is not the Request-URI")
        hashes = self.users.get(user)
        known = hashes is not None
        nonce_check = self.nonces.check(creds.nonce)
        # Made with our secret (by this process or another of the deployment, D85).
        ours = nonce_check is NonceCheck.VALID or nonce_check is NonceCheck.OTHER_ISSUER
        ha1 = (hashes if hashes is not None else self._decoy).for_algorithm(creds.algorithm)
        expected = compute_response(
            creds.algorithm, ha1, method, creds.uri, creds.nonce, creds.nc, creds.cnonce
        )
        digest_ok = hmac.compare_digest(expected.encode(), creds.response.encode()) and known
        if not digest_ok:
            return AuthResult(AuthOutcome.FAILED, user, "wrong credentials", ours, known)
        if nonce_check is NonceCheck.OTHER_ISSUER:
            return AuthResult(
                AuthOutcome.STALE, user, "nonce issued by another process or node", ours, known
            )
        if nonce_check is not NonceCheck.VALID:
            return AuthResult(AuthOutcome.STALE, user, "nonce expired", ours, known)
        if not self._first_use((creds.nonce, creds.cnonce, creds.nc)):
            # The same credentials again in a new transaction: a replay, or a phone
            # that does not count nc. Either way a fresh nonce is the answer.
            return AuthResult(AuthOutcome.STALE, user, "nonce count reused", ours, known)
        return AuthResult(AuthOutcome.OK, user, "", ours, known)

    def _first_use(self, key: tuple[str, str, str]) -> bool:
        """Record (nonce, cnonce, nc); False if seen within the nonce lifetime."""
        now = self.nonces.now_ms()
        used = self._used
        while used:
            oldest, until = next(iter(used.items()))
            if until > now and len(used) < MAX_TRACKED_NONCE_USES:
                break
            del used[oldest]
        if key in used:
            return False
        used[key] = now + self.nonces.lifetime_ms
        return True
