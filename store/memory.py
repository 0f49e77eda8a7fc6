"""An in-memory recorder: the reference implementation of the recorder contract, for tests and tools."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from store.errors import InvalidAppend, PositionTooOld, StoreClosed, StoreError
from store.recorder import (
    AppendRequest,
    Existing,
    NewEvent,
    RecorderBase,
    ReplayFold,
    StoredEvent,
    plan_batch,
    validate_append,
)


class MemoryRecorder(RecorderBase):
    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        super().__init__()
        self._clock = clock
        self._events: list[StoredEvent] = []  # positions oldest .. head
        self._oldest = 1
        self._streams: dict[str, list[StoredEvent]] = {}
        self._versions: dict[str, int] = {}
        self._by_id: dict[bytes, Existing] = {}
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the recorder is closed")

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int, *, expected_head: int | None = None
    ) -> list[int]:
        self._check_open()
        validate_append(stream, events, expected_version, expected_head)
        request = AppendRequest(stream, tuple(events), expected_version, expected_head)
        existing = {e.event_id: self._by_id[e.event_id] for e in events if e.event_id in self._by_id}
        plan = plan_batch(
            [request], {stream: self._versions.get(stream, -1)}, existing, self._watch.head, self._clock()
        )
        result = plan.results[0]
        if isinstance(result, StoreError):
            raise result
        for row in plan.rows:
            self._events.append(row)
            self._streams.setdefault(row.stream, []).append(row)
            self._by_id[row.event_id] = Existing(row.position, row.stream, row.version)
        self._versions.update(plan.versions)
        if plan.rows:
            self._watch.advance(plan.rows[-1].position)
        return result

    async def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        limit: int | None = None,
        *,
        to_version: int | None = None,
        backwards: bool = False,
    ) -> list[StoredEvent]:
        self._check_open()
        top = to_version if to_version is not None else float("inf")
        rows = [r for r in self._streams.get(stream, ()) if from_version <= r.version <= top]
        if backwards:
            rows.reverse()
        return rows if limit is None else rows[: max(limit, 0)]

    async def read_all(
        self,
        from_position: int = 1,
        limit: int = 1000,
        *,
        to_position: int | None = None,
        types: Sequence[str] | None = None,
    ) -> list[StoredEvent]:
        self._check_open()
        start = max(from_position, 1)
        if start < self._oldest:
            raise PositionTooOld(start, self._oldest)
        rows = self._events[start - self._oldest :]
        if to_position is not None:
            rows = rows[: max(to_position - start + 1, 0)]
        if types is not None:
            wanted = set(types)
            return [r for r in rows if r.type in wanted][:limit]
        return rows[:limit]

    async def replay(
        self, from_position: int, fold: ReplayFold, batch: int = 10_000, to_position: int | None = None
    ) -> int:
        position = max(from_position, 1)
        while (to_position is None or position <= to_position) and (rows := await self.read_all(position, batch)):
            if to_position is not None:
                rows = rows[: to_position - position + 1]
            fold(position, [r.payload for r in rows])
            position = rows[-1].position + 1
        return position - 1

    async def stream_version(self, stream: str) -> int:
        return self._versions.get(stream, -1)

    async def head(self) -> int:
        return self._watch.head

    async def oldest(self) -> int:
        return self._oldest

    async def truncate_before(self, position: int) -> int:
        self._check_open()
        if position > self._watch.head + 1:
            raise InvalidAppend(f"position: cannot truncate before {position}, past the head {self._watch.head}")
        if position <= self._oldest:
            return 0
        cut = position - self._oldest
        removed, self._events = self._events[:cut], self._events[cut:]
        for row in removed:
            del self._by_id[row.event_id]
        for stream in {r.stream for r in removed}:
            self._streams[stream] = [r for r in self._streams[stream] if r.position >= position]
        self._oldest = position
        return len(removed)

    async def save_snapshot(self, name: str, position: int, data: bytes) -> None:
        self._check_open()
        self._snapshots[name] = (position, bytes(data))

    async def load_snapshot(self, name: str) -> tuple[int, bytes] | None:
        return self._snapshots.get(name)

    async def close(self) -> None:
        self._closed = True
        self._watch.close()
