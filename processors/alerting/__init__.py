"""Mass-deregistration alerting, pure: the :class:`Detector` and its parts.

- ``config``: thresholds (:class:`DetectorConfig`), output records, shared names;
- ``keys``: the grouping keys (network, user-agent family, domain);
- ``population``: who is registered where, up or down, in which groups;
- ``evaluation``: when a group's figures open, update or resolve an incident;
- ``text``: the Alert record and its summary;
- ``detector``: the :class:`Detector` that ties them together (how it works).
"""

from processors.alerting.config import (
    SWEEPER_PREFIX,
    UNKNOWN,
    AlertChange,
    ChangeKind,
    DetectorConfig,
    Group,
    GroupStats,
    PhoneId,
)
from processors.alerting.detector import Detector
from processors.alerting.keys import aor_domain, network_of, ua_family

__all__ = [
    "SWEEPER_PREFIX",
    "UNKNOWN",
    "AlertChange",
    "ChangeKind",
    "Detector",
    "DetectorConfig",
    "Group",
    "GroupStats",
    "PhoneId",
    "aor_domain",
    "network_of",
    "ua_family",
]
