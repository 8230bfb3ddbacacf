"""Producers of regstate.registrations hash keys like the Java client (docs/design.md section 3).

Every producer must use the default murmur2 partitioner on the raw key bytes, so
all events of one AOR land in one partition whichever client (Python, Java, Go)
wrote them. aiokafka's DefaultPartitioner claims to be the Java algorithm; this
checks it against an independent transcription of the Java reference
(org.apache.kafka.common.utils.Utils.murmur2, with Java's 32-bit signed integer
arithmetic) and against the known values of Kafka's own UtilsTest.testMurmur2.
"""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2  # type: ignore[import-untyped]

from streams.log.publisher import record_key

# Kafka clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
KAFKA_UTILS_TEST_CASES: dict[bytes, int] = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

AOR_KEYS = [
    record_key(a)
    for a in (
        "sip:1001@pbx.example.com",
        "sip:1002@pbx.example.com",
        "sips:agent-42@callcenter.example.org",
        "sip:+33142685300@carrier.example.net",
        "tel:+15551234567",
        "sip:pbx.example.com",
        "sip:ünïcødé@example.com",
    )
]


def _int32(x: int) -> int:
    """Java int overflow: keep the low 32 bits, as a signed value."""
    x &= 0xFFFFFFFF
    return x - 0x1_0000_0000 if x & 0x8000_0000 else x


def _ushr(x: int, n: int) -> int:
    """Java ``x >>> n`` on an int."""
    return (x & 0xFFFFFFFF) >> n


def java_murmur2(data: bytes) -> int:
    """Utils.murmur2 of the Java client, line by line, in Java int semantics."""
    length = len(data)
    seed = _int32(0x9747B28C)
    m = 0x5BD1E995
    r = 24
    h = _int32(seed ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = _int32(
            (data[i4] & 0xFF)
            + ((data[i4 + 1] & 0xFF) << 8)
            + ((data[i4 + 2] & 0xFF) << 16)
            + ((data[i4 + 3] & 0xFF) << 24)
        )
        k = _int32(k * m)
        k = _int32(k ^ _ushr(k, r))
        k = _int32(k * m)
        h = _int32(h * m)
        h = _int32(h ^ k)
    rest = length % 4
    # switch with fall-through: case 3, case 2, case 1.
    if rest >= 3:
        h = _int32(h ^ ((data[(length & ~3) + 2] & 0xFF) << 16))
    if rest >= 2:
        h = _int32(h ^ ((data[(length & ~3) + 1] & 0xFF) << 8))
    if rest >= 1:
        h = _int32(h ^ (data[length & ~3] & 0xFF))
        h = _int32(h * m)
    h = _int32(h ^ _ushr(h, 13))
    h = _int32(h * m)
    h = _int32(h ^ _ushr(h, 15))
    return h


def java_partition(key: bytes, partitions: int) -> int:
    """BuiltInPartitioner.partitionForKey: ``toPositive(murmur2(key)) % partitions``."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(("data", "expected"), KAFKA_UTILS_TEST_CASES.items())
def test_reference_matches_kafka_known_values(data: bytes, expected: int) -> None:
    assert java_murmur2(data) == expected


@pytest.mark.parametrize(("data", "expected"), KAFKA_UTILS_TEST_CASES.items())
def test_aiokafka_murmur2_matches_kafka_known_values(data: bytes, expected: int) -> None:
    # aiokafka returns the same 32 bits, unsigned.
    assert murmur2(data) == expected & 0xFFFFFFFF


def test_aiokafka_murmur2_matches_reference_on_every_length() -> None:
    rng = random.Random(5)
    for length in range(0, 70):
        for _ in range(5):
            data = bytes(rng.getrandbits(8) for _ in range(length))
            assert murmur2(data) == java_murmur2(data) & 0xFFFFFFFF, data


@pytest.mark.parametrize("partitions", [1, 3, 8, 12, 32, 100])
def test_default_partitioner_picks_the_java_partition(partitions: int) -> None:
    partitioner = DefaultPartitioner()
    all_partitions = list(range(partitions))
    for key in [*AOR_KEYS, *KAFKA_UTILS_TEST_CASES]:
        # ``available`` only matters for a null key; a keyed record ignores it.
        chosen = partitioner(key, all_partitions, all_partitions[:1])
        assert chosen == java_partition(key, partitions), key


def test_pinned_partitions_of_sample_aors() -> None:
    """Regression pins (Java murmur2 values): a change here moves AORs to other partitions."""
    pinned = {
        b"sip:1001@pbx.example.com": (-163598011, 5),
        b"sip:1002@pbx.example.com": (1316495305, 1),
        b"sip:1003@pbx.example.com": (850908863, 7),
        b"sip:1010@pbx.example.com": (189535269, 5),
    }
    for key, (hash32, partition) in pinned.items():
        assert java_murmur2(key) == hash32
        assert java_partition(key, 8) == partition
        assert DefaultPartitioner()(key, list(range(8)), []) == partition


def test_partition_list_order_the_producer_passes() -> None:
    """aiokafka passes ``list(set_of_partition_ids)`` as ``all_partitions`` and indexes it.

    That is the Java result only if the list is in partition order, which holds
    for CPython sets of small ints (an int hashes to itself). Checked here, so a
    change in that detail cannot silently move AORs.
    """
    rng = random.Random(7)
    for n in range(1, 513):
        ids = list(range(n))
        rng.shuffle(ids)
        assert list(set(ids)) == sorted(ids)


def test_record_key_is_the_canonical_aor() -> None:
    assert record_key('"Agent" <sip:1001@PBX.Example.com;transport=udp>') == (
        b"sip:1001@pbx.example.com"
    )
    assert record_key("sip:ünïcødé@example.com") == "sip:ünïcødé@example.com".encode()
