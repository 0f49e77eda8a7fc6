"""Encoders and typed decoders, built once at import.

msgpack on NATS and in the event log, JSON on HTTP. UUIDs travel as 16 raw bytes in msgpack.
"""

from __future__ import annotations

from typing import Any

import msgspec

from wire import checks
from wire.commands import Command, ControlReply, NodeMessage, Reply
from wire.events import EVENT_TYPES, ID_CHECKS, Event


class UnknownEventType(ValueError):
    """A stored or received event whose type this version of Corral does not know."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown event type {type_name!r}")
        self.type_name = type_name


_msgpack_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_json_encoder = msgspec.json.Encoder()

event_decoder: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(Event)
command_decoder: msgspec.msgpack.Decoder[Command] = msgspec.msgpack.Decoder(Command)
reply_decoder: msgspec.msgpack.Decoder[Reply] = msgspec.msgpack.Decoder(Reply)
node_message_decoder: msgspec.msgpack.Decoder[NodeMessage] = msgspec.msgpack.Decoder(NodeMessage)
control_reply_decoder: msgspec.msgpack.Decoder[ControlReply] = msgspec.msgpack.Decoder(ControlReply)


def encode(obj: Any) -> bytes:
    return _msgpack_encoder.encode(obj)


def encode_json(obj: Any) -> bytes:
    return _json_encoder.encode(obj)


def event_type(event: Event) -> str:
    return type(event).__name__


_tag_only = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])


def decode_event(payload: bytes) -> Event:
    """Decode an event payload and check its ids and node names (skipped inside ``checks.trusted()``, for the
    log's own events). Raises ``UnknownEventType`` for a type this version does not know, and
    ``msgspec.ValidationError`` / ``DecodeError`` for a payload that is not a valid event."""
    try:
        event = event_decoder.decode(payload)
    except msgspec.ValidationError:
        unknown = _unknown_type(payload)
        if unknown is not None:
            raise unknown from None
        raise
    if not checks.is_trusted():
        _check_ids(event)
    return event


_events_decoder: msgspec.msgpack.Decoder[list[Event]] = msgspec.msgpack.Decoder(list[Event])


def decode_events(payloads: list[bytes]) -> list[Event]:
    """Decode many event payloads in one call (a msgpack array header before the concatenated payloads);
    errors are those of ``decode_event`` for the first bad payload."""
    try:
        events = _events_decoder.decode(b"\xdd" + len(payloads).to_bytes(4, "big") + b"".join(payloads))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return [decode_event(p) for p in payloads]  # raises the first payload's own error
    if not checks.is_trusted():
        for event in events:
            _check_ids(event)
    return events


def _check_ids(event: Event) -> None:
    try:
        checks.check_ids(event, ID_CHECKS[type(event)])
    except ValueError as e:
        raise msgspec.ValidationError(str(e)) from None


def _tag(payload: bytes) -> str | None:
    """The type tag of an event payload, if it is a map with a string ``type``."""
    try:
        tag = msgspec.msgpack.decode(_tag_only.decode(payload).get("type", msgspec.Raw(b"\xc0")))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return tag if isinstance(tag, str) else None


def stored_type(payload: bytes) -> str:
    """The type tag of an event payload, or ``"?"`` when it has none."""
    return _tag(payload) or "?"


def _unknown_type(payload: bytes) -> UnknownEventType | None:
    tag = _tag(payload)
    return UnknownEventType(tag) if tag is not None and tag not in EVENT_TYPES else None
