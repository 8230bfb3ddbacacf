"""Errors of the local Kafka harness; ``exit_code`` is what ``regstate kafka`` exits with."""

from __future__ import annotations


class KafkaLocalError(RuntimeError):
    """The local Kafka could not be brought to the asked state.

    ``exit_code`` is what the CLI exits with; ``detail`` (possibly empty) is extra
    diagnostic text, such as the tail of a node's log.
    """

    exit_code = 1

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class ToolMissingError(KafkaLocalError):
    """``java`` or ``mvn`` is missing or too old; the message says what to install."""

    exit_code = 2


class KafkaStartError(KafkaLocalError):
    """A node did not start, died, or did not answer before the deadline."""
