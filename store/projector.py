"""Keeping a projection current: catch up from the log, save and load snapshots."""

from __future__ import annotations

from store.errors import StoreError
from store.log import decode_batch
from store.projections import ClusterState, apply_all, decode_snapshot, encode_snapshot
from store.recorder import Recorder

DEFAULT_SNAPSHOT = "cluster"


async def catch_up(recorder: Recorder, state: ClusterState, batch: int = 10_000) -> ClusterState:
    """Fold every event after the state's checkpoint into it; the state must not be used elsewhere until this
    returns (the SQLite recorder folds on a worker thread). Raises ``PositionTooOld`` when the log no longer
    holds the events right after the checkpoint, ``UndecodableEvent`` at an event it cannot decode. Events
    come from the log's own history, so they are decoded as trusted (see ``wire.checks``)."""

    def fold(first: int, payloads: list[bytes]) -> None:
        events = decode_batch(first, payloads)
        apply_all(state, zip(range(first, first + len(events)), events, strict=True))

    await recorder.replay(state.position + 1, fold, batch)
    return state


async def save_snapshot(recorder: Recorder, state: ClusterState, name: str = DEFAULT_SNAPSHOT) -> None:
    await recorder.save_snapshot(name, state.position, encode_snapshot(state))


async def load_state(recorder: Recorder, name: str = DEFAULT_SNAPSHOT) -> ClusterState:
    """The latest snapshot (if any, and of this schema) plus the log after it."""
    saved = await recorder.load_snapshot(name)
    if saved is not None and saved[0] > (head := await recorder.head()):
        raise LogBehind(
            f"the log ends at position {head}, but a snapshot of it was taken at {saved[0]}: acknowledged events "
            "are gone (a damaged file system or WAL?); not serving from it. Restore the log from a copy "
            "(corral store verify checks one)"
        )
    state = decode_snapshot(saved[1]) if saved is not None else None
    return await catch_up(recorder, state if state is not None else ClusterState())


class LogBehind(StoreError):
    """The log holds fewer events than a snapshot taken of it: acknowledged positions were lost."""
