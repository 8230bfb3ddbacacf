"""Settings of every regstate command, each one also read from ``REGSTATE_<NAME>``.

The environment is read once, in :func:`Settings.from_env`; nothing else in the
code base looks at ``os.environ`` for regstate settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A REGSTATE_* variable holds a value that cannot be used."""


def _default_data_dir() -> str:
    return str(PROJECT_ROOT / ".regstate")


@dataclass(frozen=True)
class Settings:
    """Every setting, with its default. ``REGSTATE_<UPPER NAME>`` overrides each."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated Kafka bootstrap servers."""
    topic_prefix: str = "regstate."
    """Prefix of every public topic name (DESIGN section 3)."""
    partitions: int = 8
    """Partition count of regstate.registrations and of the table (must match)."""
    replication_factor: int = 1
    """1 on a single development broker; 3 on a cluster (min.insync.replicas 2)."""
    store: str = "rocksdb"
    """Faust table store: ``rocksdb`` (default) or ``memory``."""
    web_port: int = 6066
    """HTTP port of the worker's query API."""
    worker_id: str = "w1"
    """Stable id of this worker; names the sweeper's node (``engine:<worker_id>``)."""
    data_dir: str = field(default_factory=_default_data_dir)
    """Where local Kafka data and table stores live."""
    max_contacts: int = 10
    """R9: most bindings one AOR may hold."""
    max_contacts_policy: str = "reject"
    """R9: ``reject`` the request, or ``evict_oldest`` binding."""
    grace_ms: int = 5000
    """Sweeper: how long past its expiry a binding may live before the engine expires it."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``REGSTATE_*`` variables; raise SettingsError naming a bad one."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f"REGSTATE_{f.name.upper()}"
            raw = source.get(name)
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{name}={raw!r} is not an integer") from None
            else:
                values[f.name] = raw
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError on values no command can work with."""
        if self.store not in ("rocksdb", "memory"):
            raise SettingsError(f"REGSTATE_STORE={self.store!r}: use 'rocksdb' or 'memory'")
        if self.max_contacts_policy not in ("reject", "evict_oldest"):
            raise SettingsError(
                f"REGSTATE_MAX_CONTACTS_POLICY={self.max_contacts_policy!r}: "
                "use 'reject' or 'evict_oldest'"
            )
        for name in ("partitions", "replication_factor", "max_contacts"):
            if getattr(self, name) < 1:
                raise SettingsError(f"REGSTATE_{name.upper()} must be at least 1")

    def topic(self, name: str) -> str:
        """Full name of a public topic, e.g. ``topic('registrations')``."""
        return f"{self.topic_prefix}{name}"
