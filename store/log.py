"""The event log service: domain events in, recorded events out.

It encodes ``wire`` events for a recorder and decodes what the recorder returns, adding the envelope (global
position, stream and version, event id, times, correlation and causation ids). Recorders see only bytes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import msgspec

from store.errors import InvalidAppend, UndecodableEvent
from store.recorder import ANY, NewEvent, Recorder, StoredEvent
from wire.checks import trusted
from wire.codec import UnknownEventType, decode_event, decode_events, encode, event_type, stored_type
from wire.events import Event
from wire.ids import new_event_id


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """A decoded event with its envelope."""

    position: int
    stream: str
    version: int
    event_id: uuid.UUID
    occurred_ns: int
    recorded_ns: int
    correlation: uuid.UUID | None
    causation: uuid.UUID | None
    event: Event


def _uuid(raw: bytes | None) -> uuid.UUID | None:
    return None if raw is None else uuid.UUID(bytes=raw)


_DECODE_ERRORS = (UnknownEventType, msgspec.ValidationError, msgspec.DecodeError)


def _decode_at(position: int, payload: bytes) -> Event:
    """Decode the event stored at ``position``; ``UndecodableEvent`` names the position and the type."""
    try:
        return decode_event(payload)
    except _DECODE_ERRORS as e:
        raise UndecodableEvent(position, stored_type(payload), str(e)) from None


def decode(row: StoredEvent) -> Recorded:
    """Raises ``UndecodableEvent`` (naming the position and the type) for an event this version cannot decode.
    Call inside ``trusted()`` for rows of the log itself."""
    event = _decode_at(row.position, row.payload)
    return Recorded(
        row.position,
        row.stream,
        row.version,
        uuid.UUID(bytes=row.event_id),
        row.occurred_ns,
        row.recorded_ns,
        _uuid(row.correlation),
        _uuid(row.causation),
        event,
    )


def decode_batch(first: int, payloads: list[bytes]) -> list[Event]:
    """Decode a replay batch of the log's own events (positions ``first`` onward, trusted). Raises
    ``UndecodableEvent`` naming the first position that does not decode and its type."""
    with trusted():
        try:
            return decode_events(payloads)
        except _DECODE_ERRORS:
            pass
        for position, payload in enumerate(payloads, first):
            _decode_at(position, payload)  # raises at the first that does not decode
    raise AssertionError("a batch that failed to decode decoded event by event")  # pragma: no cover


def encode_checked(event: Event) -> bytes:
    """Encode an event for the log, refusing one its reader would not decode: what the writer accepts, the
    reader must decode. (A Struct built in code skips its bounds — msgspec checks them only on decode.)"""
    payload = encode(event)
    try:
        decode_event(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise InvalidAppend(f"{event_type(event)}: {e}") from None
    return payload


class EventLog:
    def __init__(self, recorder: Recorder, clock: Callable[[], int] = time.time_ns) -> None:
        self.recorder = recorder
        self._clock = clock

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        expected_version: int = ANY,
        *,
        expected_head: int | None = None,
        event_ids: Sequence[uuid.UUID] | None = None,
        correlation: uuid.UUID | None = None,
        causation: uuid.UUID | None = None,
    ) -> list[int]:
        """Append events to one stream atomically; returns their global positions.

        Pass ``event_ids`` to make a retry safe: an append whose ids are stored already returns the stored
        positions instead of appending again. Pass ``expected_head`` to append only if nothing else was
        appended since that position (``WrongExpectedHead`` otherwise; checked in the writing transaction).
        """
        ids = list(event_ids) if event_ids is not None else [new_event_id() for _ in events]
        if len(ids) != len(events):
            raise ValueError(f"event_ids: {len(ids)} ids for {len(events)} events")
        now = self._clock()
        corr = None if correlation is None else correlation.bytes
        cause = None if causation is None else causation.bytes
        new = [
            NewEvent(i.bytes, event_type(e), encode_checked(e), now, corr, cause)
            for i, e in zip(ids, events, strict=True)
        ]
        return await self.recorder.append(stream, new, expected_version, expected_head=expected_head)

    # Events read back were checked when they were appended: decode them as trusted (see wire.checks).

    async def read_stream(self, stream: str, from_version: int = 0) -> list[Recorded]:
        rows = await self.recorder.read_stream(stream, from_version)
        with trusted():
            return [decode(r) for r in rows]

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[Recorded]:
        rows = await self.recorder.read_all(from_position, limit)
        with trusted():
            return [decode(r) for r in rows]

    async def subscribe(self, from_position: int = 1) -> AsyncIterator[Recorded]:
        async for row in self.recorder.subscribe(from_position):
            with trusted():
                recorded = decode(row)
            yield recorded
