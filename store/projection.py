"""The one owner of the cluster state: a projection object that folds the log into ``ClusterState`` on the event
loop, for everyone (the scheduler, the HTTP handlers, the node protocol) to read.

- Payloads are read and decoded on a worker thread; folding happens on the loop, a chunk at a time, so a reader
  never sees the state change under it (no fold runs while a reader's synchronous code runs) and always sees a
  prefix of the log (``state.position``).
- ``await at_least(position)`` returns once the state holds everything up to ``position`` (a writer that must
  see its own append waits for its position); ``await catch_up()`` folds to the head.
- Observers see each event as it is folded, with the container view it changed (before the fold), so a reader
  that keeps derived data (the scheduler's snapshot) updates it without folding a second copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from store.errors import WrongExpectedVersion
from store.log import EventLog, decode_batch
from store.projections import ClusterState, ContainerView, apply, apply_all, version
from store.projector import load_state
from store.recorder import Recorder
from wire import events as ev

Observer = Callable[[int, ev.Event, ContainerView | None], None]

CHUNK = 5_000  # events folded between two yields to the loop


class Projection:
    def __init__(self, recorder: Recorder, state: ClusterState | None = None, chunk: int = CHUNK) -> None:
        self.recorder = recorder
        self.chunk = chunk
        self.state = state if state is not None else ClusterState()
        self.observers: list[Observer] = []
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, recorder: Recorder) -> Projection:
        """The latest snapshot plus the log after it (folded before anyone can read it)."""
        return cls(recorder, await load_state(recorder))

    async def at_least(self, position: int) -> ClusterState:
        if self.state.position < position:
            await self.catch_up()
        return self.state

    async def catch_up(self) -> ClusterState:
        """Fold what the log holds beyond the state, up to the head as it is now."""
        async with self._lock:
            head = await self.recorder.head()
            decoded: list[tuple[int, list[ev.Event]]] = []

            def collect(first: int, payloads: list[bytes]) -> None:
                decoded.append((first, decode_batch(first, payloads)))  # decoding only: the state is untouched

            while self.state.position < head:
                end = min(head, self.state.position + self.chunk)
                await self.recorder.replay(self.state.position + 1, collect, self.chunk, to_position=end)
                if not decoded:
                    break
                for first, events in decoded:
                    self._fold(first, events)
                decoded.clear()
                if self.state.position < head:
                    await asyncio.sleep(0)  # a long catch-up leaves room for heartbeats and requests
        return self.state

    async def decide(
        self,
        log: EventLog,
        entity: tuple[str, str],
        stream: str,
        decide: Callable[[ClusterState], Sequence[ev.Event]],
        attempts: int = 8,
    ) -> list[int]:
        """Append what ``decide`` makes of the current state (nothing, if it returns nothing), against the
        version of ``entity`` (kind, id) that it saw: if the entity changed meanwhile, decide again on the
        newer state. Every decision is an append with the version it was checked against."""
        for attempt in range(attempts):
            state = await self.catch_up()
            events = list(decide(state))
            if not events:
                return []
            try:
                return await log.append(stream, events, version(state, *entity))
            except WrongExpectedVersion:
                if attempt == attempts - 1:
                    raise
        return []

    def _fold(self, first: int, events: list[ev.Event]) -> None:
        state = self.state
        if not self.observers:
            apply_all(state, zip(range(first, first + len(events)), events, strict=True))
            return
        containers = state.containers
        for position, event in zip(range(first, first + len(events)), events, strict=True):
            cid = getattr(event, "container_id", None)
            before = containers.get(cid) if isinstance(cid, str) else None
            apply(state, position, event)
            for observe in self.observers:
                observe(position, event, before)
