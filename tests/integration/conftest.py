"""Fixtures the runc integration tests share: a short state root and a runc runtime that leaves nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from nodelet.runtime import RuncRuntime, RuntimePaths
from tests.runcenv import clear_runtime, short_root


@pytest.fixture
def root() -> Iterator[Path]:
    with short_root("corral-test") as path:
        yield path


@pytest.fixture
async def runtime(root: Path) -> AsyncIterator[RuncRuntime]:
    rt = RuncRuntime(RuntimePaths(root / "rt"))
    yield rt
    await clear_runtime(rt, "/corral-test")
