"""Prometheus exposition of the worker's metrics (streams/metrics/engine.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from streams.metrics import LAG_BUCKETS, Family, LoopHistogram, catalogue, exposition
from streams.metrics.engine import MAX_SKEW_NODES, EngineMetrics, render


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
    m.fold_seconds.observe(0.0003)
    m.publish_to_bindings.observe(0.02)
    return m


def _samples(text: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_counters_gauges_and_histograms_have_the_expected_values() -> None:
    text = render(_metrics(), worker="w1", lag={0: 5, 1: 0}, bindings={0: 10, 1: 2}, ready=False)
    v = _samples(text)
    assert v['regstate_events_folded_total{kind="register",outcome="applied"}'] == 3
    assert v['regstate_events_folded_total{kind="register",outcome="duplicate"}'] == 1
    assert v['regstate_deadletters_total{reason="not_msgpack"}'] == 2
    assert v['regstate_binding_events_total{event="registered"}'] == 3
    assert v['regstate_clock_skew_seconds{node="fe1"}'] == 0.025
    assert v['regstate_clock_skew_max_abs_seconds{node="fe1"}'] == 0.04
    assert v['regstate_clock_skew_seconds{node="fe"2"}'] == 0.007
    assert v['regstate_consumer_lag{partition="0"}'] == 5
    assert v['regstate_active_bindings{partition="1"}'] == 2
    assert v["regstate_expires_sent_total"] == 4
    assert v['regstate_ready{worker="w1"}'] == 0
    assert v["regstate_fold_batch_seconds_count"] == 1
    assert v['regstate_publish_to_bindings_seconds_bucket{le="0.025"}'] == 1
    assert v['regstate_publish_to_bindings_seconds_bucket{le="0.01"}'] == 0
    assert [k for k in v if k.startswith('regstate_build_info{component="worker"')]


def test_no_counter_repeats_another_ones_labels() -> None:
    """Stale and duplicate counts are outcomes of regstate_events_folded_total only."""
    text = render(_metrics(), worker="w1", lag={}, bindings={}, ready=True)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "regstate_stale" not in names
    assert "regstate_duplicate" not in names


def test_each_family_is_declared_once_with_help_type_and_a_catalogue_entry() -> None:
    text = render(_metrics(), worker="w1", lag={}, bindings={}, ready=True)
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    names = [n for n, _ in types]
    assert len(names) == len(set(names)) == len(helps)
    known = catalogue()
    for name, kind in types:
        assert name in known, name
        assert known[name].kind == kind


def test_registries_are_per_instance() -> None:
    """Two engines in one process (tests) count separately."""
    a, b = EngineMetrics(), EngineMetrics()
    a.fold_seconds.observe(1.0)
    text = render(b, worker="w", lag={}, bindings={}, ready=True)
    assert _samples(text)["regstate_fold_batch_seconds_count"] == 0


def test_skew_tracks_a_bounded_number_of_nodes() -> None:
    m = EngineMetrics()
    for i in range(MAX_SKEW_NODES + 50):
        m.observe_skew(f"fe{i}", i)
    assert len(m.skew) == MAX_SKEW_NODES


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([*LAG_BUCKETS, 0.0, 0.004, 0.07, 3.0, 99.0]), max_size=40))
def test_the_loop_histogram_exports_what_prometheus_clients_histogram_does(
    values: list[float],
) -> None:
    """Same observations, bounds included (``le`` is inclusive): the same samples."""
    fam = Family("regstate_test_seconds", "histogram", "A test histogram.")
    ours = LoopHistogram(LAG_BUCKETS)
    registry = CollectorRegistry()
    theirs = Histogram(fam.name, fam.help, registry=registry, buckets=LAG_BUCKETS)
    for value in values:
        ours.observe(value)
        theirs.observe(value)

    class One(Collector):
        def collect(self) -> Iterator[Metric]:
            yield ours.family(fam)

    mine = CollectorRegistry()
    mine.register(One())
    assert _samples(exposition(mine)) == _samples(exposition(registry))
