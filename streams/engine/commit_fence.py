"""Refuse an offset commit that was decided under one group generation and would be sent
under another (D124).

aiokafka's ``AIOKafkaConsumer.commit`` checks the partitions against the assignment of
the moment, then waits for the coordinator and its commit lock, and only then builds the
request with the generation current *at that moment*. A commit decided before a
rebalance can so go out after it, carrying the new generation. The broker checks the
member and the generation, not which member owns a partition, so it accepts it: the
partitions that moved to another worker get their committed offset set back to what this
worker had acknowledged, behind what their new owner committed. Nothing folds them again
until a record arrives, and the group shows lag that never drains.

The fence lets a commit through only if the assignment it was checked against is still
the consumer's assignment and the generation is still the one that assignment came
with. A commit on revocation (Faust's last commit before a rebalance) passes: the
assignment and generation are unchanged until the JoinGroup response. One refused
raises ``IllegalGenerationError``, which aiokafka turns into the ``CommitFailedError``
("already rebalanced") that Faust's driver already treats as a skipped commit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import IllegalGenerationError  # type: ignore[import-untyped]

log = logging.getLogger(__name__)
DoCommit = Callable[[Any, Any], Awaitable[Any]]


class CommitFence:
    """Installed on a started group consumer: ties each assignment to its generation."""

    def __init__(self, consumer: Any) -> None:
        self._coordinator = consumer._coordinator
        self._state = consumer._subscription
        # Installed before the first assignment in the worker; from whatever is current
        # otherwise.
        subscription = self._state.subscription
        self._assignment: Any = subscription.assignment if subscription is not None else None
        self._generation: int = self._coordinator.generation
        self.refused = 0
        """Commits refused so far (each a stale commit that would have been sent)."""

    @classmethod
    def install(cls, consumer: Any) -> CommitFence:
        """Wrap ``consumer``'s assignment and commit steps; call after ``start()``."""
        fence = cls(consumer)
        assign = fence._state.assign_from_subscribed

        def assign_from_subscribed(assigned: Any) -> None:
            assign(assigned)
            # The coordinator set its generation from the JoinGroup response before it
            # installs that generation's assignment, with no await in between.
            fence._assignment = fence._state.subscription.assignment
            fence._generation = fence._coordinator.generation

        fence._state.assign_from_subscribed = assign_from_subscribed
        do_commit: DoCommit = fence._coordinator._do_commit_offsets

        async def do_commit_offsets(assignment: Any, offsets: Any) -> Any:
            # Nothing is awaited between this check and the request's generation.
            if offsets and not fence.current(assignment):
                fence.refused += 1
                log.info(
                    "Offset commit of %s not sent: decided before the group's rebalance "
                    "to generation %s; the partitions' owners commit them now",
                    sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets),
                    fence._coordinator.generation,
                )
                raise IllegalGenerationError(fence._coordinator.group_id)
            return await do_commit(assignment, offsets)

        fence._coordinator._do_commit_offsets = do_commit_offsets
        return fence

    def current(self, assignment: Any) -> bool:
        """Whether a commit checked against ``assignment`` may be sent now."""
        return (
            assignment is self._assignment
            and assignment.active
            and self._coordinator.generation == self._generation
        )
