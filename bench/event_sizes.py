"""Bytes per record on each topic, with the real codecs, for the sizing in docs/operations.md.

.venv/bin/python bench/event_sizes.py [samples/sample.jsonl]

Folds each register event of the log on top of the state before it, as the
engine does, and prints the median and largest size of what one REGISTER
refresh writes: the regstate.registrations event (msgpack, with and without the
raw request), the table changelog value (internal AorState JSON), the
regstate.bindings value (public AorState JSON) and each regstate.binding-events
value, plus the key (the canonical AOR).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from processors.fold import fold_event
from processors.policy import DEFAULT_POLICY
from schemas import AorState, RegistrationEvent
from schemas.codec import decode_event_json, encode_binding_event, encode_event, encode_state


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "samples/sample.jsonl")
    events = [decode_event_json(line) for line in path.read_text().splitlines() if line.strip()]
    states: dict[str, AorState] = {}
    sizes: dict[str, list[int]] = {k: [] for k in (
        "key", "event", "event_without_raw", "changelog", "bindings", "binding_event"
    )}  # fmt: skip
    for ev in events:
        if not isinstance(ev, RegistrationEvent):
            continue
        folded = fold_event(states.get(ev.aor), ev, DEFAULT_POLICY)
        states[ev.aor] = folded.state
        if ev.kind != "register" or not folded.events:
            continue
        sizes["key"].append(len(ev.aor.encode()))
        sizes["event"].append(len(encode_event(ev)))
        sizes["event_without_raw"].append(len(encode_event(ev._replace(raw=None))))
        sizes["changelog"].append(len(encode_state(folded.state, internal=True)))
        sizes["bindings"].append(len(encode_state(folded.state)))
        sizes["binding_event"] += [len(encode_binding_event(b)) for b in folded.events]
    with_raw = [n for n, m in zip(sizes["event"], sizes["event_without_raw"], strict=True) if n > m]
    print(f"register events folded: {len(sizes['key'])} ({len(with_raw)} carry the raw request)")
    for name, values in sizes.items():
        print(f"{name:18} median {statistics.median(values):6.0f} B   max {max(values):6d} B")
    if with_raw:
        print(f"{'event_with_raw':18} median {statistics.median(with_raw):6.0f} B")


if __name__ == "__main__":
    main()
