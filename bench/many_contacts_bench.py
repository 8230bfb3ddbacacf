"""Worker time on one REGISTER carrying many contacts (issue 14, defect 2).

    .venv/bin/python bench/many_contacts_bench.py --contacts 700 3200

Per record, what the worker's agent does: ``decode_event`` + ``fold_event`` +
``encode_state``. Cases, each against the AOR's empty state:

* ``set``: N contacts with an expiry, default policy (cap 10: refused);
* ``remove``: N contacts with ``expires=0`` (no cap applies: all are looked up);
* ``set_cap``: N contacts with a cap above N (all are bound, then refreshed:
  the lookup by key is what keeps this linear).

The peer is a 1-contact REGISTER timed in the same run; the ratio is printed
with the absolute figures (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import time

from processors.fold import fold_event
from processors.policy import FoldPolicy
from schemas import (
    AorState,
    ContactEntry,
    RegistrationEvent,
    Rejection,
    decode_event,
    encode_event,
)
from schemas.codec import encode_state

AOR = "sip:1001@pbx.example.com"
TS = 1_767_254_400_000


def register(n: int, expires: int, seq: int) -> bytes:
    contacts = tuple(
        ContactEntry(f"sip:1001@10.{i // 65536}.{i // 256 % 256}.{i % 256}:5060", expires)
        for i in range(n)
    )
    event = RegistrationEvent(
        "register", f"fe1:{seq}", "fe1", seq, TS + seq, AOR, "bench-call", seq, contacts
    )
    return encode_event(event)


def worker_step(data: bytes, state: AorState | None, policy: FoldPolicy) -> AorState | None:
    event = decode_event(data)
    if not isinstance(event, RegistrationEvent):
        return state  # refused at decode (over the codec's list cap): dead-lettered
    folded = fold_event(state, event, policy)
    encode_state(folded.state, internal=True)
    return folded.state


def timed(data: bytes, state: AorState | None, policy: FoldPolicy, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        worker_step(data, state, policy)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, nargs="+", default=[700])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    default = FoldPolicy()
    peer = timed(register(1, 3600, 1), None, default, 200)
    print(f"peer: 1-contact REGISTER {peer * 1e6:.0f} µs")
    for n in args.contacts:
        big = FoldPolicy(max_contacts=n + 1)
        bound = worker_step(register(n, 3600, 1), None, big)
        refused = isinstance(decode_event(register(n, 3600, 1)), Rejection)
        cases = {
            "set": (register(n, 3600, 2), None, default),
            "remove": (register(n, 0, 2), None, default),
            "set_cap": (register(n, 3600, 2), bound, big),
        }
        for name, (data, state, policy) in cases.items():
            t = timed(data, state, policy, args.repeat)
            note = "  (refused at decode)" if refused else ""
            print(f"{n} contacts {name:8s} {t * 1e3:9.1f} ms  ({t / peer:,.0f}x the peer){note}")


if __name__ == "__main__":
    main()
