"""Grouping keys: the network, user-agent family and domain a phone is counted under."""

from __future__ import annotations

import functools
import ipaddress

from processors.alerting.config import UNKNOWN
from schemas.events import Source


def network_of(source: Source | None) -> str:
    """The /24 (IPv4) or /64 (IPv6) a request came from, e.g. ``10.0.3.0/24``."""
    if source is None:
        return UNKNOWN
    return _network(source.ip)


@functools.lru_cache(maxsize=65_536)
def _network(address: str) -> str:
    # Cached: every refresh of every phone asks, and a fleet has few addresses.
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return UNKNOWN
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@functools.lru_cache(maxsize=4096)
def ua_family(user_agent: str | None) -> str:
    """The vendor or product word of a User-Agent, lower-case: ``Cisco/SPA504G-7.6.2`` -> cisco."""
    if not user_agent:
        return UNKNOWN
    word = user_agent.strip().replace("/", " ").replace("-", " ").split(" ", 1)[0]
    return word.lower() or UNKNOWN


def aor_domain(aor: str) -> str:
    """The host of an AOR without port, lower-case: ``sip:1001@PBX.example.com:5060`` -> pbx..."""
    rest = aor.split(":", 1)[1] if ":" in aor else aor
    host = rest.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[: host.find("]") + 1].lower() if "]" in host else host.lower()
    return host.split(":", 1)[0].split(";", 1)[0].lower() or UNKNOWN
