"""nodelet.cgroups on this machine's real cgroup v1 hierarchies (root only). Every test works under its own
/corral-test-<random> cgroup, removed from every hierarchy afterwards even when the test fails."""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from nodelet.cgroups import CgroupError, CgroupLayout, Cgroups, CpuSettings, detect_layout, plan_writes

MI = 2**20

if os.geteuid() != 0:
    pytest.skip("needs root to create cgroups", allow_module_level=True)
if not os.path.isdir("/sys/fs/cgroup/cpu"):
    pytest.skip("needs cgroup v1 with a cpu hierarchy at /sys/fs/cgroup/cpu", allow_module_level=True)

LAYOUT = detect_layout()
if LAYOUT.version != 1:
    pytest.skip("needs a cgroup v1 host (v2 is covered by tests/unit/test_cgroups.py)", allow_module_level=True)


def leftovers(layout: CgroupLayout, root: str) -> list[str]:
    """Directories of ``root`` in any hierarchy."""
    return [d for mount in layout.mounts if os.path.isdir(d := os.path.join(mount, root.lstrip("/")))]


@pytest.fixture
def cgroups() -> Cgroups:
    return Cgroups(LAYOUT)


@pytest.fixture
def root(cgroups: Cgroups) -> Iterator[str]:
    """A fresh top-level test cgroup; afterwards every cgroup under it is removed, deepest first, and none may
    be left in any hierarchy."""
    path = f"/corral-test-{secrets.token_hex(4)}"
    try:
        yield path
    finally:
        below: set[str] = set()
        for top in leftovers(LAYOUT, path):
            mount = top[: -len(path)]
            below.update("/" + os.path.relpath(d, mount) for d, _, _ in os.walk(top))
        for cgroup in sorted(below, key=lambda p: p.count("/"), reverse=True):
            cgroups.remove(cgroup)
        assert leftovers(LAYOUT, path) == []


