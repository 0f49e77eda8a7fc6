"""store.log.EventLog and store.projector over the in-memory recorder: domain events in, Recorded out;
unknown and malformed payloads; snapshots and truncation."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from store.errors import DuplicateEventId, InvalidAppend, PositionTooOld, UndecodableEvent, WrongExpectedVersion
from store.log import EventLog, Recorded
from store.memory import MemoryRecorder
from store.projections import ClusterState, apply_all, encode_snapshot
from store.projector import DEFAULT_SNAPSHOT, catch_up, load_state, save_snapshot
from store.recorder import ANY, NO_STREAM, NewEvent
from tests.builders import cid, registered, scheduled, service, submitted
from wire import events as ev

RECORDED_NS = 1_700_000_000_000_000_000
OCCURRED_NS = 1_600_000_000_000_000_000  # the EventLog's clock starts here and ticks once per append

CORRELATION = uuid.UUID("0190a5c4-1f2e-7a3b-8c4d-5e6f708192a3")
CAUSATION = uuid.UUID("0190a5c4-1f2e-7a3b-8c4d-5e6f708192a4")


def ids(n: int, start: int = 1) -> list[uuid.UUID]:
    """Deterministic event ids."""
    return [uuid.UUID(int=i) for i in range(start, start + n)]


def ticking(start: int) -> Callable[[], int]:
    return itertools.count(start).__next__


def recorded(
    position: int,
    stream: str,
    version: int,
    event_id: uuid.UUID,
    event: ev.Event,
    occurred_ns: int = OCCURRED_NS,
    correlation: uuid.UUID | None = None,
    causation: uuid.UUID | None = None,
) -> Recorded:
    return Recorded(position, stream, version, event_id, occurred_ns, RECORDED_NS, correlation, causation, event)


def raw(payload: object) -> NewEvent:
    """A row written straight through the recorder, bypassing the EventLog's encoding."""
    return NewEvent(uuid.uuid4().bytes, "Raw", msgspec.msgpack.encode(payload), 1)


async def take(it: AsyncIterator[Recorded], n: int) -> list[Recorded]:
    out: list[Recorded] = []
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        while len(out) < n:
            out.append(await anext(it))
    return out


@pytest.fixture
async def recorder() -> AsyncIterator[MemoryRecorder]:
    r = MemoryRecorder(clock=lambda: RECORDED_NS)
    yield r
    await r.close()


@pytest.fixture
def log(recorder: MemoryRecorder) -> EventLog:
    return EventLog(recorder, clock=ticking(OCCURRED_NS))


# --- appending and reading back ------------------------------------------------------------------------------


async def test_append_and_read_back_with_the_envelope(log: EventLog) -> None:
    a, b, c = registered("n1"), submitted(1), scheduled(1)
    [ia, ib, ic] = ids(3)
    assert await log.append("node-n1", [a], NO_STREAM, event_ids=[ia]) == [1]
    assert await log.append(
        "c-1", [b, c], NO_STREAM, event_ids=[ib, ic], correlation=CORRELATION, causation=CAUSATION
    ) == [2, 3]
    assert await log.read_all() == [
        recorded(1, "node-n1", 0, ia, a),
        recorded(2, "c-1", 0, ib, b, OCCURRED_NS + 1, CORRELATION, CAUSATION),
        recorded(3, "c-1", 1, ic, c, OCCURRED_NS + 1, CORRELATION, CAUSATION),
    ]
    assert await log.read_stream("c-1") == [
        recorded(2, "c-1", 0, ib, b, OCCURRED_NS + 1, CORRELATION, CAUSATION),
        recorded(3, "c-1", 1, ic, c, OCCURRED_NS + 1, CORRELATION, CAUSATION),
    ]
    assert await log.read_stream("c-1", from_version=1) == [
        recorded(3, "c-1", 1, ic, c, OCCURRED_NS + 1, CORRELATION, CAUSATION)
    ]
    assert await log.read_all(2, limit=1) == [recorded(2, "c-1", 0, ib, b, OCCURRED_NS + 1, CORRELATION, CAUSATION)]


