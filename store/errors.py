"""Errors the event log raises. Each says what was asked and what is true, so a caller can act on it."""

from __future__ import annotations

from wire.codec import UnknownEventType


class StoreError(Exception):
    """Base of the store's errors."""


class WrongExpectedVersion(StoreError):
    """An append's expected version does not match the stream; nothing was written."""

    def __init__(self, stream: str, expected: int, current: int) -> None:
        super().__init__(f"stream {stream!r}: expected version {expected}, current version is {current}")
        self.stream = stream
        self.expected = expected
        self.current = current


class WrongExpectedHead(StoreError):
    """An append made on condition that the log's head is a given position (a compare-and-set on the whole
    log, as ``If-Match`` asks) found the log moved on; nothing was written."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected the log's head at {expected}, it is at {current}")
        self.expected = expected
        self.current = current


class DuplicateEventId(StoreError):
    """Some event ids of an append are stored already, but not as this exact append; nothing was written."""

    def __init__(self, stream: str, event_id: bytes, detail: str) -> None:
        super().__init__(f"stream {stream!r}: event id {event_id.hex()} {detail}")
        self.stream = stream
        self.event_id = event_id


class PositionTooOld(StoreError):
    """The log was truncated past the asked position; re-read state from a snapshot (Kubernetes: 410 Gone)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"position {requested} was truncated away; the oldest position still kept is {oldest}")
        self.requested = requested
        self.oldest = oldest


class PayloadTooLarge(StoreError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"event payload of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class InvalidAppend(StoreError):
    """An append that is malformed in itself (empty, bad stream name, bad expected version)."""


class UndecodableEvent(StoreError):
    """A stored event this version cannot decode: a replay stops here rather than skip or invent a fact."""

    def __init__(self, position: int, type_name: str, reason: str) -> None:
        super().__init__(f"the event at position {position} ({type_name}) cannot be decoded: {reason}")
        self.position = position
        self.type_name = type_name
        self.reason = reason


class StoreClosed(StoreError):
    """The recorder is closed; the append was not taken."""


__all__ = [
    "DuplicateEventId",
    "InvalidAppend",
    "PayloadTooLarge",
    "PositionTooOld",
    "StoreClosed",
    "StoreError",
    "UndecodableEvent",
    "UnknownEventType",
    "WrongExpectedHead",
    "WrongExpectedVersion",
]
