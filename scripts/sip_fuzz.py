"""Fuzz the SIP parser; exit 1 and keep the input when anything but SipParseError escapes.

    .venv/bin/python scripts/sip_fuzz.py --iterations 200000          # own mutator
    .venv/bin/python scripts/sip_fuzz.py --atheris -- -max_total_time=60  # libFuzzer, if
                                                                          # atheris is installed
Both start from the torture corpus in tests/sip_torture/. The own mutator is
deterministic for a given --seed, so a crash it finds can be reproduced.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.unit.sip_corpus import corpus  # noqa: E402

if "--atheris" in sys.argv:
    import atheris  # type: ignore[import-not-found]

    with atheris.instrument_imports():  # coverage feedback for libFuzzer
        from streams.sip import message
else:
    from streams.sip import message
SipParseError, frame_stream, parse_request = (
    message.SipParseError,
    message.frame_stream,
    message.parse_request,
)

TOKENS = [
    b"\r\n",
    b"\r\n\r\n",
    b",",
    b";",
    b"=",
    b'"',
    b"\\",
    b"<",
    b">",
    b"*",
    b"%",
    b"%0",
    b":",
    b"@",
    b"[",
    b"]",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"\xc3",
    b";expires=",
    b";q=",
    b";reg-id=",
    b";rport",
    b";received=",
    b"Contact: ",
    b"v: ",
    b"l: ",
    b"99999999999",
    b"-1",
    b"SIP/2.0",
    b"sip:",
    b"Expires: ",
]


def check(data: bytes) -> None:
    """Raise whatever the parser raises that is not SipParseError."""
    with contextlib.suppress(SipParseError):
        parse_request(data)
    with contextlib.suppress(SipParseError):
        parse_request(data, stream=True)
    with contextlib.suppress(SipParseError):
        frame_stream(data)


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 8)):
        pos = rng.randint(0, len(data))
        op = rng.randrange(6)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            del data[pos : pos + rng.randint(1, 60)]
        elif op == 3:
            other = rng.choice(seeds)
            data[pos:] = other[rng.randint(0, len(other)) :]
        elif op == 4:
            data[pos:pos] = data[pos : pos + rng.randint(1, 200)]
        else:
            data[pos:pos] = rng.choice(TOKENS)
    return bytes(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--atheris", action="store_true", help="run libFuzzer through atheris")
    parser.add_argument("--crash-dir", default=str(ROOT / ".regstate" / "sip-fuzz-crashes"))
    args, rest = parser.parse_known_args()
    seeds = list(corpus().values())
    if args.atheris:
        work = Path(args.crash_dir).parent / "sip-fuzz-corpus"
        work.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds):
            (work / f"seed{i}").write_bytes(seed)
        atheris.Setup([sys.argv[0], *[a for a in rest if a != "--"], str(work)], check)
        atheris.Fuzz()
        return 0
    rng = random.Random(args.seed)  # noqa: S311 - reproducible inputs, not secrets
    start = time.perf_counter()
    for i in range(args.iterations):
        data = mutate(rng, seeds)
        try:
            check(data)
        except Exception as exc:  # noqa: BLE001 - any escape is the finding
            crash_dir = Path(args.crash_dir)
            crash_dir.mkdir(parents=True, exist_ok=True)
            path = crash_dir / f"crash-{args.seed}-{i}.sip"
            path.write_bytes(data)
            print(f"CRASH at iteration {i}: {type(exc).__name__}: {exc}; input in {path}")
            return 1
    elapsed = time.perf_counter() - start
    print(
        f"{args.iterations} inputs, 0 crashes, {elapsed:.1f} s ({args.iterations / elapsed:.0f}/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
