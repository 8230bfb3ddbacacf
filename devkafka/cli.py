"""``regstate kafka up|down|status``: the local Apache Kafka (see devkafka/local.py).

The 1-node (127.0.0.1:9092) and 3-node (127.0.0.1:19092-19094) layouts use distinct
ports and directories, so both may run at once: ``up --nodes 3`` does not disturb a
running 1-node broker. ``down`` and ``status`` without ``--nodes`` cover both
(``down --all`` says so explicitly).

stdout carries only bootstrap servers (one line per layout), so that
``BOOTSTRAP=$(regstate kafka up)`` works; progress and errors go to stderr.
Exit codes: 0 done/running, 1 failed/not running, 2 java or mvn missing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from devkafka.local import NODE_COUNTS, KafkaLocalError, LocalKafka, dev_data_dir


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``kafka`` subcommand and its ``up``, ``down`` and ``status`` actions."""
    kafka = subparsers.add_parser(
        "kafka",
        help="the local Apache Kafka (KRaft) for development and tests",
        description=(
            "Run a local Apache Kafka from Maven Central jars (needs java 17+ and mvn). "
            "1 node: bootstrap 127.0.0.1:9092. 3 nodes: 127.0.0.1:19092,19093,19094. "
            "Data lives in $REGSTATE_DATA_DIR/kafka/."
        ),
    )
    actions = kafka.add_subparsers(dest="kafka_action", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="start (or reuse) the local Kafka; print bootstrap")
    up.add_argument(
        "--nodes",
        type=int,
        choices=NODE_COUNTS,
        default=1,
        help="1: broker 127.0.0.1:9092 (default); 3: brokers 127.0.0.1:19092-19094",
    )
    up.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for every broker (60)"
    )
    up.add_argument(
        "--secure",
        action="store_true",
        help=(
            "SASL_SSL (SCRAM) brokers with ACLs, on ports of their own (1 node: 127.0.0.1:29092; "
            "3: 29192-29194); prints the admin's client settings as export lines; each role's "
            "credentials are in <data dir>/kafka/secure-N-node/secrets/"
        ),
    )
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop the local Kafka (both layouts by default)")
    down.add_argument(
        "--nodes", type=int, choices=NODE_COUNTS, default=None, help="only this layout"
    )
    down.add_argument(
        "--all",
        action="store_true",
        help="both layouts (the default without --nodes; accepted for scripts' clarity)",
    )
    down.add_argument("--secure", action="store_true", help="the secured layout(s) instead")
    down.add_argument("--purge", action="store_true", help="also delete its data")
    down.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL (30)")
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="print bootstrap servers if running")
    status.add_argument(
        "--nodes", type=int, choices=NODE_COUNTS, default=None, help="only this layout"
    )
    status.add_argument("--secure", action="store_true", help="the secured layout(s) instead")
    status.set_defaults(func=_status)

    acls = actions.add_parser(
        "acls",
        help="print (or --apply) the least-privilege ACLs of every regstate role",
        description=(
            "One principal per role, only the ACLs it needs (README: Kafka security). "
            "--apply creates them with the current REGSTATE_KAFKA_* settings, which must "
            "be a super user's (eval $(regstate kafka up --secure) gives the admin's)."
        ),
    )
    acls.add_argument("--apply", action="store_true", help="create the ACLs on the cluster")
    acls.add_argument(
        "--principal-prefix",
        default="regstate-",
        help="user name of role R is PREFIX + R (default regstate-, as up --secure makes)",
    )
    acls.set_defaults(func=_acls)


def _data_dir() -> str:
    return dev_data_dir()


def _fail(exc: KafkaLocalError) -> int:
    print(f"regstate kafka: {exc}", file=sys.stderr)
    if exc.detail:
        print(exc.detail, file=sys.stderr)
    return exc.exit_code


def _up(args: argparse.Namespace) -> int:
    try:
        kafka = LocalKafka(args.nodes, _data_dir(), secure=args.secure)
        bootstrap = kafka.up(timeout=args.timeout)
    except KafkaLocalError as exc:
        return _fail(exc)
    if args.secure:
        # Shell-evaluable: paths only; the password stays in its file.
        print(kafka.client_env("admin"), end="")
        print(
            f"regstate: per-role credentials (source one to act as that role): "
            f"{kafka.secrets.root}/<role>.env",
            file=sys.stderr,
        )
    else:
        print(bootstrap)
    return 0


def _acls(args: argparse.Namespace) -> int:
    from devkafka.acls import apply_acls, render_acls, role_acls
    from streams.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"regstate kafka acls: {exc}", file=sys.stderr)
        return 2
    acls = role_acls(settings, args.principal_prefix)
    if not args.apply:
        print(render_acls(acls), end="")
        return 0
    try:
        created = apply_acls(settings, acls)
    except (KafkaLocalError, SettingsError) as exc:
        print(f"regstate kafka acls: {exc}", file=sys.stderr)
        return 1
    print(f"regstate kafka acls: {created} ACLs created or already present", file=sys.stderr)
    return 0


def _down(args: argparse.Namespace) -> int:
    counts = NODE_COUNTS if args.nodes is None or args.all else (args.nodes,)
    try:
        for n in counts:
            kafka = LocalKafka(n, _data_dir(), secure=args.secure)
            stopped = kafka.down(purge=args.purge, timeout=args.timeout)
            if stopped:
                print(
                    f"stopped the {n}-node Kafka (node {', '.join(map(str, stopped))})",
                    file=sys.stderr,
                )
    except KafkaLocalError as exc:
        return _fail(exc)
    return 0


def _status(args: argparse.Namespace) -> int:
    counts = NODE_COUNTS if args.nodes is None else (args.nodes,)
    found = False
    for n in counts:
        kafka = LocalKafka(n, _data_dir(), secure=args.secure)
        state = kafka.status()
        if state.running:
            print(kafka.bootstrap)
            found = True
        elif state.answering_ids:
            # Degraded (e.g. a node stopped by a fault test): clients still work.
            print(kafka.bootstrap)
            down = [s.node_id for s in state.nodes if not s.answering]
            print(
                f"regstate kafka: the {n}-node Kafka is degraded: node "
                f"{', '.join(map(str, down))} not answering",
                file=sys.stderr,
            )
            found = True
        elif state.any_alive:
            print(
                f"regstate kafka: the {n}-node Kafka runs but does not answer yet", file=sys.stderr
            )
    if not found:
        print("not running")
        return 1
    return 0
