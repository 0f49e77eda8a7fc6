"""The default-deny seccomp profile, from inside real runc containers: a static probe says what gets through
(against the same probe with no filter, which shows the host would have allowed it), and everyday programs —
busybox applets and Python with threads, subprocesses, sockets and sqlite — still work."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodelet.runtime import ExitStatus, RuncRuntime
from nodelet.seccomp import RUNTIME_DEFAULT
from tests.builders import spec
from tests.runcenv import busybox_bundle
from wire.spec import Mount

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("conmon"),
    reason="needs root, runc and conmon (make test installs them)",
)
PROBE_SOURCE = Path(__file__).parent / "probes" / "seccomp_probe.c"


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The probe built static (gcc and libc6-dev: make test installs them)."""
    out = tmp_path_factory.mktemp("probe")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out / "probe"), str(PROBE_SOURCE)], check=True)
    yield out


async def run(
    root: Path, runtime: RuncRuntime, command: tuple[str, ...], mounts: dict[str, str], seccomp: dict[str, Any] | None
) -> tuple[ExitStatus, list[str]]:
    mounted = tuple(Mount(source=s, destination=d) for s, d in mounts.items())
    cid, bundle, config = busybox_bundle(
        root, spec("t", command=command, mounts=mounted), allowed_host_mounts=tuple(mounts), seccomp=seccomp
    )
    await runtime.create(cid, bundle, config)
    await runtime.start(cid)
    status = await runtime.wait(cid, 60)
    return status, [line.split(" ", 3)[3] for line in runtime.logs(cid).read_text().splitlines()]


async def probe(root: Path, runtime: RuncRuntime, probe_dir: Path, seccomp: dict[str, Any] | None) -> dict[str, str]:
    status, out = await run(root, runtime, ("/probe/probe",), {str(probe_dir): "/probe"}, seccomp)
    assert status == ExitStatus(code=0), out
    return dict(line.split(" ", 1) for line in out)


async def test_what_the_probe_gets_through(root: Path, runtime: RuncRuntime, probe_dir: Path) -> None:
    filtered = await probe(root, runtime, probe_dir, RUNTIME_DEFAULT)
    unfiltered = await probe(root, runtime, probe_dir, None)
    assert filtered == {
        "io_uring_setup": "EPERM",
        "socket_vsock": "EPERM",
        "socket_vsock_high_bits": "EPERM",  # AF_VSOCK with bits above 32 the kernel drops
        "syscall_1000": "ENOSYS",  # runc's stub for numbers past every syscall the filter knows
        "add_key": "EPERM",
        "unshare_user": "EPERM",
        "personality_linux": "ok",
        "personality_no_aslr": "EPERM",
        "socket_inet": "ok",
        "getpid": "ok",
    }, filtered
    # Without the filter the kernel answers for itself: io_uring and add_key go through, vsock fails only for
    # want of a vsock device (or works), so the EPERMs above are the filter's.
    assert unfiltered["io_uring_setup"] == "ok" or not Path("/proc/sys/kernel/io_uring_disabled").exists()
    assert unfiltered["add_key"] == "ok"
    assert unfiltered["socket_vsock"] in ("ok", "EAFNOSUPPORT")
    assert unfiltered["socket_vsock_high_bits"] == unfiltered["socket_vsock"]  # the same call to the kernel
    assert unfiltered["personality_no_aslr"] == "ok"


async def test_busybox_applets_work(root: Path, runtime: RuncRuntime) -> None:
    script = (
        "set -e; mkdir -p /tmp/d && cd /tmp/d && echo hi > f && cp f g && sort f g | uniq -c | grep -q '2 hi'; "
        "ls -la /proc/self/ >/dev/null; ps >/dev/null; date >/dev/null; sleep 0.1 & wait; "
        "tar -cf /tmp/a.tar f g && tar -tf /tmp/a.tar | wc -l | grep -q 2; "
        'sha256sum f >/dev/null; mkfifo /tmp/p; (echo ping > /tmp/p) & read x < /tmp/p; [ "$x" = ping ]; '
        "id -u | grep -q 0; env | grep -q PATH; echo fine"
    )
    status, out = await run(root, runtime, ("sh", "-c", script), {}, RUNTIME_DEFAULT)
    assert (status, out[-1:]) == (ExitStatus(code=0), ["fine"]), out


PYTHON = """
import asyncio, hashlib, json, socket, sqlite3, subprocess, threading, os
t = threading.Thread(target=lambda: None); t.start(); t.join()
assert subprocess.run(["/bin/busybox", "true"]).returncode == 0
a, b = socket.socketpair(); a.send(b"x"); assert b.recv(1) == b"x"
db = sqlite3.connect(":memory:"); db.execute("create table t (x)"); db.execute("insert into t values (1)")
async def main():
    r, w = await asyncio.open_connection(sock=socket.socketpair()[0]); w.close()
asyncio.run(main())
os.urandom(8); hashlib.sha256(b"x").hexdigest(); json.dumps({"ok": True})
print("python fine")
"""


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the host's python3 is mounted into the container")
async def test_python_works(root: Path, runtime: RuncRuntime) -> None:
    mounts = {"/usr": "/usr", "/usr/lib": "/lib", "/usr/lib64": "/lib64"}
    status, out = await run(root, runtime, ("/usr/bin/python3", "-c", PYTHON), mounts, RUNTIME_DEFAULT)
    assert (status, out[-1:]) == (ExitStatus(code=0), ["python fine"]), out
