"""The node's outbox: every event it reports is written to disk before it is sent and deleted once the control
plane has acked it (or refused it for good), so a nodelet that dies with reports unacked sends them again when
it starts — a container it started is never left ``scheduled`` because the report died with the process.

One file per event, named by a sequence number (the order the node made them in), written whole or not at all
(a temporary file, fsync, rename). Each holds the event with its id and time, which stay the same across
sends, so the control plane appends it once however often it arrives. File I/O runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from pathlib import Path

import msgspec

from wire.events import Event

log = logging.getLogger("corral.nodelet.outbox")


class Entry(msgspec.Struct, frozen=True):
    seq: int
    event_id: uuid.UUID
    occurred_ns: int
    event: Event


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Entry)


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for p in path.glob("*.tmp"):
            p.unlink(missing_ok=True)  # an earlier run died before the rename: that event was neither kept nor sent
        names = [int(p.stem) for p in path.glob("*.evt") if p.stem.isdigit()]
        self._next = max(names, default=0) + 1

    def _file(self, seq: int) -> Path:
        return self.path / f"{seq:020d}.evt"

    async def put(self, event_id: uuid.UUID, occurred_ns: int, event: Event) -> Entry:
        """Keep ``event`` on disk; returns once it is there (durably)."""
        entry = Entry(self._next, event_id, occurred_ns, event)
        self._next += 1
        await asyncio.to_thread(self._write, entry)
        return entry

    def _write(self, entry: Entry) -> None:
        final = self._file(entry.seq)
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _encoder.encode(entry))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)

    async def done(self, entry: Entry) -> None:
        """The control plane has it (or will never take it): forget it."""
        await asyncio.to_thread(self._file(entry.seq).unlink, missing_ok=True)

    async def pending(self) -> list[Entry]:
        """What is kept and not done, oldest first (at start: what an earlier run never got acked). A file that
        does not decode (from a version whose events this one cannot read) is dropped, and said so."""
        return await asyncio.to_thread(self._read_pending)

    def _read_pending(self) -> list[Entry]:
        entries = []
        for p in sorted(self.path.glob("*.evt")):
            try:
                entries.append(_decoder.decode(p.read_bytes()))
            except (msgspec.DecodeError, msgspec.ValidationError, OSError) as e:
                log.warning("outbox: %s cannot be read (%s); dropping it", p.name, e)
                with contextlib.suppress(OSError):
                    p.unlink()
        return entries
