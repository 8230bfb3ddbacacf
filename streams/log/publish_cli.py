"""``regstate publish --input FILE.jsonl``: append a JSON Lines log to regstate.registrations.

aiokafka is imported only when the command runs, so that building the parser
(every ``regstate`` invocation, e.g. ``replay``) stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Final

from streams.analysis.replay_cli import good_events
from streams.log.jsonl import count_lines, display_name, is_stdin, read_events
from streams.settings import Settings

PROGRESS_THRESHOLD: Final = 10_000
"""Below this many lines a publish takes about a second: no progress bar."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``publish`` subcommand."""
    parser = subparsers.add_parser(
        "publish",
        help="append the RegistrationEvents of a JSON Lines file to regstate.registrations",
        description=(
            "Decode and validate each line (bad lines are reported on stderr and "
            "skipped, exit code 1), canonicalize its AOR, and append it (msgpack, key = "
            "canonical AOR) with acks=all and idempotence. Exit 0 only when every line "
            "was good and every record was acknowledged. Creates the topics first."
        ),
    )
    parser.add_argument(
        "--input", required=True, metavar="FILE", help="JSON Lines file, or - for stdin"
    )
    parser.add_argument(
        "--no-create",
        action="store_true",
        help="do not run `topics ensure` first (the topic must exist)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )
    parser.set_defaults(func=run)


class _Progress:
    """A tqdm bar on stderr, shown only for big inputs on a terminal.

    Created lazily: for stdin the size is unknown until enough has been acknowledged.
    """

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.acked = 0
        self.bar: Any = None

    def update(self, n: int) -> None:
        self.acked += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and max(self.total or 0, self.acked) > PROGRESS_THRESHOLD:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.acked,
                unit="ev",
                unit_scale=True,
                file=sys.stderr,
                desc="published",
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Publish the file. 0: all good and acknowledged; 1: bad lines or failures; 2: no input."""
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

    from streams.log.kafka_config import failure_message
    from streams.log.publisher import PublishError, publish_events
    from streams.log.topics import TopicsError, ensure_topics

    settings = Settings.from_env()
    name = display_name(args.input)
    show = not args.no_progress and sys.stderr.isatty()
    try:
        if is_stdin(args.input):
            total = None
        elif show:
            total = count_lines(args.input)
        else:
            Path(args.input).open("rb").close()  # fail now, not half way into Kafka
            total = None
    except OSError as exc:
        print(f"regstate publish: cannot read {name}: {exc}", file=sys.stderr)
        return 2

    bad = 0

    def report_bad(line_no: int, reason: str) -> None:
        nonlocal bad
        bad += 1
        print(f"regstate publish: {name}:{line_no}: {reason}", file=sys.stderr)

    def warn(message: str) -> None:
        print(f"regstate publish: warning: {message}", file=sys.stderr)

    progress = _Progress(total, show)

    async def main() -> Any:
        if not args.no_create:
            for topic in await ensure_topics(settings, warn=warn):
                print(f"regstate publish: created topic {topic}", file=sys.stderr)
        events = good_events(read_events(args.input), report_bad)
        return await publish_events(settings, events, on_ack=progress.update)

    try:
        report = asyncio.run(main())
    except (PublishError, TopicsError) as exc:
        print(f"regstate publish: {exc}", file=sys.stderr)
        return 1
    except (KafkaError, TimeoutError, ConnectionError) as exc:
        print(f"regstate publish: {failure_message(settings, exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"regstate publish: cannot read {name}: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.close()

    for message in report.errors:
        print(f"regstate publish: error: {message}", file=sys.stderr)
    parts = [f"published {report.published}", f"bad {bad}"]
    if report.failed:
        parts.append(f"failed {report.failed}")
    if report.not_sent:
        parts.append(f"not sent {report.not_sent}")
    if report.invalid:
        parts.append(f"invalid {report.invalid}")
    parts.append(f"elapsed {report.elapsed_s:.2f} s")
    parts.append(f"{report.rate:,.0f} events/s")
    print(f"regstate publish: {', '.join(parts)}", file=sys.stderr)
    return 0 if report.ok and bad == 0 else 1
