"""The SQLite log against what damages it from outside: a second writer through a symlink, one that bypasses
the lock, flipped bytes, a file that is no database, paths a URI would misread."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from store.errors import StoreError
from store.recorder import NewEvent, StoredEvent
from store.sqlite import CorruptLog, ForeignCommit, LogLocked, SqliteRecorder, checksum, verify
from tests.integration.conftest import ROOT
from wire.codec import encode


def event(payload: bytes = b"x", type_: str = "Test") -> NewEvent:
    return NewEvent(uuid.uuid4().bytes, type_, payload, 1)


async def a_log(path: Path, n: int) -> None:
    recorder = await SqliteRecorder.open(path)
    try:
        for i in range(n):
            await recorder.append(f"s-{i % 3}", [event(b"payload-%d" % i)], -2)
    finally:
        await recorder.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_second_writer_is_refused_through_a_symlink_and_in_the_same_process(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    link = tmp_path / "link.db"
    link.symlink_to(path)
    first = await SqliteRecorder.open(path)
    try:
        with pytest.raises(LogLocked, match="this process has this event log open"):
            await SqliteRecorder.open(link)
        other = subprocess.run(  # another process, through the symlink
            [sys.executable, "-c", f"import asyncio; from store.sqlite import SqliteRecorder as R; "
             f"asyncio.run(R.open({str(link)!r}))"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert other.returncode == 1 and "LogLocked" in other.stderr and "another process" in other.stderr
        assert await first.append("s", [event()], -1) == [1]  # the first writer goes on
    finally:
        await first.close()
    again = await SqliteRecorder.open(link)  # closed: free to open again, by any name
    await again.close()


async def test_a_commit_behind_the_writers_back_fails_loudly_once_and_the_head_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    recorder = await SqliteRecorder.open(path)
    try:
        assert await recorder.append("s", [event()], -1) == [1]
        foreign = sqlite3.connect(path)  # a writer that ignores the lock
        e = StoredEvent(2, uuid.uuid4().bytes, "other", 0, "Test", 1, 1, 1, None, None, b"x")
        foreign.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (*msgspec_tuple(e), checksum(e)))
        foreign.commit()
        foreign.close()
        with pytest.raises(ForeignCommit, match=r"another writer committed to this log \(its head is 2"):
            await recorder.append("s", [event()], 0)
        assert await recorder.head() == 2
        assert await recorder.append("s", [event()], 0) == [3]  # not "UNIQUE constraint failed" for good
    finally:
        await recorder.close()


def msgspec_tuple(e: StoredEvent) -> tuple[object, ...]:
    import msgspec

    return msgspec.structs.astuple(e)


async def test_a_flipped_byte_is_found_on_read_on_replay_and_by_verify(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    await a_log(path, 30)
    assert verify(path).first_bad is None and verify(path).events == 30
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET payload = ? WHERE seq = 17", (b"payload-1x",))  # same length, one byte off
    db.commit()
    db.close()
    found = verify(path)
    assert found.first_bad == 17 and "checksum" in found.reason
    recorder = await SqliteRecorder.open(path)
    try:
        with pytest.raises(CorruptLog, match="position 17"):
            await recorder.read_all(1, 100)
        with pytest.raises(CorruptLog, match="position 17"):
            await recorder.replay(1, lambda first, payloads: None)
        assert len(await recorder.read_all(1, 16)) == 16  # what lies before it reads
    finally:
        await recorder.close()
    cli = subprocess.run([sys.executable, "-m", "api.cli", "store", "verify", str(path)], cwd=ROOT,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert cli.returncode == 1 and "damaged at position 17" in cli.stderr, cli.stderr


async def test_a_file_that_is_no_log_is_refused_at_open_naming_it_and_leaks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    path.write_bytes(os.urandom(8192))
    before = open_fds()
    with pytest.raises(CorruptLog, match=f"{path}: not an SQLite database"):
        await SqliteRecorder.open(path)
    assert open_fds() == before
    await a_log(tmp_path / "good.db", 3)
    damaged = tmp_path / "good.db"
    data = bytearray(damaged.read_bytes())
    data[100:4096] = os.urandom(3996)  # the header intact, the schema page not
    damaged.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=str(damaged)):
        await SqliteRecorder.open(damaged)
    assert open_fds() == before
    assert verify(damaged).first_bad == 0


@pytest.mark.parametrize("name", ["a#b.db", "a?b.db", "a%20b.db", "a b.db"])
async def test_paths_a_uri_would_misread(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    await a_log(path, 5)
    recorder = await SqliteRecorder.open(path)
    try:
        seen: list[bytes] = []
        assert await recorder.replay(1, lambda first, payloads: seen.extend(payloads)) == 5
        assert seen == [b"payload-%d" % i for i in range(5)]
    finally:
        await recorder.close()
    assert verify(path).events == 5


async def test_a_log_from_before_checksums_opens_and_its_old_events_stay_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id BLOB NOT NULL UNIQUE, stream TEXT NOT NULL, "
        "version INTEGER NOT NULL, type TEXT NOT NULL, schema INTEGER NOT NULL, occurred_ns INTEGER NOT NULL, "
        "recorded_ns INTEGER NOT NULL, correlation BLOB, causation BLOB, payload BLOB NOT NULL, "
        "UNIQUE (stream, version));"
        "CREATE TABLE streams (stream TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO streams VALUES ('s', 0);"
    )
    db.execute("INSERT INTO events VALUES (1, ?, 's', 0, 'Test', 1, 1, 1, NULL, NULL, x'01')", (uuid.uuid4().bytes,))
    db.commit()
    db.close()
    recorder = await SqliteRecorder.open(path)
    try:
        await recorder.append("s", [event()], -2)
        assert [e.position for e in await recorder.read_all(1, 10)] == [1, 2]
    finally:
        await recorder.close()
    found = verify(path)
    assert (found.first_bad, found.events, found.unchecked) == (None, 2, 1)


async def test_a_log_that_lost_acknowledged_positions_is_not_served(tmp_path: Path) -> None:
    """What a damaged WAL can do: positions a snapshot saw are gone (and the next append would reuse them)."""
    from store.projections import ClusterState
    from store.projector import LogBehind, catch_up, load_state, save_snapshot
    from tests.builders import registered

    path = tmp_path / "w.db"
    recorder = await SqliteRecorder.open(path)
    try:
        for i in range(10):
            await recorder.append(f"node-n{i}", [NewEvent(uuid.uuid4().bytes, "NodeRegistered",
                                                           encode(registered(f"n{i}")), 1)], -1)  # fmt: skip
        await save_snapshot(recorder, await catch_up(recorder, ClusterState()))
    finally:
        await recorder.close()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE seq > 7")
    db.commit()
    db.close()
    recorder = await SqliteRecorder.open(path)
    try:
        with pytest.raises(LogBehind, match="ends at position 7, but a snapshot of it was taken at 10"):
            await load_state(recorder)
    finally:
        await recorder.close()
    found = verify(path)
    assert found.first_bad == 8 and "snapshot 'cluster' was taken at 10" in found.reason


async def test_damage_outside_the_payload_and_to_a_columns_type_is_found_too(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    await a_log(path, 10)
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET stream = 's-9' WHERE seq = 4")  # another stream's name, same length
    db.execute("UPDATE events SET checksum = CAST(checksum AS REAL) WHERE seq = 7")  # a stored type changed
    db.commit()
    db.close()
    assert verify(path).first_bad == 4
    recorder = await SqliteRecorder.open(path)
    try:
        with pytest.raises(CorruptLog, match="position 4"):
            await recorder.read_all(1)
        with pytest.raises(CorruptLog, match="position 7"):
            await recorder.read_all(5)
        with pytest.raises(CorruptLog, match="position 7"):  # replay checks payloads: 4's is intact
            await recorder.replay(1, lambda first, payloads: None)
    finally:
        await recorder.close()


async def test_a_writer_whose_acknowledged_positions_vanish_writes_no_more(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    recorder = await SqliteRecorder.open(path)
    try:
        for _ in range(5):
            await recorder.append("s", [event()], -2)
        db = sqlite3.connect(path)  # what a restored copy, or a lost WAL tail, does under a running writer
        db.execute("DELETE FROM events WHERE seq > 3")
        db.commit()
        db.close()
        with pytest.raises(CorruptLog, match="this writer's head is 5, the file's is 3: positions it acknowledged"):
            await recorder.append("s", [event()], -2)
        with pytest.raises(CorruptLog):  # for good: never positions 4 and 5 again
            await recorder.append("s", [event()], -2)
    finally:
        await recorder.close()


async def test_a_failed_open_leaves_the_log_free_to_open(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(CorruptLog):
        await SqliteRecorder.open(path)
    path.unlink()
    recorder = await SqliteRecorder.open(path)  # not "this process has it open already"
    await recorder.close()


async def test_an_event_without_checksum_after_checksums_began_is_damage(tmp_path: Path) -> None:
    """What an older Corral brought back by a rollback would write: rows with no checksum, after the log began
    keeping them. They are not taken as rows from before checksums."""
    path = tmp_path / "w.db"
    await a_log(path, 6)
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET checksum = NULL WHERE seq = 5")
    db.commit()
    db.close()
    found = verify(path)
    assert found.first_bad == 5 and found.unchecked == 0
    recorder = await SqliteRecorder.open(path)
    try:
        with pytest.raises(CorruptLog, match="position 5"):
            await recorder.read_all(1)
        with pytest.raises(CorruptLog, match="position 5"):
            await recorder.replay(1, lambda first, payloads: None)
    finally:
        await recorder.close()
