"""Projection invariants over random event sequences."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.log import EventLog
from store.projections import ClusterState, apply, apply_all, decode_snapshot, encode_snapshot
from store.projector import catch_up, load_state, save_snapshot
from store.sqlite import SqliteRecorder
from tests.property.strategies import events
from wire import events as ev

event_lists = st.lists(events, max_size=60)


def replay(evs: list[ev.Event]) -> ClusterState:
    return apply_all(ClusterState(), enumerate(evs, start=1))


@given(event_lists, st.lists(st.integers(0, 60), max_size=5))
def test_incremental_equals_full_replay(evs: list[ev.Event], cuts: list[int]) -> None:
    """Folding in chunks, re-applying an already-folded chunk, equals one full replay."""
    state = ClusterState()
    bounds = sorted({0, len(evs), *(c for c in cuts if c <= len(evs))})
    numbered = list(enumerate(evs, start=1))
    for lo, hi in itertools.pairwise(bounds):
        apply_all(state, numbered[lo:hi])
        apply_all(state, numbered[lo:hi])  # a redelivered chunk changes nothing
    assert state == replay(evs)


@given(event_lists, st.integers(0, 60))
def test_snapshot_plus_tail_equals_full_replay(evs: list[ev.Event], cut: int) -> None:
    cut = min(cut, len(evs))
    numbered = list(enumerate(evs, start=1))
    restored = decode_snapshot(encode_snapshot(apply_all(ClusterState(), numbered[:cut])))
    assert restored is not None
    assert apply_all(restored, numbered[cut:]) == replay(evs)


@given(event_lists)
def test_nodes_hold_resources_only_for_live_containers_placed_on_them(evs: list[ev.Event]) -> None:
    state = replay(evs)
    for node in state.nodes.values():
        for container_id, allocation in node.allocations.items():
            view = state.containers[container_id]
            assert not view.state.terminal
            assert view.node == node.name
            assert allocation.cpuset == view.cpuset


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_lists, st.integers(1, 60))
def test_sqlite_live_subscription_and_snapshot_reload_equal_replay(evs: list[ev.Event], snap_at: int) -> None:
    """Through the real SQLite recorder: a subscriber folding live, and a reload from a snapshot plus the log,
    both equal a pure replay."""

    async def scenario(path: Path) -> tuple[ClusterState, ClusterState, ClusterState]:
        recorder = await SqliteRecorder.open(path)
        log = EventLog(recorder)
        live = ClusterState()

        async def follow() -> None:
            async for rec in log.subscribe(1):
                apply(live, rec.position, rec.event)
                if rec.position == len(evs):
                    return

        follower = asyncio.create_task(follow())
        for i, e in enumerate(evs, start=1):
            await log.append(f"s-{i % 4}", [e])
            if i == snap_at:
                await save_snapshot(recorder, await catch_up(recorder, ClusterState()))
        if evs:
            async with asyncio.timeout(10):
                await follower
        else:
            follower.cancel()
        reloaded = await load_state(recorder)
        await recorder.close()
        recorder = await SqliteRecorder.open(path)
        reopened = await load_state(recorder)
        await recorder.close()
        return live, reloaded, reopened

    with tempfile.TemporaryDirectory() as tmp:
        live, reloaded, reopened = asyncio.run(scenario(Path(tmp) / "log.db"))
    expected = replay(evs)
    assert live == expected
    assert reloaded == expected
    assert reopened == expected
