"""What the tests that run real runc containers share: the skip condition, a short state directory, and a
teardown that leaves no container, mount or cgroup behind."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nodelet.images import unmount_overlay
from nodelet.runtime import RuncRuntime

needs_runc = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("conmon") or not Path("/bin/busybox").exists(),
    reason="needs root, runc, conmon and /bin/busybox (make test installs them)",
)


@contextmanager
def short_root(prefix: str) -> Iterator[Path]:
    """A fresh directory under /run: conmon's attach socket path must fit in 108 bytes."""
    path = Path(f"/run/{prefix}-{uuid.uuid4().hex[:8]}")
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        for d in (path / "c").glob("*"):
            unmount_overlay(d)
        shutil.rmtree(path, ignore_errors=True)


async def clear_runtime(rt: RuncRuntime, cgroup_parent: str) -> None:
    """Kill and delete every container the runtime still knows, then remove the parent cgroup runc leaves."""
    for cid in rt.known():
        if await rt.status(cid) in ("running", "created"):
            await rt.kill(cid, signal.SIGKILL)
            await rt.wait(cid, 10)
        await rt.delete(cid)
    for parent in Path("/sys/fs/cgroup").glob(f"*/{cgroup_parent.strip('/')}"):
        parent.rmdir()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{cgroup_parent.strip('/')}"))
