"""Remove everything a stopped nodelet left on the host: its containers (killed and deleted with runc), their
mounted roots, its state directory and its cgroups. For tests, benchmarks and operators clearing a node; never
run it while the nodelet runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def reap_containers(data: Path, timeout_s: float = 10.0, workers: int = 8) -> None:
    """Kill and delete, with runc, every container a stopped nodelet under ``data`` left (several at a time: a
    node may have left thousands), and unmount their roots, deepest first. Each command is bounded by
    ``timeout_s``; a root that will not unmount (busy, or the command hung) is detached lazily so nothing stays
    mounted."""
    runc_root = data / "rt" / "runc"
    with ThreadPoolExecutor(workers) as pool:
        if runc_root.exists():
            deletes = [["runc", "--root", str(runc_root), "delete", "-f", cid] for cid in os.listdir(runc_root)]
            list(pool.map(lambda argv: _run(argv, timeout_s), deletes))
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        ours = sorted((m for m in mounts if m.startswith(f"{data}/")), reverse=True)
        # Whatever is mounted deeper first, deepest first; then the containers' roots, side by side.
        roots = [m for m in ours if m.endswith("/rootfs")]
        for target in ours:
            if target not in roots:
                _unmount(target, timeout_s)
        list(pool.map(lambda target: _unmount(target, timeout_s), roots))


def _unmount(target: str, timeout_s: float) -> None:
    if not _run(["umount", target], timeout_s):
        _run(["umount", "-l", target], timeout_s)


def _run(argv: list[str], timeout_s: float) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, check=False, timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def purge_node(data: Path, cgroup_root: str | None) -> None:
    """Clear a nodelet's state under ``data``; with ``cgroup_root`` (which nodes may share: pass it for the last
    node cleared), remove the cgroups under it too."""
    reap_containers(data)
    shutil.rmtree(data, ignore_errors=True)
    if cgroup_root is not None:
        for d in sorted(Path("/sys/fs/cgroup").glob(f"*/{cgroup_root.strip('/')}/**/"), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