async def test_rows_hold_the_encoded_event_and_its_type(log: EventLog, recorder: MemoryRecorder) -> None:
    e = service("api")
    await log.append("svc", [e], event_ids=ids(1))
    [row] = await recorder.read_all()
    assert (row.type, row.occurred_ns, row.correlation, row.causation) == ("ServiceCreated", OCCURRED_NS, None, None)
    assert msgspec.msgpack.decode(row.payload, type=ev.ServiceCreated) == e


async def test_generated_event_ids_are_distinct(log: EventLog) -> None:
    await log.append("s", [submitted(1), submitted(2), submitted(3)])
    got = await log.read_all()
    assert len({r.event_id for r in got}) == 3
    assert [r.event for r in got] == [submitted(1), submitted(2), submitted(3)]


async def test_a_retry_with_the_same_event_ids_returns_the_same_positions(
    log: EventLog, recorder: MemoryRecorder
) -> None:
    events, event_ids = [submitted(1), scheduled(1)], ids(2)
    first = await log.append("c-1", events, NO_STREAM, event_ids=event_ids)
    await log.append("other", [registered("n1")])
    # The retry's expected version is stale by now, and its clock reading differs: the ids decide.
    assert await log.append("c-1", events, NO_STREAM, event_ids=event_ids) == first == [1, 2]
    assert await recorder.head() == 3
    assert [r.occurred_ns for r in await log.read_stream("c-1")] == [OCCURRED_NS, OCCURRED_NS]


async def test_a_stale_append_without_ids_is_refused(log: EventLog) -> None:
    await log.append("c-1", [submitted(1)], NO_STREAM)
    with pytest.raises(WrongExpectedVersion):
        await log.append("c-1", [submitted(1)], NO_STREAM)


async def test_reusing_an_event_id_in_another_stream_is_refused(log: EventLog) -> None:
    await log.append("a", [submitted(1)], event_ids=ids(1))
    with pytest.raises(DuplicateEventId, match="stored in stream 'a'"):
        await log.append("b", [submitted(1)], event_ids=ids(1))


@pytest.mark.parametrize(
    ("n_events", "n_ids"),
    [
        pytest.param(1, 0, id="no-ids-for-one-event"),
        pytest.param(1, 2, id="two-ids-for-one-event"),
        pytest.param(2, 1, id="one-id-for-two-events"),
        pytest.param(0, 1, id="an-id-for-no-event"),
    ],
)
async def test_event_ids_of_the_wrong_length(
    log: EventLog, recorder: MemoryRecorder, n_events: int, n_ids: int
) -> None:
    with pytest.raises(ValueError, match=f"event_ids: {n_ids} ids for {n_events} events"):
        await log.append("s", [submitted(i) for i in range(1, n_events + 1)], event_ids=ids(n_ids))
    assert await recorder.head() == 0


# --- payloads this version cannot decode -------------------------------------------------------------------------


async def test_an_unknown_event_type_is_named_with_its_position(log: EventLog, recorder: MemoryRecorder) -> None:
    await log.append("s", [submitted(1)])
    await recorder.append("s", [raw({"type": "FromTheFuture"})], ANY)
    with pytest.raises(UndecodableEvent) as err:
        await log.read_all()
    assert (err.value.position, err.value.type_name) == (2, "FromTheFuture")
    assert "position 2 (FromTheFuture)" in str(err.value)
    with pytest.raises(UndecodableEvent, match="'FromTheFuture'"):
        await log.read_stream("s")
    with pytest.raises(UndecodableEvent, match="position 2"):
        await catch_up(recorder, ClusterState())
    sub = log.subscribe()
    assert [r.event for r in await take(sub, 1)] == [submitted(1)]
    with pytest.raises(UndecodableEvent, match="'FromTheFuture'"):
        await take(sub, 1)


