"""Recorders persist events as rows and bytes; they know nothing of the domain.

This module holds what every recorder shares: the row types, expected-version constants, the pure batch
planner (version checks and idempotency by event id), the head watch that wakes subscribers, and the
catch-up-then-live subscription built on ``read_all``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import msgspec

from store.errors import (
    DuplicateEventId,
    InvalidAppend,
    PayloadTooLarge,
    StoreClosed,
    StoreError,
    WrongExpectedHead,
    WrongExpectedVersion,
)

# Expected versions (KurrentDB's): a stream's current version is its last event's version, -1 when empty.
ANY = -2
NO_STREAM = -1
STREAM_EXISTS = -3

MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_EVENTS_PER_APPEND = 10_000
STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}")


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event to append, already encoded."""

    event_id: bytes  # 16 bytes (a UUID)
    type: str
    payload: bytes
    occurred_ns: int
    correlation: bytes | None = None
    causation: bytes | None = None
    schema: int = 1


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as recorded. ``position`` is global, contiguous and starts at 1; ``version`` is per stream
    and starts at 0."""

    position: int
    event_id: bytes
    stream: str
    version: int
    type: str
    schema: int
    occurred_ns: int
    recorded_ns: int
    correlation: bytes | None
    causation: bytes | None
    payload: bytes


# A replay batch: the position of its first event, then the payloads of consecutive positions.
ReplayFold = Callable[[int, list[bytes]], None]


class AppendRequest(NamedTuple):
    stream: str
    events: Sequence[NewEvent]
    expected_version: int
    expected_head: int | None = None  # append only if the log's head is exactly this position


class Existing(NamedTuple):
    """Where an already stored event id lives."""

    position: int
    stream: str
    version: int


class BatchPlan(NamedTuple):
    rows: list[StoredEvent]
    results: list[list[int] | StoreError]  # one per request: positions, or why nothing was written
    versions: dict[str, int]  # new current version of each stream the batch appended to


def validate_append(
    stream: str, events: Sequence[NewEvent], expected_version: int, expected_head: int | None = None
) -> None:
    """Reject an append that is malformed in itself, before it reaches any writer."""
    if expected_head is not None and expected_head < 0:
        raise InvalidAppend(f"expected_head: {expected_head} is not a log position")
    if not STREAM_NAME.fullmatch(stream):
        raise InvalidAppend(f"stream: {stream!r} is not a stream name (1 to 200 of [A-Za-z0-9._:/-])")
    if not events:
        raise InvalidAppend(f"stream {stream!r}: an append needs at least one event")
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise InvalidAppend(f"stream {stream!r}: {len(events)} events is over {MAX_EVENTS_PER_APPEND}")
    if expected_version < STREAM_EXISTS:
        raise InvalidAppend(f"expected_version: {expected_version} is not a version or ANY/NO_STREAM/EXISTS")
    seen: set[bytes] = set()
    for e in events:
        if len(e.event_id) != 16:
            raise InvalidAppend(f"event_id: must be 16 bytes, got {len(e.event_id)}")
        if e.event_id in seen:
            raise InvalidAppend(f"event_id: {e.event_id.hex()} appears twice in one append")
        seen.add(e.event_id)
        if len(e.payload) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(len(e.payload), MAX_PAYLOAD_BYTES)


def _version_ok(expected: int, current: int) -> bool:
    if expected == ANY:
        return True
    if expected == STREAM_EXISTS:
        return current >= 0
    return expected == current


def plan_batch(
    requests: Sequence[AppendRequest],
    versions: Mapping[str, int],
    existing: Mapping[bytes, Existing],
    head: int,
    recorded_ns: int,
) -> BatchPlan:
    """Decide a batch of appends against the stored state, as one transaction will write it.

    ``versions`` holds the current version of each stream the batch touches (absent: -1); ``existing`` the
    stored location of any of the batch's event ids. A request whose ids are all stored as exactly that
    append (same stream, consecutive versions, same order) is a retry: it gets the stored positions and
    writes nothing. A request that partly overlaps stored ids, or whose expected version is stale, fails
    alone; the others proceed.
    """
    current = dict(versions)
    known = dict(existing)
    rows: list[StoredEvent] = []
    results: list[list[int] | StoreError] = []
    changed: dict[str, int] = {}
    position = head
    for stream, events, expected, expected_head in requests:
        hits = [known.get(e.event_id) for e in events]
        if any(h is not None for h in hits):
            results.append(_replay_or_conflict(stream, events, hits))
            continue
        if expected_head is not None and expected_head != position:
            results.append(WrongExpectedHead(expected_head, position))
            continue
        version = current.get(stream, -1)
        if not _version_ok(expected, version):
            results.append(WrongExpectedVersion(stream, expected, version))
            continue
        positions = []
        for e in events:
            position += 1
            version += 1
            rows.append(
                StoredEvent(
                    position,
                    e.event_id,
                    stream,
                    version,
                    e.type,
                    e.schema,
                    e.occurred_ns,
                    recorded_ns,
                    e.correlation,
                    e.causation,
                    e.payload,
                )
            )
            known[e.event_id] = Existing(position, stream, version)
            positions.append(position)
        current[stream] = changed[stream] = version
        results.append(positions)
    return BatchPlan(rows, results, changed)


def _replay_or_conflict(stream: str, events: Sequence[NewEvent], hits: list[Existing | None]) -> list[int] | StoreError:
    stored = next((e.event_id for e, h in zip(events, hits, strict=True) if h is not None), b"")
    if any(h is None for h in hits):
        return DuplicateEventId(stream, stored, "is stored, but the rest of this append is not")
    first = hits[0]
    for i, (e, hit) in enumerate(zip(events, hits, strict=True)):
        assert hit is not None and first is not None
        if hit.stream != stream:
            return DuplicateEventId(stream, e.event_id, f"is stored in stream {hit.stream!r}")
        if hit.version != first.version + i:
            return DuplicateEventId(stream, e.event_id, "is stored as part of a different append")
    return [h.position for h in hits if h is not None]


class HeadWatch:
    """The last committed position, and a way to wait until it moves past a given one."""

    def __init__(self, head: int = 0) -> None:
        self.head = head
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False

    def advance(self, head: int) -> None:
        if head <= self.head:
            return
        self.head = head
        waiters, self._waiters = self._waiters, set()
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def close(self) -> None:
        self._closed = True
        waiters, self._waiters = self._waiters, set()
        for w in waiters:
            if not w.done():
                w.set_exception(StoreClosed("the recorder was closed"))

    async def wait_beyond(self, position: int) -> None:
        while self.head <= position:
            if self._closed:
                raise StoreClosed("the recorder was closed")
            fut = asyncio.get_running_loop().create_future()
            self._waiters.add(fut)
            try:
                await fut
            finally:
                self._waiters.discard(fut)


class Recorder(Protocol):
    """What every recorder (in-memory, SQLite, later JetStream) provides; one contract suite checks it."""

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int, *, expected_head: int | None = None
    ) -> list[int]:
        """Append atomically, if the stream is at ``expected_version`` and (given ``expected_head``) the log's
        head is at that position, both checked inside the transaction that writes."""
        ...

    async def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        limit: int | None = None,
        *,
        to_version: int | None = None,
        backwards: bool = False,
    ) -> list[StoredEvent]:
        """The stream's events with versions in [``from_version``, ``to_version``], at most ``limit``: the
        lowest first, or with ``backwards`` the highest first (the latest N, a snapshot before them)."""
        ...

    async def read_all(
        self,
        from_position: int = 1,
        limit: int = 1000,
        *,
        to_position: int | None = None,
        types: Sequence[str] | None = None,
    ) -> list[StoredEvent]:
        """Events from ``from_position`` on, up to ``to_position`` (inclusive), at most ``limit``; with
        ``types`` only events of those types (filtered by the store, not its caller). Raises
        ``PositionTooOld`` when ``from_position`` was truncated away."""
        ...

    async def replay(
        self, from_position: int, fold: ReplayFold, batch: int = 10_000, to_position: int | None = None
    ) -> int:
        """Hand every event from ``from_position`` to the head (or to ``to_position``, if lower) to ``fold``, in
        order, as batches of payloads at consecutive positions (``fold(first_position, payloads)``); return the
        last position handed over (``from_position - 1`` if none). ``fold`` may run on another thread: it must
        touch only what the caller does not use until ``replay`` returns. Raises ``PositionTooOld`` like
        ``read_all``."""
        ...

    def subscribe(self, from_position: int = 1, batch: int = 1000) -> AsyncIterator[StoredEvent]: ...

    async def wait_beyond(self, position: int) -> None: ...

    async def stream_version(self, stream: str) -> int: ...

    async def head(self) -> int: ...

    async def oldest(self) -> int: ...

    async def truncate_before(self, position: int) -> int: ...

    async def save_snapshot(self, name: str, position: int, data: bytes) -> None: ...

    async def load_snapshot(self, name: str) -> tuple[int, bytes] | None: ...

    async def close(self) -> None: ...


class RecorderBase:
    """Shared behaviour: the head watch and the subscription."""

    def __init__(self) -> None:
        self._watch = HeadWatch()

    async def read_all(
        self,
        from_position: int = 1,
        limit: int = 1000,
        *,
        to_position: int | None = None,
        types: Sequence[str] | None = None,
    ) -> list[StoredEvent]:
        raise NotImplementedError

    async def wait_beyond(self, position: int) -> None:
        """Return once the log's head is past ``position`` (raises ``StoreClosed`` if the recorder closes)."""
        await self._watch.wait_beyond(position)

    async def subscribe(self, from_position: int = 1, batch: int = 1000) -> AsyncIterator[StoredEvent]:
        """Every event from ``from_position`` on, in order, then live ones as they commit; never one missed
        or repeated. Raises ``PositionTooOld`` if the log was truncated past the reader."""
        position = max(from_position, 1)
        while True:
            rows = await self.read_all(position, batch)
            for row in rows:
                yield row
            if rows:
                position = rows[-1].position + 1
            if len(rows) < batch:
                await self._watch.wait_beyond(position - 1)
