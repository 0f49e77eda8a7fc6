"""Remove everything a stopped nodelet left on the host: its containers (killed and deleted with runc), their
mounted roots, its state directory and its cgroups. For tests, benchmarks and operators clearing a node; never
run it while the nodelet runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nodelet.procfacts import mount_points


def reap_containers(data: Path, timeout_s: float = 10.0, workers: int = 8, cgroup: str | None = None) -> None:
    """Kill and delete, with runc, every container a stopped nodelet under ``data`` left (several at a time: a
    node may have left thousands), and unmount their roots, deepest first. Each command is bounded by
    ``timeout_s``; a root that will not unmount (busy, or the command hung) is detached lazily so nothing stays
    mounted. With ``cgroup`` (the node's cgroup path), every process still in it afterwards is killed too: one
    runc no longer knows (its create cut short) would otherwise live on."""
    data = data.resolve()  # mount tables name real paths
    runc_root = data / "rt" / "runc"
    with ThreadPoolExecutor(workers) as pool:
        if runc_root.exists():
            deletes = [["runc", "--root", str(runc_root), "delete", "-f", cid] for cid in os.listdir(runc_root)]
            list(pool.map(lambda argv: _run(argv, timeout_s), deletes))
        if cgroup is not None:
            kill_cgroup(cgroup, timeout_s)
        ours = sorted(mounts_under(data), reverse=True)
        # Whatever is mounted deeper first, deepest first; then the containers' roots, side by side; then the
        # tmpfs their writable layers were on.
        roots = [m for m in ours if m.endswith("/rootfs")]
        scratch = [m for m in ours if m.endswith("/scratch")]
        for target in ours:
            if target not in roots and target not in scratch:
                _unmount(target, timeout_s)
        list(pool.map(lambda target: _unmount(target, timeout_s), roots))
        list(pool.map(lambda target: _unmount(target, timeout_s), scratch))


def _procs_files(cgroup: str) -> list[Path]:
    """The ``cgroup.procs`` files of ``cgroup`` and every cgroup below it, in every hierarchy (v1 and v2)."""
    rel = cgroup.strip("/")
    tops = [p for p in Path("/sys/fs/cgroup").glob(f"*/{rel}") if p.is_dir()]
    if (Path("/sys/fs/cgroup") / rel).is_dir() and (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
        tops.append(Path("/sys/fs/cgroup") / rel)  # pure cgroup v2
    return [f for top in tops for f in top.glob("**/cgroup.procs")]


def _pids(cgroup: str) -> set[int]:
    pids: set[int] = set()
    for f in _procs_files(cgroup):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(line) for line in f.read_text().split())
    return pids


def kill_cgroup(cgroup: str, timeout_s: float) -> set[int]:
    """SIGKILL every process in ``cgroup`` and below, until none is left or ``timeout_s`` passed; returns the
    pids still there (none, normally)."""
    deadline = time.monotonic() + timeout_s
    while (pids := _pids(cgroup)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return pids


def _unmount(target: str, timeout_s: float) -> None:
    if not _run(["umount", target], timeout_s):
        _run(["umount", "-l", target], timeout_s)


def _run(argv: list[str], timeout_s: float) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, check=False, timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def mounts_under(path: Path) -> list[str]:
    """What is mounted below ``path`` (a real path), as the mount table says it (its escapes decoded)."""
    return [p for p in mount_points() if p.startswith(f"{path}/")]


def purge_node(data: Path, cgroup_root: str | None) -> None:
    """Clear a nodelet's state under ``data``; with ``cgroup_root`` (which nodes may share: pass it for the last
    node cleared), remove the cgroups under it too. Never removes files while anything is still mounted below
    (a host path bind-mounted there would be emptied): OSError then, naming what is."""
    data = data.resolve()
    reap_containers(data, cgroup=cgroup_root)
    left = mounts_under(data)
    for point in sorted(left, reverse=True):  # what would not unmount: detached, so that nothing is reached
        _run(["umount", "-l", point], 10.0)
    if mounts_under(data):
        raise OSError(f"{data}: still mounted below it, not removed: {mounts_under(data)}")
    shutil.rmtree(data, ignore_errors=True)
    if cgroup_root is not None:
        for d in sorted(Path("/sys/fs/cgroup").glob(f"*/{cgroup_root.strip('/')}/**/"), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
