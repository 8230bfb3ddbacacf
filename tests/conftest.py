"""Fixtures shared by every test.

``kafka_bootstrap``: bootstrap servers of a real Kafka. ``$REGSTATE_BOOTSTRAP_SERVERS``
when set (CI or a developer's own broker), else the local 1-node Kafka
(``regstate kafka up``), started on first use and left running afterwards so the
next session starts in well under a second; ``regstate kafka down`` stops it.

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

import os
from collections.abc import Iterator

import pytest

from devkafka.local import LocalKafka, ensure_kafka
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


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a running Kafka (see the module docstring)."""
    external = os.environ.get("REGSTATE_BOOTSTRAP_SERVERS")
    if external:
        return external
    return ensure_kafka(nodes=1)


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
