"""A simulated 24 h day of a call centre, through the fold and the alerting detector.

    .venv/bin/python bench/alerting_sim.py [--phones 1000] [--seed 1] [--hours 24]

Two runs of the same day (bench/phonesim.py: every event folded with
processors.fold.fold_event; the detector ticked every 5 s of event time):

* normal churn only: shifts logging in and out (most unregister, 5% just power
  off), always-on phones, random single phones dropping for a while, reboots
  (half behind NATs that rebind: new Contact), a few phones with wrong
  passwords, lost replies or lapsing 20 s grants. Every page is a false page.
* the same day plus two incidents: one /24 cut for 20 minutes at 11:00, and
  front-end node fe2 silent for 15 minutes at 19:00. Prints the detection delay
  (event time from the cut to the page), the time to resolve after the
  restore, and any page not explained by the incidents.

Deterministic: same arguments, same figures (the runtime aside).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.phonesim import HOUR, MINUTE, SECOND, PhoneSim, Timed, drive
from processors.alerting import Detector, DetectorConfig

DAY_START = 1_767_225_600_000
"""2026-01-01T00:00:00Z."""
NETWORKS = (("10.0.1", 0.25), ("10.0.2", 0.25), ("10.0.3", 0.30), ("10.0.4", 0.20))
NODES = ("fe1", "fe2")
GRANTS = (600, 600, 600, 3600, 1800, 300, 120)
SHIFTS = (
    # (share of phones, login hour, logout hour); hours past midnight, may exceed 24.
    (0.15, None, None),  # always on: reception, supervisors, meeting rooms
    (0.40, 8, 16),
    (0.30, 14, 22),
    (0.15, 22, 30),  # the night shift, also on from midnight to 06:00
)
CUT = ("10.0.3", 11 * HOUR, 20 * MINUTE)
SILENT = ("fe2", 19 * HOUR, 15 * MINUTE)


def build_day(phones: int, seed: int, hours: int, incidents: bool) -> PhoneSim:
    """The day's fleet and everything scheduled in it."""
    sim = PhoneSim(seed=seed, start=DAY_START)
    rng = sim.rng
    end = DAY_START + hours * HOUR
    fleet = []
    for net, share in NETWORKS:
        n = round(phones * share)
        for i, grant in enumerate(GRANTS):
            count = n // len(GRANTS) + (1 if i < n % len(GRANTS) else 0)
            fleet += sim.add_phones(count, net=net, nodes=NODES, grant_s=grant, online_at=-1)
    rng.shuffle(fleet)
    first = 0
    for share, login, logout in SHIFTS:
        team = fleet[first : first + round(len(fleet) * share)]
        first += len(team)
        if login is None or logout is None:
            sim.login(team, DAY_START, 10 * MINUTE)
            continue
        if logout > 24:  # the night shift: on since the previous evening
            sim.login(team, DAY_START, 10 * MINUTE)
            leaving = DAY_START + (logout - 24) * HOUR
            sim.logout(team[: int(len(team) * 0.95)], leaving, 30 * MINUTE)
            sim.power_off(team[int(len(team) * 0.95) :], leaving, 30 * MINUTE)
        sim.login(team, DAY_START + login * HOUR - 30 * MINUTE, 60 * MINUTE)
        leaving = DAY_START + logout * HOUR
        if leaving < end:
            cut = int(len(team) * 0.95)
            sim.logout(team[:cut], leaving, 30 * MINUTE)
            sim.power_off(team[cut:], leaving, 30 * MINUTE)
    # Random single-phone trouble all day long.
    for _ in range(40 * hours // 24):
        phone = rng.choice(fleet)
        at = DAY_START + rng.randrange(hours * HOUR)
        sim.power_off([phone], at)
        sim.login([phone], at + rng.randrange(5 * MINUTE, 60 * MINUTE))
    for _ in range(150 * hours // 24):
        sim.reboot(
            rng.choice(fleet),
            DAY_START + rng.randrange(hours * HOUR),
            rng.randrange(60 * SECOND, 180 * SECOND),
            new_port=rng.random() < 0.5,
        )
    for phone in fleet[:3]:
        phone.wrong_password = True
    for phone in fleet[3:5]:
        phone.replies_dropped = True
    for phone in fleet[5:7]:
        phone.grant_s, phone.refresh_late_s = 20, 60
    if incidents:
        net, at, length = CUT
        sim.cut_network(net, DAY_START + at, DAY_START + at + length)
        node, at, length = SILENT
        sim.silence_node(node, DAY_START + at, DAY_START + at + length)
    return sim


def clock(ms: int) -> str:
    s = (ms - DAY_START) // 1000
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def span(ms: int) -> str:
    s = round(ms / 1000)
    return f"{s // 60}m{s % 60:02d}s"


def run(phones: int, seed: int, hours: int, incidents: bool) -> tuple[list[Timed], int, float]:
    sim = build_day(phones, seed, hours, incidents)
    events = 0

    def count(_: object) -> None:
        nonlocal events
        events += 1

    started = time.perf_counter()
    out = drive(sim, Detector(DetectorConfig()), DAY_START + hours * HOUR, on_step=count)
    return out, events, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()
    cfg = DetectorConfig()
    print(
        f"regstate alerting simulation: {args.phones} phones, {len(NETWORKS)} /24 networks, "
        f"{len(NODES)} nodes, {args.hours} h, seed {args.seed}\n"
        f"thresholds: window {cfg.window_ms // 1000} s, hold {cfg.hold_ms // 1000} s, "
        f"N_min {cfg.min_count}, p {cfg.min_ratio:.0%}, resolve {cfg.resolve_ratio:.0%}, "
        f"node silence {cfg.node_silence_ms // 1000} s"
    )

    out, events, secs = run(args.phones, args.seed, args.hours, incidents=False)
    pages = [t for t in out if t.change == "fired" and t.alert.labels["severity"] == "page"]
    storms = [t for t in out if t.change == "fired" and t.alert.kind == "reregistration_storm"]
    print(f"\nnormal day: {events} events folded and observed in {secs:.1f} s")
    print(f"  false pages: {len(pages)}; storms reported: {len(storms)}")
    for t in pages + storms:
        print(f"    {clock(t.at)} {t.alert.summary}")

    out, events, secs = run(args.phones, args.seed, args.hours, incidents=True)
    print(f"\nday with incidents: {events} events folded and observed in {secs:.1f} s")
    explained: set[str] = set()
    for label, group, (name, at, length) in (
        ("/24 cut", ("net", f"{CUT[0]}.0/24"), CUT),
        ("node silent", ("node", SILENT[0]), SILENT),
    ):
        start, stop = DAY_START + at, DAY_START + at + length
        mine = [t for t in out if (t.alert.group_type, t.alert.group) == group]
        fired = next(
            (t for t in mine if t.change == "fired" and t.alert.labels["severity"] == "page"), None
        )
        where = f"{label} {name} at {clock(start)} for {length // MINUTE} min"
        if fired is None:
            print(f"  {where}: NOT DETECTED")
            continue
        explained.add(fired.alert.key)
        resolved = next(
            (t for t in mine if t.alert.key == fired.alert.key and t.change == "resolved"), None
        )
        storm = next((t for t in mine if t.alert.kind == "reregistration_storm"), None)
        if storm is not None:
            explained.add(storm.alert.key)
        print(f"  {where}: {fired.alert.kind} after {span(fired.at - start)}")
        print(f"    {fired.alert.summary}")
        if resolved is not None:
            print(
                f"    resolved {span(resolved.at - stop)} after the restore "
                f"({resolved.alert.count} phones in the incident)"
            )
        if storm is not None:
            print(f"    storm reported {span(storm.at - stop)} after the restore")
    others = [
        t
        for t in out
        if t.change == "fired"
        and t.alert.labels["severity"] == "page"
        and t.alert.key not in explained
    ]
    print(f"  other pages: {len(others)}")
    for t in others:
        print(f"    {clock(t.at)} {t.alert.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
