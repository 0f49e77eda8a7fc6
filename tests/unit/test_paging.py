"""Paging is pure: pages in key order, at most ``limit`` each, that join up to the whole filtered list."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.paging import CONTINUE_HEADER, Page, next_headers, page

ITEMS = {k: k.upper() for k in ("d", "a", "c", "b", "e")}


def everything(_: str) -> bool:
    return True


@pytest.mark.parametrize(
    ("limit", "start", "keep", "want"),
    [
        (None, None, everything, Page(["A", "B", "C", "D", "E"], None)),
        (2, None, everything, Page(["A", "B"], "c")),
        (2, "c", everything, Page(["C", "D"], "e")),
        (2, "e", everything, Page(["E"], None)),
        (5, None, everything, Page(["A", "B", "C", "D", "E"], None)),  # exactly full: no further page
        (2, "bb", everything, Page(["C", "D"], "e")),  # a token between keys starts at the next one
        (2, "z", everything, Page([], None)),
        (1, None, lambda v: v in ("B", "E"), Page(["B"], "e")),  # the token is the next kept key
        (1, "e", lambda v: v in ("B", "E"), Page(["E"], None)),
        (3, None, lambda v: False, Page([], None)),
    ],
)
def test_page(limit: int | None, start: str | None, keep: object, want: Page[str]) -> None:
    assert page(ITEMS, keep, limit, start) == want  # type: ignore[arg-type]


@given(
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=30),
    st.integers(min_value=1, max_value=7),
    st.integers(min_value=1, max_value=5),
)
def test_pages_join_up_to_the_filtered_list(items: dict[str, int], limit: int, modulo: int) -> None:
    def keep(v: int) -> bool:
        return v % modulo == 0

    seen: list[int] = []
    start: str | None = None
    for _ in range(len(items) + 2):
        p = page(items, keep, limit, start)
        assert len(p.items) <= limit
        assert p.next is None or len(p.items) == limit
        seen += p.items
        if p.next is None:
            break
        start = p.next
    assert seen == [items[k] for k in sorted(items) if keep(items[k])]


def test_a_later_change_never_repeats_an_item() -> None:
    items = {"a": 1, "b": 2, "c": 3}
    first = page(items, everything, 2, None)
    items["a0"] = 0  # added behind the cursor while paging
    del items["c"]
    second = page(items, everything, 2, first.next)
    assert first.items == [1, 2] and second == Page([], None)


def test_next_headers() -> None:
    assert next_headers("/v1/containers", {"limit": "2"}, None) == {}
    h = next_headers("/v1/containers", {"limit": "2", "node": "node-1"}, "corral-x")
    assert h[CONTINUE_HEADER] == "corral-x"
    assert h["Link"] == '</v1/containers?limit=2&node=node-1&continue=corral-x>; rel="next"'
