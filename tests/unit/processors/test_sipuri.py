"""SIP URI comparison (RFC 3261 section 19.1.4), the AOR (R1) and binding keys (R2)."""

from __future__ import annotations

import pytest

from processors.sipuri import (
    AorError,
    canonical_aor,
    contact_key,
    flow_key,
    normalize_instance,
    parse_sip_uri,
    uri_equal,
)

# RFC 3261 section 19.1.4, "The URIs within each of the following sets are equivalent".
RFC_EQUAL_SETS: list[tuple[str, ...]] = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    (
        "sip:carol@chicago.com",
        "sip:carol@chicago.com;newparam=5",
        "sip:carol@chicago.com;security=on",
    ),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
]

# "The URIs within each of the following sets are not equivalent".
RFC_NOT_EQUAL_PAIRS: list[tuple[str, str, str]] = [
    (
        "SIP:ALICE@AtLanTa.CoM;Transport=udp",
        "sip:alice@AtLanTa.CoM;Transport=UDP",
        "different usernames",
    ),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060", "can resolve to different ports"),
    (
        "sip:bob@biloxi.com",
        "sip:bob@biloxi.com:6000;transport=tcp",
        "can resolve to different port and transports",
    ),
    (
        "sip:carol@chicago.com",
        "sip:carol@chicago.com?Subject=next%20meeting",
        "different header component",
    ),
    (
        "sip:bob@phone21.boxesbybob.example",
        "sip:bob@192.0.2.4",
        "even though that's what phone21.boxesbybob.example resolves to",
    ),
]


def _pairs(sets: list[tuple[str, ...]]) -> list[tuple[str, str]]:
    return [(a, b) for s in sets for a in s for b in s if a != b]


@pytest.mark.parametrize(("a", "b"), _pairs(RFC_EQUAL_SETS))
def test_rfc3261_19_1_4_equivalent_uris(a: str, b: str) -> None:
    assert uri_equal(a, b)


@pytest.mark.parametrize(("a", "b", "why"), RFC_NOT_EQUAL_PAIRS)
def test_rfc3261_19_1_4_not_equivalent_uris(a: str, b: str, why: str) -> None:
    assert not uri_equal(a, b), why
    assert not uri_equal(b, a), why


def test_rfc3261_19_1_4_transport_in_one_uri_only_is_not_equivalent() -> None:
    assert not uri_equal("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp")


def test_rfc3261_19_1_4_equality_is_not_transitive() -> None:
    assert uri_equal("sip:carol@chicago.com", "sip:carol@chicago.com;security=on")
    assert uri_equal("sip:carol@chicago.com", "sip:carol@chicago.com;security=off")
    assert not uri_equal("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),  # SIP and SIPS never equal
        ("sip:alice@atlanta.com", "sip:atlanta.com"),  # user only in one
        ("sip:alice:secret@atlanta.com", "sip:alice@atlanta.com"),  # password only in one
        ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com"),
        ("sip:alice@atlanta.com;ttl=15", "sip:alice@atlanta.com"),
        ("sip:alice@atlanta.com;method=INVITE", "sip:alice@atlanta.com"),
        ("sip:alice@atlanta.com;maddr=239.255.255.1", "sip:alice@atlanta.com"),
        ("sip:alice@atlanta.com;transport=udp", "sip:alice@atlanta.com;transport=tcp"),
        ("sip:alice@atlanta.com?subject=a", "sip:alice@atlanta.com?subject=A"),
        ("sip:a%3bb@atlanta.com", "sip:a;b@atlanta.com"),  # reserved: escaped != literal
    ],
)
def test_more_non_equivalent_uris(a: str, b: str) -> None:
    assert not uri_equal(a, b)
    assert not uri_equal(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("<sip:alice@atlanta.com>", "sip:alice@ATLANTA.com"),
        ('"Alice" <sip:alice@atlanta.com;lr>', "sip:alice@atlanta.com"),
        ("sip:alice@[2001:DB8::1]:5060", "sip:alice@[2001:db8::1]:5060"),
        ("sip:a%3Bb@atlanta.com", "sip:a%3bb@atlanta.com"),  # hex case of an escape
        ("sip:alice@atlanta.com;lr;transport=udp", "sip:alice@atlanta.com;transport=UDP;lr"),
        ("tel:+15550100", "TEL:+15550100"),  # not SIP: compared as text, ignoring case
    ],
)
def test_more_equivalent_uris(a: str, b: str) -> None:
    assert uri_equal(a, b)
    assert uri_equal(b, a)


def test_a_sip_uri_never_equals_a_non_sip_uri() -> None:
    assert not uri_equal("sip:+15550100@pbx.example.com", "tel:+15550100")


@pytest.mark.parametrize("text", ["", "sip:", "sip:alice@", "sip:host:port", "sip:[::1"])
def test_junk_does_not_parse(text: str) -> None:
    assert parse_sip_uri(text) is None


