"""Generate N synthetic RegistrationEvents: a realistic registrar log, deterministic per seed.

    .venv/bin/python bench/gen_events.py --events 1000000 --aors 10000 --nodes 4 \\
        --seed 1 --output /tmp/events.jsonl
    .venv/bin/python bench/gen_events.py --events 1000000 --msgpack /tmp/events.msgpack

The mix, per event (one AOR picked at random, each AOR pinned to a front-end
node with occasional failover to another): mostly refreshes (same Call-ID,
CSeq + 1); first registrations; phone reboots (new Call-ID); unregisters
(Expires 0) and wildcard unregisters; sweeper ``expire`` events for bindings
whose short expiry lapsed (from ``engine:w<k>``); 401 rejects from a few
wrong-password phones; retransmission and 423 rejects; stale CSeqs (a delayed
copy of an older request) and events published twice (same id). Time advances
so that each AOR sees an event every ~5 minutes on average: phones with 60 s or
120 s grants lapse, like phones behind NATs with short timeouts do.

``--msgpack`` writes the events as concatenated msgpack maps (the Kafka value
form); read them back with ``msgpack.Unpacker``. Same seed, same arguments:
byte-identical output.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from schemas import ContactEntry, RegistrationEvent, Source, encode_event, event_to_dict

START_TS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: fixed, so output does not depend on the clock."""
MEAN_EVENT_INTERVAL_PER_AOR_MS = 300_000
EXPIRY_CHOICES = (3600, 3600, 1800, 1800, 600, 600, 300, 120, 60)
USER_AGENTS = (
    "Yealink SIP-T46U 108.86.0.20",
    "Poly VVX 450 6.4.3.5018",
    "Grandstream GXP2170 1.0.11.23",
    "Cisco/SPA504G-7.6.2",
    "Linphone/5.2.5 (belle-sip/5.2.0)",
    "MicroSIP/3.21.3",
    "Snom D735 10.1.141.13",
)
RAW_TEMPLATE = (
    "REGISTER sip:{domain} SIP/2.0\r\n"
    "Via: SIP/2.0/{tr} {ip}:{port};branch=z9hG4bK{branch:x};rport={port}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <{aor}>;tag={tag:x}\r\n"
    "To: <{aor}>\r\n"
    "Call-ID: {call_id}\r\n"
    "CSeq: {cseq} REGISTER\r\n"
    "Contact: <{contact}>\r\n"
    "Expires: {expires}\r\n"
    "User-Agent: {ua}\r\n"
    "Content-Length: 0\r\n"
)
DOMAIN = "pbx.example.com"


class _Phone:
    """What the generator remembers about one AOR (the phone and its binding)."""

    __slots__ = (
        "aor",
        "bad_password",
        "call_id",
        "contact",
        "cseq",
        "expires",
        "expires_at",
        "home",
        "instance",
        "registered",
        "source",
        "ua",
    )

    def __init__(self, index: int, n_nodes: int, rng: random.Random) -> None:
        user = 1001 + index
        self.aor = f"sip:{user}@{DOMAIN}"
        hi, mid, lo = (index >> 16) & 255, (index >> 8) & 255, index & 255
        self.contact = f"sip:{user}@10.{hi}.{mid}.{lo}:5060"
        # ~20% of phones use RFC 5626 outbound (instance + reg-id).
        self.instance = (
            f"<urn:uuid:00000000-0000-4000-8000-{index:012x}>" if rng.random() < 0.2 else None
        )
        self.source = Source(f"198.51.{mid}.{lo}", 20000 + (index % 40000), "udp")
        self.ua = USER_AGENTS[index % len(USER_AGENTS)]
        self.expires = EXPIRY_CHOICES[int(rng.random() * len(EXPIRY_CHOICES))]
        self.bad_password = rng.random() < 0.01
        self.home = index % n_nodes
        self.registered = False
        self.call_id = ""
        self.cseq = 0
        self.expires_at = 0


