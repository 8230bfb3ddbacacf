"""Which partition holds an AOR, and which worker owns that partition (pure; no Faust).

Every producer of regstate.registrations uses Kafka's default partitioner on the
raw key bytes (docs/design.md section 3): ``murmur2(key) & 0x7fffffff % partitions``. The
table, regstate.bindings and regstate.binding-events have the same partition
count, so this one function locates an AOR everywhere. Faust's own
``table_route`` hashes the *serialized* key through the producer's metadata
cache, which is why the query API does the math itself (docs/design.md section 9, trap 3).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Final

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

PARTITION_CACHE_SIZE: Final = 1 << 20
"""AOR keys repeat: a cache makes the (pure Python, ~10 us) murmur2 nearly free."""


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``.

    Identical to the Java client's ``Utils.toPositive(Utils.murmur2(key)) % n``
    and to aiokafka's ``DefaultPartitioner`` (both walk the sorted partition ids).
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@lru_cache(maxsize=PARTITION_CACHE_SIZE)
def cached_partition(key: bytes, partitions: int) -> int:
    """:func:`kafka_partition`, memoized (the agent checks every record's partition)."""
    return kafka_partition(key, partitions)


HostToPartitions = Mapping[str, Mapping[str, Collection[int]]]
"""Faust's assignor view: ``{worker url: {topic: partitions it actively owns}}``."""


def owner_of(distribution: HostToPartitions, topic: str, partition: int) -> str | None:
    """The URL of the worker that actively owns ``partition`` of ``topic``, or None.

    None means nobody does yet (no assignment, or a rebalance in progress); the
    caller answers 503 rather than guessing.
    """
    for url, topics in distribution.items():
        if partition in topics.get(topic, ()):
            return url
    return None


def same_worker(url_a: str, url_b: str) -> bool:
    """Whether two worker URLs name the same web server (scheme, host and port)."""
    return _ident(url_a) == _ident(url_b)


def _ident(url: str) -> tuple[str, str]:
    rest = url.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host:
        return rest.lower(), "80"
    return host.lower(), port
