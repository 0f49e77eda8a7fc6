"""Encoders and typed decoders, built once at import.

msgpack on NATS and in the event log, JSON on HTTP. UUIDs travel as 16 raw bytes in msgpack.
"""

from __future__ import annotations

from typing import Any

import msgspec

from wire.commands import Command, NodeMessage, Reply
from wire.events import EVENT_TYPES, Event


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


def encode(obj: Any) -> bytes:
    return _msgpack_encoder.encode(obj)


def encode_json(obj: Any) -> bytes:
    return _json_encoder.encode(obj)


def event_type(event: Event) -> str:
    return type(event).__name__


def decode_event(type_name: str, payload: bytes) -> Event:
    """Decode a stored event; its type must be one this version knows."""
    if type_name not in EVENT_TYPES:
        raise UnknownEventType(type_name)
    return event_decoder.decode(payload)
