"""The runc runtime with conmon, for real: root containers from the built-in busybox image."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import pytest

from nodelet.runtime import ExitStatus, RuncRuntime, RuntimeError_
from tests.builders import spec
from tests.runcenv import busybox_bundle, clear_runtime
from wire.ids import new_container_id

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("conmon"),
    reason="needs root, runc and conmon (make test installs them)",
)


async def prepare(root: Path, command: tuple[str, ...], **kw: object) -> tuple[str, Path, dict[str, object]]:
    return busybox_bundle(root, spec("t", command=command, **kw))  # type: ignore[arg-type]


async def test_exit_code_and_logs(root: Path, runtime: RuncRuntime) -> None:
    cid, bundle, config = await prepare(root, ("sh", "-c", "echo hello; echo oops >&2; exit 42"))
    pid = await runtime.create(cid, bundle, config)
    assert pid > 0
    assert await runtime.status(cid) == "created"
    await runtime.start(cid)
    assert await runtime.wait(cid, 10) == ExitStatus(code=42)
    lines = runtime.logs(cid).read_text().splitlines()
    assert [line.split(" ", 3)[1:] for line in lines] == [["stdout", "F", "hello"], ["stderr", "F", "oops"]]
    await runtime.delete(cid)
    assert await runtime.status(cid) is None


async def test_stop_escalates_to_kill(root: Path, runtime: RuncRuntime) -> None:
    # PID 1 without a TERM handler ignores TERM: the stop must escalate.
    cid, bundle, config = await prepare(root, ("sleep", "60"))
    await runtime.create(cid, bundle, config)
    await runtime.start(cid)
    assert await runtime.status(cid) == "running"
    status = await runtime.stop(cid, grace_s=0.2)
    assert status == ExitStatus(code=137)
    assert status.signal == signal.SIGKILL


async def test_secure_defaults_hold_inside_the_container(root: Path, runtime: RuncRuntime) -> None:
    script = (
        "grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; "
        "unshare -n true 2>/dev/null && echo unshare-allowed || echo unshare-denied; "
        "mount -t tmpfs none /mnt 2>/dev/null && echo mount-allowed || echo mount-denied; "
        "cat /proc/kcore 2>/dev/null | head -c1 | wc -c"
    )
    cid, bundle, config = await prepare(root, ("sh", "-c", script))
    await runtime.create(cid, bundle, config)
    await runtime.start(cid)
    status = await runtime.wait(cid, 10)
    out = [line.split(" ", 3)[3] for line in runtime.logs(cid).read_text().splitlines()]
    assert status == ExitStatus(code=0), out
    fields = dict(line.split(":\t") for line in out[:3])
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"
    assert int(fields["CapEff"], 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
    assert out[3:] == ["unshare-denied", "mount-denied", "0"]


async def test_bad_command_is_a_clear_error_and_leaves_no_container(root: Path, runtime: RuncRuntime) -> None:
    cid, bundle, config = await prepare(root, ("/no/such/binary",))
    with pytest.raises(RuntimeError_, match="no such file"):
        await runtime.create(cid, bundle, config)
        await runtime.start(cid)
    await runtime.delete(cid)
    assert await runtime.status(cid) is None


async def test_exit_is_recorded_while_nobody_waits(root: Path, runtime: RuncRuntime) -> None:
    cid, bundle, config = await prepare(root, ("sh", "-c", "exit 3"))
    await runtime.create(cid, bundle, config)
    await runtime.start(cid)
    for _ in range(200):
        if runtime.exit_status(cid) is not None:
            break
        await asyncio.sleep(0.01)
    assert runtime.exit_status(cid) == ExitStatus(code=3)


async def test_a_runc_that_hangs_is_killed_and_said(tmp_path: Path) -> None:
    from nodelet.runtime import RuntimePaths

    hung = tmp_path / "runc"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    rt = RuncRuntime(RuntimePaths(tmp_path / "rt"), runc=str(hung), runc_timeout_s=0.5)
    with pytest.raises(RuntimeError_, match=r"no answer in \d s; killed"):
        await rt.status(new_container_id())


async def test_a_log_flood_stays_under_the_hard_cap(root: Path) -> None:
    """conmon's --log-size-max: however fast a container writes, its live log stays under the cap (here
    256 KiB, with nothing rotating it), and the container is not held back."""
    from nodelet.runtime import RuntimePaths

    rt = RuncRuntime(RuntimePaths(root / "rt-capped"), log_size_max=256 << 10)
    cid, bundle, config = await prepare(root, ("sh", "-c", "yes 0123456789abcdef | head -c 8000000; echo done"))
    try:
        await rt.create(cid, bundle, config)
        await rt.start(cid)
        assert await rt.wait(cid, 60) == ExitStatus(code=0)
        size = rt.logs(cid).stat().st_size
        assert 0 < size <= (256 << 10) + (16 << 10), size  # the cap, give or take one record
        assert rt.logs(cid).read_text().splitlines()[-1].endswith("done")  # the last write is kept
    finally:
        await clear_runtime(rt, "/corral-test")