@pytest.mark.parametrize(
    ("payload", "type_name"),
    [
        pytest.param({"type": 5}, "?", id="tag-not-a-string"),
        pytest.param({"container_id": "0000000000000001"}, "?", id="no-tag"),
        pytest.param(["ContainerSubmitted"], "?", id="not-a-map"),
        pytest.param({"type": "NodeDrained"}, "NodeDrained", id="known-tag-missing-fields"),
        pytest.param({"type": "NodeDrained", "node": 7}, "NodeDrained", id="known-tag-wrong-field-type"),
        pytest.param(
            {"type": "ContainerStopRequested", "container_id": "0000000000000001", "grace_s": -1.0},
            "ContainerStopRequested",
            id="out-of-bounds",
        ),
    ],
)
async def test_a_payload_that_is_not_an_event_stops_the_replay_at_its_position(
    log: EventLog, recorder: MemoryRecorder, payload: object, type_name: str
) -> None:
    await log.append("s", [submitted(1)])
    await recorder.append("s", [raw(payload)], ANY)  # past the log's writer, which would refuse it
    with pytest.raises(UndecodableEvent) as err:
        await log.read_all()
    assert err.value.position == 2
    with pytest.raises(UndecodableEvent) as err:
        await catch_up(recorder, ClusterState())
    assert (err.value.position, err.value.type_name) == (2, type_name)


async def test_the_log_refuses_an_event_its_reader_would_not_decode(log: EventLog, recorder: MemoryRecorder) -> None:
    with pytest.raises(InvalidAppend, match="grace_s"):
        await log.append("s", [ev.ContainerStopRequested(container_id=cid(1), grace_s=-1)])
    assert await recorder.head() == 0


# --- subscriptions -------------------------------------------------------------------------------------------


async def test_subscribe_yields_recorded_in_order_then_live(log: EventLog) -> None:
    [i1, i2, i3, i4] = ids(4)
    await log.append("node-n1", [registered("n1")], event_ids=[i1])
    await log.append("c-1", [submitted(1), scheduled(1)], event_ids=[i2, i3])
    sub = log.subscribe()
    assert await take(sub, 3) == [
        recorded(1, "node-n1", 0, i1, registered("n1")),
        recorded(2, "c-1", 0, i2, submitted(1), OCCURRED_NS + 1),
        recorded(3, "c-1", 1, i3, scheduled(1), OCCURRED_NS + 1),
    ]
    pending = asyncio.ensure_future(take(sub, 1))
    await log.append("c-1", [ev.ContainerStopRequested(container_id=submitted(1).container_id)], event_ids=[i4])
    assert await pending == [
        recorded(4, "c-1", 2, i4, ev.ContainerStopRequested(container_id=submitted(1).container_id), OCCURRED_NS + 2)
    ]
    await sub.aclose()  # type: ignore[attr-defined]


async def test_subscribe_from_the_middle(log: EventLog) -> None:
    for n in range(1, 6):
        await log.append(f"c-{n}", [submitted(n)])
    sub = log.subscribe(4)
    assert [(r.position, r.event) for r in await take(sub, 2)] == [(4, submitted(4)), (5, submitted(5))]
    await sub.aclose()  # type: ignore[attr-defined]


# --- projections: catch up, snapshots, truncation ----------------------------------------------------------------

HISTORY: list[tuple[str, ev.Event]] = [
    ("node-n1", registered("n1")),
    ("node-n2", registered("n2")),
    ("c-1", submitted(1)),
    ("c-1", scheduled(1)),
    ("c-2", submitted(2)),
    ("c-2", scheduled(2, node="n2", cpuset=(0, 1))),
    ("node-n2", ev.NodeCordoned(node="n2")),
    ("c-1", ev.ContainerStarted(container_id=submitted(1).container_id, node="n1", pid=7, started_ns=9)),
    ("c-2", ev.ContainerLost(container_id=submitted(2).container_id, node="n2")),
    ("c-3", submitted(3)),
]


