"""The observability kit (ops/): rules, Alertmanager config and dashboard are valid, and
every metric and label they query is one a regstate process exports (issue 16).

What processes export is :func:`streams.metrics.catalogue`; the live test
(tests/integration/test_metrics_live.py) proves the catalogue equals what the
four processes scrape as. promtool and amtool are the real Debian tools.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import yaml  # type: ignore[import-untyped]

from streams.metrics import catalogue
from tests.helpers import PROJECT_ROOT

OPS = PROJECT_ROOT / "ops"
RULES = OPS / "prometheus" / "regstate-rules.yml"
DASHBOARD = OPS / "grafana" / "dashboards" / "regstate.json"
SCRAPE_LABELS = frozenset({"instance", "job"})
"""Labels Prometheus adds to every scraped series."""
BUILTIN = {
    "up": frozenset(),
    "ALERTS": frozenset({"alertname", "alertstate", "severity"}),
}
"""Series Prometheus makes itself."""
KEYWORDS = frozenset({"or", "and", "unless", "bool", "offset", "by", "without", "on", "ignoring"})


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing: scripts/prometheus-tools-install.sh")
        pytest.skip(f"{name} not installed: scripts/prometheus-tools-install.sh")
    return path


def test_promtool_checks_the_rules_and_the_prometheus_config() -> None:
    for args in (
        ["check", "rules", str(RULES)],
        ["check", "config", str(RULES.parent / "prometheus.yml")],
    ):
        result = subprocess.run([_tool("promtool"), *args], capture_output=True, check=False)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_amtool_checks_the_alertmanager_config() -> None:
    path = OPS / "alertmanager" / "alertmanager.yml"
    result = subprocess.run(
        [_tool("amtool"), "check-config", str(path)], capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


# --------------------------------------------------------------------------- PromQL names


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: frozenset[str]


def parse(expr: str) -> tuple[list[Selector], set[str]]:
    """The series selectors of a PromQL expression and the labels it groups by.

    Enough PromQL for the kit's queries: strings, ranges and grouping clauses are
    taken out first; what is left followed by ``(`` is a function.
    """
    grouping: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        grouping |= {g.strip() for g in clause.split(",") if g.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    selectors = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\{[^}]*\})?", text):
        name, body = m.group(1), m.group(2) or ""
        rest = text[m.end() :].lstrip()
        if name in KEYWORDS or (not body and rest.startswith("(")):
            continue
        if re.fullmatch(r"\d.*", name):
            continue
        labels = frozenset(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body))
        selectors.append(Selector(name, labels))
    return selectors, grouping


def test_the_parser_finds_names_matchers_and_grouping() -> None:
    sels, by = parse(
        'histogram_quantile(0.99, sum by (le, node) (rate(x_bucket{node="a",le!="1"}[5m])))'
        " or vector(0)"
    )
    assert sels == [Selector("x_bucket", frozenset({"node", "le"}))]
    assert by == {"le", "node"}


def _rules() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return doc


def recording_rules() -> dict[str, frozenset[str]]:
    """Recorded name -> the labels its series carry (its expression's grouping)."""
    out = {}
    for group in _rules()["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                _, by = parse(rule["expr"])
                out[rule["record"]] = frozenset(by - {"le"})
    return out


def labels_of(name: str, recorded: dict[str, frozenset[str]]) -> frozenset[str]:
    """The labels series of ``name`` carry; AssertionError when nothing exports it."""
    if name in BUILTIN:
        return BUILTIN[name] | SCRAPE_LABELS
    if name in recorded:
        return recorded[name]
    known = catalogue()
    if name in known:
        return frozenset(known[name].labels) | SCRAPE_LABELS
    for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
        base = name.removesuffix(suffix)
        if base != name and base in known and known[base].kind == "histogram":
            return frozenset(known[base].labels) | SCRAPE_LABELS | extra
    raise AssertionError(f"{name}: no regstate process exports it, and no rule records it")


def check_expr(expr: str, recorded: dict[str, frozenset[str]], legend: str = "") -> None:
    selectors, grouping = parse(expr)
    assert selectors, expr
    available: set[str] = set()
    for sel in selectors:
        labels = labels_of(sel.name, recorded)
        assert sel.matchers <= labels, (expr, sel.name, sel.matchers - labels)
        available |= labels
    assert grouping <= available | {"le"}, (expr, grouping - available)
    shown = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend))
    assert shown <= available | {"le"}, (expr, legend, shown - available)


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in _rules()["groups"]:
        for rule in group["rules"]:
            yield rule.get("record") or rule["alert"], rule["expr"]


def test_every_rule_queries_exported_metrics_and_labels() -> None:
    recorded = recording_rules()
    names = [name for name, _ in rule_exprs()]
    assert len(names) == len(set(names))
    for _, expr in rule_exprs():
        check_expr(expr, recorded)


def panels() -> list[dict[str, Any]]:
    doc = orjson.loads(DASHBOARD.read_bytes())
    out: list[dict[str, Any]] = []
    for p in doc["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def test_every_dashboard_query_uses_exported_metrics_and_labels() -> None:
    recorded = recording_rules()
    queried = set()
    for p in panels():
        for t in p.get("targets", []):
            check_expr(t["expr"], recorded, t.get("legendFormat", ""))
            queried |= {s.name for s in parse(t["expr"])[0]}
    # The panels an on-call person opens first (issue 16) are all there.
    for wanted in (
        "regstate_alerting_group_active_bindings",
        "regstate_frontend_responses_total",
        "regstate_frontend_rejects_total",
        "regstate_consumer_lag",
        "regstate_deadletters_total",
        "regstate_alerting_open_alerts",
        "regstate_frontend_register_seconds_bucket",
        "regstate_fold_batch_seconds_bucket",
        "regstate_publish_to_bindings_seconds_bucket",
        "regstate_dialer_apply_lag_seconds_bucket",
    ):
        assert wanted in queried, wanted


def test_the_dashboard_is_well_formed() -> None:
    doc = orjson.loads(DASHBOARD.read_bytes())
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    assert doc["uid"] == "regstate"
    for p in panels():
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "prometheus", p["title"]
            assert p["targets"], p["title"]


def test_a_query_of_an_unknown_metric_or_label_is_caught() -> None:
    recorded = recording_rules()
    with pytest.raises(AssertionError):
        check_expr("rate(regstate_no_such_total[5m])", recorded)
    with pytest.raises(AssertionError):
        check_expr('regstate_consumer_lag{topic="x"}', recorded)
    with pytest.raises(AssertionError):
        check_expr("sum by (reason) (regstate_consumer_lag)", recorded)


def test_compose_wires_the_kit_and_publishes_the_readme_ports() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "alertmanager", "grafana", "dialer-view", "alerting", "frontend"):
        assert name in services, name
    readme = (PROJECT_ROOT / "README.md").read_text()

    def host_ports(service: str) -> set[str]:
        return {
            str(p).rsplit(":", 2)[-2] if str(p).count(":") else str(p)
            for p in services[service].get("ports", [])
        }

    for service, setting, port in (
        ("worker-1", "REGSTATE_WEB_PORT", "6066"),
        ("alerting", "REGSTATE_ALERTING_PORT", "6067"),
        ("frontend", "REGSTATE_FRONTEND_WEB_PORT", "6068"),
        ("dialer-view", "REGSTATE_DIALER_WEB_PORT", "6070"),
    ):
        assert port in host_ports(service), (service, port)
        assert f"| `{setting}` | `{port}` |" in readme, setting
    # Phones on the LAN reach the front-end: SIP is published on every interface.
    sip = [str(p) for p in services["frontend"]["ports"] if "5060" in str(p)]
    assert sip and all(not p.startswith("127.0.0.1") for p in sip), sip
    alerting_env = services["alerting"]["environment"]
    assert alerting_env["REGSTATE_ALERTING_WEBHOOK_URL"] == "http://alertmanager:9093"
    assert "[mysql]" in (PROJECT_ROOT / "Dockerfile").read_text()
