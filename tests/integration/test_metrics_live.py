"""Every process's live /metrics passes `promtool check metrics` (issue 16).

One system on the shared broker, each part started as an operator starts it
(``python -m streams ...`` subprocesses on free ports): a worker folding the
sample log, a front-end node of 2 processes (one scrape target through
prometheus_client's multiprocess mode) that simulated phones register with,
a dialer view and the alerting runner. Checked:

* ``promtool check metrics`` (Debian ``prometheus``) has nothing to say about
  any of the four expositions;
* the front-end's two processes answer the same node-wide figures (either port
  is the node's target), which count the phones' REGISTERs of both processes;
* the families scraped are exactly :func:`streams.metrics.catalogue` (less the
  HEP ingest, not started here), so the dashboard and rules test, which checks
  queries against the catalogue, checks them against what processes export;
* the worker's 404 for the sample's wrong-password phone (sip:1007) names
  ``auth_failing`` and its failed attempts (issue 16, point 6);
* with ``REGSTATE_LOG_FORMAT=json`` every process logs JSON objects only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.codec import decode_event_json
from streams.frontend.simulate_cli import sim_password, user_name
from streams.frontend.users import add_user
from streams.metrics import catalogue
from streams.metrics.hep import FAMILIES as HEP_FAMILIES
from tests.helpers import PROJECT_ROOT, unique_name, wait_until
from tests.integration.engine_harness import (
    Worker,
    engine_env,
    ensure,
    free_port,
    publish,
    settings_of,
    wait_committed_to_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROMTOOL = shutil.which("promtool")
REALM = "metrics.example"
PHONES = 6


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - 127.0.0.1 only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def scrape(port: int) -> str:
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, (port, status, body[:300])
    return body.decode()


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


@dataclass
class System:
    logs: Path
    worker: Worker
    frontend_ports: tuple[int, int]
    dialer_port: int
    alerting_port: int


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", *args],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("metrics")
    prefix = unique_name("metrics") + "."
    env = engine_env(
        kafka_bootstrap,
        prefix,
        tmp / "data",
        worker_id="mw",
        web_port=free_port(),
        log_format="json",
    )
    settings = settings_of(env)
    ensure(settings)
    lines = (PROJECT_ROOT / "samples" / "sample.jsonl").read_text().splitlines()
    publish(settings, [decode_event_json(line) for line in lines])  # type: ignore[misc]
    worker = Worker(env, tmp / "worker.log").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        worker.wait_ready(180)
        wait_committed_to_end(kafka_bootstrap, f"{prefix}engine", settings.topic("registrations"))

        users = tmp / "data" / "sip-users.json"
        for i in range(PHONES):
            add_user(users, REALM, user_name("m", i), sim_password(user_name("m", i)))
        # Each front-end process takes a free HTTP port of its own (0) and prints it: a
        # fixed pair, web_port and web_port + 1, raced other sockets for the second one.
        sip_port = free_port()
        fe_env = {
            **env,
            "REGSTATE_NODE_ID": "fe-metrics",
            "REGSTATE_SIP_REALM": REALM,
            "REGSTATE_SIP_DOMAINS": REALM,
            "REGSTATE_SIP_PORT": str(sip_port),
            "REGSTATE_SIP_PROCESSES": "2",
            "REGSTATE_SIP_RATE_KEY": "ip_port",
            "REGSTATE_FRONTEND_WEB_PORT": "0",
        }
        fe_log = tmp / "frontend.log"
        procs.append(_spawn(["frontend"], fe_env, fe_log))

        def web_ports() -> tuple[int, int] | None:
            text = fe_log.read_bytes()
            found = dict(re.findall(rb"node fe-metrics#(\d) http 127\.0\.0\.1:(\d+)", text))
            if b"processes 2" not in text or len(found) < 2:
                return None
            return int(found[b"0"]), int(found[b"1"])

        fe_web = wait_until(web_ports, 120, 0.2, "front-end up, both processes serving HTTP")
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams",
                "simulate",
                "--phones",
                str(PHONES),
                "--server",
                f"127.0.0.1:{sip_port}",
                "--prefix",
                "m",
                "--no-unregister",
            ],
            env={**os.environ, **fe_env},
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert sim.returncode == 0, sim.stdout[-2000:] + sim.stderr[-2000:]
        # One phone with a wrong password: the rejects counter gets its reason label.
        wrong = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams",
                "simulate",
                "--phones",
                "1",
                "--server",
                f"127.0.0.1:{sip_port}",
                "--prefix",
                "m",
                "--wrong-password-share",
                "1",
                "--no-unregister",
            ],
            env={**os.environ, **fe_env},
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert wrong.returncode == 0, wrong.stdout[-2000:] + wrong.stderr[-2000:]

        dialer_port, alerting_port = free_port(), free_port()
        procs.append(
            _spawn(
                ["dialer-view", "--port", str(dialer_port)],
                {**env, "REGSTATE_DIALER_DB": str(tmp / "dialer.sqlite3")},
                tmp / "dialer.log",
            )
        )
        procs.append(
            _spawn(
                ["alerting"],
                {**env, "REGSTATE_ALERTING_PORT": str(alerting_port)},
                tmp / "alerting.log",
            )
        )
        wait_until(
            lambda: get(f"http://127.0.0.1:{dialer_port}/readyz")[0] == 200, 90, 0.2, "dialer"
        )
        wait_until(
            lambda: b'"ready":true' in get(f"http://127.0.0.1:{alerting_port}/healthz")[1],
            90,
            0.2,
            "alerting ready",
        )
        yield System(tmp, worker, fe_web, dialer_port, alerting_port)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        worker.stop()


def _all(system: System) -> dict[str, str]:
    return {
        "worker": scrape(system.worker.port),
        "frontend": scrape(system.frontend_ports[0]),
        "dialer-view": scrape(system.dialer_port),
        "alerting": scrape(system.alerting_port),
    }


def test_promtool_finds_nothing_to_lint_in_any_live_metrics(system: System) -> None:
    if PROMTOOL is None:
        if os.environ.get("CI"):
            pytest.fail(
                "promtool missing: scripts/prometheus-tools-install.sh (scripts/test.sh runs it)"
            )
        pytest.skip(
            "promtool (Debian prometheus) not installed: scripts/prometheus-tools-install.sh"
        )
    for name, text in _all(system).items():
        result = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, check=False
        )
        assert result.returncode == 0 and not result.stdout.strip(), (
            name,
            result.stdout.decode() + result.stderr.decode(),
        )
        assert f'component="{name}"' in text  # regstate_build_info


def test_the_frontend_node_is_one_target_for_both_processes(system: System) -> None:
    def both() -> tuple[dict[str, float], dict[str, float]] | None:
        a, b = (samples(scrape(p)) for p in system.frontend_ports)
        key = 'regstate_frontend_register_seconds_count{node="fe-metrics"}'
        # Each process copies its counts to the shared files every second.
        return (a, b) if a.get(key, 0) >= PHONES and a == b else None

    a, _ = wait_until(both, 30, 0.3, "both processes answer the node's figures")
    assert a['regstate_frontend_responses_total{node="fe-metrics",status="200"}'] >= PHONES
    assert a['regstate_frontend_events_total{node="fe-metrics",result="acked"}'] >= PHONES
    assert a['regstate_frontend_event_log_ready{node="fe-metrics"}'] == 1
    assert a['regstate_frontend_rejects_total{node="fe-metrics",reason="auth_failed"}'] >= 1
    # One node label, never a process's id (fe-metrics#0, #1).
    assert not [k for k in a if "#" in k]


def test_the_scraped_families_are_the_catalogue(system: System) -> None:
    scraped: dict[str, set[str]] = {}
    for text in _all(system).values():
        for fam in text_string_to_metric_families(text):
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            labels = scraped.setdefault(name, set())
            for s in fam.samples:
                labels |= set(s.labels) - {"le"}
    known = catalogue()
    expected = set(known) - {f.name for f in HEP_FAMILIES}
    assert set(scraped) == expected
    for name, labels in scraped.items():
        assert labels <= set(known[name].labels), (name, labels)


def test_the_404_of_the_wrong_password_phone_says_why(system: System) -> None:
    status, body = system.worker.get(f"/v1/aors/{quote('sip:1007@pbx.example.com', safe=':@')}")
    assert status == 404, body
    doc = orjson.loads(body)
    assert doc["health"]["state"] == "auth_failing"
    assert doc["health"]["auth_failures"] == 4
    assert doc["health"]["last_reject"]["reason"] == "auth_failed"
    assert doc["why"] == "not registered: wrong password, 4 failed attempts since 08:00"
    status, body = system.worker.get("/v1/aors/sip:nobody-ever@pbx.example.com")
    assert status == 404
    assert orjson.loads(body) == {
        "error": "not_found",
        "aor": "sip:nobody-ever@pbx.example.com",
        "why": "not registered: no record of this AOR",
    }


TEXT_LOG_LINE = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d.*(DEBUG|INFO|WARN|ERROR)")


def test_every_process_logs_json_lines(system: System) -> None:
    """REGSTATE_LOG_FORMAT=json: log records are JSON objects; no text log line is left
    (the front-end's `listening` lines are its stdout protocol, not logs)."""
    for name in ("worker.log", "frontend.log", "dialer.log", "alerting.log"):
        lines = (system.logs / name).read_text(errors="replace").splitlines()
        records = [orjson.loads(line) for line in lines if line.startswith("{")]
        assert records, name
        assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records), name
        text_logs = [line for line in lines if TEXT_LOG_LINE.match(line)]
        assert text_logs == [], (name, text_logs[:5])
