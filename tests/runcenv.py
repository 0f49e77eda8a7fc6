"""What the tests that run real runc containers share: the skip condition, a short state directory, and a
teardown that leaves no container, mount or cgroup behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
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


def clean_node_state(data: Path, cgroup_root: str | None) -> None:
    """After a nodelet process is gone: kill and delete its containers, unmount their roots, remove its state
    directory and (given the root all nodes share, once every node is clean) the cgroups."""
    runc_root = data / "rt" / "runc"
    if runc_root.exists():
        for cid in os.listdir(runc_root):
            subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid], capture_output=True, check=False)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        if target.startswith(str(data)):
            subprocess.run(["umount", target], check=False)
    shutil.rmtree(data, ignore_errors=True)
    if cgroup_root is not None:
        for d in sorted(Path("/sys/fs/cgroup").glob(f"*/{cgroup_root.strip('/')}/**/"), reverse=True):
            d.rmdir()
