"""One contract, every recorder: each backend subclasses ``RecorderContract`` and passes the same suite."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.bench import realistic_log
from store.errors import (
    DuplicateEventId,
    InvalidAppend,
    PayloadTooLarge,
    PositionTooOld,
    StoreClosed,
    WrongExpectedHead,
    WrongExpectedVersion,
)
from store.log import EventLog
from store.memory import MemoryRecorder
from store.projection import Projection
from store.projections import ContainerState
from store.projector import load_state
from store.recorder import ANY, MAX_PAYLOAD_BYTES, NO_STREAM, STREAM_EXISTS, Recorder, StoredEvent
from store.sqlite import SqliteRecorder
from tests.builders import new_event
from wire.ids import container_stream, node_stream, service_stream

CLOCK_NS = 1_700_000_000_000_000_000


def clock() -> int:
    return CLOCK_NS


async def collect(it: AsyncIterator[StoredEvent], n: int, timeout: float = 10) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    async with asyncio.timeout(timeout):
        async for row in it:
            out.append(row)
            if len(out) == n:
                break
    return out


class RecorderContract:
    @pytest.fixture
    async def recorder(self, tmp_path: Path) -> AsyncIterator[Recorder]:
        raise NotImplementedError
        yield

    # --- append and versions ---------------------------------------------------------------------------------

    async def test_append_to_new_stream_numbers_positions_and_versions(self, recorder: Recorder) -> None:
        a, b = new_event(), new_event()
        assert await recorder.append("s", [a, b], NO_STREAM) == [1, 2]
        rows = await recorder.read_stream("s")
        assert [(r.position, r.version, r.event_id) for r in rows] == [(1, 0, a.event_id), (2, 1, b.event_id)]
        assert await recorder.stream_version("s") == 1
        assert await recorder.head() == 2

    async def test_positions_are_global_and_contiguous_across_streams(self, recorder: Recorder) -> None:
        await recorder.append("a", [new_event()], NO_STREAM)
        await recorder.append("b", [new_event(), new_event()], NO_STREAM)
        await recorder.append("a", [new_event()], 0)
        rows = await recorder.read_all(1)
        assert [(r.position, r.stream, r.version) for r in rows] == [(1, "a", 0), (2, "b", 0), (3, "b", 1), (4, "a", 1)]

    async def test_envelope_round_trips(self, recorder: Recorder) -> None:
        e = new_event("Thing", b"\x00payload", occurred_ns=123, correlation=b"c" * 16, causation=b"d" * 16)
        await recorder.append("s", [e], ANY)
        [row] = await recorder.read_all(1)
        assert row == StoredEvent(1, e.event_id, "s", 0, "Thing", 1, 123, CLOCK_NS, b"c" * 16, b"d" * 16, e.payload)

    @pytest.mark.parametrize(
        ("expected", "current_events", "ok"),
        [
            (ANY, 0, True),
            (ANY, 2, True),
            (NO_STREAM, 0, True),
            (NO_STREAM, 1, False),
            (STREAM_EXISTS, 0, False),
            (STREAM_EXISTS, 1, True),
            (0, 1, True),
            (1, 1, False),
            (0, 2, False),
            (1, 2, True),
            (5, 0, False),
        ],
    )
    async def test_expected_version(self, recorder: Recorder, expected: int, current_events: int, ok: bool) -> None:
        if current_events:
            await recorder.append("s", [new_event() for _ in range(current_events)], ANY)
        head = await recorder.head()
        if ok:
            await recorder.append("s", [new_event()], expected)
            assert await recorder.stream_version("s") == current_events
        else:
            with pytest.raises(WrongExpectedVersion) as err:
                await recorder.append("s", [new_event()], expected)
            assert (err.value.stream, err.value.expected, err.value.current) == ("s", expected, current_events - 1)
            assert await recorder.head() == head

    # --- compare-and-set on the head (If-Match) -------------------------------------------------------------------

    async def test_expected_head_appends_only_on_an_unmoved_log(self, recorder: Recorder) -> None:
        await recorder.append("a", [new_event(), new_event()], ANY)
        assert await recorder.append("b", [new_event()], NO_STREAM, expected_head=2) == [3]
        with pytest.raises(WrongExpectedHead) as err:
            await recorder.append("c", [new_event()], NO_STREAM, expected_head=2)
        assert (err.value.expected, err.value.current) == (2, 3)
        assert await recorder.head() == 3
        assert await recorder.stream_version("c") == -1

    async def test_expected_head_in_one_group_commit_lets_exactly_one_win(self, recorder: Recorder) -> None:
        await recorder.append("a", [new_event()], ANY)
        results = await asyncio.gather(
            *(recorder.append(f"s{i}", [new_event()], NO_STREAM, expected_head=1) for i in range(5)),
            return_exceptions=True,
        )
        assert [r for r in results if not isinstance(r, BaseException)] == [[2]]
        assert all(isinstance(r, WrongExpectedHead) for r in results if isinstance(r, BaseException))
        assert await recorder.head() == 2

    async def test_a_retry_of_a_stored_append_wins_over_a_moved_head(self, recorder: Recorder) -> None:
        e = new_event()
        first = await recorder.append("s", [e], NO_STREAM, expected_head=0)
        await recorder.append("t", [new_event()], ANY)
        assert await recorder.append("s", [e], NO_STREAM, expected_head=0) == first

    # --- idempotency ---------------------------------------------------------------------------------------------

    async def test_retry_with_same_ids_returns_stored_positions(self, recorder: Recorder) -> None:
        batch = [new_event(), new_event()]
        first = await recorder.append("s", batch, NO_STREAM)
        await recorder.append("other", [new_event()], ANY)
        # The retry's expected version is stale now; the ids decide.
        assert await recorder.append("s", batch, NO_STREAM) == first
        assert await recorder.head() == 3
        assert await recorder.stream_version("s") == 1

    async def test_retry_batched_with_new_appends(self, recorder: Recorder) -> None:
        stored = [new_event(), new_event()]
        first = await recorder.append("s", stored, ANY)
        fresh = new_event()
        results = await asyncio.gather(
            recorder.append("t", [new_event()], NO_STREAM),
            recorder.append("s", stored, ANY),  # a retry that expects nothing in particular
            recorder.append("s", [fresh], 1),
        )
        assert results[1] == first
        assert sorted(results[0] + results[2]) == [3, 4]
        assert [r.event_id for r in await recorder.read_stream("s")] == [e.event_id for e in [*stored, fresh]]

    async def test_partial_overlap_is_rejected_and_writes_nothing(self, recorder: Recorder) -> None:
        a, b = new_event(), new_event()
        await recorder.append("s", [a], NO_STREAM)
        with pytest.raises(DuplicateEventId):
            await recorder.append("s", [a, b], ANY)
        with pytest.raises(DuplicateEventId):
            await recorder.append("s", [b, a], ANY)
        assert await recorder.head() == 1

    async def test_same_id_in_another_stream_is_rejected(self, recorder: Recorder) -> None:
        a = new_event()
        await recorder.append("s", [a], NO_STREAM)
        with pytest.raises(DuplicateEventId, match="stored in stream 's'"):
            await recorder.append("t", [a], NO_STREAM)
        assert await recorder.stream_version("t") == -1

    async def test_reordered_retry_is_rejected(self, recorder: Recorder) -> None:
        a, b = new_event(), new_event()
        await recorder.append("s", [a, b], NO_STREAM)
        with pytest.raises(DuplicateEventId, match="different append"):
            await recorder.append("s", [b, a], NO_STREAM)

    async def test_concurrent_duplicates_append_once(self, recorder: Recorder) -> None:
        batch = [new_event(), new_event()]
        results = await asyncio.gather(*(recorder.append("s", batch, ANY) for _ in range(10)))
        assert all(r == results[0] for r in results)
        assert await recorder.head() == 2

    # --- bad input -------------------------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("stream", "count", "expected", "error", "match"),
        [
            ("", 1, ANY, InvalidAppend, "stream"),
            ("has space", 1, ANY, InvalidAppend, "stream"),
            ("x" * 201, 1, ANY, InvalidAppend, "stream"),
            ("s", 0, ANY, InvalidAppend, "at least one event"),
            ("s", 1, -7, InvalidAppend, "expected_version"),
        ],
    )
    async def test_malformed_appends(
        self, recorder: Recorder, stream: str, count: int, expected: int, error: type, match: str
    ) -> None:
        with pytest.raises(error, match=match):
            await recorder.append(stream, [new_event() for _ in range(count)], expected)
        assert await recorder.head() == 0

    async def test_duplicate_ids_in_one_append(self, recorder: Recorder) -> None:
        e = new_event()
        with pytest.raises(InvalidAppend, match="twice"):
            await recorder.append("s", [e, e], ANY)
        assert await recorder.head() == 0

    async def test_bad_event_id_length(self, recorder: Recorder) -> None:
        from store.recorder import NewEvent

        with pytest.raises(InvalidAppend, match="16 bytes"):
            await recorder.append("s", [NewEvent(b"short", "T", b"", 1)], ANY)

    async def test_oversized_payload_writes_nothing(self, recorder: Recorder) -> None:
        ok = new_event()
        big = new_event(payload=b"x" * (MAX_PAYLOAD_BYTES + 1))
        with pytest.raises(PayloadTooLarge) as err:
            await recorder.append("s", [ok, big], ANY)
        assert err.value.size == MAX_PAYLOAD_BYTES + 1
        assert await recorder.head() == 0
        assert await recorder.read_stream("s") == []

    async def test_one_failing_append_does_not_fail_its_batch_neighbours(self, recorder: Recorder) -> None:
        await recorder.append("s", [new_event()], NO_STREAM)
        results = await asyncio.gather(
            recorder.append("a", [new_event()], NO_STREAM),
            recorder.append("s", [new_event()], NO_STREAM),  # stale
            recorder.append("b", [new_event()], NO_STREAM),
            return_exceptions=True,
        )
        assert isinstance(results[1], WrongExpectedVersion)
        assert sorted(r[0] for r in (results[0], results[2])) == [2, 3]  # type: ignore[index]

    async def test_concurrent_writers_to_one_stream_never_share_a_version(self, recorder: Recorder) -> None:
        async def writer() -> int:
            wins = 0
            for _ in range(20):
                version = await recorder.stream_version("s")
                try:
                    await recorder.append("s", [new_event()], version)
                    wins += 1
                except WrongExpectedVersion:
                    pass
            return wins

        wins = await asyncio.gather(*(writer() for _ in range(8)))
        rows = await recorder.read_stream("s")
        assert [r.version for r in rows] == list(range(sum(wins)))

    # --- reads -----------------------------------------------------------------------------------------------------

    async def test_read_stream_from_version_and_limit(self, recorder: Recorder) -> None:
        await recorder.append("s", [new_event() for _ in range(5)], ANY)
        assert [r.version for r in await recorder.read_stream("s", 2)] == [2, 3, 4]
        assert [r.version for r in await recorder.read_stream("s", 1, limit=2)] == [1, 2]
        assert await recorder.read_stream("missing") == []

    async def test_read_stream_backwards_and_bounded(self, recorder: Recorder) -> None:
        """What eventsourcing's recorders offer: the latest N (a snapshot, then the events after it), ranges."""
        await recorder.append("s", [new_event() for _ in range(6)], ANY)
        await recorder.append("t", [new_event()], ANY)
        assert [r.version for r in await recorder.read_stream("s", backwards=True, limit=2)] == [5, 4]
        assert [r.version for r in await recorder.read_stream("s", 1, to_version=3)] == [1, 2, 3]
        assert [r.version for r in await recorder.read_stream("s", 1, to_version=3, backwards=True)] == [3, 2, 1]
        assert [r.version for r in await recorder.read_stream("s", to_version=4, backwards=True, limit=1)] == [4]
        assert await recorder.read_stream("s", 4, to_version=3) == []
        assert await recorder.read_stream("s", limit=0) == []
        assert await recorder.read_stream("missing", backwards=True) == []

    async def test_read_all_bounded_and_filtered_by_type(self, recorder: Recorder) -> None:
        for i in range(8):
            await recorder.append(f"s{i}", [new_event(type_="Even" if i % 2 == 0 else "Odd")], ANY)
        assert [r.position for r in await recorder.read_all(2, to_position=4)] == [2, 3, 4]
        assert [r.position for r in await recorder.read_all(2, limit=2, to_position=6)] == [2, 3]
        assert await recorder.read_all(5, to_position=4) == []
        assert [r.position for r in await recorder.read_all(types=["Odd"])] == [2, 4, 6, 8]
        assert [r.position for r in await recorder.read_all(3, limit=2, types=["Even"])] == [3, 5]
        assert [r.position for r in await recorder.read_all(types=["Even", "Odd"], to_position=3)] == [1, 2, 3]
        assert await recorder.read_all(types=[]) == []
        assert await recorder.read_all(types=["Nothing"]) == []
        await recorder.truncate_before(4)
        with pytest.raises(PositionTooOld):
            await recorder.read_all(2, types=["Odd"])
        assert [r.position for r in await recorder.read_all(4, types=["Odd"])] == [4, 6, 8]

    async def test_read_all_pages(self, recorder: Recorder) -> None:
        for i in range(7):
            await recorder.append(f"s{i}", [new_event()], ANY)
        assert [r.position for r in await recorder.read_all(3, limit=2)] == [3, 4]
        assert [r.position for r in await recorder.read_all(6)] == [6, 7]
        assert await recorder.read_all(8) == []
        assert [r.position for r in await recorder.read_all(0, limit=1)] == [1]

    async def test_replay_hands_over_every_event_in_batches(self, recorder: Recorder) -> None:
        for i in range(7):
            await recorder.append(f"s{i % 2}", [new_event(f"T{i}", bytes([i]))], ANY)
        batches: list[tuple[int, list[bytes]]] = []

        def fold(first: int, payloads: list[bytes]) -> None:
            batches.append((first, list(payloads)))

        assert await recorder.replay(2, fold, batch=4) == 7
        full = await recorder.read_all(2)
        assert batches == [(2, [r.payload for r in full[:4]]), (6, [r.payload for r in full[4:]])]
        assert await recorder.replay(8, fold) == 7
        assert len(batches) == 2
        batches.clear()
        assert await recorder.replay(2, fold, batch=2, to_position=4) == 4  # stops at to_position
        assert batches == [(2, [r.payload for r in full[:2]]), (4, [full[2].payload])]
        assert await recorder.replay(5, fold, to_position=4) == 4
        await recorder.truncate_before(3)
        with pytest.raises(PositionTooOld):
            await recorder.replay(1, fold)

    async def test_the_projection_folds_on_the_loop_while_readers_read(self, recorder: Recorder) -> None:
        """One owner of state: a catch-up of a realistic log while readers iterate the state, yielding between
        reads. No reader sees a dictionary change under it; each sees a growing prefix; the end equals a fresh
        replay."""
        log = EventLog(recorder)
        events = realistic_log(12_000)
        await asyncio.gather(*(log.append(stream, [e]) for stream, e in events[:10]))  # a few first
        projection = Projection(recorder, chunk=500)  # many yields between chunks: readers run in between
        await projection.catch_up()
        for i in range(10, len(events), 500):
            await asyncio.gather(*(log.append(stream, [e]) for stream, e in events[i : i + 500]))
        seen: list[int] = []
        catching_up = asyncio.ensure_future(projection.catch_up())

        async def reader() -> None:
            while not catching_up.done():
                state = projection.state
                before = state.position
                running = sum(1 for c in state.containers.values() if c.state is ContainerState.RUNNING)
                held = sum(len(n.allocations) for n in state.nodes.values())
                assert state.position == before, "the state changed while a reader read it"
                assert running <= held + len(state.containers)
                seen.append(before)
                await asyncio.sleep(0.002)  # a reader now and then, never a busy loop that starves the replay

        await asyncio.gather(catching_up, reader(), reader())
        assert seen and seen == sorted(seen), "the readers ran during the catch-up and saw it only advance"
        assert projection.state == await load_state(recorder)
        streams = {"container": container_stream, "node": node_stream, "service": service_stream}
        for key, version in list(projection.state.versions.items())[::50]:  # the versions decisions append against
            kind, ident = key.split("/", 1)
            assert await recorder.stream_version(streams[kind](ident)) == version, key

    # --- subscriptions -------------------------------------------------------------------------------------------

    async def test_subscribe_catches_up_then_goes_live_without_gaps(self, recorder: Recorder) -> None:
        for _ in range(5):
            await recorder.append("s", [new_event()], ANY)
        sub = recorder.subscribe(1, batch=2)
        got = await collect(sub, 5)

        async def produce() -> None:
            for i in range(50):
                await recorder.append(f"live-{i % 7}", [new_event(), new_event()], ANY)

        producer = asyncio.create_task(produce())
        got += await collect(sub, 100)
        await producer
        await sub.aclose()  # type: ignore[attr-defined]
        assert [r.position for r in got] == list(range(1, 106))

    async def test_subscribe_from_the_middle(self, recorder: Recorder) -> None:
        await recorder.append("s", [new_event() for _ in range(10)], ANY)
        sub = recorder.subscribe(8)
        assert [r.position for r in await collect(sub, 3)] == [8, 9, 10]
        await sub.aclose()  # type: ignore[attr-defined]

    async def test_subscribe_from_the_future_waits(self, recorder: Recorder) -> None:
        sub = recorder.subscribe(3)
        task = asyncio.ensure_future(collect(sub, 1))
        await recorder.append("s", [new_event(), new_event()], ANY)
        await asyncio.sleep(0.05)
        assert not task.done()
        await recorder.append("s", [new_event()], ANY)
        assert [r.position for r in await task] == [3]
        await sub.aclose()  # type: ignore[attr-defined]

    # --- truncation ------------------------------------------------------------------------------------------------

    async def test_truncation_makes_old_positions_a_clear_error(self, recorder: Recorder) -> None:
        for _ in range(3):
            await recorder.append("s", [new_event(), new_event()], ANY)
        assert await recorder.truncate_before(4) == 3
        assert await recorder.oldest() == 4
        with pytest.raises(PositionTooOld) as err:
            await recorder.read_all(2)
        assert (err.value.requested, err.value.oldest) == (2, 4)
        with pytest.raises(PositionTooOld):
            await recorder.read_all(0)
        assert [r.position for r in await recorder.read_all(4)] == [4, 5, 6]
        assert [r.version for r in await recorder.read_stream("s")] == [3, 4, 5]
        # The stream's version outlives truncation; positions keep counting.
        assert await recorder.append("s", [new_event()], 5) == [7]
        assert await recorder.truncate_before(2) == 0

    async def test_truncating_a_whole_stream_keeps_its_version(self, recorder: Recorder) -> None:
        await recorder.append("gone", [new_event(), new_event()], ANY)
        await recorder.append("kept", [new_event()], ANY)
        await recorder.truncate_before(3)
        assert await recorder.stream_version("gone") == 1
        with pytest.raises(WrongExpectedVersion):
            await recorder.append("gone", [new_event()], NO_STREAM)
        assert await recorder.append("gone", [new_event()], 1) == [4]

    async def test_truncating_everything_then_appending(self, recorder: Recorder) -> None:
        await recorder.append("s", [new_event(), new_event()], ANY)
        await recorder.truncate_before(3)
        assert await recorder.read_all(3) == []
        assert await recorder.append("t", [new_event()], ANY) == [3]

    async def test_truncating_past_the_head_is_refused(self, recorder: Recorder) -> None:
        await recorder.append("s", [new_event()], ANY)
        with pytest.raises(InvalidAppend, match="past the head"):
            await recorder.truncate_before(5)

    async def test_a_subscriber_behind_truncation_is_told(self, recorder: Recorder) -> None:
        await recorder.append("s", [new_event() for _ in range(4)], ANY)
        await recorder.truncate_before(3)
        with pytest.raises(PositionTooOld):
            await collect(recorder.subscribe(1), 1)

    # --- snapshots and closing -----------------------------------------------------------------------------------

    async def test_snapshots_save_load_overwrite(self, recorder: Recorder) -> None:
        assert await recorder.load_snapshot("cluster") is None
        await recorder.save_snapshot("cluster", 10, b"one")
        await recorder.save_snapshot("cluster", 20, b"two")
        await recorder.save_snapshot("other", 5, b"x")
        assert await recorder.load_snapshot("cluster") == (20, b"two")
        assert await recorder.load_snapshot("other") == (5, b"x")

    async def test_closed_recorder_refuses_appends_and_wakes_subscribers(self, recorder: Recorder) -> None:
        sub = recorder.subscribe(1)
        waiting = asyncio.ensure_future(collect(sub, 1))
        await asyncio.sleep(0.01)
        await recorder.close()
        with pytest.raises(StoreClosed):
            await waiting
        with pytest.raises(StoreClosed):
            await recorder.append("s", [new_event()], ANY)