@pytest.fixture
def sleeper(root: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process to move into cgroups; killed before ``root`` cleans up (it depends on ``root``)."""
    process = subprocess.Popen(["sleep", "600"])
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def join(cgroups: Cgroups, path: str, pid: int) -> None:
    """Move ``pid`` into ``path`` in each hierarchy, as runc would."""
    for controller in ("cpu", "cpuacct", "cpuset", "memory", "pids"):
        Path(cgroups.layout.directory(controller, path), "cgroup.procs").write_text(str(pid))


def test_layout_of_this_machine() -> None:
    assert LAYOUT.version == 1
    assert LAYOUT.controllers["cpu"] == "/sys/fs/cgroup/cpu"
    assert LAYOUT.controllers["cpuacct"] in ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu")
    assert set(LAYOUT.controllers) == {"cpu", "cpuacct", "cpuset", "memory", "pids"}


def test_apply_read_update(cgroups: Cgroups, root: str) -> None:
    c1 = f"{root}/n1/c1"
    cgroups.create(c1)
    for controller in ("cpu", "cpuacct", "cpuset", "memory", "pids"):
        assert os.path.isdir(cgroups.layout.directory(controller, c1))

    first = CpuSettings(
        shares=512, quota_us=50_000, burst_us=50_000, cpus="0", mems="0", memory_bytes=64 * MI, pids_max=100
    )
    cgroups.apply(c1, first)
    assert cgroups.read(c1) == first

    # Lower the quota below the current burst: the layer lowers the burst first, or the kernel says EINVAL.
    lower = msgspec.structs.replace(first, quota_us=30_000, burst_us=30_000)
    assert plan_writes(LAYOUT, first, lower) == [("cpu.cfs_burst_us", "30000"), ("cpu.cfs_quota_us", "30000")]
    cgroups.apply(c1, lower, old=first)
    assert cgroups.read(c1) == lower

    # From unknown state (old=None) the same kind of step works: burst zeroed, quota set, burst set.
    lowest = CpuSettings(
        shares=256, quota_us=20_000, burst_us=20_000, cpus="0", mems="0", memory_bytes=32 * MI, pids_max=50
    )
    cgroups.apply(c1, lowest)
    assert cgroups.read(c1) == lowest

    # Raise quota and burst above the old quota: the quota goes first.
    higher = CpuSettings(shares=2048, quota_us=80_000, burst_us=80_000, period_us=200_000, cpus="0", mems="0")
    cgroups.apply(c1, higher, old=cgroups.read(c1))
    assert cgroups.read(c1) == higher


def test_the_kernel_refuses_the_naive_order(cgroups: Cgroups, root: str) -> None:
    """What plan_writes protects against, shown on this kernel: quota below the current burst is EINVAL."""
    c1 = f"{root}/c1"
    cgroups.create(c1)
    cgroups.apply(c1, CpuSettings(quota_us=50_000, burst_us=50_000))
    with pytest.raises(OSError) as info:
        Path(cgroups.layout.file("cpu.cfs_quota_us", c1)).write_text("30000")
    assert info.value.errno == errno.EINVAL


def test_a_wrong_old_state_surfaces_as_a_named_error(cgroups: Cgroups, root: str) -> None:
    """``old`` must be true; a stale one can order writes badly, and the error says which write failed.
    ``old=None`` is always safe."""
    c1 = f"{root}/c1"
    cgroups.create(c1)
    cgroups.apply(c1, CpuSettings(quota_us=30_000))
    higher = CpuSettings(quota_us=80_000, burst_us=80_000)
    with pytest.raises(CgroupError) as info:
        cgroups.apply(c1, higher, old=CpuSettings())  # claims no quota, so the burst goes first
    file = cgroups.layout.file("cpu.cfs_burst_us", c1)
    assert str(info.value) == (
        f"cannot write '80000' to {file}: Invalid argument (EINVAL) (burst must not exceed the quota)"
    )
    cgroups.apply(c1, higher)
    # v1 spells out an inherited cpuset: it reads back as the parent's.
    parent = cgroups.read(root)
    assert cgroups.read(c1) == msgspec.structs.replace(higher, cpus=parent.cpus, mems=parent.mems)


def test_bad_cpuset_names_the_file_and_value(cgroups: Cgroups, root: str) -> None:
    c1 = f"{root}/c1"
    cgroups.create(c1)
    with pytest.raises(CgroupError) as info:
        cgroups.apply(c1, CpuSettings(cpus="999"))
    file = cgroups.layout.file("cpuset.cpus", c1)
    # Kernel 6.x says ERANGE for a CPU beyond the possible ones; older kernels said EINVAL.
    assert str(info.value) in (
        f"cannot write '999' to {file}: Numerical result out of range (ERANGE) (no such CPU on this machine)",
        f"cannot write '999' to {file}: Invalid argument (EINVAL) (CPUs must exist, be online and lie within the "
        "parent's cpuset)",
    )
    assert (info.value.file, info.value.value) == (file, "999")
    assert info.value.errno in (errno.ERANGE, errno.EINVAL)


def test_a_task_can_join_an_inherited_cpuset(cgroups: Cgroups, root: str, sleeper: subprocess.Popen[bytes]) -> None:
    """A new v1 cpuset directory is empty and admits no task (ENOSPC); create and apply fill it from the parent."""
    c1 = f"{root}/n1/c1"
    cgroups.create(c1)
    parent = Path(cgroups.layout.directory("cpuset", "/"))
    for level in (root, f"{root}/n1", c1):
        for name in ("cpuset.cpus", "cpuset.mems"):
            assert Path(cgroups.layout.file(name, level)).read_text() == (parent / name).read_text()
    cgroups.apply(c1, CpuSettings(shares=128, quota_us=10_000, pids_max=10))
    join(cgroups, c1, sleeper.pid)
    lines = Path(f"/proc/{sleeper.pid}/cgroup").read_text().splitlines()
    assert {line.split(":", 2)[1] for line in lines if line.endswith(f":{c1}")} >= {
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "pids",
    }
    stats = cgroups.stats_paths(c1)
    assert {"nr_periods", "nr_throttled", "throttled_time", "nr_bursts", "burst_time"} <= {
        line.split()[0] for line in Path(stats.cpu_stat).read_text().splitlines()
    }
    assert int(Path(stats.cpu_usage).read_text()) >= 0
    assert int(Path(stats.memory_usage).read_text()) >= 0


def test_create_repairs_an_empty_cpuset_left_by_a_crash(cgroups: Cgroups, root: str) -> None:
    os.mkdir(cgroups.layout.directory("cpuset", root))  # a crash between mkdir and filling the cpuset
    assert Path(cgroups.layout.file("cpuset.cpus", root)).read_text().strip() == ""
    cgroups.create(f"{root}/c1")
    assert Path(cgroups.layout.file("cpuset.cpus", root)).read_text().strip() != ""


def test_remove_keeps_parents_in_use_and_is_idempotent(cgroups: Cgroups, root: str) -> None:
    cgroups.create(f"{root}/n1/c1")
    cgroups.create(f"{root}/n1/c2")
    cgroups.remove(f"{root}/n1/c1")
    assert not os.path.exists(cgroups.layout.directory("cpu", f"{root}/n1/c1"))
    assert os.path.isdir(cgroups.layout.directory("cpu", f"{root}/n1/c2"))
    cgroups.remove(f"{root}/n1/c1")
    cgroups.remove(f"{root}/n1/c2", root=root)
    assert leftovers(LAYOUT, f"{root}/n1") == []
    assert len(leftovers(LAYOUT, root)) == len(LAYOUT.hierarchies())
    cgroups.remove(f"{root}/n1/c2")
    assert leftovers(LAYOUT, root) == []


def test_remove_of_a_busy_leaf_gives_up_then_succeeds_once_empty(
    cgroups: Cgroups, root: str, sleeper: subprocess.Popen[bytes]
) -> None:
    c1 = f"{root}/c1"
    cgroups.create(c1)
    cgroups.apply(c1, CpuSettings())
    join(cgroups, c1, sleeper.pid)
    with pytest.raises(CgroupError, match=r"cannot remove .*/c1: Device or resource busy \(EBUSY\)") as info:
        cgroups.remove(c1, busy_timeout_s=0.05)
    assert info.value.errno == errno.EBUSY
    sleeper.kill()
    sleeper.wait(timeout=10)
    cgroups.remove(c1)  # a just-reaped task may keep the cgroup busy for a moment: remove retries
    assert leftovers(LAYOUT, root) == []


def test_remove_retries_while_the_last_task_exits(cgroups: Cgroups, root: str) -> None:
    """cat exits on EOF; right after closing its stdin the kernel still counts it (rmdir says EBUSY nearly
    every time here), and remove retries until it is gone, without the test waiting for the exit."""
    c1 = f"{root}/c1"
    cgroups.create(c1)
    cgroups.apply(c1, CpuSettings())
    process = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        join(cgroups, c1, process.pid)
        assert process.stdin is not None
        process.stdin.close()
        cgroups.remove(c1, busy_timeout_s=5)
        assert leftovers(LAYOUT, root) == []
    finally:
        process.kill()
        process.wait(timeout=10)


def test_memory_raise_after_runc_set_memory_and_swap(cgroups: Cgroups, root: str) -> None:
    """runc sets memory+swap equal to the limit (OCI swap = limit); a larger limit alone would be EINVAL."""
    c1 = f"{root}/c1"
    cgroups.create(c1)
    limit, memsw = (Path(cgroups.layout.file(n, c1)) for n in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"))
    if not memsw.exists():
        pytest.skip("no swap accounting on this kernel (memory.memsw.limit_in_bytes is absent)")
    limit.write_text(str(64 * MI))
    memsw.write_text(str(64 * MI))  # as runc does at create
    with pytest.raises(OSError) as info:
        limit.write_text(str(128 * MI))
    assert info.value.errno == errno.EINVAL

    cgroups.apply(c1, CpuSettings(memory_bytes=128 * MI), old=cgroups.read(c1))
    assert (limit.read_text(), memsw.read_text()) == (f"{128 * MI}\n", f"{128 * MI}\n")
    cgroups.apply(c1, CpuSettings(memory_bytes=32 * MI))  # unknown state: memsw unlimited first
    assert (limit.read_text(), memsw.read_text()) == (f"{32 * MI}\n", f"{32 * MI}\n")
    cgroups.apply(c1, CpuSettings(), old=cgroups.read(c1))
    assert cgroups.read(c1).memory_bytes is None
