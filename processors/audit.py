"""Is the live table right? Compare the fold of the log with what regstate.bindings holds.

``regstate audit`` folds the whole of regstate.registrations (the *log* side,
``expected``) and reads the compacted regstate.bindings (the *live* side,
``actual``), then calls :func:`compare`. Both sides are seen at one common time
``at_ms``: only contacts active at that time count (R6), and an AOR with no
active contact is absent, as a tombstone makes it absent from regstate.bindings.
That makes the comparison independent of when the sweeper got round to
expiring a lapsed binding.

Pure: no Kafka, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, NamedTuple

from schemas.state import AorState, Binding

DivergenceKind = Literal["missing", "extra", "differs", "undecodable"]
"""``missing``: the log has the AOR, live does not. ``extra``: live has an AOR the log
does not (a phantom). ``differs``: both have it, with other contacts or another
version. ``undecodable``: the live record cannot be read (set by the caller)."""

COMPARED_FIELDS: Final[tuple[str, ...]] = tuple(f for f in Binding._fields if f != "key")
"""Every field of a contact is compared; ``key`` identifies the contact."""

LogPosition = tuple[int, int]
"""(partition, offset) of a Kafka record."""


class Divergence(NamedTuple):
    """One AOR where the live table and the fold of the log disagree at ``at_ms``.

    ``problems`` are short sentences, most important first. ``live_record`` is the
    (partition, offset) of the last regstate.bindings record of the AOR (the
    record that is wrong, or None when live has none); ``log_record`` that of the
    AOR's last event in regstate.registrations. :func:`compare` leaves both None:
    only the reader of the topics knows them.
    """

    aor: str
    kind: DivergenceKind
    problems: tuple[str, ...]
    expected_version: int | None = None
    actual_version: int | None = None
    live_record: LogPosition | None = None
    log_record: LogPosition | None = None


def _contacts_summary(state: AorState) -> str:
    n = len(state.contacts)
    keys = ", ".join(b.key for b in state.contacts)
    return f"{n} contact{'s' if n != 1 else ''} ({keys})"


def _contact_problems(expected: AorState, actual: AorState) -> list[str]:
    want = {b.key: b for b in expected.contacts}
    have = {b.key: b for b in actual.contacts}
    problems: list[str] = []
    for key in sorted(want.keys() - have.keys()):
        problems.append(f"contact {key} missing in live (log: {want[key].uri})")
    for key in sorted(have.keys() - want.keys()):
        problems.append(f"contact {key} extra in live ({have[key].uri})")
    for key in sorted(want.keys() & have.keys()):
        w, h = want[key], have[key]
        if w == h:
            continue
        for name in COMPARED_FIELDS:
            wv, hv = getattr(w, name), getattr(h, name)
            if wv != hv:
                problems.append(f"contact {key}: {name} live {hv!r} != log {wv!r}")
    return problems


def compare(
    expected: Mapping[str, AorState], actual: Mapping[str, AorState], at_ms: int
) -> list[Divergence]:
    """Every AOR whose active contacts at ``at_ms``, or whose version, differ; sorted by AOR.

    ``expected`` is the fold of the log, ``actual`` the live table, each keyed by
    AOR (for ``actual``: the record key). Guarantees:

    * an AOR with no contact active at ``at_ms`` on either side is absent on that
      side; absent on both sides is agreement, whatever the versions;
    * absent on one side only is one ``missing`` or ``extra`` Divergence;
    * present on both sides: one ``differs`` Divergence listing each contact key
      missing or extra in live, each field of a common contact that differs, a
      version that differs, and a value whose ``aor`` is not its key;
    * no Divergence at all iff both sides agree on all of that; the result does
      not depend on the iteration order of the mappings.
    """
    out: list[Divergence] = []
    for aor in sorted(expected.keys() | actual.keys()):
        e = expected.get(aor)
        a = actual.get(aor)
        e_active = e.only_active(at_ms) if e is not None else None
        a_active = a.only_active(at_ms) if a is not None else None
        e_here = e_active is not None and bool(e_active.contacts)
        a_here = a_active is not None and bool(a_active.contacts)
        e_version = e.version if e is not None else None
        a_version = a.version if a is not None else None
        if not e_here and not a_here:
            continue
        if e_here and not a_here:
            assert e_active is not None
            why = "no record" if a is None else "no active contact"
            out.append(
                Divergence(
                    aor,
                    "missing",
                    (f"missing in live ({why}); log has {_contacts_summary(e_active)}",),
                    e_version,
                    a_version,
                )
            )
            continue
        if a_here and not e_here:
            assert a_active is not None
            why = "unknown to the log" if e is None else "no active contact in the log"
            out.append(
                Divergence(
                    aor,
                    "extra",
                    (f"extra in live ({why}): {_contacts_summary(a_active)}",),
                    e_version,
                    a_version,
                )
            )
            continue
        assert e_active is not None and a_active is not None
        problems = _contact_problems(e_active, a_active)
        if e_version != a_version:
            problems.append(f"version live {a_version} != log {e_version}")
        if a_active.aor != aor:
            problems.append(f"live value names aor {a_active.aor!r}, not its key")
        if problems:
            out.append(Divergence(aor, "differs", tuple(problems), e_version, a_version))
    return out