def generate_events(
    n_events: int,
    n_aors: int = 10_000,
    n_nodes: int = 4,
    seed: int = 1,
    *,
    start_ts: int = START_TS,
    raw: bool = True,
) -> Iterator[RegistrationEvent]:
    """Yield ``n_events`` valid events in log order; the same arguments give the same events.

    Each node's ``seq`` increases and each node's ``ts`` never decreases, as on a
    real front-end. AORs are canonical (``sip:<1001+i>@pbx.example.com``).
    """
    if n_aors < 1 or n_nodes < 1:
        raise ValueError("need at least one AOR and one node")
    rng = random.Random(seed)
    rand = rng.random
    phones: list[_Phone | None] = [None] * n_aors
    nodes = [f"fe{i + 1}" for i in range(n_nodes)]
    sweepers = [f"engine:w{i + 1}" for i in range(max(1, n_nodes // 2))]
    seqs = dict.fromkeys(nodes + sweepers, start_ts * 1000)
    mean_gap = MEAN_EVENT_INTERVAL_PER_AOR_MS / n_aors
    ts = float(start_ts)
    last: RegistrationEvent | None = None
    call_counter = 0

    for _ in range(n_events):
        ts += rand() * 2 * mean_gap
        now = int(ts)
        # Published twice (a front-end retry): same id, same everything.
        if last is not None and rand() < 0.005:
            yield last
            continue
        index = int(rand() * n_aors)
        phone = phones[index]
        if phone is None:
            phone = phones[index] = _Phone(index, n_nodes, rng)
        r = rand()
        node = nodes[phone.home] if r > 0.02 else nodes[int(rand() * n_nodes)]

        if phone.registered and phone.expires_at <= now and rand() < 0.6:
            # The sweeper of the owning worker expires the lapsed binding.
            sweeper = sweepers[index % len(sweepers)]
            seqs[sweeper] += 1
            seq = seqs[sweeper]
            last = RegistrationEvent(
                "expire", f"{sweeper}:{seq}", sweeper, seq, now, phone.aor,
                phone.call_id, phone.cseq, contact=phone.contact,
            )  # fmt: skip
            phone.registered = False
            yield last
            continue

        seqs[node] += 1
        seq = seqs[node]
        event_id = f"{node}:{seq}"
        if phone.bad_password:
            phone.cseq += 1
            if not phone.call_id:
                call_counter += 1
                phone.call_id = f"{call_counter:08x}-{index}@{phone.source.ip}"
            last = RegistrationEvent(
                "reject", event_id, node, seq, now, phone.aor, phone.call_id, phone.cseq,
                source=phone.source, user_agent=phone.ua, status=401, reason="auth_failed",
            )  # fmt: skip
            yield last
            continue

        expires = phone.expires
        wildcard = False
        contacts_expires: int | None = expires
        if not phone.registered or not phone.call_id or r < 0.03:
            # First registration, re-registration after a lapse, or a reboot: new Call-ID.
            call_counter += 1
            phone.call_id = f"{call_counter:08x}-{index}@{phone.source.ip}"
            phone.cseq = 1
        elif r < 0.05:
            # A delayed copy of an older request: same Call-ID, old CSeq (stale).
            old_cseq = max(1, phone.cseq - 1)
            # The phone's state is unchanged: the fold refuses this request (R4).
            last = _register(event_id, node, seq, now, phone, old_cseq, expires, raw, rng)
            yield last
            continue
        elif r < 0.065:
            phone.cseq += 1
            reason, status = ("retransmission", 408) if r < 0.06 else ("interval_too_brief", 423)
            last = RegistrationEvent(
                "reject", event_id, node, seq, now, phone.aor, phone.call_id, phone.cseq,
                source=phone.source, user_agent=phone.ua, status=status, reason=reason,
            )  # fmt: skip
            yield last
            continue
        elif r < 0.085:
            phone.cseq += 1
            contacts_expires = 0  # unregister this contact
        elif r < 0.09:
            phone.cseq += 1
            wildcard = True  # Contact: *, Expires: 0
        else:
            phone.cseq += 1  # the common case: a refresh

        if wildcard:
            last = RegistrationEvent(
                "register", event_id, node, seq, now, phone.aor, phone.call_id, phone.cseq,
                (), True, 0, phone.source, phone.ua,
            )  # fmt: skip
            phone.registered = False
        else:
            assert contacts_expires is not None
            last = _register(
                event_id, node, seq, now, phone, phone.cseq, contacts_expires, raw, rng
            )
            phone.registered = contacts_expires > 0
            phone.expires_at = now + contacts_expires * 1000
        yield last


def _register(
    event_id: str,
    node: str,
    seq: int,
    ts: int,
    phone: _Phone,
    cseq: int,
    expires: int,
    raw: bool,
    rng: random.Random,
) -> RegistrationEvent:
    instance = phone.instance
    contact = ContactEntry(
        phone.contact, expires, None, instance, 1 if instance is not None else None
    )
    raw_text = (
        RAW_TEMPLATE.format(
            domain=DOMAIN,
            tr=phone.source.transport.upper(),
            ip=phone.source.ip,
            port=phone.source.port,
            branch=rng.getrandbits(48),
            aor=phone.aor,
            tag=rng.getrandbits(32),
            call_id=phone.call_id,
            cseq=cseq,
            contact=phone.contact,
            expires=expires,
            ua=phone.ua,
        )
        if raw
        else None
    )
    return RegistrationEvent(
        "register", event_id, node, seq, ts, phone.aor, phone.call_id, cseq,
        (contact,), False, expires, phone.source, phone.ua, (), None, None, None, raw_text,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Write the events to --output (JSON Lines) and/or --msgpack; summary on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--aors", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, help="JSON Lines file (- for stdout)")
    parser.add_argument("--msgpack", type=Path, help="concatenated msgpack maps")
    parser.add_argument("--no-raw", action="store_true", help="leave the raw headers out")
    args = parser.parse_args(argv)
    if args.output is None and args.msgpack is None:
        parser.error("give --output and/or --msgpack")

    started = time.perf_counter()
    to_stdout = args.output is not None and str(args.output) == "-"
    out_json: BinaryIO | None = None
    if to_stdout:
        out_json = sys.stdout.buffer
    elif args.output is not None:
        out_json = args.output.open("wb")
    out_mp: BinaryIO | None = args.msgpack.open("wb") if args.msgpack is not None else None
    count = 0
    try:
        buffer_json: list[bytes] = []
        buffer_mp: list[bytes] = []
        for event in generate_events(
            args.events, args.aors, args.nodes, args.seed, raw=not args.no_raw
        ):
            count += 1
            if out_json is not None:
                buffer_json.append(orjson.dumps(event_to_dict(event)))
            if out_mp is not None:
                buffer_mp.append(encode_event(event))
            if count % 10_000 == 0:
                _flush(out_json, buffer_json, out_mp, buffer_mp)
        _flush(out_json, buffer_json, out_mp, buffer_mp)
    finally:
        if out_json is not None and not to_stdout:
            out_json.close()
        if out_mp is not None:
            out_mp.close()
    elapsed = time.perf_counter() - started
    print(
        f"gen_events: {count} events, {args.aors} AORs, {args.nodes} nodes, seed {args.seed}: "
        f"{elapsed:.1f} s ({count / elapsed:,.0f} events/s)",
        file=sys.stderr,
    )
    return 0


def _flush(
    out_json: BinaryIO | None,
    buffer_json: list[bytes],
    out_mp: BinaryIO | None,
    buffer_mp: list[bytes],
) -> None:
    if buffer_json and out_json is not None:
        out_json.write(b"\n".join(buffer_json) + b"\n")
        buffer_json.clear()
    if buffer_mp and out_mp is not None:
        out_mp.write(b"".join(buffer_mp))
        buffer_mp.clear()


if __name__ == "__main__":
    sys.exit(main())
