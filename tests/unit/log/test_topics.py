"""Topic specs of docs/design.md section 3 and the checks of existing topics (no broker needed)."""

from __future__ import annotations

import pytest

from streams.cli import main
from streams.log.topics import TopicState, check_topic, topic_specs
from streams.settings import Settings


def by_role(settings: Settings, **kw: int) -> dict[str, object]:
    return {s.role: s for s in topic_specs(settings, **kw)}


def test_default_specs() -> None:
    specs = topic_specs(Settings(partitions=6, topic_prefix="p."))
    assert [s.name for s in specs] == [
        "p.registrations",
        "p.bindings",
        "p.binding-events",
        "p.alerts",
        "p.deadletter",
    ]
    got = {s.role: (s.partitions, s.replication_factor, dict(s.config)) for s in specs}
    assert got == {
        "registrations": (6, 1, {"cleanup.policy": "delete", "retention.ms": "-1"}),
        "bindings": (6, 1, {"cleanup.policy": "compact"}),
        "binding-events": (6, 1, {"cleanup.policy": "delete", "retention.ms": "604800000"}),
        "alerts": (1, 1, {"cleanup.policy": "compact"}),
        "deadletter": (1, 1, {"cleanup.policy": "delete"}),
    }
    assert [s.role for s in specs if s.partitions_must_match] == ["registrations"]


def test_cluster_specs_require_two_in_sync_replicas() -> None:
    for spec in topic_specs(Settings(replication_factor=3)):
        assert spec.replication_factor == 3
        assert spec.config["min.insync.replicas"] == "2"


def test_registrations_retention_is_configurable() -> None:
    specs = topic_specs(Settings(), registrations_retention_ms=86_400_000)
    assert specs[0].config["retention.ms"] == "86400000"


def test_partition_mismatch_on_registrations_is_an_error() -> None:
    spec = topic_specs(Settings(partitions=8))[0]
    state = TopicState(spec.name, 4, 1, dict(spec.config))
    errors, warnings = check_topic(spec, state)
    assert warnings == []
    assert len(errors) == 1
    assert "has 4 partitions" in errors[0]
    assert "REGSTATE_PARTITIONS is 8" in errors[0]
    assert "table would break" in errors[0]


def test_other_differences_are_warnings() -> None:
    bindings = topic_specs(Settings(partitions=8))[1]
    state = TopicState(bindings.name, 3, 3, {"cleanup.policy": "delete"})
    errors, warnings = check_topic(bindings, state)
    assert errors == []
    assert warnings == [
        f"topic {bindings.name} has 3 partitions, expected 8",
        f"topic {bindings.name} has replication factor 3, expected 1",
        f"topic {bindings.name} has cleanup.policy=delete, expected compact",
    ]


def test_matching_topic_is_clean() -> None:
    for spec in topic_specs(Settings()):
        state = TopicState(
            spec.name,
            spec.partitions,
            spec.replication_factor,
            {**spec.config, "segment.bytes": "1073741824"},
        )
        assert check_topic(spec, state) == ([], [])


def test_topics_list_prints_specs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGSTATE_TOPIC_PREFIX", "x.")
    monkeypatch.setenv("REGSTATE_PARTITIONS", "3")
    monkeypatch.setenv("REGSTATE_REPLICATION_FACTOR", "1")
    assert main(["topics", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "x.registrations partitions=3 replication_factor=1 cleanup.policy=delete retention.ms=-1",
        "x.bindings partitions=3 replication_factor=1 cleanup.policy=compact",
        "x.binding-events partitions=3 replication_factor=1 cleanup.policy=delete "
        "retention.ms=604800000",
        "x.alerts partitions=1 replication_factor=1 cleanup.policy=compact",
        "x.deadletter partitions=1 replication_factor=1 cleanup.policy=delete",
    ]
