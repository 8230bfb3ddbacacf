"""Topic housekeeping on a development broker, for the test session and the benches.

A broker that stays up between runs keeps every topic a run created; thousands
of them make every full metadata answer list them all and cost the broker CPU
for their partitions (docs/decisions.md D111). The test session and the benches
delete what they created with these two calls.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]


async def topic_names(bootstrap: str) -> set[str]:
    """Every topic the broker at ``bootstrap`` holds (plaintext)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Iterable[str]) -> int:
    """Delete ``names`` in one request; return how many."""
    doomed = sorted(names)
    if not doomed:
        return 0
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(doomed)
    finally:
        await admin.close()
    return len(doomed)
