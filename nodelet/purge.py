"""Remove everything a stopped nodelet left on the host: its containers (killed and deleted with runc), their
mounted roots, its state directory and its cgroups. For tests, benchmarks and operators clearing a node; never
run it while the nodelet runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path


def reap_containers(data: Path, timeout_s: float = 10.0) -> None:
    """Kill and delete, with runc, every container a stopped nodelet under ``data`` left, and unmount their
    roots (deepest first). Each command is bounded by ``timeout_s``; a root that will not unmount (busy, or the
    command hung) is detached lazily so nothing stays mounted."""
    runc_root = data / "rt" / "runc"
    if runc_root.exists():
        for cid in os.listdir(runc_root):
            _run(["runc", "--root", str(runc_root), "delete", "-f", cid], timeout_s)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(f"{data}/")), reverse=True):
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
