"""The public topics of docs/design.md section 3: their specs, and creating them idempotently.

Used by ``regstate topics ensure``, by ``regstate publish`` before it appends,
and by the worker at start. Names come from :meth:`Settings.topic`, so one
``REGSTATE_TOPIC_PREFIX`` moves every topic (tests use a prefix per test).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.errors import TopicAlreadyExistsError, for_code  # type: ignore[import-untyped]

from streams.log.kafka_config import client_config
from streams.settings import Settings

log = logging.getLogger(__name__)

REGISTRATIONS: Final = "registrations"
BINDINGS: Final = "bindings"
BINDING_EVENTS: Final = "binding-events"
ALERTS: Final = "alerts"
DEADLETTER: Final = "deadletter"

SEVEN_DAYS_MS: Final = 7 * 24 * 3600 * 1000
UNLIMITED_RETENTION_MS: Final = -1
"""registrations keeps its whole history by default: it is what analysts replay."""


class TopicsError(RuntimeError):
    """A topic cannot be created, or exists in a shape that would break regstate."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """What one public topic must look like.

    ``partitions_must_match``: an existing topic with another partition count is
    an error, not a warning (the source topic of the table: Faust refuses to run,
    and keys would hash to other partitions than the table's).
    """

    role: str
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)
    partitions_must_match: bool = False

    def describe(self) -> str:
        """One line: name, partitions, replication factor and every config entry."""
        config = " ".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return (
            f"{self.name} partitions={self.partitions} "
            f"replication_factor={self.replication_factor} {config}"
        ).rstrip()


@dataclass(frozen=True, slots=True)
class TopicState:
    """What the broker reports about one existing topic."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


def topic_specs(
    settings: Settings, *, registrations_retention_ms: int = UNLIMITED_RETENTION_MS
) -> list[TopicSpec]:
    """The five public topics of docs/design.md section 3, in a fixed order.

    registrations, bindings and binding-events get ``settings.partitions``
    partitions (the table's count: all three are keyed by canonical AOR).
    alerts and deadletter get one partition: low volume, and one total order is
    what a pager or an operator reading them wants. Every topic gets
    ``settings.replication_factor`` replicas and, from 3 replicas up,
    ``min.insync.replicas=2`` so that acks=all survives one broker down.
    """
    rf = settings.replication_factor
    common: dict[str, str] = {"min.insync.replicas": "2"} if rf >= 3 else {}

    def spec(
        role: str,
        partitions: int,
        config: Mapping[str, str],
        *,
        must_match: bool = False,
    ) -> TopicSpec:
        return TopicSpec(
            role=role,
            name=settings.topic(role),
            partitions=partitions,
            replication_factor=rf,
            config={**config, **common},
            partitions_must_match=must_match,
        )

    n = settings.partitions
    return [
        spec(
            REGISTRATIONS,
            n,
            {"cleanup.policy": "delete", "retention.ms": str(registrations_retention_ms)},
            must_match=True,
        ),
        # Compacted: the latest AorState per AOR (a tombstone once it has no contact).
        spec(BINDINGS, n, {"cleanup.policy": "compact"}),
        spec(BINDING_EVENTS, n, {"cleanup.policy": "delete", "retention.ms": str(SEVEN_DAYS_MS)}),
        spec(ALERTS, 1, {"cleanup.policy": "compact"}),
        spec(DEADLETTER, 1, {"cleanup.policy": "delete"}),
    ]


def _admin(settings: Settings) -> Any:
    return AIOKafkaAdminClient(
        **client_config(settings, "regstate-topics"), request_timeout_ms=30_000
    )


async def _metadata(admin: Any, names: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Partition metadata of the named topics that exist (absent ones are left out).

    Asks for all topics rather than the named ones: a Metadata request naming a
    missing topic creates it on brokers with auto.create.topics.enable, with the
    broker's defaults, which is exactly what ensure_topics must prevent.
    """
    wanted = set(names)
    out: dict[str, list[dict[str, Any]]] = {}
    for topic in await admin.describe_topics(None):
        if topic["topic"] in wanted and topic["error_code"] == 0:
            out[topic["topic"]] = topic["partitions"]
    return out


async def _configs(admin: Any, names: Iterable[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    if not resources:
        return {}
    out: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for error_code, error_message, _rtype, name, entries, *_ in response.resources:
            if error_code != 0:
                error = for_code(error_code).__name__
                hint = ""
                if "Authorization" in error:
                    # The ACLs of this principal, not the topic, are what to fix.
                    hint = " (this principal lacks DESCRIBE_CONFIGS; see `regstate kafka acls`)"
                raise TopicsError(
                    f"cannot describe the config of {name}: {error} {error_message or ''}".rstrip()
                    + hint
                )
            out[name] = {entry[0]: entry[1] for entry in entries}
    return out


def _state(name: str, partitions: list[dict[str, Any]], config: Mapping[str, str]) -> TopicState:
    rf = max((len(p["replicas"]) for p in partitions), default=0)
    return TopicState(name, len(partitions), rf, dict(config))


async def describe_topics(settings: Settings, names: Iterable[str]) -> dict[str, TopicState]:
    """Partition count, replication factor and full config of the named topics that exist."""
    admin = _admin(settings)
    try:
        await admin.start()
        meta = await _metadata(admin, names)
        configs = await _configs(admin, meta)
    finally:
        await admin.close()
    return {name: _state(name, meta[name], configs.get(name, {})) for name in meta}


def check_topic(spec: TopicSpec, state: TopicState) -> tuple[list[str], list[str]]:
    """Compare an existing topic with its spec: ``(errors, warnings)``, as sentences.

    Only a partition count that must match is an error. Anything else that
    differs is a warning: it was set on purpose by an operator, or it does not
    break the fold (ensure never alters an existing topic).
    """
    errors: list[str] = []
    warnings: list[str] = []
    if state.partitions != spec.partitions:
        if spec.partitions_must_match:
            errors.append(
                f"topic {spec.name} has {state.partitions} partitions but "
                f"REGSTATE_PARTITIONS is {spec.partitions}: the table would break (its "
                "source topic and the table must have the same partition count, and "
                "every AOR would hash to another partition). Set REGSTATE_PARTITIONS="
                f"{state.partitions}, or recreate the topic and replay its history."
            )
        else:
            warnings.append(
                f"topic {spec.name} has {state.partitions} partitions, expected {spec.partitions}"
            )
    if state.replication_factor != spec.replication_factor:
        warnings.append(
            f"topic {spec.name} has replication factor {state.replication_factor}, "
            f"expected {spec.replication_factor}"
        )
    for key, want in sorted(spec.config.items()):
        have = state.config.get(key)
        if have != want:
            warnings.append(f"topic {spec.name} has {key}={have}, expected {want}")
    return errors, warnings


async def _wait_ready(admin: Any, specs: list[TopicSpec], timeout_s: float) -> None:
    """Wait until every partition of the new topics has a leader (or raise TopicsError).

    CreateTopics returns once the controller has committed the topic; brokers
    learn it a moment later. A producer started right after would otherwise wait
    for metadata itself, with less helpful errors.
    """
    deadline = time.monotonic() + timeout_s
    pending = {s.name: s.partitions for s in specs}
    while True:
        meta = await _metadata(admin, pending)
        for name, parts in meta.items():
            if len(parts) == pending[name] and all(
                p["error_code"] == 0 and p["leader"] >= 0 for p in parts
            ):
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicsError(
                f"topics created but without leaders after {timeout_s:.0f} s: "
                + ", ".join(sorted(pending))
            )
        await asyncio.sleep(0.1)


async def ensure_topics(
    settings: Settings,
    specs: list[TopicSpec] | None = None,
    *,
    timeout_s: float = 30.0,
    warn: Callable[[str], None] | None = None,
) -> list[str]:
    """Create the missing topics of ``specs`` (default: :func:`topic_specs`); return their names.

    Guarantees, when it returns: every topic exists, and every topic it created
    has its spec's partitions, replication factor and config, with a leader for
    every partition. Existing topics are never altered, but are checked with
    :func:`check_topic`: its errors raise TopicsError (nothing is created then),
    its warnings go to ``warn`` (default: this module's logger). Safe to run
    concurrently with another ensure: a topic created in between is checked
    like any existing one. Raises aiokafka's KafkaError when Kafka is unreachable.
    """
    specs = topic_specs(settings) if specs is None else specs
    report = warn if warn is not None else log.warning
    admin = _admin(settings)
    try:
        await admin.start()
        names = [s.name for s in specs]
        meta = await _metadata(admin, names)
        missing = [s for s in specs if s.name not in meta]
        _check_existing(
            [s for s in specs if s.name in meta], meta, await _configs(admin, meta), report
        )

        created: list[str] = []
        raced: list[TopicSpec] = []
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        s.partitions,
                        s.replication_factor,
                        topic_configs=dict(s.config),
                    )
                    for s in missing
                ],
                timeout_ms=int(timeout_s * 1000),
            )
            by_name = {s.name: s for s in missing}
            for name, error_code, *rest in response.topic_errors:
                error = for_code(error_code) if error_code else None
                if error is None:
                    created.append(name)
                elif error is TopicAlreadyExistsError:
                    raced.append(by_name[name])
                else:
                    message = rest[0] if rest and rest[0] else error.__name__
                    raise TopicsError(f"cannot create topic {name}: {message}")
        if raced:
            race_meta = await _metadata(admin, (s.name for s in raced))
            _check_existing(raced, race_meta, await _configs(admin, race_meta), report)
        await _wait_ready(admin, [s for s in specs if s.name in created], timeout_s)
    finally:
        await admin.close()
    order = {s.name: i for i, s in enumerate(specs)}
    return sorted(created, key=order.__getitem__)


def _check_existing(
    specs: list[TopicSpec],
    meta: Mapping[str, list[dict[str, Any]]],
    configs: Mapping[str, Mapping[str, str]],
    report: Callable[[str], None],
) -> None:
    errors: list[str] = []
    for spec in specs:
        if spec.name not in meta:
            # Deleted between two requests; rare enough to be an error, not a retry loop.
            raise TopicsError(f"topic {spec.name} disappeared while being checked")
        state = _state(spec.name, meta[spec.name], configs.get(spec.name, {}))
        errs, warns = check_topic(spec, state)
        errors += errs
        for w in warns:
            report(w)
    if errors:
        raise TopicsError("; ".join(errors))


__all__ = [
    "ALERTS",
    "BINDINGS",
    "BINDING_EVENTS",
    "DEADLETTER",
    "REGISTRATIONS",
    "TopicSpec",
    "TopicState",
    "TopicsError",
    "check_topic",
    "describe_topics",
    "ensure_topics",
    "topic_specs",
]
