"""Partition and owner math of the query API (streams/log/routing.py)."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]

from streams.log.routing import cached_partition, kafka_partition, owner_of, same_worker

# Kafka's UtilsTest.testMurmur2 (signed 32-bit results of the Java murmur2).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "java"), sorted(JAVA_MURMUR2.items()))
@pytest.mark.parametrize("partitions", [1, 3, 8, 12, 50])
def test_partition_is_javas_to_positive_murmur2_mod_n(
    key: bytes, java: int, partitions: int
) -> None:
    assert kafka_partition(key, partitions) == (java & 0x7FFFFFFF) % partitions


def test_partition_agrees_with_aiokafkas_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for i in range(2000):
        key = f"sip:{1000 + i}@pbx.example.com".encode()
        for n in (4, 8):
            assert kafka_partition(key, n) == partitioner(key, list(range(n)), list(range(n)))
            assert cached_partition(key, n) == kafka_partition(key, n)


def test_zero_partitions_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        kafka_partition(b"x", 0)


def test_owner_is_the_worker_whose_actives_hold_the_partition() -> None:
    dist = {
        "http://10.0.0.1:6066": {"app-bindings-changelog": [0, 2], "other": [1]},
        "http://10.0.0.2:6066": {"app-bindings-changelog": [1, 3]},
    }
    assert owner_of(dist, "app-bindings-changelog", 2) == "http://10.0.0.1:6066"
    assert owner_of(dist, "app-bindings-changelog", 1) == "http://10.0.0.2:6066"
    assert owner_of(dist, "app-bindings-changelog", 4) is None
    assert owner_of({}, "app-bindings-changelog", 0) is None


def test_same_worker_compares_host_and_port() -> None:
    assert same_worker("http://127.0.0.1:6066", "http://127.0.0.1:6066/")
    assert same_worker("http://Worker-A:6066", "http://worker-a:6066")
    assert not same_worker("http://127.0.0.1:6066", "http://127.0.0.1:6067")
    assert not same_worker("http://a:6066", "http://b:6066")
