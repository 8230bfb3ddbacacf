"""The front-end's user file: HA1 hashes only, never passwords (``regstate users ...``).

The file (JSON, mode 0600) holds the realm it was written for and, per user,
the MD5 and SHA-256 HA1 (``H(user:realm:password)``). HA1 depends on the
realm, so a file written for another realm is refused rather than silently
failing every login. Writes go to a temporary file renamed into place, so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Final

from streams.sip.digest import UserHashes, compute_ha1

FILE_VERSION: Final = 1
_USERNAME_RE: Final = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,64}\Z")
"""RFC 3261 user characters (unescaped); no ':' (HA1 joins fields with ':')."""
_HEX_RE: Final = re.compile(r"[0-9a-f]+\Z")


class UserFileError(ValueError):
    """The user file is unreadable, malformed, or for another realm; or a bad user name."""


def users_path(data_dir: str, configured: str = "") -> Path:
    """The user file: ``configured`` when set, else ``<data_dir>/sip-users.json``."""
    return Path(configured) if configured else Path(data_dir) / "sip-users.json"


def check_username(username: str) -> None:
    """Raise UserFileError unless ``username`` is a plain SIP user part of at most 64 chars."""
    if not _USERNAME_RE.match(username):
        raise UserFileError(f"user name {username[:70]!r}: use 1-64 SIP user characters, no ':'")


def load_users(path: Path, realm: str) -> dict[str, UserHashes]:
    """The users of ``path`` (empty when the file does not exist yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UserFileError(f"{path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
        if doc.get("version") != FILE_VERSION:
            raise UserFileError(f"{path}: unknown version {doc.get('version')!r}")
        if doc.get("realm") != realm:
            raise UserFileError(
                f"{path} was written for realm {doc.get('realm')!r}, not {realm!r}: "
                "HA1 hashes depend on the realm; add the users again"
            )
        users: dict[str, UserHashes] = {}
        for name, entry in doc["users"].items():
            md5, sha256 = entry["md5"], entry["sha256"]
            if not (len(md5) == 32 and len(sha256) == 64 and _HEX_RE.match(md5 + sha256)):
                raise UserFileError(f"{path}: user {name!r} has malformed hashes")
            users[name] = UserHashes(md5, sha256)
        return users
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise UserFileError(f"{path}: malformed user file ({type(exc).__name__})") from None


def save_users(path: Path, realm: str, users: dict[str, UserHashes]) -> None:
    """Write the file atomically with mode 0600."""
    doc = {
        "version": FILE_VERSION,
        "realm": realm,
        "users": {name: {"md5": h.md5, "sha256": h.sha256} for name, h in sorted(users.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sip-users.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hashes_for(username: str, realm: str, password: str) -> UserHashes:
    """Both HA1s of one user; the only place a password is used."""
    return UserHashes(
        compute_ha1("MD5", username, realm, password),
        compute_ha1("SHA-256", username, realm, password),
    )


def add_user(path: Path, realm: str, username: str, password: str) -> bool:
    """Add or replace a user; True when the user is new."""
    check_username(username)
    if not password:
        raise UserFileError("empty password")
    users = load_users(path, realm)
    new = username not in users
    users[username] = hashes_for(username, realm, password)
    save_users(path, realm, users)
    return new


def remove_user(path: Path, realm: str, username: str) -> bool:
    """Remove a user; False when there was none of that name."""
    users = load_users(path, realm)
    if users.pop(username, None) is None:
        return False
    save_users(path, realm, users)
    return True
