"""Prometheus rendering of the worker's metrics (streams/metrics.py)."""

from __future__ import annotations

import re

from streams.metrics import MAX_SKEW_NODES, EngineMetrics, render

# A label value is any run of escaped characters or non-quote, non-backslash ones.
SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="(\\.|[^"\\])*",?)+\})? -?\d+(\.\d+)?$')


def _metrics() -> EngineMetrics:
    m = EngineMetrics()
    for _ in range(3):
        m.observe_fold("register", "applied")
    m.observe_fold("register", "stale")
    m.observe_fold("expire", "duplicate")
    m.observe_fold("register", "duplicate")
    m.binding_events["registered"] += 3
    m.deadletters["not_msgpack"] += 2
    m.observe_skew("fe1", -40)
    m.observe_skew("fe1", 25)
    m.observe_skew('fe"2', 7)
    m.expires_sent = 4
    return m


def _parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_every_line_is_valid_exposition_format() -> None:
    text = render(_metrics(), worker="w1", lag={0: 5, 1: 0}, bindings={0: 10}, ready=True)
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert SAMPLE.match(line), line


def test_counters_and_gauges_have_the_expected_values() -> None:
    text = render(_metrics(), worker="w1", lag={0: 5, 1: 0}, bindings={0: 10, 1: 2}, ready=False)
    v = _parse(text)
    assert v['regstate_events_folded_total{kind="register",outcome="applied"}'] == 3
    assert v["regstate_stale_total"] == 1
    assert v["regstate_duplicate_total"] == 2
    assert v['regstate_deadletters_total{reason="not_msgpack"}'] == 2
    assert v['regstate_binding_events_total{event="registered"}'] == 3
    assert v['regstate_clock_skew_ms{node="fe1"}'] == 25
    assert v['regstate_clock_skew_max_abs_ms{node="fe1"}'] == 40
    assert v['regstate_clock_skew_ms{node="fe\\"2"}'] == 7
    assert v['regstate_consumer_lag{partition="0"}'] == 5
    assert v['regstate_active_bindings{partition="1"}'] == 2
    assert v["regstate_expires_sent_total"] == 4
    assert v['regstate_ready{worker="w1"}'] == 0


def test_each_family_is_declared_once_with_help_and_type() -> None:
    text = render(_metrics(), worker="w1", lag={}, bindings={}, ready=True)
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    names = [n for n, _ in types]
    assert len(names) == len(set(names)) == len(helps)
    assert all(kind in ("counter", "gauge") for _, kind in types)
    assert all(n.endswith("_total") for n, kind in types if kind == "counter")


def test_skew_tracks_a_bounded_number_of_nodes() -> None:
    m = EngineMetrics()
    for i in range(MAX_SKEW_NODES + 50):
        m.observe_skew(f"fe{i}", i)
    assert len(m.skew) == MAX_SKEW_NODES
