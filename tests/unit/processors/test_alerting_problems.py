"""processors.problems (``GET /v1/problems``) and ``regstate problems --input`` (no Kafka)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.phonesim import MINUTE, PhoneSim
from processors.problems import (
    MAX_LIMIT,
    PROBLEM_STATES,
    parse_states,
    problems_response,
    select,
)
from schemas.codec import encode_event_json
from schemas.state import AorState, Health
from streams.cli import main


def fleet_with_problems() -> PhoneSim:
    """Five healthy phones, two wrong passwords, one dropping replies, one flapping."""
    sim = PhoneSim(seed=21)
    sim.add_phones(5, net="10.0.1")
    bad = sim.add_phones(4, net="10.0.2", online_at=-1)
    bad[0].wrong_password = True
    bad[1].wrong_password = True
    bad[2].replies_dropped = True
    bad[3].grant_s, bad[3].refresh_late_s = 20, 60
    sim.login(bad, sim.start)
    return sim


@pytest.fixture(scope="module")
def folded() -> tuple[PhoneSim, list[bytes]]:
    sim = fleet_with_problems()
    lines = [encode_event_json(step.event) for step in sim.run(sim.start + 10 * MINUTE)]
    return sim, lines


def test_default_lists_the_problem_states_oldest_first(
    folded: tuple[PhoneSim, list[bytes]],
) -> None:
    sim, _ = folded
    status, body = problems_response(sim.states.values())
    assert status == 200
    assert body["states"] == sorted(PROBLEM_STATES)
    got = [(p["state"], p["aor"]) for p in body["problems"]]
    states = [s for s, _ in got]
    assert states == ["auth_failing", "auth_failing", "unreachable", "flapping"]
    assert body["count"] == 4
    first = body["problems"][0]
    assert first["since"] <= body["problems"][1]["since"]
    assert "auth rejects with no success since" in first["summary"]
    assert first["health"]["auth_failures"] >= 3
    assert first["source"].startswith("10.0.2.")
    assert first["contacts"] == 0
    unreachable = body["problems"][2]
    assert unreachable["contacts"] == 1
    assert "retransmissions" in unreachable["summary"]


def test_state_parameter_filters_and_may_repeat(folded: tuple[PhoneSim, list[bytes]]) -> None:
    sim, _ = folded
    _, body = problems_response(sim.states.values(), state_params=["flapping"])
    assert [p["state"] for p in body["problems"]] == ["flapping"]
    assert "last grant 20 s" in body["problems"][0]["summary"]
    _, body = problems_response(sim.states.values(), state_params=["registered,unreachable"])
    assert sorted({p["state"] for p in body["problems"]}) == ["registered", "unreachable"]
    assert body["count"] == 6


def test_limit_keeps_the_total(folded: tuple[PhoneSim, list[bytes]]) -> None:
    sim, _ = folded
    _, body = problems_response(sim.states.values(), limit_param="1")
    assert len(body["problems"]) == 1
    assert body["count"] == 4


@pytest.mark.parametrize(
    ("params", "limit", "error"),
    [(["sleeping"], None, "invalid_state"), ([], "0", "invalid_limit"), ([], "x", "invalid_limit")],
)
def test_bad_parameters_are_400(params: list[str], limit: str | None, error: str) -> None:
    status, body = problems_response([], state_params=params, limit_param=limit)
    assert status == 400
    assert body["error"] == error


def test_states_are_consumed_only_on_success() -> None:
    def exploding() -> Iterator[AorState]:
        raise AssertionError("iterated")
        yield AorState("sip:x@y")  # a generator: nothing runs until iterated

    status, _ = problems_response(exploding(), state_params=["bogus"])
    assert status == 400
    assert parse_states([]) == PROBLEM_STATES
    assert parse_states([" auth_failing , "]) == {"auth_failing"}


def test_select_orders_by_state_then_since() -> None:
    states = [
        AorState("sip:c@x", health=Health(state="flapping", since=1)),
        AorState("sip:b@x", health=Health(state="auth_failing", since=5)),
        AorState("sip:a@x", health=Health(state="auth_failing", since=5)),
        AorState("sip:d@x", health=Health(state="registered", since=0)),
    ]
    chosen, total = select(states, PROBLEM_STATES, MAX_LIMIT)
    assert [s.aor for s in chosen] == ["sip:a@x", "sip:b@x", "sip:c@x"]
    assert total == 3


def test_cli_lists_problems_of_a_log(
    folded: tuple[PhoneSim, list[bytes]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, lines = folded
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["problems", "--input", str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["STATE", "SINCE", "AOR"]
    assert [line.split()[0] for line in out[1:]] == [
        "auth_failing", "auth_failing", "unreachable", "flapping",
    ]  # fmt: skip

    assert main(["problems", "--input", str(log), "--json", "--state", "unreachable"]) == 0
    (entry,) = orjson.loads(capsys.readouterr().out)
    assert entry["state"] == "unreachable"
    assert entry["aor"] in sim.states


def test_cli_refuses_an_unknown_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    assert main(["problems", "--input", str(log), "--state", "asleep"]) == 2
    assert "unknown state asleep" in capsys.readouterr().err
