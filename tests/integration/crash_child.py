"""Appends under concurrent load until killed, printing each acknowledged append on stdout.

Run as ``python -m tests.integration.crash_child DB SEED``. Each payload is ``request-id:index:count`` so the
checker can tell whole appends from partial ones.
"""

from __future__ import annotations

import asyncio
import random
import sys

from store.errors import WrongExpectedVersion
from store.recorder import ANY, NewEvent
from store.sqlite import SqliteRecorder


async def main(path: str, seed: int) -> None:
    recorder = await SqliteRecorder.open(path)
    out = sys.stdout.buffer

    async def appender(worker: int) -> None:
        rng = random.Random(seed * 1000 + worker)
        n = 0
        while True:
            n += 1
            request = f"{seed}-{worker}-{n}"
            count = rng.randint(1, 4)
            batch = [NewEvent(rng.randbytes(16), "T", f"{request}:{i}:{count}".encode(), 1) for i in range(count)]
            stream = f"s{rng.randint(0, 20)}"
            try:
                positions = await recorder.append(stream, batch, ANY)
            except WrongExpectedVersion:
                continue
            line = " ".join(f"{e.event_id.hex()}={p}" for e, p in zip(batch, positions, strict=True))
            out.write(f"ack {line}\n".encode())
            out.flush()

    out.write(b"ready\n")
    out.flush()
    await asyncio.gather(*(appender(w) for w in range(50)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
