"""The dead-letter policy: the one place that decides a record is not folded, and why.

Every record of regstate.registrations goes through :meth:`DeadLetterPolicy.admit`
before the fold. It returns either the decoded :class:`RegistrationEvent` or a
:class:`DeadLetter` naming the reason; a fold that raises on an admitted event
(a bug, never expected) becomes a DeadLetter through
:meth:`DeadLetterPolicy.fold_failed`. The agent sends a DeadLetter, as it is, to
regstate.deadletter and counts it; nothing here raises, so a bad record can never
crash or restart the agent (the Faust failure mode this avoids: STYLE.md).

A dead-lettered record keeps the original key and value bytes unchanged (an
operator can fix and re-publish it) and gains headers naming where it came from
and what was wrong (:data:`HEADER_SOURCE_TOPIC` ... :data:`HEADER_ERROR_DETAIL`).
Its original headers are kept after ours.

Pure: no Faust, no Kafka client, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from processors.sipuri import AorError, canonical_aor
from schemas import RegistrationEvent, Rejection, decode_event

HEADER_SOURCE_TOPIC: Final = "regstate-source-topic"
HEADER_SOURCE_PARTITION: Final = "regstate-source-partition"
HEADER_SOURCE_OFFSET: Final = "regstate-source-offset"
HEADER_ERROR: Final = "regstate-error"
"""The reason, a short machine word (the codec's Rejection reasons, or those below)."""
HEADER_ERROR_DETAIL: Final = "regstate-error-detail"
"""Human-readable detail, UTF-8, at most :data:`MAX_DETAIL` characters."""
HEADER_WORKER: Final = "regstate-worker"
"""The worker id that refused the record."""

MAX_DETAIL: Final = 500

# Reasons this module adds to the codec's (empty, not_msgpack, trailing_bytes, out_of_range,
# not_a_map, missing_field, mistyped_field, unknown_version, invalid_value).
MISSING_KEY: Final = "missing_key"
KEY_MISMATCH: Final = "key_mismatch"
WRONG_PARTITION: Final = "wrong_partition"
INVALID_AOR: Final = "invalid_aor"
NON_CANONICAL_AOR: Final = "non_canonical_aor"
FOLD_ERROR: Final = "fold_error"
TS_AHEAD_OF_RECORD: Final = "ts_ahead_of_record"

MAX_TS_AHEAD_OF_RECORD_MS: Final = 86_400_000
"""An event's ``ts`` may be at most a day after its Kafka record's timestamp (D80).

The broker refuses records stamped more than ``log.message.timestamp.after.max.ms``
(one hour by default since Kafka 4.0) ahead of its clock, so with this check a
forged event cannot carry a far-future ts, hence (the codec bounds seq by ts) a
seq that would hold a node's R5 mark for more than about a day."""

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that will not be folded: where it came from, its bytes, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    original_headers: Headers = ()

    def headers(self, worker_id: str) -> list[tuple[str, bytes]]:
        """The headers of the dead-letter record: ours first, then the original ones."""
        return [
            (HEADER_SOURCE_TOPIC, self.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(self.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(self.offset).encode()),
            (HEADER_ERROR, self.reason.encode()),
            (HEADER_ERROR_DETAIL, self.detail[:MAX_DETAIL].encode("utf-8", "replace")),
            (HEADER_WORKER, worker_id.encode()),
            *self.original_headers,
        ]


class DeadLetterPolicy:
    """Decides, for each source record, "fold this event" or "dead-letter this record".

    A record is admitted only if all of these hold, checked in this order (the
    first failure is the reason):

    * it has a key (``missing_key``);
    * its value decodes to a RegistrationEvent this reader knows (the codec's
      reasons: ``empty`` for a null value, ``not_msgpack``, ``not_a_map``,
      ``unknown_version``, ``missing_field``, ``out_of_range``, ...);
    * its ts is at most a day after the record's timestamp (``ts_ahead_of_record``);
    * its AOR is a SIP/SIPS/tel URI in canonical form, R1 (``invalid_aor``,
      ``non_canonical_aor``): the key is the table key, and two spellings of one
      AOR must not become two AORs;
    * its key is that AOR's UTF-8 bytes (``key_mismatch``): the table is keyed by
      the record key, the state by the event's AOR, and they must agree;
    * it sits in the partition Kafka's default partitioner gives its key
      (``wrong_partition``): otherwise its state would live in a partition where
      neither the query API nor a restarted worker would look for it (traps 2, 3).
    """

    def __init__(self, partitions: int, partition_of: Callable[[bytes, int], int]) -> None:
        self.partitions = partitions
        self._partition_of = partition_of

    def admit(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = (),
        record_ts_ms: int | None = None,
    ) -> RegistrationEvent | DeadLetter:
        """The event to fold, or the DeadLetter that replaces it. Never raises.

        ``record_ts_ms`` is the Kafka record's timestamp (None: a file, no check).
        """

        def refuse(reason: str, detail: str) -> DeadLetter:
            return DeadLetter(topic, partition, offset, key, value, reason, detail, headers)

        if key is None:
            return refuse(MISSING_KEY, "record has no key (the key must be the canonical AOR)")
        decoded = decode_event(value)
        if isinstance(decoded, Rejection):
            return refuse(decoded.reason, decoded.detail)
        if record_ts_ms is not None and decoded.ts > record_ts_ms + MAX_TS_AHEAD_OF_RECORD_MS:
            return refuse(
                TS_AHEAD_OF_RECORD,
                f"ts {decoded.ts} is {decoded.ts - record_ts_ms} ms after the record's "
                f"timestamp {record_ts_ms} (limit {MAX_TS_AHEAD_OF_RECORD_MS})",
            )
        aor = decoded.aor
        try:
            canonical = canonical_aor(aor)
        except AorError as exc:
            return refuse(INVALID_AOR, str(exc))
        if canonical != aor:
            return refuse(NON_CANONICAL_AOR, f"aor {aor!r} is not canonical (R1: {canonical!r})")
        if key != aor.encode():
            return refuse(
                KEY_MISMATCH, f"key {key[:200]!r} is not the UTF-8 of the event's aor {aor!r}"
            )
        expected = self._partition_of(key, self.partitions)
        if expected != partition:
            return refuse(
                WRONG_PARTITION,
                f"key hashes to partition {expected} of {self.partitions}, record is in "
                f"{partition} (producers must use the default murmur2 partitioner)",
            )
        return decoded

    def fold_failed(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        exc: BaseException,
        headers: Headers = (),
    ) -> DeadLetter:
        """The DeadLetter for an admitted event the fold raised on (a bug: keep going)."""
        detail = f"{type(exc).__name__}: {exc}"
        return DeadLetter(topic, partition, offset, key, value, FOLD_ERROR, detail, headers)


def headers_dict(headers: Headers) -> dict[str, bytes]:
    """First value of each header name (for readers and tests)."""
    out: dict[str, bytes] = {}
    for name, value in headers:
        out.setdefault(name, value)
    return out
