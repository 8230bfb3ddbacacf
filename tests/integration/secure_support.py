"""Shared by the secured-Kafka tests: each role's settings, the ACLs of one test's topics."""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass

from devkafka.acls import apply_acls, role_acls
from devkafka.local import LocalKafka
from streams.log.topics import ensure_topics
from streams.settings import Settings
from tests.helpers import unique_name


def role_env(kafka: LocalKafka, role: str) -> dict[str, str]:
    """The ``REGSTATE_*`` client settings of ``role`` (its ``<role>.env`` file)."""
    env: dict[str, str] = {}
    for line in kafka.client_env(role).splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


@dataclass
class SecuredTopics:
    """The public topics of one test (own prefix), created by the admin, with the ACLs."""

    kafka: LocalKafka
    prefix: str
    partitions: int = 4

    def env(self, role: str, **extra: str | int) -> dict[str, str]:
        env = {
            **role_env(self.kafka, role),
            "REGSTATE_TOPIC_PREFIX": self.prefix,
            "REGSTATE_PARTITIONS": str(self.partitions),
        }
        env.update({f"REGSTATE_{k.upper()}": str(v) for k, v in extra.items()})
        return env

    def settings(self, role: str, **extra: str | int) -> Settings:
        return Settings.from_env(self.env(role, **extra))


def secured_topics(kafka: LocalKafka, partitions: int = 4) -> SecuredTopics:
    """A fresh prefix: the admin applies every role's ACLs for it and creates its topics."""
    topics = SecuredTopics(kafka, unique_name("sec") + ".", partitions)
    admin = topics.settings("admin")
    apply_acls(admin, role_acls(admin))
    asyncio.run(ensure_topics(admin))
    return topics
