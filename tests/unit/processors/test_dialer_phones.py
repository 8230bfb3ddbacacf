"""VICIdial phones CSV, node maps and the expected-server check (processors/dialer.py)."""

from __future__ import annotations

import pytest

from processors.dialer import (
    PhonesError,
    ServerMap,
    extension_of,
    is_aor,
    parse_node_map,
    parse_node_map_csv,
    parse_phones_csv,
)


def test_extension_of() -> None:
    assert extension_of("sip:1001@pbx.example.com") == "1001"
    assert extension_of("sips:agent.7@x") == "agent.7"
    assert extension_of("tel:+15551234") == "+15551234"
    assert extension_of("sip:pbx.example.com") == ""
    assert is_aor("sip:1001@x") and not is_aor("1001")
    # A trunk (D50) is no extension; `regstate where` takes it as an AOR.
    assert extension_of("trunk:sip:dialer1@carrier.example") == ""
    assert is_aor("trunk:sip:dialer1@carrier.example")


def test_phones_csv_full_export_and_override_rows() -> None:
    text = (
        "extension,dialplan_number,server_ip,login\n"
        "1001,1001,10.0.0.1,a\n"
        "1002,1002,10.0.0.2,b\n"
        "1001,81001,10.0.0.3,a\n"  # phone code override: just another row
        "\n"
        "1001,1001,10.0.0.1,dup\n"
    )
    assert parse_phones_csv(text) == {"1001": ("10.0.0.1", "10.0.0.3"), "1002": ("10.0.0.2",)}
    with pytest.raises(PhonesError, match="line 2"):
        parse_phones_csv("extension,server_ip\n1001,\n")
    with pytest.raises(PhonesError, match="header"):
        parse_phones_csv("ext,ip\n1,2\n")


def test_node_maps() -> None:
    assert parse_node_map("fe1=10.0.0.1, fe2=10.0.0.2,") == {"fe1": "10.0.0.1", "fe2": "10.0.0.2"}
    with pytest.raises(PhonesError):
        parse_node_map("fe1:10.0.0.1")
    assert parse_node_map_csv("node,server_ip\nfe1,10.0.0.1\n") == {"fe1": "10.0.0.1"}


def test_mismatch_only_when_both_sides_known() -> None:
    m = ServerMap({"1001": ("10.0.0.1", "10.0.0.3")}, {"fe1": "10.0.0.1", "fe2": "10.0.0.2"})
    ok = m.check("1001", "fe1")
    assert (ok.mismatch, ok.expected_server, ok.node_server) == (
        False,
        "10.0.0.1,10.0.0.3",
        "10.0.0.1",
    )
    bad = m.check("1001", "fe2")
    assert bad.mismatch is True
    assert m.check("1001", "fe9").mismatch is None  # node not mapped
    unknown = m.check("2002", "fe1")
    assert unknown.mismatch is None and unknown.expected_server is None


def test_a_process_of_a_node_is_checked_against_the_node_s_server() -> None:
    """``fe1#1`` is process 1 of node fe1 (REGSTATE_SIP_PROCESSES): fe1's server applies."""
    servers = ServerMap({"1001": ("10.0.0.2",)}, {"fe1": "10.0.0.1"})
    assert servers.check("1001", "fe1#1") == servers.check("1001", "fe1")
    assert servers.check("1001", "fe1#1").mismatch is True
