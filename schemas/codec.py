"""Wire codecs: msgpack for RegistrationEvent, JSON (orjson) for AorState and BindingEvent.

Decoding never raises into its caller: it returns the record or a
:class:`Rejection` naming what was wrong, so a consumer can dead-letter the
record and keep going (a decoder that raises would restart a Faust agent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import orjson

from schemas.events import (
    KINDS,
    SCHEMA_VERSION,
    ContactEntry,
    RegistrationEvent,
    Source,
    event_id,
)
from schemas.state import AorState, Binding, BindingEvent, Health, Reject

MAX_RAW_BYTES: Final = 8 * 1024

# --- ranges (D80) -------------------------------------------------------------
# Every number a consumer stores, adds to or compares is range-checked here, so a
# record that decodes can be folded, encoded, written to SQLite (int64) and read
# by JavaScript (2**53) without raising anywhere downstream.
MAX_TS_MS: Final = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: ``ts`` and every time derived from it stay far below 2**53."""
MAX_SEQ_AHEAD_US: Final = 2**32
"""A node's ``seq`` starts at its clock in µs and adds one per event, so it never runs
ahead of its own event time in µs by more than its event count: ``seq <= ts * 1000 +
MAX_SEQ_AHEAD_US`` (about 4e9 events). One forged seq cannot pin a node's R5 mark
beyond its own ts (D80)."""
MAX_CSEQ: Final = 2**32 - 1
MAX_EXPIRES_S: Final = 2**32 - 1
"""RFC 3261 delta-seconds: at most 2**32-1."""
MAX_PORT: Final = 65_535
MAX_REG_ID: Final = 2**31 - 1
MAX_EVENT_CONTACTS: Final = 1_024
"""More than an 8 KiB SIP message can carry: a record with more is not from a front-end."""
MAX_PATH_ENTRIES: Final = 32
MAX_AOR_CHARS: Final = 1_024
MAX_CALL_ID_CHARS: Final = 1_024
MAX_NODE_CHARS: Final = 255
MAX_TEXT_CHARS: Final = 8 * 1024
"""Any other string (URIs, user agent, reason, path entries, instance, ip)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record could not be decoded. ``reason`` is a short machine word."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class _Invalid(Exception):
    """Internal: carries a Rejection out of the nested field checks."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


_MISSING: Final = object()


def _req(m: Mapping[str, Any], name: str, typ: type, where: str = "") -> Any:
    value = m.get(name, _MISSING)
    if value is _MISSING or value is None:
        raise _Invalid("missing_field", f"{where}{name} is required")
    # bool is an int subclass; a bool where an int is expected is a bug upstream.
    if type(value) is not typ and not (typ is float and type(value) is int):
        raise _Invalid(
            "mistyped_field", f"{where}{name} must be {typ.__name__}, got {type(value).__name__}"
        )
    return value


def _opt(m: Mapping[str, Any], name: str, typ: type, where: str = "") -> Any:
    value = m.get(name)
    if value is None:
        return None
    if type(value) is not typ and not (typ is float and type(value) is int):
        raise _Invalid(
            "mistyped_field",
            f"{where}{name} must be {typ.__name__} or null, got {type(value).__name__}",
        )
    return value


def _int_in(value: int, low: int, high: int, name: str) -> int:
    if not low <= value <= high:
        raise _Invalid("out_of_range", f"{name} {value} is not in [{low}, {high}]")
    return value


def _status(value: int) -> int:
    # 0 is "no final response was seen": a retransmitted REGISTER that a HEP capture
    # never saw answered (D54) must still carry a status.
    return value if value == 0 else _int_in(value, 100, 699, "status")


def _text(value: str | None, limit: int, name: str) -> Any:
    if value is not None and len(value) > limit:
        raise _Invalid("out_of_range", f"{name} has {len(value)} characters (limit {limit})")
    return value


