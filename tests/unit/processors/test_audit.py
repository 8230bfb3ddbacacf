"""processors.audit.compare: the fold of the log against the live table, at one time."""

from __future__ import annotations

from processors.audit import Divergence, compare
from schemas import AorState
from tests.unit.builders import AOR, T0, Log, contact, fold_all

URI = "sip:1001@192.0.2.10:5060"
OTHER_AOR = "sip:1002@pbx.example.com"


def registered(aor: str = AOR, uri: str = URI, expires: int = 3600, ts: int = T0) -> AorState:
    state, _ = fold_all([Log(aor=aor).register(contact(uri, expires), ts=ts)])
    return state


def test_equal_sides_agree() -> None:
    expected = {AOR: registered(), OTHER_AOR: registered(OTHER_AOR, "sip:1002@192.0.2.20")}
    actual = dict(expected)
    assert compare(expected, actual, T0 + 1000) == []
    assert compare({}, {}, T0) == []


def test_missing_in_live() -> None:
    (d,) = compare({AOR: registered()}, {}, T0 + 1000)
    assert (d.aor, d.kind, d.expected_version, d.actual_version) == (AOR, "missing", 1, None)
    assert d.problems == (f"missing in live (no record); log has 1 contact ({URI})",)
    assert d.live_record is None and d.log_record is None


def test_phantom_aor_in_live_is_extra() -> None:
    (d,) = compare({}, {OTHER_AOR: registered(OTHER_AOR)}, T0 + 1000)
    assert (d.aor, d.kind) == (OTHER_AOR, "extra")
    assert d.problems[0].startswith("extra in live (unknown to the log): 1 contact")


def test_contact_with_another_uri_differs_field_by_field() -> None:
    expected = registered()
    wrong_binding = expected.contacts[0]._replace(uri="sip:1001@203.0.113.99:5060")
    actual = expected._replace(contacts=(wrong_binding,))
    (d,) = compare({AOR: expected}, {AOR: actual}, T0 + 1000)
    assert d.kind == "differs"
    assert d.problems == (f"contact {URI}: uri live 'sip:1001@203.0.113.99:5060' != log '{URI}'",)


def test_missing_and_extra_contacts_and_version() -> None:
    expected = registered()
    other = expected.contacts[0]._replace(key="sip:x@192.0.2.99", uri="sip:x@192.0.2.99")
    actual = expected._replace(contacts=(other,), version=4)
    (d,) = compare({AOR: expected}, {AOR: actual}, T0 + 1000)
    assert d.problems == (
        f"contact {URI} missing in live (log: {URI})",
        "contact sip:x@192.0.2.99 extra in live (sip:x@192.0.2.99)",
        "version live 4 != log 1",
    )
    assert (d.expected_version, d.actual_version) == (1, 4)


def test_only_contacts_active_at_the_common_time_count() -> None:
    # Live still holds a binding that lapsed at T0 + 60 s (the sweeper has not
    # expired it yet); the log side already expired it. At T0 + 61 s both agree.
    log = Log()
    live, _ = fold_all([log.register(contact(URI, 60))])
    expired, _ = fold_all([log.expire(URI, ts=T0 + 60_000)], state=live)
    assert compare({AOR: expired}, {AOR: live}, T0 + 61_000) == []
    # Before the expiry live is right and the log side would be the odd one out.
    (d,) = compare({AOR: expired}, {AOR: live}, T0 + 59_000)
    assert d.kind == "extra"
    assert "no active contact in the log" in d.problems[0]


def test_a_version_difference_alone_is_a_divergence_only_if_both_sides_show_the_aor() -> None:
    state = registered()
    assert [d.kind for d in compare({AOR: state}, {AOR: state._replace(version=9)}, T0)] == [
        "differs"
    ]
    # At a time when neither side has an active contact, the versions do not matter.
    assert compare({AOR: state}, {AOR: state._replace(version=9)}, T0 + 3_600_000) == []


def test_value_naming_another_aor() -> None:
    state = registered()
    (d,) = compare({AOR: state}, {AOR: state._replace(aor=OTHER_AOR)}, T0)
    assert d.problems == (f"live value names aor {OTHER_AOR!r}, not its key",)


def test_result_is_sorted_and_independent_of_mapping_order() -> None:
    a, b = registered(), registered(OTHER_AOR, "sip:1002@192.0.2.20")
    one = compare({AOR: a, OTHER_AOR: b}, {}, T0)
    two = compare({OTHER_AOR: b, AOR: a}, {}, T0)
    assert one == two
    assert [d.aor for d in one] == sorted([AOR, OTHER_AOR])
    assert all(isinstance(d, Divergence) for d in one)
