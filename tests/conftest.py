"""Fixtures shared by every test.

``kafka_bootstrap``: bootstrap servers of a real Kafka. ``$REGSTATE_BOOTSTRAP_SERVERS``
when set (CI or a developer's own broker), else the local 1-node Kafka
(``regstate kafka up``), started on first use and left running afterwards so the
next session starts in well under a second; ``regstate kafka down`` stops it.
At the end of the session it deletes the topics the session created (each test
has topics of its own), so a long-lived broker does not gather thousands of them:
every full metadata answer lists them all (docs/decisions.md D111). It leaves
internal (``__``) topics, the default ``regstate.`` ones and a bench's ``bench-``
ones; ``REGSTATE_TEST_KEEP_TOPICS=1`` keeps everything (to look at a failed test's).

``secure_kafka``: the local secured 1-node Kafka (``regstate kafka up --secure``:
SASL_SSL on 127.0.0.1:29092, SCRAM users per role, ACLs enforced), started on first
use and left running like the plaintext one.

``kafka_cluster``: the local 3-node Kafka (:class:`devkafka.local.LocalKafka`),
started on first use. Before each test every node is up again (a fault test may
have stopped one); at the end of the session it is stopped if this session
started it.

Tests that use either fixture are marked ``integration`` (and ``cluster``)
automatically, so ``-m 'not integration'`` never starts a broker.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Iterator

import pytest
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from devkafka.local import LocalKafka, ensure_kafka
from devkafka.topics import delete_topics, topic_names
from tests.helpers import PROJECT_ROOT

# Tests, and the processes they start, keep their data in the checkout like ./dev.
os.environ.setdefault("REGSTATE_DATA_DIR", str(PROJECT_ROOT / ".regstate"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "kafka_cluster" in names:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.integration)
        elif "kafka_bootstrap" in names or "secure_kafka" in names:
            item.add_marker(pytest.mark.integration)


KEPT_TOPIC_PREFIXES = ("__", "regstate.", "bench-")
"""Topics a session never deletes: Kafka's own, a running system's, a bench's."""


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a running Kafka (see the module docstring)."""
    bootstrap = os.environ.get("REGSTATE_BOOTSTRAP_SERVERS") or ensure_kafka(nodes=1)
    before = asyncio.run(topic_names(bootstrap))
    yield bootstrap
    if os.environ.get("REGSTATE_TEST_KEEP_TOPICS"):
        return
    try:
        created = asyncio.run(topic_names(bootstrap)) - before
        doomed = [n for n in created if not n.startswith(KEPT_TOPIC_PREFIXES)]
        asyncio.run(delete_topics(bootstrap, doomed))
    except (KafkaError, OSError) as exc:  # the tests passed or failed already: say, go on
        warnings.warn(f"could not delete this session's topics: {exc!r}", stacklevel=1)


@pytest.fixture(scope="session")
def _kafka_cluster_session() -> Iterator[LocalKafka]:
    cluster = LocalKafka(3)
    was_running = cluster.status().any_alive
    cluster.up()
    yield cluster
    if not was_running:
        cluster.down()


@pytest.fixture
def kafka_cluster(_kafka_cluster_session: LocalKafka) -> LocalKafka:
    """The local 3-node Kafka with every node up; ``.bootstrap``, ``.stop_node(i)`` etc."""
    _kafka_cluster_session.up()
    return _kafka_cluster_session


@pytest.fixture(scope="session")
def secure_kafka() -> LocalKafka:
    """The local secured 1-node Kafka, running (see the module docstring)."""
    kafka = LocalKafka(1, secure=True)
    kafka.up(timeout=120)
    return kafka
