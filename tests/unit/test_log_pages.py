"""Log pages: within a byte budget, a line at a time; paging forward from ``next_line`` gives every line once."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelet.logs import Page, page, read_lines

LINES = [f"line {i}" for i in range(10)]  # 6 or 7 bytes with the newline


@pytest.mark.parametrize(
    ("base", "since", "tail", "budget", "want"),
    [
        (0, None, None, 1000, Page(tuple(LINES), False, 10, False)),
        (0, 4, None, 1000, Page(tuple(LINES[4:]), False, 10, False)),
        (0, 8, None, 14, Page(("line 8", "line 9"), False, 10, False)),  # exactly the budget
        (0, 0, None, 14, Page(("line 0", "line 1"), False, 2, True)),  # full: more follows
        (0, 0, None, 1, Page(("line 0",), False, 1, True)),  # never fewer than one line
        (0, 12, None, 1000, Page((), False, 10, False)),  # past a log that shrank: its end
        (5, 2, None, 1000, Page(tuple(LINES), True, 15, False)),  # positions 2-4 were rotated away
        (0, None, 3, 1000, Page(("line 7", "line 8", "line 9"), True, 10, False)),
        (0, None, 30, 1000, Page(tuple(LINES), False, 10, False)),
        (0, None, 3, 14, Page(("line 8", "line 9"), True, 10, False)),  # the newest win the budget
        (0, None, 0, 1000, Page((), True, 10, False)),  # tail 0: only where the end is
        (0, 7, 5, 1000, Page(("line 7", "line 8", "line 9"), False, 10, False)),
    ],
)
def test_page(base: int, since: int | None, tail: int | None, budget: int, want: Page) -> None:
    assert page(iter(LINES), base, since, tail, budget) == want


def test_empty_log() -> None:
    assert page(iter([]), 0, None, None) == Page((), False, 0, False)
    assert page(iter([]), 4, None, 10) == Page((), False, 4, False)


@given(
    st.lists(st.text(alphabet="ab\u00e9", max_size=40), max_size=60),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=1, max_value=120),
)
def test_paging_forward_gives_every_line_once(lines: list[str], base: int, budget: int) -> None:
    got: list[str] = []
    since: int | None = None
    for _ in range(len(lines) + 1):
        p = page(iter(lines), base, since, None, budget)
        assert len(p.lines) <= 1 or sum(len(x.encode()) + 1 for x in p.lines) <= budget
        got += p.lines
        since = p.next_line
        if not p.more:
            break
    assert got == lines
    assert since == base + len(lines)


def test_read_lines_streams_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.log.1").write_text("old 1\nold 2\n")
    (tmp_path / "a.log").write_text("new 1\n")
    files = (tmp_path / "a.log.1", tmp_path / "a.log", tmp_path / "missing")
    assert list(read_lines(files)) == ["old 1", "old 2", "new 1"]
