"""Bench of ``regstate replay`` from Kafka: events/s and the peak memory of the process.

    .venv/bin/python bench/replay_bench.py                 # 1M events, 10k AORs, 8 partitions
    .venv/bin/python bench/replay_bench.py --events 200000 --keep

Publishes bench/gen_events.py's synthetic log (with ``raw`` headers, as front-ends
send them) to a fresh topic prefix through :mod:`streams.log.publisher`, then runs
``python -m streams replay`` (a child process, reading regstate.registrations of
that prefix) and reports its wall time, events/s and peak RSS (``ru_maxrss`` of
the child, from ``os.wait4``). The topics are deleted afterwards unless
``--keep``; ``--prefix P --skip-publish`` re-runs the replay on kept topics.
Needs a running Kafka (``regstate kafka up``); uses ``REGSTATE_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen_events import generate_events
from streams.log.publisher import publish_events
from streams.log.topics import ensure_topics, topic_specs
from streams.settings import Settings
from tests.helpers import PROJECT_ROOT


def _settings(prefix: str, partitions: int) -> Settings:
    env = dict(os.environ)
    env["REGSTATE_TOPIC_PREFIX"] = prefix
    env["REGSTATE_PARTITIONS"] = str(partitions)
    return Settings.from_env(env)


async def _publish(settings: Settings, n: int, aors: int, raw: bool) -> tuple[int, float]:
    await ensure_topics(settings)
    report = await publish_events(settings, generate_events(n, aors, 4, 1, raw=raw))
    if not report.ok:
        raise SystemExit(f"publish failed: {report.errors}")
    return report.published, report.elapsed_s


async def _delete(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [s.name for s in topic_specs(settings) if s.name in existing]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def run_replay(settings: Settings, extra: list[str]) -> tuple[float, int, int, str]:
    """Run ``regstate replay`` as a child: (seconds, exit code, peak RSS in KiB, stderr tail)."""
    env = dict(os.environ)
    env["REGSTATE_TOPIC_PREFIX"] = settings.topic_prefix
    env["REGSTATE_PARTITIONS"] = str(settings.partitions)
    env["REGSTATE_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    started = time.monotonic()
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "replay", "--compact", "--no-progress", *extra],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=devnull,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    # Linux reports ru_maxrss in KiB.
    return elapsed, proc.returncode, usage.ru_maxrss, err.strip().splitlines()[-1] if err else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--aors", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--no-raw", action="store_true", help="events without raw headers")
    parser.add_argument("--prefix", default=None, help="topic prefix (default: a fresh one)")
    parser.add_argument("--skip-publish", action="store_true", help="replay what --prefix holds")
    parser.add_argument("--keep", action="store_true", help="do not delete the topics")
    args = parser.parse_args(argv)

    prefix = args.prefix or f"bench-{uuid.uuid4().hex[:8]}."
    settings = _settings(prefix, args.partitions)
    print(f"kafka {settings.bootstrap_servers}, prefix {prefix}, {args.partitions} partitions")
    print(f"load before: {os.getloadavg()[0]:.2f}")
    try:
        if not args.skip_publish:
            n, secs = asyncio.run(_publish(settings, args.events, args.aors, not args.no_raw))
            print(f"published {n} events in {secs:.1f} s ({n / secs:,.0f} events/s)")
        n = args.events
        for label, extra in (
            ("replay (all AORs, state at the end)", []),
            ("replay --aor (one AOR, its partition only)", ["--aor", "sip:1001@pbx.example.com"]),
        ):
            secs, code, rss_kib, last = run_replay(settings, extra)
            print(f"{label}: exit {code}, {secs:.1f} s, peak RSS {rss_kib / 1024:.0f} MiB")
            print(f"    {last}")
            if not extra:
                print(f"    {n / secs:,.0f} events/s")
        print(f"load after: {os.getloadavg()[0]:.2f}")
    finally:
        if not args.keep:
            asyncio.run(_delete(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
