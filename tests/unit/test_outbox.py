"""The node's outbox on real files: what is put survives a restart in order until it is done; a torn or
unreadable file is dropped, never sent."""

from __future__ import annotations

import os
from pathlib import Path

from nodelet.outbox import Outbox
from wire import events as ev
from wire.ids import new_event_id


def started(cid: str) -> ev.ContainerStarted:
    return ev.ContainerStarted(container_id=cid, node="n1", pid=42, started_ns=1)


async def test_what_is_not_done_outlives_a_restart_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    a = await box.put(new_event_id(), 1, started("000000000000000a"))
    b = await box.put(new_event_id(), 2, started("000000000000000b"))
    c = await box.put(new_event_id(), 3, started("000000000000000c"))
    await box.done(b)
    again = Outbox(tmp_path / "outbox")  # the nodelet started again
    assert await again.pending() == [a, c]
    d = await again.put(new_event_id(), 4, started("000000000000000d"))
    assert d.seq > c.seq  # new reports come after the old ones
    for e in (a, c, d):
        await again.done(e)
    assert await Outbox(tmp_path / "outbox").pending() == []


async def test_files_are_private_and_a_torn_or_unreadable_one_is_dropped(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    kept = await box.put(new_event_id(), 1, started("000000000000000a"))
    assert oct((tmp_path / "outbox").stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "outbox").iterdir()} == {"0o600"}
    (tmp_path / "outbox" / f"{2:020d}.tmp").write_bytes(b"\x85half")  # died before the rename
    (tmp_path / "outbox" / f"{3:020d}.evt").write_bytes(b"not msgpack at all")
    assert await Outbox(tmp_path / "outbox").pending() == [kept]
    assert sorted(os.listdir(tmp_path / "outbox")) == [f"{1:020d}.evt"]
