"""``regstate worker``: run one engine worker (fold, table, outputs, sweeper, query API).

Every setting comes from ``REGSTATE_*`` (docs/design.md section 10; see
:class:`streams.settings.Settings`). The worker first ensures the public topics
exist (:func:`streams.log.topics.ensure_topics`), then runs until SIGTERM or SIGINT,
which stop it cleanly (offsets of acknowledged work committed, group left).
Exit status 70 means an output could not be written; a supervisor restarts it.

Faust is imported only when the command runs, so other subcommands stay quick.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import sys
from typing import Any

from streams.settings import Settings

log = logging.getLogger("regstate.worker")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``worker`` subcommand."""
    parser = subparsers.add_parser(
        "worker",
        help="run an engine worker: fold registrations into the bindings table",
        description=(
            "A Faust worker that folds regstate.registrations into the bindings table, "
            "publishes regstate.bindings and regstate.binding-events, dead-letters bad "
            "records, expires lapsed bindings, and serves GET /v1/aors/{aor}, /healthz, "
            "/readyz and /metrics on REGSTATE_WEB_PORT. Settings: REGSTATE_* (README)."
        ),
    )
    parser.set_defaults(func=run)


async def _prepare(settings: Settings) -> bool:
    """Create missing topics; return whether the outputs are co-partitioned with the source."""
    from streams.log.topics import BINDING_EVENTS, BINDINGS, describe_topics, ensure_topics

    await ensure_topics(settings)
    names = [settings.topic(BINDINGS), settings.topic(BINDING_EVENTS)]
    states = await describe_topics(settings, names)
    return all(n in states and states[n].partitions == settings.partitions for n in names)


def run(args: argparse.Namespace) -> int:
    """Run the worker in this process until it is stopped; return its exit status."""
    import faust
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

    from streams.engine.worker import Engine
    from streams.log.kafka_config import failure_message
    from streams.log.topics import TopicsError

    settings = Settings.from_env()
    try:
        copartitioned = asyncio.run(_prepare(settings))
    except TopicsError as exc:
        print(f"regstate worker: {exc}", file=sys.stderr)
        return 1
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"regstate worker: {failure_message(settings, exc)}", file=sys.stderr)
        return 1
    engine = Engine(settings, outputs_copartitioned=copartitioned)
    worker = faust.Worker(
        engine.app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        redirect_stdouts=False,
        # streams.logsetup configured logging already (REGSTATE_LOG_FORMAT).
        override_logging=False,
    )
    # Faust's start-up spinner sets the root logger to DEBUG (to spin on every
    # record) and never lowers it: every aiokafka debug call then builds a
    # LogRecord, four per folded event (D71).
    worker.spinner = None
    tune_gc(settings.engine_gc_gen0)
    profiler: cProfile.Profile | None = None
    if settings.profile:
        profiler = cProfile.Profile()
        profiler.enable()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(settings.profile)
            print(f"regstate worker: profile written to {settings.profile}", file=sys.stderr)
    return 0


def tune_gc(gen0: int) -> None:
    """Collect young objects every ``gen0`` allocations instead of 700 (D108).

    The fold allocates a few hundred objects per event (decoded events, states,
    bindings, records) that die young; at Python's 700 the collector ran every
    few events and rescanned the survivors, about a fifth of the worker's CPU.
    Freezing what start-up built (Faust, aiokafka, the settings) keeps those
    objects out of every later full collection. 0 leaves Python's settings.
    """
    if gen0 <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
