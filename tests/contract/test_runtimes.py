"""One conformance suite, every runtime: the real runc runtime (root containers) and the hollow one."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodelet.hollow import HollowRuntime
from nodelet.images import ImageStore, mount_overlay
from nodelet.ocispec import oci_config
from nodelet.runtime import ExitStatus, RuncRuntime, Runtime, RuntimeError_, RuntimePaths
from tests.builders import spec
from tests.runcenv import clear_runtime, short_root
from wire.ids import new_container_id

Made = tuple[str, Path, dict[str, Any]]


class RuntimeContract:
    @pytest.fixture
    def root(self) -> Iterator[Path]:
        with short_root("corral-conf") as path:
            yield path

    @pytest.fixture
    async def runtime(self, root: Path) -> AsyncIterator[Runtime]:
        raise NotImplementedError
        yield

    def make(self, root: Path, *command: str) -> Made:
        cid = new_container_id()
        bundle = root / "c" / cid
        bundle.mkdir(parents=True)
        config = oci_config(
            spec("t", command=command),
            container_id=cid,
            rootfs=str(bundle / "rootfs"),
            cgroups_path=f"/corral-conf/{cid}",
            cpus=None,
            mems=None,
            cpu_shares=1024,
            cpu_quota_us=None,
        )
        return cid, bundle, config

    async def run(self, runtime: Runtime, made: Made) -> str:
        cid, bundle, config = made
        await runtime.create(cid, bundle, config)
        await runtime.start(cid)
        return cid

    async def test_exit_code_is_recorded(self, root: Path, runtime: Runtime) -> None:
        cid = await self.run(runtime, self.make(root, "sh", "-c", "exit 42"))
        assert await runtime.wait(cid, 10) == ExitStatus(code=42)
        assert runtime.exit_status(cid) == ExitStatus(code=42)
        assert await runtime.status(cid) == "stopped"

    async def test_logs_in_k8s_file_format(self, root: Path, runtime: Runtime) -> None:
        cid = await self.run(runtime, self.make(root, "sh", "-c", "echo hello; exit 0"))
        assert await runtime.wait(cid, 10) == ExitStatus(code=0)
        [line] = runtime.logs(cid).read_text().splitlines()
        assert line.split(" ", 1)[1] == "stdout F hello"

    async def test_lifecycle_states(self, root: Path, runtime: Runtime) -> None:
        cid, bundle, config = self.make(root, "sleep", "60")
        assert await runtime.status(cid) is None
        assert await runtime.create(cid, bundle, config) > 0
        assert await runtime.status(cid) == "created"
        await runtime.start(cid)
        assert await runtime.status(cid) == "running"
        assert await runtime.wait(cid, 0.05) is None  # still running
        with pytest.raises(RuntimeError_):
            await runtime.start(cid)
        with pytest.raises(RuntimeError_):
            await runtime.delete(cid)  # running: stop it first
        status = await runtime.stop(cid, grace_s=0.2)  # sleep as PID 1 ignores TERM
        assert status == ExitStatus(code=137)
        assert status.signal == signal.SIGKILL
        await runtime.delete(cid)
        assert await runtime.status(cid) is None
        await runtime.delete(cid)  # idempotent

    async def test_duplicate_id_is_refused(self, root: Path, runtime: Runtime) -> None:
        cid, bundle, config = self.make(root, "sleep", "60")
        await runtime.create(cid, bundle, config)
        with pytest.raises(RuntimeError_):
            await runtime.create(cid, bundle, config)
        await runtime.delete(cid)  # a created container may be deleted
        assert await runtime.status(cid) is None


class TestHollowRuntime(RuntimeContract):
    @pytest.fixture
    async def runtime(self, root: Path) -> AsyncIterator[Runtime]:
        yield HollowRuntime(root / "logs")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("conmon"),
    reason="needs root, runc and conmon (make test installs them)",
)
class TestRuncRuntime(RuntimeContract):
    @pytest.fixture
    async def runtime(self, root: Path) -> AsyncIterator[Runtime]:
        rt = RuncRuntime(RuntimePaths(root / "rt"))
        yield rt
        await clear_runtime(rt, "/corral-conf")

    def make(self, root: Path, *command: str) -> Made:
        cid, bundle, config = super().make(root, *command)
        mount_overlay(ImageStore(root / "images").resolve("busybox"), bundle)
        return cid, bundle, config
