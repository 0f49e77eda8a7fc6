"""A page of a container's log: the lines after a position, or the last ones, within a byte budget, read a line
at a time (a log may be tens of megabytes; a reply must fit a NATS message, 1 MiB by default)."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

PAGE_BYTES = 256 << 10  # the text of one reply: far below NATS's 1 MiB message limit


class Page(NamedTuple):
    lines: tuple[str, ...]
    truncated: bool  # asked-for lines are gone (rotated away) or were left out by ``tail``
    next_line: int  # the position after the last line given: ask from there for what follows
    more: bool  # lines after ``next_line`` exist already (the budget ended the page)


def page(lines: Iterable[str], base: int, since: int | None, tail: int | None, budget: int = PAGE_BYTES) -> Page:
    """The page of ``lines`` (the log from position ``base`` on): from ``since`` (None: the start), or the last
    ``tail`` of them; at most ``budget`` bytes of text, never fewer than one line."""
    start = base if since is None else max(since, base)
    truncated = since is not None and since < base
    count = 0  # lines seen
    if tail is not None:
        last: collections.deque[tuple[int, str]] = collections.deque(maxlen=tail)
        for count, line in enumerate(lines, start=1):
            if base + count - 1 >= start:
                last.append((base + count - 1, line))
        kept: list[str] = []
        size = 0
        for _, line in reversed(last):  # the newest lines win the budget
            size += len(line.encode()) + 1
            if kept and size > budget:
                break
            kept.append(line)
        kept.reverse()
        end = base + count
        return Page(tuple(kept), truncated or len(kept) < end - start, end, False)
    out: list[str] = []
    size = 0
    for count, line in enumerate(lines, start=1):
        position = base + count - 1
        if position < start:
            continue
        size += len(line.encode()) + 1
        if out and size > budget:
            return Page(tuple(out), truncated, position, True)
        out.append(line)
    return Page(tuple(out), truncated, base + count, False)  # past a shrunk log: its end, to resume from


def read_lines(files: Iterable[Path]) -> Iterator[str]:
    """The lines of ``files`` in order (missing ones skipped), one at a time."""
    for f in files:
        with contextlib.suppress(FileNotFoundError), f.open("r", errors="replace") as handle:
            for line in handle:
                yield line.rstrip("\n")
