"""Concurrent appenders with random expected versions never produce two events with the same (stream, version)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.errors import WrongExpectedVersion
from store.memory import MemoryRecorder
from store.recorder import ANY, NO_STREAM, STREAM_EXISTS, NewEvent, Recorder
from store.sqlite import SqliteRecorder

expected_versions = st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS, 0, 1, 2, 3, 5, 8])
appends = st.lists(
    st.tuples(
        st.integers(0, 4),  # appender task
        st.sampled_from(["a", "b", "c"]),  # stream
        expected_versions,
        st.integers(1, 3),  # events in the append
        st.booleans(),  # retry it with the same ids
    ),
    min_size=1,
    max_size=40,
)


async def run(recorder: Recorder, plan: list[tuple[int, str, int, int, bool]], seed: int) -> None:
    ids = iter(range(seed, seed + 10_000))
    accepted: dict[bytes, int] = {}

    async def appender(task: int) -> None:
        for who, stream, expected, n, retry in plan:
            if who != task:
                continue
            batch = [NewEvent(next(ids).to_bytes(16, "big"), "T", b"", 1) for _ in range(n)]
            try:
                positions = await recorder.append(stream, batch, expected)
            except WrongExpectedVersion:
                continue
            for e, p in zip(batch, positions, strict=True):
                accepted[e.event_id] = p
            if retry:
                again = await recorder.append(stream, batch, expected)
                assert again == positions
            await asyncio.sleep(0)

    await asyncio.gather(*(appender(t) for t in range(5)))
    rows = await recorder.read_all(1, 100_000)
    assert [r.position for r in rows] == list(range(1, len(rows) + 1))
    assert {r.event_id: r.position for r in rows} == accepted
    pairs = [(r.stream, r.version) for r in rows]
    assert len(pairs) == len(set(pairs))
    for stream in {s for s, _ in pairs}:
        versions = [r.version for r in await recorder.read_stream(stream)]
        assert versions == list(range(len(versions)))


@given(appends, st.integers(0, 2**32))
def test_memory_recorder(plan: list[tuple[int, str, int, int, bool]], seed: int) -> None:
    async def go() -> None:
        await run(MemoryRecorder(), plan, seed)

    asyncio.run(go())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appends, st.integers(0, 2**32))
def test_sqlite_recorder(plan: list[tuple[int, str, int, int, bool]], seed: int) -> None:
    async def go(path: Path) -> None:
        recorder = await SqliteRecorder.open(path, synchronous="OFF")
        try:
            await run(recorder, plan, seed)
        finally:
            await recorder.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(go(Path(tmp) / "log.db"))