# --- R1: canonical AOR -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "aor"),
    [
        ("sip:1001@pbx.example.com", "sip:1001@pbx.example.com"),
        ('"Agent 1001" <sip:1001@pbx.example.com>', "sip:1001@pbx.example.com"),
        ("Agent <sip:1001@pbx.example.com>;tag=8321234356", "sip:1001@pbx.example.com"),
        ("<sip:1001@pbx.example.com;transport=udp;user=phone>", "sip:1001@pbx.example.com"),
        ("sip:1001@pbx.example.com;transport=udp", "sip:1001@pbx.example.com"),
        ("sip:1001@pbx.example.com?subject=x&priority=urgent", "sip:1001@pbx.example.com"),
        ("SIP:1001@PBX.Example.COM", "sip:1001@pbx.example.com"),
        ("SIPS:Agent@Example.ORG", "sips:Agent@example.org"),
        ("sip:Alice.Smith@pbx.example.com", "sip:Alice.Smith@pbx.example.com"),
        ("sip:%41lice@pbx.example.com", "sip:%41lice@pbx.example.com"),  # user as sent
        ("sip:1001@PBX.example.com:5060;lr", "sip:1001@pbx.example.com:5060"),
        ("sip:1001@[2001:DB8::1]:5061;transport=tls", "sip:1001@[2001:db8::1]:5061"),
        ("sip:pbx.example.com", "sip:pbx.example.com"),
        ("tel:+1-201-555-0123", "tel:+1-201-555-0123"),
        ("tel:7042;phone-context=example.com", "tel:7042"),
        ("TEL:+15550100", "tel:+15550100"),
        ("<tel:+15550100>;tag=1", "tel:+15550100"),
    ],
)
def test_r1_canonical_aor(text: str, aor: str) -> None:
    """R1 AOR: the To URI with every parameter removed, scheme and host lower-case,
    user part as sent."""
    assert canonical_aor(text) == aor


def test_r1_canonical_aor_is_idempotent() -> None:
    for text in ('"A" <SIP:Bob@Biloxi.COM;transport=tcp>', "tel:+15550100;ext=1"):
        once = canonical_aor(text)
        assert canonical_aor(once) == once


def test_r1_user_case_makes_different_aors() -> None:
    assert canonical_aor("sip:Bob@biloxi.com") != canonical_aor("sip:bob@biloxi.com")


@pytest.mark.parametrize(
    "text", ["", "1001", "sip:", "sip:1001@", "sip:1001@:5060", "mailto:a@b.example", "http://x"]
)
def test_r1_not_an_aor(text: str) -> None:
    with pytest.raises(AorError):
        canonical_aor(text)


def test_r1_display_name_with_angle_brackets() -> None:
    text = '"Agent <1001>" <sip:1001@PBX.example.com>'
    assert canonical_aor(text) == "sip:1001@pbx.example.com"
    assert contact_key(text) == "sip:1001@pbx.example.com"


# --- R2: binding keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "variants",
    [
        (
            "sip:1001@192.0.2.10:5060;transport=udp",
            "<sip:1001@192.0.2.10:5060;transport=UDP>",
            "SIP:1001@192.0.2.10:5060;Transport=udp",
            '"Desk" <sip:%31001@192.0.2.10:5060;transport=udp>',
        ),
        (
            "sip:alice@ATLANTA.com;lr;ob",
            "sip:alice@atlanta.com;ob;lr",
            " <sip:alice@atlanta.com;OB;LR> ",
        ),
    ],
)
def test_contact_key_is_the_same_for_equivalent_spellings(variants: tuple[str, ...]) -> None:
    keys = {contact_key(v) for v in variants}
    assert len(keys) == 1
    (key,) = keys
    assert contact_key(key) == key  # a key is its own key (stable across round trips)
    for v in variants:
        assert uri_equal(v, key)


def test_contact_key_values() -> None:
    assert contact_key("<sip:%31001@192.0.2.10:5060;transport=UDP>") == (
        "sip:1001@192.0.2.10:5060;transport=udp"
    )
    assert contact_key("sip:alice@atlanta.com;b=2;a=1") == "sip:alice@atlanta.com;a=1;b=2"


def test_contact_key_keeps_user_case() -> None:
    assert contact_key("sip:Alice@atlanta.com") != contact_key("sip:alice@atlanta.com")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:alice@atlanta.com", "sip:alice@atlanta.com:5060"),
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
        ("sip:alice@atlanta.com;transport=udp", "sip:alice@atlanta.com;transport=tcp"),
    ],
)
def test_contact_key_differs_for_different_contacts(a: str, b: str) -> None:
    assert contact_key(a) != contact_key(b)


def test_contact_key_of_unparseable_contact_is_its_lower_case_text() -> None:
    assert contact_key("<TEL:+15550100>") == "tel:+15550100"
    assert contact_key("not a uri") == "not a uri"


@pytest.mark.parametrize(
    "instance",
    [
        '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
        "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
        "urn:uuid:00000000-0000-1000-8000-000a95a0e128",
        ' " <URN:UUID:00000000-0000-1000-8000-000a95a0e128> " ',
    ],
)
def test_flow_key_normalizes_instance_quoting(instance: str) -> None:
    assert normalize_instance(instance) == "urn:uuid:00000000-0000-1000-8000-000a95a0e128"
    assert flow_key(instance, 1) == "urn:uuid:00000000-0000-1000-8000-000a95a0e128;reg-id=1"


def test_flow_key_depends_on_reg_id_and_instance() -> None:
    a = '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"'
    b = '"<urn:uuid:00000000-0000-1000-8000-000a95a0e129>"'
    assert flow_key(a, 1) != flow_key(a, 2)
    assert flow_key(a, 1) != flow_key(b, 1)


def test_trunk_aors_are_a_namespace_of_their_own() -> None:
    """D50: ``trunk:`` + a canonical SIP AOR; never a trunk of a trunk or of a non-SIP URI."""
    from processors.sipuri import is_trunk, trunk_aor

    aor = canonical_aor("TRUNK:<sip:Acct@Carrier.example;transport=udp>")
    assert aor == "trunk:sip:Acct@carrier.example" and is_trunk(aor)
    assert canonical_aor(aor) == aor and trunk_aor(aor) == aor
    assert trunk_aor("sip:a@b") == "trunk:sip:a@b" and not is_trunk("sip:a@b")
    assert aor != canonical_aor("sip:Acct@carrier.example")
    for bad in ("trunk:", "trunk:trunk:sip:a@b", "trunk:mailto:a@b"):
        with pytest.raises(AorError):
            canonical_aor(bad)
