"""Paging of list answers: at most ``limit`` items in key order, and a continue token naming where the next
page starts (as Kubernetes lists page; the token is, as Nomad's ``next_token``, the key that starts the next
page). A page holds only keys from its token on, so a list that changes while it is paged never repeats an item;
items added behind the cursor are seen on the next list."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlencode

T = TypeVar("T")

MAX_PAGE = 5000
CONTINUE_HEADER = "Corral-Continue"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None  # the key the next page starts at; None on the last page


def page(items: Mapping[str, T], keep: Callable[[T], bool], limit: int | None, start: str | None) -> Page[T]:
    """The items kept by ``keep`` whose key is ``start`` or after, in key order, ``limit`` at most."""
    keys = sorted(items)
    chosen: list[T] = []
    for i in range(bisect_left(keys, start) if start is not None else 0, len(keys)):
        item = items[keys[i]]
        if not keep(item):
            continue
        if limit is not None and len(chosen) == limit:
            return Page(chosen, keys[i])
        chosen.append(item)
    return Page(chosen, None)


def next_headers(path: str, query: Mapping[str, str], nxt: str | None) -> dict[str, str]:
    """The headers that lead to the next page: the token, and an RFC 8288 ``Link`` with ``rel="next"``."""
    if nxt is None:
        return {}
    link = f"{path}?{urlencode({**query, 'continue': nxt})}"
    return {CONTINUE_HEADER: nxt, "Link": f'<{link}>; rel="next"'}