class TestMemoryRecorder(RecorderContract):
    @pytest.fixture
    async def recorder(self, tmp_path: Path) -> AsyncIterator[Recorder]:
        r = MemoryRecorder(clock=clock)
        yield r
        await r.close()


class TestSqliteRecorder(RecorderContract):
    @pytest.fixture
    async def recorder(self, tmp_path: Path) -> AsyncIterator[Recorder]:
        r = await SqliteRecorder.open(tmp_path / "log.db", clock=clock)
        yield r
        with contextlib.suppress(Exception):
            await r.close()

    async def test_the_database_and_its_wal_are_0600(self, tmp_path: Path) -> None:
        old = os.umask(0o022)
        try:
            for f in ("old.db", "old.db-wal"):
                (tmp_path / f).touch(mode=0o644)  # made by a version before this rule: narrowed on open
            for name in ("new.db", "old.db"):
                r = await SqliteRecorder.open(tmp_path / name, clock=clock)
                try:
                    await r.append("s", [new_event()], ANY)
                    files = [f for f in tmp_path.iterdir() if f.name.startswith(name) and "lock" not in f.name]
                    assert {f.name for f in files} == {name, f"{name}-wal", f"{name}-shm"}
                    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
                finally:
                    await r.close()
        finally:
            os.umask(old)

    async def test_reopen_keeps_everything(self, tmp_path: Path) -> None:
        path = tmp_path / "re.db"
        r = await SqliteRecorder.open(path, clock=clock)
        a = new_event()
        await r.append("s", [a, new_event()], NO_STREAM)
        await r.append("t", [new_event()], NO_STREAM)
        await r.truncate_before(2)
        await r.save_snapshot("cluster", 2, b"snap")
        before = await r.read_all(2)
        await r.close()

        r = await SqliteRecorder.open(path, clock=clock)
        try:
            assert await r.read_all(2) == before
            assert await r.head() == 3
            assert await r.oldest() == 2
            assert await r.stream_version("s") == 1
            assert await r.load_snapshot("cluster") == (2, b"snap")
            assert await r.append("s", [new_event()], 1) == [4]
        finally:
            await r.close()

    async def test_a_writer_behind_slows_its_callers_instead_of_queueing_without_bound(self, tmp_path: Path) -> None:
        r = await SqliteRecorder.open(tmp_path / "bp.db", max_waiting=4)
        most = 0
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, r._queue.qsize())
                await asyncio.sleep(0)

        sampler = asyncio.create_task(sample())
        try:
            positions = await asyncio.gather(*(r.append(f"s{i}", [new_event()], NO_STREAM) for i in range(60)))
            assert sorted(p for [p] in positions) == list(range(1, 61))  # all of them written, none lost
            assert 0 < most <= 4
        finally:
            done.set()
            await sampler
            await r.close()

    async def test_appends_waiting_for_room_when_the_recorder_closes_are_refused_not_stranded(
        self, tmp_path: Path
    ) -> None:
        r = await SqliteRecorder.open(tmp_path / "bp.db", max_waiting=1)
        appends = [asyncio.ensure_future(r.append(f"s{i}", [new_event()], NO_STREAM)) for i in range(5)]
        await asyncio.sleep(0)
        await r.close()
        async with asyncio.timeout(10):
            results = await asyncio.gather(*appends, return_exceptions=True)
        assert all(isinstance(x, list | StoreClosed) for x in results), results
        assert any(isinstance(x, list) for x in results)

    async def test_concurrent_appends_share_transactions(self, tmp_path: Path) -> None:
        r = await SqliteRecorder.open(tmp_path / "gc.db")
        try:
            await asyncio.gather(*(r.append(f"s{i}", [new_event()], NO_STREAM) for i in range(200)))
            assert await r.head() == 200
            assert r.batches < 200
        finally:
            await r.close()
