"""Records and codecs shared by every part of regstate (docs/design.md section 4)."""

from schemas.codec import (
    Rejection,
    decode_event,
    decode_event_json,
    decode_state,
    encode_binding_event,
    encode_event,
    encode_event_json,
    encode_state,
    encode_state_forms,
    event_from_mapping,
    event_to_dict,
    state_from_dict,
    state_to_dict,
)
from schemas.events import (
    SCHEMA_VERSION,
    ContactEntry,
    RegistrationEvent,
    Source,
    ending_event,
    event_id,
)
from schemas.state import AorState, Binding, BindingEvent, Health, Reject

__all__ = [
    "SCHEMA_VERSION",
    "AorState",
    "Binding",
    "BindingEvent",
    "ContactEntry",
    "Health",
    "RegistrationEvent",
    "Reject",
    "Rejection",
    "Source",
    "decode_event",
    "decode_event_json",
    "decode_state",
    "encode_binding_event",
    "encode_event",
    "encode_event_json",
    "encode_state",
    "encode_state_forms",
    "ending_event",
    "event_from_mapping",
    "event_id",
    "event_to_dict",
    "state_from_dict",
    "state_to_dict",
]
