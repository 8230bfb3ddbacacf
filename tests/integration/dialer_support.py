"""Shared by the dialer view tests: records of regstate.bindings made from a folded log.

The records are what the engine publishes (docs/design.md section 3, E4): the public
AorState of an AOR after its events, or a tombstone once it has no contact. They
are produced here from ``processors.replay`` of ``bench/gen_events.py`` output,
so the dialer view tests do not depend on the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from bench.gen_events import START_TS, generate_events
from processors.replay import Table
from schemas import RegistrationEvent, encode_state
from streams.dialer.store import BindingRow
from streams.log.topics import BINDINGS, ensure_topics
from streams.settings import Settings
from tests.helpers import unique_name

Record = tuple[bytes, bytes | None]
RowKey = tuple[str, str, str, str, int, int]
"""The comparable part of a stored row (see :func:`as_set`)."""


def view_settings(bootstrap: str, **kw: object) -> Settings:
    """Settings with a topic prefix of this test only, 4 partitions, any free HTTP port."""
    base = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=unique_name("dialer") + ".",
        partitions=4,
        dialer_web_port=0,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


class History:
    """A generated log folded chunk by chunk; each chunk yields the records the engine
    would have published for the AORs it touched (several records per AOR over the
    chunks, tombstones included)."""

    def __init__(self, n_events: int, n_aors: int, seed: int = 7) -> None:
        self.events: list[RegistrationEvent] = list(
            generate_events(n_events, n_aors, n_nodes=3, seed=seed, raw=False)
        )
        self.table = Table()
        self.done = 0

    def chunk(self, n: int) -> list[Record]:
        """Fold the next ``n`` events; the records of every AOR they touched."""
        touched: dict[str, None] = {}
        for e in self.events[self.done : self.done + n]:
            self.table.apply(e)
            touched[e.aor] = None
        self.done += len(self.events[self.done : self.done + n])
        out: list[Record] = []
        for aor in touched:
            s = self.table.states[aor]
            out.append((aor.encode(), encode_state(s) if s.contacts else None))
        return out

    @property
    def now(self) -> int:
        """A fixed reader time: the largest ts folded so far (R6 compares against it)."""
        return max((e.ts for e in self.events[: self.done]), default=START_TS)

    def expected(self, at_ms: int) -> set[RowKey]:
        """Active contacts at ``at_ms`` per ``processors.replay``: (aor, key, uri, node,
        expires_at, version)."""
        out = set()
        for aor, s in self.table.states.items():
            for b in s.active_contacts(at_ms):
                out.add((aor, b.key, b.uri, b.node, b.expires_at, s.version))
        return out


def as_set(rows: Iterable[BindingRow]) -> set[RowKey]:
    """The comparable part of stored rows."""
    return {(r.aor, r.contact_key, r.contact_uri, r.node, r.expires_at, r.version) for r in rows}


async def publish(settings: Settings, records: Sequence[Record]) -> None:
    """Produce ``records`` to regstate.bindings (murmur2 on the key, acks=all, idempotent)."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [await producer.send(settings.topic(BINDINGS), v, key=k) for k, v in records]
        for f in futures:
            await f
    finally:
        await producer.stop()
