"""`regstate hep` behind a real Kamailio 5.6: phones registering through it, seen on the
worker's query API and in `regstate problems`, with a real Kafka and SIPp.

Kamailio is the registrar (Digest auth, grants at most 300 s) and mirrors its
traffic as HEPv3 (``siptrace``); SIPp plays the phones. Skipped when Kamailio
or SIPp is missing, except in CI (scripts/kamailio-install.sh installs them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from processors.alerting import AlertChange, Detector
from schemas import AorState, BindingEvent, RegistrationEvent, decode_state
from schemas.codec import binding_event_from_dict
from streams.log.topics import ensure_topics
from streams.metrics.hep import FAMILIES as HEP_FAMILIES
from streams.settings import Settings
from tests.helpers import PROJECT_ROOT, unique_name, wait_until
from tests.integration.engine_harness import (
    Worker,
    engine_env,
    free_port,
    read_events,
    read_topic,
)
from tests.integration.hep_harness import (
    CAPTURE_ID,
    KAMAILIO,
    MAX_EXPIRES,
    Hep,
    Kamailio,
    free_udp_port,
    started_hep,
    started_kamailio,
)

SIPP = shutil.which("sipp")
SCENARIOS = PROJECT_ROOT / "tests" / "sipp"
NODE = "kam1"

pytestmark = pytest.mark.skipif(
    (SIPP is None or KAMAILIO is None) and not os.environ.get("CI"),
    reason="sipp or kamailio not installed (scripts/kamailio-install.sh; CI installs them)",
)


@dataclass
class System:
    env: dict[str, str]
    settings: Settings
    worker: Worker
    hep: Hep
    kamailio: Kamailio
    tmp: Path
    trunk_port: int

    def sipp(self, scenario: str, rows: list[str], port: int | None = None) -> int:
        """Run one scenario against Kamailio, one call per row; SIPp's exit status."""
        inf = self.tmp / f"{scenario}-{unique_name('inf')}.csv"
        inf.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
        assert SIPP is not None
        result = subprocess.run(
            [
                SIPP, "-sf", str(SCENARIOS / f"{scenario}.xml"), "-inf", str(inf),
                "-m", str(len(rows)), "-r", "100", "-l", "20",
                "-i", "127.0.0.1", "-p", str(port or free_port()),
                f"127.0.0.1:{self.kamailio.port}",
                "-timeout", "60s", "-nostdin", "-t", "u1",
                "-trace_err", "-error_file", str(self.tmp / f"{scenario}.err"),
            ],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        return result.returncode

    def aor(self, aor: str) -> tuple[int, dict[str, Any]]:
        status, body = self.worker.get(f"/v1/aors/{aor}")
        return status, orjson.loads(body) if body else {}

    def problems(self, state: str) -> set[str]:
        status, body = self.worker.get(f"/v1/problems?state={state}")
        assert status == 200, body
        return {p["aor"] for p in orjson.loads(body)["problems"]}

    def events(self) -> list[RegistrationEvent]:
        return read_events(
            self.env["REGSTATE_BOOTSTRAP_SERVERS"], self.settings.topic("registrations")
        )


def auth_row(user: str, password: str | None = None, *extra: str) -> str:
    pw = password or f"pw-{user}"
    return ";".join([user, f"[authentication username={user} password={pw}]", *extra])


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("hep")
    env = engine_env(
        kafka_bootstrap,
        unique_name("hep") + ".",
        tmp / "data",
        web_port=free_port(),
        worker_id="w1",
        grace_ms=300,
        sweep_interval_ms=200,
        store="memory",
        hep_nodes=f"{CAPTURE_ID}={NODE}",
    )
    trunk_port = free_udp_port()
    # The dialer server of the trunk test: a REGISTER it sends is a trunk.
    env["REGSTATE_HEP_SERVERS"] = f"127.0.0.1:{trunk_port}"
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings))
    worker = Worker(env, tmp / "worker.log").start()
    try:
        worker.wait_ready()
        with (
            started_hep(env, tmp / "hep.log") as hep,
            started_kamailio(tmp / "kamailio", hep.port) as kamailio,
        ):
            yield System(env, settings, worker, hep, kamailio, tmp, trunk_port)
    finally:
        worker.stop()


