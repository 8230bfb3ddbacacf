"""What SASL_SSL costs a publisher: regstate.registrations appends, plaintext vs secured.

    .venv/bin/python bench/kafka_security_bench.py                  # 50k events, 3 rounds
    .venv/bin/python bench/kafka_security_bench.py --events 20000 --rounds 5

Publishes the same synthetic events (bench/gen_events.py) with the project's
publisher (:func:`streams.log.publisher.publish_events`: acks=all, idempotence)
to the local plaintext 1-node Kafka (127.0.0.1:9092) and to the secured one
(``regstate kafka up --secure``: SASL_SSL, SCRAM-SHA-512, ACLs, as the admin),
alternating, each round into a fresh topic prefix of each broker. Prints events/s
per round and the median ratio secured/plaintext. Both brokers must run; the
topics are left behind (fresh names each run).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen_events import generate_events
from devkafka.local import LocalKafka
from streams.log.publisher import publish_events
from streams.log.topics import ensure_topics
from streams.settings import Settings


def secured_settings(kafka: LocalKafka) -> Settings:
    env: dict[str, str] = {}
    for line in kafka.client_env("admin").splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    return Settings.from_env(env)


async def one_round(base: Settings, events: list, label: str) -> float:  # type: ignore[type-arg]
    settings = dataclasses.replace(base, topic_prefix=f"bench-{label}-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(settings)
    report = await publish_events(settings, events)
    assert report.ok, report.errors
    return report.rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    secure = LocalKafka(1, secure=True, log=False)
    if not secure.is_running():
        print("start the secured Kafka first: regstate kafka up --secure", file=sys.stderr)
        return 2
    plain = Settings(bootstrap_servers="127.0.0.1:9092")
    secured = secured_settings(secure)
    events = list(generate_events(args.events, args.events // 10, n_nodes=4, seed=1, raw=False))
    rates: dict[str, list[float]] = {"plaintext": [], "sasl_ssl": []}
    for i in range(args.rounds):
        for label, settings in (("plaintext", plain), ("sasl_ssl", secured)):
            rate = asyncio.run(one_round(settings, events, label))
            rates[label].append(rate)
            print(f"round {i + 1} {label:<9} {rate:>9.0f} events/s")
    p, s = statistics.median(rates["plaintext"]), statistics.median(rates["sasl_ssl"])
    print(f"median plaintext {p:.0f} events/s, SASL_SSL {s:.0f} events/s, ratio {s / p:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
