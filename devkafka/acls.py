"""The least-privilege Kafka ACLs of each regstate role (README "Kafka security").

One principal per role; each gets only what its code path uses:

=========  ==============================================================================
role       may
=========  ==============================================================================
frontend   write registrations (front-ends, HEP ingest, ``regstate publish``)
worker     read registrations and write it (the sweeper's ``expire``), write bindings,
           binding-events and deadletter, its consumer group, its own internal topics
           (changelog, leader topic: prefix ``<prefix>engine-``, which it creates)
dialer     read bindings and binding-events (no group: offsets live in its store)
alerting   read bindings, binding-events and registrations (rejects), write alerts
analyst    read every public topic, describe the engine's group (audit's lag)
=========  ==============================================================================

Every role that runs ``ensure_topics`` at start (frontend via ``regstate publish``,
worker, dialer view, alerting) also gets DESCRIBE and DESCRIBE_CONFIGS on the
public topics, so it can check their shape (metadata only, no record); creating
them stays the admin's job (``regstate topics ensure`` as the admin).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from devkafka.errors import KafkaLocalError
from streams.log.topics import ALERTS, BINDING_EVENTS, BINDINGS, DEADLETTER, REGISTRATIONS
from streams.settings import Settings

# Kafka's wire codes (org.apache.kafka.common.acl / resource).
RESOURCE_CODES = {"TOPIC": 2, "GROUP": 3}
PATTERN_CODES = {"LITERAL": 3, "PREFIXED": 4}
OPERATION_CODES = {
    "ALL": 2,
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "DESCRIBE": 8,
    "DESCRIBE_CONFIGS": 10,
}
ALLOW = 3


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: ``principal`` may ``operation`` on a resource, from any host."""

    principal: str
    resource_type: str
    pattern: str
    name: str
    operation: str

    def render(self) -> str:
        return (
            f"{self.principal:<24} {self.operation:<16} {self.resource_type:<5} "
            f"{self.pattern:<8} {self.name}"
        )


def role_acls(settings: Settings, principal_prefix: str = "regstate-") -> list[Acl]:
    """Every ACL of every role, for the topic names of ``settings``."""
    t = settings.topic
    engine_group = f"{settings.topic_prefix}engine"
    rules: dict[str, list[tuple[str, str, str, str]]] = {
        "frontend": [("TOPIC", "LITERAL", t(REGISTRATIONS), "WRITE")],
        "worker": [
            ("TOPIC", "LITERAL", t(REGISTRATIONS), "READ"),
            ("TOPIC", "LITERAL", t(REGISTRATIONS), "WRITE"),
            ("TOPIC", "LITERAL", t(BINDINGS), "WRITE"),
            ("TOPIC", "LITERAL", t(BINDING_EVENTS), "WRITE"),
            ("TOPIC", "LITERAL", t(DEADLETTER), "WRITE"),
            ("GROUP", "LITERAL", engine_group, "READ"),
            # Faust's changelog and leader topics: created, read and written by it alone.
            ("TOPIC", "PREFIXED", f"{engine_group}-", "ALL"),
        ],
        "dialer": [
            ("TOPIC", "LITERAL", t(BINDINGS), "READ"),
            ("TOPIC", "LITERAL", t(BINDING_EVENTS), "READ"),
        ],
        "alerting": [
            ("TOPIC", "LITERAL", t(BINDINGS), "READ"),
            ("TOPIC", "LITERAL", t(BINDING_EVENTS), "READ"),
            ("TOPIC", "LITERAL", t(REGISTRATIONS), "READ"),
            ("TOPIC", "LITERAL", t(ALERTS), "READ"),
            ("TOPIC", "LITERAL", t(ALERTS), "WRITE"),
        ],
        "analyst": [
            *(
                ("TOPIC", "LITERAL", t(name), "READ")
                for name in (REGISTRATIONS, BINDINGS, BINDING_EVENTS, ALERTS, DEADLETTER)
            ),
            ("GROUP", "LITERAL", engine_group, "DESCRIBE"),
        ],
    }
    for role in ("frontend", "worker", "dialer", "alerting"):
        for op in ("DESCRIBE", "DESCRIBE_CONFIGS"):
            rules[role].append(("TOPIC", "PREFIXED", settings.topic_prefix, op))
    return sorted(
        Acl(f"User:{principal_prefix}{role}", rtype, pattern, name, op)
        for role, entries in rules.items()
        for rtype, pattern, name, op in entries
    )


def render_acls(acls: list[Acl]) -> str:
    """A table, one ACL a line (all ALLOW, host ``*``)."""
    header = f"{'PRINCIPAL':<24} {'OPERATION':<16} {'TYPE':<5} {'PATTERN':<8} RESOURCE"
    return "\n".join([header, *(a.render() for a in acls)]) + "\n"


async def _apply(settings: Settings, acls: list[Acl]) -> int:
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
    from aiokafka.errors import KafkaError, for_code  # type: ignore[import-untyped]
    from aiokafka.protocol.admin import CreateAclsRequest  # type: ignore[import-untyped]

    from streams.log.kafka_config import client_config, describe_failure

    admin: Any = AIOKafkaAdminClient(**client_config(settings, "regstate-acls"))
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaLocalError(await describe_failure(settings, exc)) from None
    try:
        for acl in acls:
            request = CreateAclsRequest(
                RESOURCE_CODES[acl.resource_type],
                acl.name,
                PATTERN_CODES[acl.pattern],
                acl.principal,
                "*",
                OPERATION_CODES[acl.operation],
                ALLOW,
            )
            response = await admin._send_request(request)
            for error_code, message in response.creation_responses:
                if error_code != 0:
                    error = for_code(error_code)
                    raise KafkaLocalError(f"{acl.render().strip()}: {error.__name__}: {message}")
    finally:
        await admin.close()
    return len(acls)


def apply_acls(settings: Settings, acls: list[Acl]) -> int:
    """Create ``acls`` (idempotent: Kafka keeps one copy of an equal ACL); return the count."""
    return asyncio.run(_apply(settings, acls))