def test_phones_behind_kamailio(system: System) -> None:
    """Scenario: 50 SIPp phones register through Kamailio (REGISTER, 401, REGISTER with
    Digest, 200) and appear on the worker's query API with the contact and expiry
    Kamailio granted (300 s, not the 3600 asked) and their wire source; 3 phones with a
    wrong password (3 attempts each) are auth_failing and never registered; a phone that
    never gets the replies is unreachable; 5 unregister (Contact: *); one asking for
    2 s is expired by the engine's sweeper; the challenge alone never counts."""
    phones = [f"40{i:02d}" for i in range(50)]
    port = free_port()
    assert system.sipp("register_auth", [auth_row(u) for u in phones], port) == 0
    wrong = ["4100", "4101", "4102"]
    for _ in range(3):
        assert system.sipp("register_wrong", [auth_row(u, "not-it") for u in wrong]) == 0
    system.sipp("register_silent", ["4200"])  # gives up after 8 s: not a success for SIPp
    assert system.sipp("unregister_all", [auth_row(u) for u in phones[:5]], port) == 0
    assert system.sipp("register_expires", [auth_row("4300", None, "2")]) == 0

    def registered(user: str) -> dict[str, Any] | None:
        status, body = system.aor(f"sip:{user}@pbx.example")
        return body if status == 200 else None

    def unregistered(user: str) -> bool:
        return registered(user) is None

    for user in phones[5:]:
        state = wait_until(partial(registered, user), 60, 0.2, f"{user} registered")
        [binding] = state["contacts"]
        assert binding["uri"] == f"sip:{user}@127.0.0.1:{port}"
        granted_ms = binding["expires_at"] - binding["refreshed_at"]
        assert granted_ms == MAX_EXPIRES * 1000  # Kamailio's grant, not the 3600 asked
        assert binding["source"] == {"ip": "127.0.0.1", "port": port, "transport": "udp"}
        assert binding["node"] == NODE and binding["cseq"] == 2
        # The 401 before it was a challenge, not a failure.
        assert state["health"]["state"] == "registered"
        assert state["health"]["auth_failures"] == 0 and state["health"]["last_reject"] is None

    wait_until(
        lambda: {f"sip:{u}@pbx.example" for u in wrong} <= system.problems("auth_failing"),
        60, 0.2, "wrong passwords auth_failing",
    )  # fmt: skip
    wait_until(
        lambda: "sip:4200@pbx.example" in system.problems("unreachable"),
        60, 0.2, "silent phone unreachable",
    )  # fmt: skip
    for user in phones[:5]:
        wait_until(partial(unregistered, user), 60, 0.2, f"{user} unregistered")
    # The sweeper expires the binding Kamailio granted for 2 s: no refresh came.
    wait_until(lambda: registered("4300") is None, 60, 0.2, "4300 lapsed")

    def swept() -> list[RegistrationEvent] | None:
        events = system.events()
        hit = any(e.kind == "expire" and e.aor == "sip:4300@pbx.example" for e in events)
        return events if hit else None

    events = wait_until(swept, 60, 0.5, "the sweeper's expire event for 4300")
    by_aor: dict[str, list[RegistrationEvent]] = {}
    for e in events:
        by_aor.setdefault(e.aor, []).append(e)
    for user in wrong:
        kinds = [(e.kind, e.status, e.reason) for e in by_aor[f"sip:{user}@pbx.example"]]
        assert kinds == [("reject", 401, "auth_failed")] * 3  # never a register
        assert all(registered(user) is None for user in wrong)
    expiry = [e for e in by_aor["sip:4300@pbx.example"] if e.kind == "expire"]
    assert expiry and all(e.node.startswith("engine:") for e in expiry)
    assert {e.reason for e in by_aor["sip:4200@pbx.example"]} == {"retransmission"}
    # Only the events HEP made, every one from the capture agent's node.
    assert {e.node for e in events if e.kind != "expire"} == {NODE}
    assert not any(e.reason == "timeout" for e in events)

    # The same diagnosis from `regstate problems`, folding the log.
    out = subprocess.run(
        [sys.executable, "-m", "streams", "problems", "--log", "--json", "--state", "auth_failing"],
        env={**os.environ, **system.env}, capture_output=True, text=True, timeout=90,
        check=True, cwd=PROJECT_ROOT,
    )  # fmt: skip
    listed = {p["aor"] for p in orjson.loads(out.stdout)}
    assert listed == {f"sip:{u}@pbx.example" for u in wrong}

    # The listener's /metrics: exactly the catalogue's HEP families, nothing lost.
    url = f"http://127.0.0.1:{system.hep.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    families = {
        f.name + "_total" if f.type == "counter" else f.name
        for f in text_string_to_metric_families(text)
    }
    assert families == {f.name for f in HEP_FAMILIES} | {"regstate_build_info"}
    samples = {
        s.name + str(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples["regstate_hep_kernel_drops[]"] == 0
    assert samples["regstate_hep_capture_to_event_seconds_count[]"] >= len(phones)
    assert samples["regstate_hep_unparsable_total[]"] == 0


TRUNK_MODULES = """
loadmodule "rr.so"
loadmodule "rtimer.so"
loadmodule "uac.so"
"""
TRUNK_PARAMS = """
modparam("rtimer", "timer", "name=trunk;interval=2;mode=1;")
modparam("rtimer", "exec", "timer=trunk;route=TRUNK")
"""
TRUNK_ROUTE = """
route[TRUNK] {{
  $uac_req(method) = "REGISTER";
  $uac_req(ruri) = "sip:carrier.example";
  $uac_req(ouri) = "sip:127.0.0.1:{carrier}";
  $uac_req(furi) = "sip:dialer1@carrier.example";
  $uac_req(turi) = "sip:dialer1@carrier.example";
  $uac_req(hdrs) = "Contact: <sip:dialer1@127.0.0.1:{{sip_port}}>\\r\\nExpires: 60\\r\\n";
  $uac_req(callid) = $_s(trunk-$TV(Sn)-$pp@127.0.0.1);
  uac_req_send();
}}
"""
TRUNK = "trunk:sip:dialer1@carrier.example"


def alerts_from_topics(system: System, ticks: int) -> list[AlertChange]:
    """The Detector fed with regstate.bindings and regstate.binding-events in event time."""
    bootstrap = system.env["REGSTATE_BOOTSTRAP_SERVERS"]
    timed: list[tuple[int, AorState | BindingEvent]] = []
    for r in asyncio.run(read_topic(bootstrap, system.settings.topic("bindings"))):
        if r.value is not None:
            state = decode_state(r.value)
            timed.append((state.updated_ts, state))
    for r in asyncio.run(read_topic(bootstrap, system.settings.topic("binding-events"))):
        be = binding_event_from_dict(orjson.loads(r.value))
        timed.append((be.ts, be))
    detector = Detector()
    changes: list[AlertChange] = []
    for ts, item in sorted(timed, key=lambda x: x[0]):
        detector.observe(item)
        changes += detector.tick(ts)
    changes += detector.tick(ticks)
    return [c for c in changes if c.alert.kind == "trunk_down"]


def carrier(system: System, scenario: str, port: int, answers: int) -> subprocess.Popen[bytes]:
    """SIPp as the carrier on ``port``, answering ``answers`` REGISTERs, then exiting."""
    assert SIPP is not None
    return subprocess.Popen(
        [
            SIPP, "-sf", str(SCENARIOS / f"{scenario}.xml"), "-i", "127.0.0.1",
            "-p", str(port), "-m", str(answers), "-nostdin", "-timeout", "60s",
            "-trace_err", "-error_file", str(system.tmp / f"{scenario}.err"),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_trunk_registered_then_forbidden_then_silent(system: System) -> None:
    """Scenario: a dialer server (a second Kamailio, its `uac` module) registers a trunk
    every 2 s to a carrier (SIPp) that answers 200 twice (20 s granted), then 403 five
    times, then nothing. The trunk is kept apart from phones (``trunk:`` AOR), shows on
    the query API with its contact and the server's address, becomes auth_failing, and
    its binding is expired by the sweeper."""
    carrier_port = free_udp_port()
    ok = carrier(system, "carrier_ok", carrier_port, 2)
    route = TRUNK_ROUTE.format(carrier=carrier_port)
    with started_kamailio(
        system.tmp / "dialer", system.hep.port, port=system.trunk_port, capture_id=2002,
        extra_modules=TRUNK_MODULES, extra_params=TRUNK_PARAMS, extra_routes=route,
    ):  # fmt: skip
        assert ok.wait(60) == 0

        def registered() -> dict[str, Any] | None:
            status, body = system.aor(TRUNK)
            return body if status == 200 else None

        state = wait_until(registered, 30, 0.2, "trunk registered")
        [binding] = state["contacts"]
        assert binding["uri"] == f"sip:dialer1@127.0.0.1:{system.trunk_port}"
        assert binding["expires_at"] - binding["refreshed_at"] == 20_000
        assert binding["source"]["port"] == system.trunk_port and binding["node"] == "hep-2002"
        # Five refusals; three (REGSTATE_HEALTH_AUTH_FAIL_THRESHOLD) make auth_failing.
        forbidden = carrier(system, "carrier_forbidden", carrier_port, 5)
        assert forbidden.wait(60) == 0
        wait_until(lambda: TRUNK in system.problems("auth_failing"), 60, 0.2, "auth_failing")
        # Then the carrier is silent: nothing refreshes the binding, the sweeper ends it.
        wait_until(lambda: registered() is None, 60, 0.2, "trunk binding lapsed")

        def swept() -> list[RegistrationEvent] | None:
            events = [e for e in system.events() if e.aor == TRUNK]
            return events if any(e.kind == "expire" for e in events) else None

        events = wait_until(swept, 60, 0.5, "the sweeper's expire event for the trunk")
    kinds = [(e.kind, e.reason) for e in events]
    assert kinds.index(("register", None)) < kinds.index(("reject", "forbidden"))
    # What the alerting consumer reads pages trunk_down once for the whole outage.
    pages = alerts_from_topics(system, ticks=events[-1].ts + 60_000)
    assert [(c.change, c.alert.group) for c in pages] == [("fired", TRUNK)]
    # Never a phone: no phone AOR for the trunk's account.
    assert system.aor("sip:dialer1@carrier.example")[0] == 404