def _cut_raw(raw: str | None) -> str | None:
    """At most 8 KiB of UTF-8, cut on a character boundary (docs/design.md section 4)."""
    if raw is None or len(raw) * 4 <= MAX_RAW_BYTES:
        return raw  # cannot exceed the limit: skip encoding on the hot path
    data = raw.encode("utf-8")
    if len(data) <= MAX_RAW_BYTES:
        return raw
    return data[:MAX_RAW_BYTES].decode("utf-8", errors="ignore")


def _source(value: Any, where: str) -> Source | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Invalid("mistyped_field", f"{where}source must be a map")
    return Source(
        ip=_text(_req(value, "ip", str, f"{where}source."), MAX_TEXT_CHARS, "source.ip"),
        port=_int_in(_req(value, "port", int, f"{where}source."), 0, MAX_PORT, "source.port"),
        transport=_text(
            _req(value, "transport", str, f"{where}source."), MAX_TEXT_CHARS, "source.transport"
        ),
    )


def _str_list(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(type(x) is str for x in value):
        raise _Invalid("mistyped_field", f"{name} must be a list of strings")
    if len(value) > MAX_PATH_ENTRIES:
        raise _Invalid(
            "out_of_range", f"{name} has {len(value)} entries (limit {MAX_PATH_ENTRIES})"
        )
    for x in value:
        _text(x, MAX_TEXT_CHARS, name)
    return tuple(value)


def _contacts(value: Any, header_expires: int | None) -> tuple[ContactEntry, ...]:
    if value is None:
        raise _Invalid("missing_field", "contacts is required for kind register")
    if not isinstance(value, list | tuple):
        raise _Invalid("mistyped_field", "contacts must be a list")
    if len(value) > MAX_EVENT_CONTACTS:
        raise _Invalid(
            "out_of_range", f"contacts has {len(value)} entries (limit {MAX_EVENT_CONTACTS})"
        )
    out = []
    for i, c in enumerate(value):
        where = f"contacts[{i}]."
        if not isinstance(c, Mapping):
            raise _Invalid("mistyped_field", f"contacts[{i}] must be a map")
        if c.get("expires") is None and header_expires is not None:
            # Hand-written logs may leave the grant to the Expires header, as a
            # REGISTER does: "contact parameter, else Expires header" (section 4).
            expires = header_expires
        else:
            expires = _req(c, "expires", int, where)
        if expires < 0:
            raise _Invalid("invalid_value", f"{where}expires must be >= 0")
        _int_in(expires, 0, MAX_EXPIRES_S, f"{where}expires")
        q = _opt(c, "q", float, where)
        if q is not None and not 0.0 <= q <= 1.0:  # also refuses NaN
            raise _Invalid("out_of_range", f"{where}q {q} is not in [0, 1]")
        reg_id = _opt(c, "reg_id", int, where)
        if reg_id is not None:
            _int_in(reg_id, 0, MAX_REG_ID, f"{where}reg_id")
        out.append(
            ContactEntry(
                uri=_text(_req(c, "uri", str, where), MAX_TEXT_CHARS, f"{where}uri"),
                expires=expires,
                q=None if q is None else float(q),
                instance=_text(_opt(c, "instance", str, where), MAX_TEXT_CHARS, f"{where}instance"),
                reg_id=reg_id,
            )
        )
    return tuple(out)


def _fast_source(src: Any) -> Source | None:
    if src is None:
        return None
    ip, port, transport = src["ip"], src["port"], src["transport"]
    if (
        type(ip) is not str
        or type(port) is not int
        or type(transport) is not str
        or not 0 <= port <= MAX_PORT
        or len(ip) > MAX_TEXT_CHARS
        or len(transport) > MAX_TEXT_CHARS
    ):
        raise _Invalid("mistyped_field", "source")
    return Source(ip, port, transport)


def _fast_event(m: dict[str, Any]) -> RegistrationEvent:
    """The common, well-formed record, checked inline (the hot path of every consumer).

    Raises on anything unusual; the caller then runs the detailed validator,
    which names the problem. Both accept exactly the same records.
    """
    kind = m["kind"]
    node = m["node"]
    seq = m["seq"]
    ev_id = m["id"]
    ts = m["ts"]
    aor = m["aor"]
    call_id = m["call_id"]
    cseq = m["cseq"]
    v = m["v"]
    if (
        type(v) is not int
        or v != SCHEMA_VERSION
        or type(node) is not str
        or type(seq) is not int
        or type(ts) is not int
        or type(aor) is not str
        or type(call_id) is not str
        or type(cseq) is not int
        or ev_id != event_id(node, seq)
        or ":" not in aor
        or not 0 <= ts <= MAX_TS_MS
        or not 0 <= seq <= ts * 1000 + MAX_SEQ_AHEAD_US
        or not 0 <= cseq <= MAX_CSEQ
        or len(node) > MAX_NODE_CHARS
        or len(aor) > MAX_AOR_CHARS
        or len(call_id) > MAX_CALL_ID_CHARS
    ):
        raise _Invalid("slow", "")
    user_agent = m.get("user_agent")
    raw = m.get("raw")
    path = m.get("path")
    if (
        (
            user_agent is not None
            and (type(user_agent) is not str or len(user_agent) > MAX_TEXT_CHARS)
        )
        or (raw is not None and (type(raw) is not str or len(raw) * 4 > MAX_RAW_BYTES))
        or (
            path is not None
            and (
                type(path) is not list
                or len(path) > MAX_PATH_ENTRIES
                or any(type(x) is not str or len(x) > MAX_TEXT_CHARS for x in path)
            )
        )
    ):
        raise _Invalid("slow", "")
    source = _fast_source(m.get("source"))
    path_t = tuple(path) if path else ()
    if kind == "register":
        entries = m["contacts"]
        if type(entries) is not list or len(entries) > MAX_EVENT_CONTACTS:
            raise _Invalid("slow", "")
        contacts = []
        for c in entries:
            uri, expires = c["uri"], c["expires"]
            q, instance, reg_id = c.get("q"), c.get("instance"), c.get("reg_id")
            if (
                type(uri) is not str
                or type(expires) is not int
                or not 0 <= expires <= MAX_EXPIRES_S
                or len(uri) > MAX_TEXT_CHARS
                or (q is not None and (type(q) is not float or not 0.0 <= q <= 1.0))
                or (
                    instance is not None
                    and (type(instance) is not str or len(instance) > MAX_TEXT_CHARS)
                )
                or (
                    reg_id is not None
                    and (type(reg_id) is not int or not 0 <= reg_id <= MAX_REG_ID)
                )
            ):
                raise _Invalid("slow", "")
            contacts.append(ContactEntry(uri, expires, q, instance, reg_id))
        wildcard = m.get("wildcard", False)
        expires_h = m.get("expires")
        if type(wildcard) is not bool or (
            expires_h is not None
            and (type(expires_h) is not int or not 0 <= expires_h <= MAX_EXPIRES_S)
        ):
            raise _Invalid("slow", "")
        return RegistrationEvent(
            "register", ev_id, node, seq, ts, aor, call_id, cseq,
            tuple(contacts), wildcard, expires_h, source, user_agent, path_t, None, None, None, raw,
        )  # fmt: skip
    raise _Invalid("slow", "")


def event_from_mapping(m: object) -> RegistrationEvent | Rejection:
    """Validate one decoded record (a msgpack map or a JSON object) into an event."""
    if type(m) is dict:
        try:
            return _fast_event(m)
        except Exception:  # noqa: BLE001, S110 - any oddity: the detailed check below names it
            pass
    return _checked_event(m)


def _checked_event(m: object) -> RegistrationEvent | Rejection:
    """The detailed validator: returns the event, or a Rejection naming the first problem."""
    if not isinstance(m, Mapping):
        return Rejection("not_a_map", f"record is {type(m).__name__}, not a map")
    try:
        v = m.get("v", _MISSING)
        if v is _MISSING:
            raise _Invalid("missing_field", "v is required")
        if v != SCHEMA_VERSION or type(v) is not int:
            raise _Invalid("unknown_version", f"schema version {v!r} is not known (this reader: 1)")
        kind = _req(m, "kind", str)
        if kind not in KINDS:
            raise _Invalid("invalid_value", f"kind {kind!r} is not one of {sorted(KINDS)}")
        node = _text(_req(m, "node", str), MAX_NODE_CHARS, "node")
        ts = _int_in(_req(m, "ts", int), 0, MAX_TS_MS, "ts")
        seq = _int_in(
            _req(m, "seq", int), 0, ts * 1000 + MAX_SEQ_AHEAD_US, "seq (<= ts*1000+2**32)"
        )
        ev_id = _req(m, "id", str)
        if ev_id != event_id(node, seq):
            raise _Invalid("invalid_value", f"id {ev_id!r} is not '<node>:<seq>' ({node}:{seq})")
        aor = _text(_req(m, "aor", str), MAX_AOR_CHARS, "aor")
        if ":" not in aor:
            raise _Invalid("invalid_value", f"aor {aor!r} is not a URI")
        raw = _cut_raw(_opt(m, "raw", str))
        common: dict[str, Any] = {
            "kind": kind,
            "id": ev_id,
            "node": node,
            "seq": seq,
            "ts": ts,
            "aor": aor,
            "call_id": _text(_req(m, "call_id", str), MAX_CALL_ID_CHARS, "call_id"),
            "cseq": _int_in(_req(m, "cseq", int), 0, MAX_CSEQ, "cseq"),
            "source": _source(m.get("source"), ""),
            "user_agent": _text(_opt(m, "user_agent", str), MAX_TEXT_CHARS, "user_agent"),
            "path": _str_list(m.get("path"), "path"),
            "raw": raw,
        }
        if kind == "register":
            wildcard = m.get("wildcard", False)
            if type(wildcard) is not bool:
                raise _Invalid("mistyped_field", "wildcard must be bool")
            expires = _opt(m, "expires", int)
            if expires is not None and expires < 0:
                raise _Invalid("invalid_value", "expires must be >= 0")
            if expires is not None:
                _int_in(expires, 0, MAX_EXPIRES_S, "expires")
            return RegistrationEvent(
                **common,
                contacts=_contacts(m.get("contacts"), expires),
                wildcard=wildcard,
                expires=expires,
            )
        if kind == "reject":
            return RegistrationEvent(
                **common,
                status=_status(_req(m, "status", int)),
                reason=_text(_req(m, "reason", str), MAX_TEXT_CHARS, "reason"),
            )
        # expire / deactivate name the binding they end.
        return RegistrationEvent(
            **common,
            contact=_text(_req(m, "contact", str), MAX_TEXT_CHARS, "contact"),
            reason=_text(_opt(m, "reason", str), MAX_TEXT_CHARS, "reason"),
        )
    except _Invalid as exc:
        return exc.rejection


def decode_event(data: bytes | None) -> RegistrationEvent | Rejection:
    """Decode one msgpack record from regstate.registrations."""
    if data is None:
        return Rejection("empty", "record value is null")
    try:
        m = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except msgpack.ExtraData:
        return Rejection("trailing_bytes", "bytes follow the msgpack map")
    except (ValueError, msgpack.UnpackException) as exc:
        # Truncated input raises ValueError ("incomplete") or OutOfData.
        return Rejection("not_msgpack", f"cannot decode msgpack: {exc}")
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes must never raise into the agent
        return Rejection("not_msgpack", f"cannot decode msgpack: {type(exc).__name__}: {exc}")
    return event_from_mapping(m)


def decode_event_json(line: str | bytes) -> RegistrationEvent | Rejection:
    """Decode one JSON Lines record (the file form of RegistrationEvent)."""
    try:
        m = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Rejection("not_json", f"cannot decode JSON: {exc}")
    return event_from_mapping(m)


def _source_dict(s: Source | None) -> dict[str, Any] | None:
    return None if s is None else {"ip": s.ip, "port": s.port, "transport": s.transport}


def event_to_dict(e: RegistrationEvent) -> dict[str, Any]:
    """The wire map of an event: only the fields its kind carries (docs/design.md section 4)."""
    d: dict[str, Any] = {
        "v": e.v,
        "kind": e.kind,
        "id": e.id,
        "node": e.node,
        "seq": e.seq,
        "ts": e.ts,
        "aor": e.aor,
        "call_id": e.call_id,
        "cseq": e.cseq,
        "source": _source_dict(e.source),
        "user_agent": e.user_agent,
        "path": list(e.path),
        "raw": e.raw,
    }
    if e.kind == "register":
        d["contacts"] = [
            {
                "uri": c.uri,
                "expires": c.expires,
                "q": c.q,
                "instance": c.instance,
                "reg_id": c.reg_id,
            }
            for c in e.contacts
        ]
        d["wildcard"] = e.wildcard
        d["expires"] = e.expires
    elif e.kind == "reject":
        d["status"] = e.status
        d["reason"] = e.reason
    else:
        d["contact"] = e.contact
        d["reason"] = e.reason
    return d


def encode_event(e: RegistrationEvent) -> bytes:
    """msgpack bytes of an event, as published to regstate.registrations."""
    packed: bytes = msgpack.packb(event_to_dict(e), use_bin_type=True)
    return packed


def encode_event_json(e: RegistrationEvent) -> bytes:
    """One JSON Lines record (without the newline)."""
    return orjson.dumps(event_to_dict(e))


# --- AorState ---------------------------------------------------------------


def binding_to_dict(b: Binding) -> dict[str, Any]:
    return {
        "key": b.key,
        "uri": b.uri,
        "expires_at": b.expires_at,
        "registered_at": b.registered_at,
        "refreshed_at": b.refreshed_at,
        "call_id": b.call_id,
        "cseq": b.cseq,
        "q": b.q,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "source": _source_dict(b.source),
        "user_agent": b.user_agent,
        "node": b.node,
        "path": list(b.path),
    }


def _reject_dict(r: Reject | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "ts": r.ts,
        "status": r.status,
        "reason": r.reason,
        "node": r.node,
        "source": _source_dict(r.source),
    }


def health_to_dict(h: Health) -> dict[str, Any]:
    return {
        "state": h.state,
        "since": h.since,
        "auth_failures": h.auth_failures,
        "last_reject": _reject_dict(h.last_reject),
        "retransmissions": h.retransmissions,
        "short_cycles": h.short_cycles,
        "last_expired_at": h.last_expired_at,
        "request_retransmissions": h.request_retransmissions,
        "retransmitted_request": h.retransmitted_request,
        "reply_lost": h.reply_lost,
        "last_grant_s": h.last_grant_s,
    }


def state_to_dict(s: AorState, *, internal: bool = False) -> dict[str, Any]:
    """AorState as a map. ``internal`` adds ``seen`` (dedup marks; table value only)."""
    d: dict[str, Any] = {
        "aor": s.aor,
        "version": s.version,
        "updated_ts": s.updated_ts,
        "contacts": [binding_to_dict(b) for b in s.contacts],
        "health": health_to_dict(s.health),
    }
    return _with_internal(d, s) if internal else d


def _with_internal(d: dict[str, Any], s: AorState) -> dict[str, Any]:
    """``d`` (the public map of ``s``) with what only the table value holds: ``seen``."""
    d["seen"] = dict(s.seen)
    return d


def encode_state(s: AorState, *, internal: bool = False) -> bytes:
    """JSON of an AorState (regstate.bindings, query API, replay)."""
    return orjson.dumps(state_to_dict(s, internal=internal))


def encode_state_forms(s: AorState) -> tuple[bytes, bytes]:
    """``(internal, public)`` JSON of one AorState, its map built once: the worker writes
    both for every state change (table value and regstate.bindings)."""
    public = orjson.dumps(state_to_dict(s))
    # The internal map is the public one with ``seen`` added last (_with_internal), so
    # its JSON is the public JSON with that member appended: one dump of the state.
    seen = orjson.dumps(_with_internal({}, s))
    return b"".join((public[:-1], b",", seen[1:])), public


def _source_from(d: Any) -> Source | None:
    if d is None:
        return None
    return Source(ip=d["ip"], port=d["port"], transport=d["transport"])


def _reject_from(d: Mapping[str, Any]) -> Reject:
    return Reject(d["ts"], d["status"], d["reason"], d["node"], _source_from(d.get("source")))


def state_from_dict(d: Mapping[str, Any]) -> AorState:
    """Inverse of :func:`state_to_dict`; raises KeyError/TypeError on a foreign shape."""
    h = d.get("health") or {}
    lr = h.get("last_reject")
    health = Health(
        state=h.get("state", "unregistered"),
        since=h.get("since", 0),
        auth_failures=h.get("auth_failures", 0),
        last_reject=None if lr is None else _reject_from(lr),
        retransmissions=h.get("retransmissions", 0),
        short_cycles=h.get("short_cycles", 0),
        last_expired_at=h.get("last_expired_at"),
        # Fields added later default when absent: values written before them still decode.
        request_retransmissions=h.get("request_retransmissions", 0),
        retransmitted_request=h.get("retransmitted_request"),
        reply_lost=h.get("reply_lost", False),
        last_grant_s=h.get("last_grant_s"),
    )
    contacts = tuple(
        Binding(
            key=c["key"],
            uri=c["uri"],
            expires_at=c["expires_at"],
            registered_at=c["registered_at"],
            refreshed_at=c["refreshed_at"],
            call_id=c["call_id"],
            cseq=c["cseq"],
            q=c.get("q"),
            instance=c.get("instance"),
            reg_id=c.get("reg_id"),
            source=_source_from(c.get("source")),
            user_agent=c.get("user_agent"),
            node=c["node"],
            path=tuple(c.get("path") or ()),
        )
        for c in d.get("contacts") or ()
    )
    return AorState(
        aor=d["aor"],
        version=d.get("version", 0),
        updated_ts=d.get("updated_ts", 0),
        contacts=contacts,
        health=health,
        seen=dict(d.get("seen") or {}),
    )


def decode_state(data: bytes) -> AorState:
    """Inverse of :func:`encode_state`."""
    return state_from_dict(orjson.loads(data))


# --- BindingEvent -------------------------------------------------------------


def binding_event_to_dict(e: BindingEvent) -> dict[str, Any]:
    return {
        "aor": e.aor,
        "version": e.version,
        "event": e.event,
        "key": e.key,
        "uri": e.uri,
        "ts": e.ts,
        "node": e.node,
        "call_id": e.call_id,
        "cseq": e.cseq,
        "expires_at": e.expires_at,
        "cause": e.cause,
    }


def encode_binding_event(e: BindingEvent) -> bytes:
    """JSON of a BindingEvent (regstate.binding-events)."""
    return orjson.dumps(binding_event_to_dict(e))


def binding_event_from_dict(d: Mapping[str, Any]) -> BindingEvent:
    return BindingEvent(
        aor=d["aor"],
        version=d["version"],
        event=d["event"],
        key=d.get("key"),
        uri=d.get("uri"),
        ts=d["ts"],
        node=d["node"],
        call_id=d["call_id"],
        cseq=d["cseq"],
        expires_at=d.get("expires_at"),
        cause=d["cause"],
    )
