"""The reaper against real mounts: what a stopped nodelet left mounted is gone afterwards, a busy mount too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nodelet.purge import reap_containers


def mounted() -> set[str]:
    return {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()}


@pytest.mark.skipif(not Path("/proc/self/mounts").exists(), reason="needs /proc")
def test_reap_unmounts_deepest_first_and_detaches_a_busy_root(tmp_path: Path) -> None:
    data = tmp_path / "node-1"
    outer, inner = data / "containers" / "a" / "root", data / "containers" / "a" / "root" / "inner"
    outer.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(outer)], check=True)
    inner.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(inner)], check=True)
    # A process whose working directory is inside the root keeps it busy: a plain umount fails with EBUSY.
    holder = subprocess.Popen(["sleep", "30"], cwd=inner)
    try:
        assert subprocess.run(["umount", str(inner)], check=False, capture_output=True).returncode != 0
        reap_containers(data, timeout_s=5)
        assert not {str(outer), str(inner)} & mounted()
    finally:
        holder.kill()
        holder.wait()
        for target in (inner, outer):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def test_reap_kills_what_is_left_in_the_nodes_cgroups_that_runc_no_longer_knows(tmp_path: Path) -> None:
    import uuid

    from nodelet.purge import kill_cgroup

    top = f"corral-reap-{uuid.uuid4().hex[:6]}"
    cgroup = f"/{top}/node-1"
    roots = [p for p in Path("/sys/fs/cgroup").iterdir() if not p.is_symlink() and (p / "cgroup.procs").exists()]
    root = roots[0] if roots else Path("/sys/fs/cgroup")  # a v1 or hybrid hierarchy, or pure v2
    leaf = root / top / "node-1" / "orphan"
    leaf.mkdir(parents=True)
    orphan = subprocess.Popen(["sleep", "60"])  # as a runc init whose create was cut short: no state, no runc entry
    try:
        (leaf / "cgroup.procs").write_text(str(orphan.pid))
        reap_containers(tmp_path / "node-1", timeout_s=5, cgroup=cgroup)
        assert orphan.wait(timeout=5) == -9
        assert kill_cgroup(cgroup, 1) == set()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
        for d in (leaf, leaf.parent, leaf.parent.parent):
            d.rmdir()
