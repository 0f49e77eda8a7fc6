"""Keeping a projection current: catch up from the log, save and load snapshots."""

from __future__ import annotations

import asyncio

from store.projections import ClusterState, apply_all, decode_snapshot, encode_snapshot
from store.recorder import Recorder
from wire.checks import trusted
from wire.codec import decode_event

DEFAULT_SNAPSHOT = "cluster"


async def catch_up(recorder: Recorder, state: ClusterState, batch: int = 10_000) -> ClusterState:
    """Fold every event after the state's checkpoint into it. Raises ``PositionTooOld`` when the log no
    longer holds the events right after the checkpoint.

    The next batch is read while the current one is folded. Events come from the log's own history, so they
    are decoded as trusted (pattern checks skipped; see ``wire.checks``).
    """
    pending = asyncio.ensure_future(recorder.read_compact(state.position + 1, batch))
    try:
        while True:
            rows = await pending
            if not rows:
                return state
            pending = asyncio.ensure_future(recorder.read_compact(rows[-1][0] + 1, batch))
            with trusted():
                apply_all(state, [(position, decode_event(payload)) for position, payload in rows])
    finally:
        if not pending.done():
            pending.cancel()


async def save_snapshot(recorder: Recorder, state: ClusterState, name: str = DEFAULT_SNAPSHOT) -> None:
    await recorder.save_snapshot(name, state.position, encode_snapshot(state))


async def load_state(recorder: Recorder, name: str = DEFAULT_SNAPSHOT) -> ClusterState:
    """The latest snapshot (if any, and of this schema) plus the log after it."""
    saved = await recorder.load_snapshot(name)
    state = decode_snapshot(saved[1]) if saved is not None else None
    return await catch_up(recorder, state if state is not None else ClusterState())
