"""``regstate users add|remove|list``: the front-end's Digest users (HA1 hashes only).

The password is read from standard input, never from the command line (where
``ps`` and shell history would show it): on a terminal it is asked twice
without echo; otherwise the first line of stdin is taken (a trailing newline
removed). It is neither printed nor logged; only its HA1 hashes are stored.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from streams.frontend.users import UserFileError, add_user, load_users, remove_user, users_path
from streams.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``users`` subcommand."""
    parser = subparsers.add_parser(
        "users",
        help="manage the SIP front-end's Digest users (HA1 hashes in the data dir)",
        description=(
            "Users of the SIP front-end, stored as MD5 and SHA-256 HA1 hashes for "
            "REGSTATE_SIP_REALM in REGSTATE_SIP_USERS_FILE (default "
            "<data_dir>/sip-users.json, mode 0600). Passwords come from stdin."
        ),
    )
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add or replace a user; the password is read from stdin")
    add.add_argument("username", help="the SIP user name (the AOR's user part)")
    add.set_defaults(func=run_add)
    rm = sub.add_parser("remove", help="remove a user")
    rm.add_argument("username", help="the SIP user name to remove")
    rm.set_defaults(func=run_remove)
    ls = sub.add_parser("list", help="print the user names, one per line")
    ls.set_defaults(func=run_list)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UserFileError("the passwords differ")
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def run_add(args: argparse.Namespace) -> int:
    """Add or replace one user."""
    settings = Settings.from_env()
    path = users_path(settings.data_dir, settings.sip_users_file)
    try:
        new = add_user(path, settings.sip_realm, args.username, _read_password())
    except UserFileError as exc:
        print(f"regstate users: {exc}", file=sys.stderr)
        return 1
    print(f"{'added' if new else 'replaced'} {args.username} (realm {settings.sip_realm})")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Remove one user; exit 1 when there was none."""
    settings = Settings.from_env()
    path = users_path(settings.data_dir, settings.sip_users_file)
    try:
        removed = remove_user(path, settings.sip_realm, args.username)
    except UserFileError as exc:
        print(f"regstate users: {exc}", file=sys.stderr)
        return 1
    if not removed:
        print(f"regstate users: no user {args.username!r}", file=sys.stderr)
        return 1
    print(f"removed {args.username}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the user names."""
    settings = Settings.from_env()
    try:
        users = load_users(
            users_path(settings.data_dir, settings.sip_users_file), settings.sip_realm
        )
    except UserFileError as exc:
        print(f"regstate users: {exc}", file=sys.stderr)
        return 1
    for name in sorted(users):
        print(name)
    return 0
