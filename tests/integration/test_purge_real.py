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
