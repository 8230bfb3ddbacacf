"""The front-end's in-memory tables: transaction cache, source limiter, local bindings."""

from __future__ import annotations

import pytest

from schemas import ContactEntry
from streams.frontend.tables import Answered, LocalBindings, SourceLimiter, TransactionCache


def test_transaction_cache_pending_answered_expired_and_bounded() -> None:
    cache = TransactionCache(ttl_ms=32_000, max_entries=3)
    key = ("c1", 1, "REGISTER", "z9hG4bK1")
    assert cache.lookup(key, 0) == (False, None)
    cache.begin(key, 0)
    assert cache.lookup(key, 10) == (True, None)
    answer = Answered(b"SIP/2.0 200 OK\r\n\r\n", 200, "sip:1@h")
    cache.complete(key, 20, answer)
    assert cache.lookup(key, 32_019) == (True, answer)
    assert cache.lookup(key, 32_020) == (False, None)
    for i in range(5):
        cache.begin((f"c{i}", 1, "REGISTER", ""), 40_000)
    assert len(cache) == 3


def test_token_bucket_per_source() -> None:
    limiter = SourceLimiter(rate_per_s=10, burst=5, ban_failures=3, ban_ms=60_000)
    assert [limiter.allow("10.0.0.1", 0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("10.0.0.2", 0)  # another source has its own bucket
    assert not limiter.allow("10.0.0.1", 50)  # half a token back
    assert limiter.allow("10.0.0.1", 100)
    assert limiter.allow("10.0.0.1", 10_000) and limiter.dropped == 3


def test_ban_after_failures_within_the_window() -> None:
    """D85: bans are per (source, user); the source's other users are not affected."""
    limiter = SourceLimiter(rate_per_s=100, burst=100, ban_failures=3, ban_ms=60_000)
    assert not limiter.auth_failed("10.0.0.1", "1001", 0)
    assert not limiter.auth_failed("10.0.0.1", "1001", 70_000)  # the first one fell out
    assert not limiter.auth_failed("10.0.0.1", "1001", 80_000)
    assert limiter.auth_failed("10.0.0.1", "1001", 90_000)
    assert limiter.banned("10.0.0.1", "1001", 100_000)
    assert not limiter.banned("10.0.0.1", "1002", 100_000)  # another phone behind the NAT
    assert not limiter.banned("10.0.0.2", "1001", 100_000)  # the user elsewhere
    assert limiter.allow("10.0.0.1", 100_000)
    assert not limiter.banned("10.0.0.1", "1001", 150_000) and limiter.bans == 1


def test_exempt_sources_are_never_banned() -> None:
    from streams.frontend.tables import address_matcher

    exempt = address_matcher("192.0.2.0/24, 2001:db8::1")
    limiter = SourceLimiter(100, 100, ban_failures=1, ban_ms=60_000, exempt=exempt)
    assert not limiter.auth_failed("192.0.2.7", "1001", 0)
    assert not limiter.auth_failed("192.0.2.7:5060", "1001", 0)  # ip_port keys match too
    assert not limiter.banned("192.0.2.7", "1001", 1)
    assert limiter.auth_failed("198.51.100.1", "1001", 0)
    assert exempt("2001:db8::1") and not exempt("2001:db8::2") and not exempt("garbage")
    with pytest.raises(ValueError, match="not an IP"):
        address_matcher("10.0.0.0/8,nope")


def test_reject_budget_per_aor_and_source() -> None:
    from streams.frontend.tables import RejectBudget

    budget = RejectBudget(budget=2, window_ms=1000, max_entries=3)
    assert [budget.take("sip:1@a", "10.0.0.1", t) for t in (0, 1, 2, 3)] == [
        True, True, False, False,
    ]  # fmt: skip
    assert budget.take("sip:1@a", "10.0.0.2", 3)  # another source
    assert budget.take("sip:1@a", "10.0.0.1", 1000)  # a new window
    assert budget.suppressed == 2
    for i in range(10):
        budget.take(f"sip:{i}@a", "x", 0)
    assert len(budget._spent) == 3


def test_source_table_is_bounded() -> None:
    limiter = SourceLimiter(rate_per_s=1, burst=1, ban_failures=2, ban_ms=1000, max_sources=10)
    for i in range(100):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 0)
        limiter.auth_failed(f"10.1.{i // 256}.{i % 256}", "u", 0)
        limiter.auth_failed(f"10.1.{i // 256}.{i % 256}", "u", 0)  # banned
    assert len(limiter._buckets) == 10 and len(limiter._failures) <= 10
    assert len(limiter._banned) == 10


def test_local_bindings_refresh_remove_wildcard_and_expire() -> None:
    table = LocalBindings()
    a = ContactEntry("sip:1@10.0.0.1", 60)
    b = ContactEntry("sip:1@10.0.0.2", 120, instance="<urn:uuid:1>", reg_id=1)
    table.apply("sip:1@h", [a, b], wildcard=False, call_id="c", cseq=1, ts=0)
    assert sorted(table.active("sip:1@h", 0)) == [("sip:1@10.0.0.1", 60), ("sip:1@10.0.0.2", 120)]
    # Refreshed: the old heap entry at 60 s must not expire it.
    table.apply("sip:1@h", [a], wildcard=False, call_id="c", cseq=2, ts=30_000)
    assert table.pop_due(60_000) == []
    (due,) = table.pop_due(90_000)
    assert (due.uri, due.cseq, due.expires_at) == ("sip:1@10.0.0.1", 2, 90_000)
    # The flow moved to a new address: same key, replaced.
    moved = ContactEntry("sip:1@10.9.9.9", 120, instance="<URN:uuid:1>", reg_id=1)
    table.apply("sip:1@h", [moved], wildcard=False, call_id="c", cseq=3, ts=100_000)
    assert table.active("sip:1@h", 100_000) == [("sip:1@10.9.9.9", 120)]
    table.apply("sip:1@h", [ContactEntry("sip:1@10.9.9.9", 0, instance="<urn:uuid:1>", reg_id=1)],
                wildcard=False, call_id="c", cseq=4, ts=100_000)  # fmt: skip
    assert len(table) == 0 and table.pop_due(10**9) == []
    table.apply(
        "sip:2@h", [a, ContactEntry("sip:2@x", 60)], wildcard=False, call_id="d", cseq=1, ts=0
    )
    table.apply("sip:2@h", [], wildcard=True, call_id="d", cseq=2, ts=0)
    assert len(table) == 0


def test_only_outbound_bindings_still_on_a_closed_flow_are_dropped() -> None:
    table = LocalBindings()
    outbound = ContactEntry("sip:1@10.0.0.1;ob", 120, instance="<urn:uuid:1>", reg_id=1)
    plain = ContactEntry("sip:1@10.0.0.2", 120)
    table.apply("sip:1@h", [outbound, plain], wildcard=False, call_id="c", cseq=1, ts=0, flow=7)
    other = ContactEntry("sip:2@10.0.0.3;ob", 120, instance="<urn:uuid:2>", reg_id=1)
    table.apply("sip:2@h", [other], wildcard=False, call_id="d", cseq=1, ts=0, flow=7)
    # sip:2's phone reconnected and refreshed over flow 8 before flow 7 was seen closing.
    table.apply("sip:2@h", [other], wildcard=False, call_id="d", cseq=2, ts=1, flow=8)
    (lost,) = table.drop_flow(7)
    assert (lost.aor, lost.uri, lost.flow) == ("sip:1@h", "sip:1@10.0.0.1;ob", 7)
    assert table.active("sip:1@h", 0) == [("sip:1@10.0.0.2", 120)]
    assert table.drop_flow(7) == []
    assert [b.aor for b in table.drop_flow(8)] == ["sip:2@h"] and len(table) == 1


def test_transaction_cache_is_bounded_by_bytes() -> None:
    """D86: 8 KiB responses are budgeted by bytes, not only by entries."""
    cache = TransactionCache(ttl_ms=32_000, max_entries=100_000, max_bytes=1 << 20)
    for i in range(1000):
        cache.complete((f"c{i}", 1, "REGISTER", "b"), i, Answered(b"x" * 8192, 401, None))
    assert cache.bytes <= 1 << 20 and 100 < len(cache) < 130
    assert cache.lookup(("c999", 1, "REGISTER", "b"), 1000)[0]
    assert not cache.lookup(("c0", 1, "REGISTER", "b"), 1000)[0]
    cache.lookup(("c999", 1, "REGISTER", "b"), 10**9)  # all expired
    assert len(cache) == 0 and cache.bytes == 0
