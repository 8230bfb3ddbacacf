"""Digest authentication (RFC 7616 / RFC 8760) and the HA1 user file."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from streams.cli import main
from streams.frontend.users import (
    UserFileError,
    add_user,
    hashes_for,
    load_users,
    remove_user,
)
from streams.sip.digest import (
    AuthOutcome,
    DigestAuthenticator,
    DigestError,
    NonceCheck,
    NonceIssuer,
    compute_ha1,
    compute_response,
    parse_authorization,
)

# RFC 7616 section 3.9.1: Mufasa / "Circle of Life", GET /dir/index.html.
RFC = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}
RFC_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}

REALM = "pbx.example"
SECRET = b"k" * 32


class Clock:
    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_vectors(algorithm: str) -> None:
    ha1 = compute_ha1(algorithm, RFC["username"], RFC["realm"], RFC["password"])
    got = compute_response(
        algorithm, ha1, RFC["method"], RFC["uri"], RFC["nonce"], RFC["nc"], RFC["cnonce"]
    )
    assert got == RFC_RESPONSES[algorithm]


def test_parse_authorization() -> None:
    creds = parse_authorization(
        'Digest username="1001", realm="pbx.example", nonce="n, o", uri="sip:pbx.example",'
        ' response="ABCDEF", algorithm=sha-256, qop=auth, nc=00000001, cnonce="c\\"x"'
    )
    assert creds is not None
    assert creds.nonce == "n, o" and creds.algorithm == "SHA-256" and creds.response == "abcdef"
    assert creds.cnonce == 'c"x' and creds.qop == "auth"
    assert parse_authorization("NoOneKnowsThisScheme opaque-data=here") is None
    for bad in ['Digest username="a', 'Digest username="a", username="b"', "Digest realm=x"]:
        with pytest.raises(DigestError):
            parse_authorization(bad)


def test_nonces() -> None:
    clock = Clock()
    issuer = NonceIssuer(SECRET, REALM, 300_000, clock)
    nonce = issuer.issue()
    assert len(nonce) == 40 and issuer.check(nonce) is NonceCheck.VALID
    clock.ms += 300_001
    assert issuer.check(nonce) is NonceCheck.EXPIRED
    other = NonceIssuer(b"x" * 32, REALM, 300_000, clock)
    assert other.check(issuer.issue()) is NonceCheck.FOREIGN
    tampered = nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")
    assert issuer.check(tampered) is NonceCheck.FOREIGN
    for junk in ["", "abc", "é" * 32, "!" * 32, "A" * 400]:
        assert issuer.check(junk) is NonceCheck.FOREIGN
    with pytest.raises(ValueError):
        NonceIssuer(b"short", REALM, 1, clock)


def authorization(
    auth: DigestAuthenticator,
    user: str,
    password: str,
    *,
    algorithm: str = "MD5",
    method: str = "REGISTER",
    uri: str = "sip:pbx.example",
    nonce: str | None = None,
) -> str:
    nonce = nonce or auth.nonces.issue()
    ha1 = compute_ha1(algorithm, user, REALM, password)
    response = compute_response(algorithm, ha1, method, uri, nonce, "00000001", "cn0nce")
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc=00000001, cnonce="cn0nce"'
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(clock: Clock) -> DigestAuthenticator:
    users = {"1001": hashes_for("1001", REALM, "s3cret"), "1002": hashes_for("1002", REALM, "pw")}
    return DigestAuthenticator(REALM, users, NonceIssuer(SECRET, REALM, 300_000, clock))


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_verify_ok_and_wrong_password(auth: DigestAuthenticator, algorithm: str) -> None:
    good = authorization(auth, "1001", "s3cret", algorithm=algorithm)
    assert auth.verify("REGISTER", "sip:pbx.example", [good]).outcome is AuthOutcome.OK
    bad = authorization(auth, "1001", "wrong", algorithm=algorithm)
    result = auth.verify("REGISTER", "sip:pbx.example", [bad])
    assert result.outcome is AuthOutcome.FAILED and result.username == "1001"


def test_unknown_user_answers_like_wrong_password(auth: DigestAuthenticator) -> None:
    wrong = auth.verify("REGISTER", "sip:pbx.example", [authorization(auth, "1001", "nope")])
    unknown = auth.verify("REGISTER", "sip:pbx.example", [authorization(auth, "9999", "nope")])
    assert (wrong.outcome, wrong.detail) == (unknown.outcome, unknown.detail)


def test_stale_nonce_with_right_password(auth: DigestAuthenticator, clock: Clock) -> None:
    value = authorization(auth, "1001", "s3cret")
    clock.ms += 301_000
    assert auth.verify("REGISTER", "sip:pbx.example", [value]).outcome is AuthOutcome.STALE
    # The same old nonce with a wrong password is a failure, not stale.
    old_wrong = authorization(auth, "1001", "x", nonce=value.split('nonce="')[1].split('"')[0])
    assert auth.verify("REGISTER", "sip:pbx.example", [old_wrong]).outcome is AuthOutcome.FAILED
    # A nonce we never issued, right password: stale (restarted with a new key).
    foreign = authorization(auth, "1001", "s3cret", nonce="Zm9yZWlnbg")
    assert auth.verify("REGISTER", "sip:pbx.example", [foreign]).outcome is AuthOutcome.STALE


def test_absent_and_unfit_credentials(auth: DigestAuthenticator) -> None:
    verify = auth.verify
    assert verify("REGISTER", "sip:pbx.example", []).outcome is AuthOutcome.ABSENT
    assert (
        verify("REGISTER", "sip:pbx.example", ["Basic Zm9vOmJhcg=="]).outcome is AuthOutcome.ABSENT
    )
    other_realm = authorization(auth, "1001", "s3cret").replace(REALM, "elsewhere")
    assert verify("REGISTER", "sip:pbx.example", [other_realm]).outcome is AuthOutcome.ABSENT
    # Signed for another URI or method: failure.
    other_uri = authorization(auth, "1001", "s3cret", uri="sip:1002@other.example")
    assert verify("REGISTER", "sip:pbx.example", [other_uri]).outcome is AuthOutcome.FAILED
    # A registrar URI other than the Request-URI (SIPp signs its remote address): accepted.
    sipp_style = authorization(auth, "1001", "s3cret", uri="sip:127.0.0.1:5060")
    assert verify("REGISTER", "sip:pbx.example", [sipp_style]).outcome is AuthOutcome.OK
    options = authorization(auth, "1001", "s3cret", method="OPTIONS")
    assert verify("REGISTER", "sip:pbx.example", [options]).outcome is AuthOutcome.FAILED
    no_qop = authorization(auth, "1001", "s3cret").replace(", qop=auth", "")
    assert verify("REGISTER", "sip:pbx.example", [no_qop]).outcome is AuthOutcome.FAILED
    sha512 = authorization(auth, "1001", "s3cret").replace("algorithm=MD5", "algorithm=SHA-512")
    assert verify("REGISTER", "sip:pbx.example", [sha512]).outcome is AuthOutcome.FAILED
    malformed = 'Digest username="1001'
    assert verify("REGISTER", "sip:pbx.example", [malformed]).outcome is AuthOutcome.FAILED


def test_challenges_offer_sha256_then_md5(auth: DigestAuthenticator) -> None:
    first, second = auth.challenges(stale=True)
    assert "algorithm=SHA-256" in first and "algorithm=MD5" in second
    assert 'qop="auth"' in first and "stale=true" in first and f'realm="{REALM}"' in first


def test_user_file(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    assert load_users(path, REALM) == {}
    assert add_user(path, REALM, "1001", "Circle of Life")
    assert not add_user(path, REALM, "1001", "Circle of Life 2")
    add_user(path, REALM, "1002", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "Circle" not in text
    users = load_users(path, REALM)
    assert users["1001"] == hashes_for("1001", REALM, "Circle of Life 2")
    assert remove_user(path, REALM, "1002") and not remove_user(path, REALM, "1002")
    with pytest.raises(UserFileError, match="realm"):
        load_users(path, "other.realm")
    for bad in ["", "a:b", "x" * 65, "a b"]:
        with pytest.raises(UserFileError):
            add_user(path, REALM, bad, "pw")
    path.write_text("{not json")
    with pytest.raises(UserFileError):
        load_users(path, REALM)


def test_users_cli_reads_password_from_stdin_and_never_prints_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGSTATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REGSTATE_SIP_REALM", REALM)
    monkeypatch.setattr("sys.stdin", io.StringIO("Tr0ub4dor&3\nignored\n"))
    assert main(["users", "add", "1001"]) == 0
    assert main(["users", "list"]) == 0
    assert main(["users", "remove", "nobody"]) == 1
    out = capsys.readouterr()
    assert "Tr0ub4dor" not in out.out + out.err
    assert out.out.splitlines()[-1] == "1001"
    stored = load_users(tmp_path / "sip-users.json", REALM)
    assert stored["1001"] == hashes_for("1001", REALM, "Tr0ub4dor&3")
    assert "Tr0ub4dor" not in (tmp_path / "sip-users.json").read_text()
    assert main(["users", "remove", "1001"]) == 0


def test_replayed_credentials_get_a_fresh_challenge(
    auth: DigestAuthenticator, clock: Clock
) -> None:
    value = authorization(auth, "1001", "s3cret")
    assert auth.verify("REGISTER", "sip:pbx.example", [value]).outcome is AuthOutcome.OK
    replay = auth.verify("REGISTER", "sip:pbx.example", [value])
    assert replay.outcome is AuthOutcome.STALE and replay.detail == "nonce count reused"
    # The same nonce with the next nc (and its own response) is a new use.
    nonce = value.split('nonce="')[1].split('"')[0]
    ha1 = compute_ha1("MD5", "1001", REALM, "s3cret")
    response = compute_response(
        "MD5", ha1, "REGISTER", "sip:pbx.example", nonce, "00000002", "cn0nce"
    )
    nc2 = value.replace("nc=00000001", "nc=00000002").split('response="')
    nc2_value = nc2[0] + f'response="{response}"' + nc2[1].split('"', 1)[1]
    assert auth.verify("REGISTER", "sip:pbx.example", [nc2_value]).outcome is AuthOutcome.OK
    # Forgotten after the nonce lifetime (the nonce itself is stale by then).
    clock.ms += 300_001
    assert auth.verify("REGISTER", "sip:pbx.example", [value]).outcome is AuthOutcome.STALE
    fresh = authorization(auth, "1001", "s3cret")
    assert auth.verify("REGISTER", "sip:pbx.example", [fresh]).outcome is AuthOutcome.OK
    assert len(auth._used) == 1  # the expired entries were dropped


def test_nonce_of_another_process_or_node_is_stale_even_with_the_right_digest(
    clock: Clock,
) -> None:
    users = {"1001": hashes_for("1001", REALM, "s3cret")}
    here = DigestAuthenticator(REALM, users, NonceIssuer(SECRET, REALM, 300_000, clock, "fe1#0"))
    for issuer in ("fe1#1", "fe2", "fe1#0"):  # fe1#0 again: this process after a restart
        other = DigestAuthenticator(
            REALM, users, NonceIssuer(SECRET, REALM, 300_000, clock, issuer)
        )
        assert other.nonces.check(here.nonces.issue()) is NonceCheck.OTHER_ISSUER
        value = authorization(here, "1001", "s3cret")
        result = other.verify("REGISTER", "sip:pbx.example", [value])
        assert result.outcome is AuthOutcome.STALE
        assert result.detail == "nonce issued by another process or node"
    # A wrong password with a foreign nonce is still a failure, not a retry.
    wrong = authorization(here, "1001", "nope")
    assert here.verify("REGISTER", "sip:pbx.example", [wrong]).outcome is AuthOutcome.FAILED
