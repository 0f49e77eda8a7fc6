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
from typing import Any

import pytest

from nodelet.images import ImageStore, mount_overlay, unmount_overlay
from nodelet.ocispec import oci_config
from nodelet.runtime import RuncRuntime
from wire.ids import new_container_id
from wire.spec import ContainerSpec

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


def busybox_bundle(root: Path, spec: ContainerSpec, **config: Any) -> tuple[str, Path, dict[str, Any]]:
    """A container of the built-in busybox under ``root``, its root mounted: its id, bundle and OCI config
    (``config`` goes to ``oci_config``; the cgroup is under /corral-test, which ``clear_runtime`` removes)."""
    cid = new_container_id()
    bundle = root / "c" / cid
    rootfs = mount_overlay(ImageStore(root / "images").resolve("busybox"), bundle)
    settings: dict[str, Any] = {"cpus": None, "mems": None, "cpu_shares": 1024, "cpu_quota_us": None, **config}
    oci = oci_config(spec, container_id=cid, rootfs=str(rootfs), cgroups_path=f"/corral-test/{cid}", **settings)
    return cid, bundle, oci