def replay(history: list[tuple[str, ev.Event]]) -> ClusterState:
    return apply_all(ClusterState(), enumerate((e for _, e in history), start=1))


async def write(log: EventLog, history: list[tuple[str, ev.Event]]) -> None:
    for stream, e in history:
        await log.append(stream, [e])


async def test_catch_up_from_empty_equals_a_replay(log: EventLog, recorder: MemoryRecorder) -> None:
    await write(log, HISTORY)
    assert await catch_up(recorder, ClusterState()) == replay(HISTORY)


@pytest.mark.parametrize("batch", [1, 3, 10, 10_000])
async def test_catch_up_in_batches_continues_from_the_checkpoint(
    log: EventLog, recorder: MemoryRecorder, batch: int
) -> None:
    await write(log, HISTORY[:4])
    state = await catch_up(recorder, ClusterState(), batch)
    assert state == replay(HISTORY[:4])
    await write(log, HISTORY[4:])
    assert await catch_up(recorder, state, batch) is state
    assert state == replay(HISTORY)


async def test_load_state_without_a_snapshot_replays_the_log(log: EventLog, recorder: MemoryRecorder) -> None:
    assert await load_state(recorder) == ClusterState()
    await write(log, HISTORY)
    assert await load_state(recorder) == replay(HISTORY)


async def test_load_state_from_a_snapshot_equals_a_full_replay(log: EventLog, recorder: MemoryRecorder) -> None:
    await write(log, HISTORY[:5])
    await save_snapshot(recorder, await catch_up(recorder, ClusterState()))
    assert await recorder.load_snapshot(DEFAULT_SNAPSHOT) == (5, encode_snapshot(replay(HISTORY[:5])))
    await write(log, HISTORY[5:])
    assert await load_state(recorder) == replay(HISTORY)


async def test_load_state_after_truncating_past_the_snapshot(log: EventLog, recorder: MemoryRecorder) -> None:
    await write(log, HISTORY[:5])
    await save_snapshot(recorder, await catch_up(recorder, ClusterState()))
    await write(log, HISTORY[5:])
    assert await recorder.truncate_before(6) == 5  # everything the snapshot holds
    assert await load_state(recorder) == replay(HISTORY)
    with pytest.raises(PositionTooOld) as err:
        await catch_up(recorder, ClusterState())
    assert (err.value.requested, err.value.oldest) == (1, 6)


async def test_load_state_when_truncated_beyond_the_snapshot_is_told(log: EventLog, recorder: MemoryRecorder) -> None:
    await write(log, HISTORY[:5])
    await save_snapshot(recorder, await catch_up(recorder, ClusterState()))
    await write(log, HISTORY[5:])
    await recorder.truncate_before(8)  # positions 6 and 7, after the snapshot, are gone
    with pytest.raises(PositionTooOld) as err:
        await load_state(recorder)
    assert (err.value.requested, err.value.oldest) == (6, 8)


async def test_load_state_ignores_a_snapshot_of_another_schema(log: EventLog, recorder: MemoryRecorder) -> None:
    await write(log, HISTORY)
    stale = replay(HISTORY[:2])
    await recorder.save_snapshot(DEFAULT_SNAPSHOT, 2, msgspec.msgpack.encode((999, stale)))
    assert await load_state(recorder) == replay(HISTORY)


async def test_snapshots_are_kept_by_name(log: EventLog, recorder: MemoryRecorder) -> None:
    await write(log, HISTORY[:3])
    await save_snapshot(recorder, await catch_up(recorder, ClusterState()), name="early")
    await write(log, HISTORY[3:])
    await recorder.truncate_before(4)
    assert await load_state(recorder, name="early") == replay(HISTORY)
    with pytest.raises(PositionTooOld):
        await load_state(recorder)  # no "cluster" snapshot: a replay from position 1
