"""nodelet.cgroups, pure parts: cpulists, settings, the v1/v2 mapping, write ordering, mountinfo parsing. The
v2 shell runs against a temporary tree that mimics cgroup2 files (this host has no v2 cpu controller); v1 is
tested on the real kernel in tests/integration/test_cgroups_real.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from nodelet.cgroups import (
    FROM_PARENT,
    MAX_SHARES,
    MAX_WEIGHT,
    MIN_SHARES,
    BurstClamp,
    CgroupError,
    CgroupLayout,
    Cgroups,
    CpuSettings,
    StatsPaths,
    Value,
    Write,
    detect_layout,
    format_cpulist,
    parse_cpulist,
    parse_mountinfo,
    plan_writes,
    settings_for,
    settings_from_files,
    shares_to_weight,
    v1_files,
    v2_files,
    weight_to_shares,
)
from tests.builders import lsr, spec
from wire.spec import QoS

MI = 2**20

# --- layouts and mountinfo samples -------------------------------------------------------------------------------

# This machine: v1 hybrid, cpu and cpuacct mounted apart, cgroup2 at unified holding only hugetlb.
MOUNTINFO_HERE = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12358300k,nr_inodes=3089575,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24731708k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# Ubuntu 20.04 with systemd's hybrid mode: cpu,cpuacct co-mounted, optional fields (shared:N), an empty cgroup2.
MOUNTINFO_COMOUNTED = """\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
34 24 0:29 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
35 34 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
36 34 0:31 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
39 34 0:34 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup \
rw,net_cls,net_prio
40 34 0:35 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
41 34 0:36 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
42 34 0:37 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
43 34 0:38 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,cpuset
44 34 0:39 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:20 - cgroup cgroup rw,devices
"""

# CentOS 7: legacy v1 only, the directory named "cpuacct,cpu" with the symlinks cpu and cpuacct beside it.
MOUNTINFO_CENTOS7 = """\
18 61 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw,seclabel
23 18 0:19 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,seclabel,mode=755
24 23 0:20 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,seclabel,xattr,\
release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
27 23 0:23 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,seclabel,cpuset
28 23 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,seclabel,\
cpuacct,cpu
31 23 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,seclabel,memory
33 23 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,seclabel,pids
"""

# Debian 12 / Fedora with systemd's default: cgroup2 only.
MOUNTINFO_V2 = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
31 22 0:27 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
"""

V1_HERE = CgroupLayout(
    version=1,
    controllers={c: f"/sys/fs/cgroup/{c}" for c in ("cpu", "cpuacct", "cpuset", "memory", "pids")},
    mounts=tuple(
        f"/sys/fs/cgroup/{m}"
        for m in ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd", "unified")
    ),
)
V1_COMOUNTED = CgroupLayout(
    version=1,
    controllers={
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuset": "/sys/fs/cgroup/cpuset",
        "memory": "/sys/fs/cgroup/memory",
        "pids": "/sys/fs/cgroup/pids",
    },
    mounts=tuple(
        f"/sys/fs/cgroup/{m}"
        for m in ("unified", "systemd", "net_cls,net_prio", "cpu,cpuacct", "memory", "pids", "cpuset", "devices")
    ),
)
V2 = CgroupLayout(
    version=2, controllers=dict.fromkeys(V1_HERE.controllers, "/sys/fs/cgroup"), mounts=("/sys/fs/cgroup",)
)


@pytest.mark.parametrize(
    ("text", "layout"),
    [
        pytest.param(MOUNTINFO_HERE, V1_HERE, id="v1-cpu-cpuacct-apart-this-machine"),
        pytest.param(MOUNTINFO_COMOUNTED, V1_COMOUNTED, id="v1-cpu-cpuacct-comounted-hybrid"),
        pytest.param(
            MOUNTINFO_CENTOS7,
            CgroupLayout(
                version=1,
                controllers={
                    "cpuset": "/sys/fs/cgroup/cpuset",
                    "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                    "cpu": "/sys/fs/cgroup/cpu,cpuacct",
                    "memory": "/sys/fs/cgroup/memory",
                    "pids": "/sys/fs/cgroup/pids",
                },
                mounts=tuple(f"/sys/fs/cgroup/{m}" for m in ("systemd", "cpuset", "cpu,cpuacct", "memory", "pids")),
            ),
            id="v1-legacy-cpuacct-cpu",
        ),
        pytest.param(MOUNTINFO_V2, V2, id="v2-only"),
        pytest.param(
            "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n",
            CgroupLayout(
                version=2, controllers=dict.fromkeys(V1_HERE.controllers, "/mnt/cg two"), mounts=("/mnt/cg two",)
            ),
            id="v2-escaped-mount-point",
        ),
        pytest.param(
            MOUNTINFO_V2 + "50 30 0:26 / /run/other rw - cgroup2 cgroup2 rw\n",
            CgroupLayout(version=2, controllers=V2.controllers, mounts=("/sys/fs/cgroup", "/run/other")),
            id="v2-prefers-sys-fs-cgroup",
        ),
    ],
)
def test_parse_mountinfo(text: str, layout: CgroupLayout) -> None:
    assert parse_mountinfo(text) == layout


def test_parse_mountinfo_of_this_machine_if_it_is_the_documented_kind() -> None:
    here = Path("/proc/self/mountinfo").read_text()
    if "/sys/fs/cgroup/cpuacct " not in here:
        pytest.skip("not the documented v1 hybrid host (cpu and cpuacct mounted apart)")
    layout = parse_mountinfo(here)
    assert (layout.version, layout.controllers) == (1, V1_HERE.controllers)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(MOUNTINFO_V2.replace("cgroup2 cgroup2", "ext4 /dev/x"), "no cgroup filesystem", id="none"),
        pytest.param(
            MOUNTINFO_HERE.replace("rw,pids", "rw,rdma"),
            "cgroup v1 without a hierarchy for pids",
            id="v1-missing-pids",
        ),
        pytest.param(
            MOUNTINFO_HERE.replace("rw,pids", "rw,rdma").replace("rw,memory", "rw,hugetlb"),
            "for memory, pids",
            id="v1-missing-two",
        ),
        pytest.param("32 31 0:29 / /sys/fs/cgroup/cpu rw\n", "mountinfo line 1 is malformed", id="no-separator"),
        pytest.param("32 31 0:29 / /x rw - cgroup\n", "mountinfo line 1 is malformed", id="truncated"),
    ],
)
def test_parse_mountinfo_refuses(text: str, message: str) -> None:
    with pytest.raises(CgroupError, match=message):
        parse_mountinfo(text)


@pytest.mark.parametrize(
    ("layout", "name", "file"),
    [
        pytest.param(V1_HERE, "cpu.shares", "/sys/fs/cgroup/cpu/corral/n1/c1/cpu.shares", id="v1-cpu"),
        pytest.param(V1_HERE, "cpuacct.usage", "/sys/fs/cgroup/cpuacct/corral/n1/c1/cpuacct.usage", id="v1-cpuacct"),
        pytest.param(
            V1_COMOUNTED, "cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/corral/n1/c1/cpuacct.usage", id="comounted"
        ),
        pytest.param(V1_HERE, "cpuset.cpus", "/sys/fs/cgroup/cpuset/corral/n1/c1/cpuset.cpus", id="v1-cpuset"),
        pytest.param(V2, "cpu.max.burst", "/sys/fs/cgroup/corral/n1/c1/cpu.max.burst", id="v2"),
    ],
)
def test_layout_file(layout: CgroupLayout, name: str, file: str) -> None:
    assert layout.file(name, "/corral/n1/c1") == file


def test_layout_hierarchies_are_distinct() -> None:
    assert V1_COMOUNTED.hierarchies() == (
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/cpuset",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
    )
    assert V2.hierarchies() == ("/sys/fs/cgroup",)


@pytest.mark.parametrize("path", ["corral/n1", "", "/corral/../etc", "/corral//n1", "/corral/n1/", "/a/./b", "/a\0"])
def test_paths_must_be_absolute_and_normalised(path: str) -> None:
    with pytest.raises(ValueError, match="must be absolute and normalised"):
        V1_HERE.directory("cpu", path)


def test_the_root_cgroup_is_a_directory_but_never_created_or_removed() -> None:
    assert V1_HERE.directory("cpu", "/") == "/sys/fs/cgroup/cpu"
    for operation in (Cgroups(V1_HERE).create, Cgroups(V1_HERE).remove):
        with pytest.raises(ValueError, match="must be absolute and normalised"):
            operation("/")


@pytest.mark.parametrize(
    ("layout", "paths"),
    [
        pytest.param(
            V1_HERE,
            StatsPaths(
                version=1,
                cpu_stat="/sys/fs/cgroup/cpu/corral/n1/c1/cpu.stat",
                cpu_usage="/sys/fs/cgroup/cpuacct/corral/n1/c1/cpuacct.usage",
                memory_usage="/sys/fs/cgroup/memory/corral/n1/c1/memory.usage_in_bytes",
            ),
            id="v1-apart",
        ),
        pytest.param(
            V1_COMOUNTED,
            StatsPaths(
                version=1,
                cpu_stat="/sys/fs/cgroup/cpu,cpuacct/corral/n1/c1/cpu.stat",
                cpu_usage="/sys/fs/cgroup/cpu,cpuacct/corral/n1/c1/cpuacct.usage",
                memory_usage="/sys/fs/cgroup/memory/corral/n1/c1/memory.usage_in_bytes",
            ),
            id="v1-comounted",
        ),
        pytest.param(
            V2,
            StatsPaths(
                version=2,
                cpu_stat="/sys/fs/cgroup/corral/n1/c1/cpu.stat",
                cpu_usage="/sys/fs/cgroup/corral/n1/c1/cpu.stat",
                memory_usage="/sys/fs/cgroup/corral/n1/c1/memory.current",
            ),
            id="v2",
        ),
    ],
)
def test_stats_paths(layout: CgroupLayout, paths: StatsPaths) -> None:
    assert Cgroups(layout).stats_paths("/corral/n1/c1") == paths


# --- cpulists ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        pytest.param((), "", id="empty"),
        pytest.param((0,), "0", id="one"),
        pytest.param((0, 1, 2, 5), "0-2,5", id="range-and-single"),
        pytest.param((0, 2, 4), "0,2,4", id="no-ranges"),
        pytest.param((8, 9, 0, 1), "0-1,8-9", id="unsorted"),
        pytest.param((3, 3, 4), "3-4", id="duplicates"),
        pytest.param((0, 1, 2, 3, 8), "0-3,8", id="brief-example"),
    ],
)
def test_format_cpulist(ids: tuple[int, ...], text: str) -> None:
    assert format_cpulist(ids) == text


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        pytest.param("", (), id="empty"),
        pytest.param("\n", (), id="kernel-empty"),
        pytest.param("0-3,8\n", (0, 1, 2, 3, 8), id="kernel-output"),
        pytest.param("5,1-2", (1, 2, 5), id="unsorted"),
        pytest.param("1-1", (1,), id="one-element-range"),
        pytest.param("0-2,1-3", (0, 1, 2, 3), id="overlap"),
    ],
)
def test_parse_cpulist(text: str, ids: tuple[int, ...]) -> None:
    assert parse_cpulist(text) == ids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("a", "'a' is not a number", id="letters"),
        pytest.param("1,", "'' is not a number", id="trailing-comma"),
        pytest.param("3-1", "range '3-1' runs backwards", id="backwards"),
        pytest.param("-1", "'-1' is not a number", id="negative"),
        pytest.param("1-2-3", "'1-2-3' is not a number", id="double-range"),
        pytest.param("99999999", "is not a number", id="too-large"),
        pytest.param("\u0661", "is not a number", id="non-ascii-digit"),
    ],
)
def test_parse_cpulist_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cpulist(text)


def test_format_cpulist_refuses_negative_ids() -> None:
    with pytest.raises(ValueError, match="ids must be within"):
        format_cpulist((-1, 0))


cpu_ids = st.lists(st.integers(0, 255), max_size=40)


@given(cpu_ids)
def test_cpulist_round_trip(ids: list[int]) -> None:
    assert parse_cpulist(format_cpulist(ids)) == tuple(sorted(set(ids)))


@given(cpu_ids)
def test_formatted_cpulist_is_canonical(ids: list[int]) -> None:
    text = format_cpulist(ids)
    assert format_cpulist(parse_cpulist(text)) == text
    assert ",," not in text and not text.startswith(",")


# --- CpuSettings -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"shares": 1}, "shares: 1 is outside 2..262144", id="shares-low"),
        pytest.param({"shares": 262_145}, "shares: 262145 is outside", id="shares-high"),
        pytest.param({"period_us": 999}, "period_us: 999 is outside 1000..1000000", id="period-low"),
        pytest.param({"period_us": 1_000_001}, "period_us: 1000001", id="period-high"),
        pytest.param({"quota_us": 999}, "quota_us: 999 is below the kernel's minimum", id="quota-low"),
        pytest.param({"burst_us": -1}, "burst_us: -1 is negative", id="burst-negative"),
        pytest.param({"quota_us": 50_000, "burst_us": 50_001}, "burst_us: 50001 is above quota_us", id="burst-high"),
        pytest.param({"cpus": ""}, "cpus: empty; use None", id="cpus-empty"),
        pytest.param({"cpus": "0-x"}, "cpus: cpulist '0-x'", id="cpus-bad"),
        pytest.param({"mems": "1-0"}, "mems: cpulist '1-0': range '1-0' runs backwards", id="mems-bad"),
        pytest.param({"memory_bytes": 0}, "memory_bytes: 0 must be positive", id="memory-zero"),
        pytest.param({"pids_max": -1}, "pids_max: -1 is negative", id="pids-negative"),
    ],
)
def test_settings_refuse(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CpuSettings(**fields)  # type: ignore[arg-type]


def test_settings_normalise_cpulists() -> None:
    assert CpuSettings(cpus="3,1,2,0", mems=" 0 ") == CpuSettings(cpus="0-3", mems="0")


def test_settings_allow_an_inert_burst_without_quota() -> None:
    """The kernel keeps a burst when the quota is removed; reading such a cgroup must not fail."""
    assert CpuSettings(burst_us=50_000).quota_us is None


# --- settings_for ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "cpuset", "mems", "burst_us", "settings", "clamp"),
    [
        pytest.param(
            spec(cpu_request_millis=500, cpu_limit_millis=1000),
            (),
            (),
            0,
            CpuSettings(shares=512, quota_us=100_000, pids_max=100),
            None,
            id="ls-request-and-limit",
        ),
        pytest.param(
            spec(cpu_request_millis=250),
            (),
            (),
            0,
            CpuSettings(shares=256, pids_max=100),
            None,
            id="ls-no-limit",
        ),
        pytest.param(
            spec(cpu_request_millis=1, cpu_limit_millis=1),
            (),
            (),
            0,
            CpuSettings(shares=2, quota_us=1000, pids_max=100),
            None,
            id="ls-tiny-clamped-to-minimums",
        ),
        pytest.param(
            spec(cpu_request_millis=1_024_000, cpu_limit_millis=1_024_000, memory_limit_bytes=64 * MI, qos=QoS.LS),
            (),
            (),
            0,
            CpuSettings(shares=MAX_SHARES, quota_us=102_400_000, memory_bytes=64 * MI, pids_max=100),
            None,
            id="ls-huge-shares-clamped",
        ),
        pytest.param(
            spec(),
            (),
            (),
            0,
            CpuSettings(shares=2, pids_max=100),
            None,
            id="be",
        ),
        pytest.param(
            spec(cpu_request_millis=500, cpu_limit_millis=1500, qos=QoS.BE),
            (1,),
            (0,),
            0,
            CpuSettings(shares=2, quota_us=150_000, cpus="1", mems="0", pids_max=100),
            None,
            id="be-with-request-still-min-shares-in-be-pool",
        ),
        pytest.param(
            lsr(cpus=2, memory=64 * MI),
            (2, 3),
            (0,),
            0,
            CpuSettings(shares=2048, cpus="2-3", mems="0", memory_bytes=64 * MI, pids_max=100),
            None,
            id="lsr-cpuset-no-quota",
        ),
        pytest.param(
            spec(cpu_request_millis=1000, cpu_limit_millis=1000, qos=QoS.LSE),
            (5,),
            (),
            0,
            CpuSettings(shares=1024, cpus="5", pids_max=100),
            None,
            id="lse-cpuset-no-quota",
        ),
        pytest.param(
            spec(cpu_request_millis=500, cpu_limit_millis=500),
            (0, 1),
            (),
            30_000,
            CpuSettings(shares=512, quota_us=50_000, burst_us=30_000, cpus="0-1", pids_max=100),
            None,
            id="ls-burst-under-quota-in-shared-pool",
        ),
        pytest.param(
            spec(cpu_request_millis=500, cpu_limit_millis=500),
            (),
            (),
            500_000,  # Koordinator's default 1000 %
            CpuSettings(shares=512, quota_us=50_000, burst_us=50_000, pids_max=100),
            BurstClamp(requested_us=500_000, granted_us=50_000, reason="above the CPU quota of 50000us"),
            id="ls-burst-clamped-to-quota",
        ),
        pytest.param(
            spec(cpu_request_millis=500),
            (),
            (),
            10_000,
            CpuSettings(shares=512, pids_max=100),
            BurstClamp(requested_us=10_000, granted_us=0, reason="no CPU quota to burst above"),
            id="ls-burst-without-limit",
        ),
        pytest.param(
            lsr(cpus=1),
            (0,),
            (),
            100_000,
            CpuSettings(shares=1024, cpus="0", memory_bytes=1 << 30, pids_max=100),
            BurstClamp(requested_us=100_000, granted_us=0, reason="no CPU quota to burst above"),
            id="lsr-burst-refused",
        ),
    ],
)
def test_settings_for(
    container: object,
    cpuset: tuple[int, ...],
    mems: tuple[int, ...],
    burst_us: int,
    settings: CpuSettings,
    clamp: BurstClamp | None,
) -> None:
    assert settings_for(container, cpuset, mems, pids_max=100, burst_us=burst_us) == (settings, clamp)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("container", "cpuset", "burst_us", "message"),
    [
        pytest.param(lsr(cpus=2), (0,), 0, r"cpuset: a LSR container needs 2 exclusive CPUs, got \(0,\)", id="few"),
        pytest.param(lsr(cpus=1), (), 0, "needs 1 exclusive CPUs, got ()", id="none"),
        pytest.param(spec(), (), -1, "burst_us: -1 is negative", id="negative-burst"),
    ],
)
def test_settings_for_refuses(container: object, cpuset: tuple[int, ...], burst_us: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_for(container, cpuset, (), pids_max=100, burst_us=burst_us)  # type: ignore[arg-type]


@given(
    request=st.integers(0, 1_024_000),
    extra=st.none() | st.integers(0, 1_024_000),
    burst=st.integers(0, 10**9),
)
def test_settings_for_invariants(request: int, extra: int | None, burst: int) -> None:
    limit = None if extra is None else min(max(request + extra, 1), 1_024_000)
    assume(limit is None or request <= limit)
    container = spec(cpu_request_millis=request, cpu_limit_millis=limit, qos=QoS.LS)
    settings, clamp = settings_for(container, (), (), pids_max=10, burst_us=burst)
    assert MIN_SHARES <= settings.shares <= MAX_SHARES
    assert settings.shares == min(max(request * 1024 // 1000, 2), MAX_SHARES)
    if limit is None:
        assert (settings.quota_us, settings.burst_us) == (None, 0)
    else:
        assert settings.quota_us is not None and settings.quota_us >= 1000
        assert settings.burst_us == min(burst, settings.quota_us)
    assert (clamp is None) == (settings.burst_us == burst)
    if clamp is not None:
        assert (clamp.requested_us, clamp.granted_us) == (burst, settings.burst_us)


# --- v2 mapping ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "weight"),
    [(2, 1), (1, 1), (3, 1), (26, 1), (27, 1), (28, 1), (29, 2), (512, 20), (1024, 39), (2048, 79), (262_144, 10_000)],
)
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


@given(st.integers(1, MAX_WEIGHT))
def test_weight_to_shares_is_a_right_inverse(weight: int) -> None:
    assert shares_to_weight(weight_to_shares(weight)) == weight


@given(st.integers(MIN_SHARES, MAX_SHARES))
def test_weight_to_shares_gives_the_smallest_equivalent(shares: int) -> None:
    back = weight_to_shares(shares_to_weight(shares))
    assert back <= shares and shares_to_weight(back) == shares_to_weight(shares)
    assert back == MIN_SHARES or shares_to_weight(back - 1) < shares_to_weight(shares)


FULL = CpuSettings(
    shares=512, quota_us=50_000, burst_us=20_000, cpus="0-3,8", mems="0", memory_bytes=64 * MI, pids_max=100
)


def test_v2_files() -> None:
    assert v2_files(FULL) == {
        "cpuset.mems": "0",
        "cpuset.cpus": "0-3,8",
        "cpu.weight": "20",
        "cpu.max": "50000 100000",
        "cpu.max.burst": "20000",
        "memory.max": str(64 * MI),
        "pids.max": "100",
    }
    assert v2_files(CpuSettings(period_us=50_000)) == {
        "cpuset.mems": "",
        "cpuset.cpus": "",
        "cpu.weight": "39",
        "cpu.max": "max 50000",
        "cpu.max.burst": "0",
        "memory.max": "max",
        "pids.max": "max",
    }


def test_v1_files() -> None:
    assert v1_files(FULL) == {
        "cpuset.mems": "0",
        "cpuset.cpus": "0-3,8",
        "cpu.shares": "512",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "50000",
        "cpu.cfs_burst_us": "20000",
        "memory.limit_in_bytes": str(64 * MI),
        "pids.max": "100",
    }
    assert v1_files(CpuSettings()) == {
        "cpuset.mems": FROM_PARENT,
        "cpuset.cpus": FROM_PARENT,
        "cpu.shares": "1024",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "-1",
        "cpu.cfs_burst_us": "0",
        "memory.limit_in_bytes": "-1",
        "pids.max": "max",
    }


# --- reading files back ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "files", "settings"),
    [
        pytest.param(
            1,
            {
                "cpuset.mems": "0",
                "cpuset.cpus": "0-3,8",
                "cpu.shares": "512",
                "cpu.cfs_period_us": "100000",
                "cpu.cfs_quota_us": "50000",
                "cpu.cfs_burst_us": "20000",
                "memory.limit_in_bytes": str(64 * MI),
                "pids.max": "100",
            },
            FULL,
            id="v1-limited",
        ),
        pytest.param(
            1,
            {
                "cpuset.mems": "",
                "cpuset.cpus": "",
                "cpu.shares": "1024",
                "cpu.cfs_period_us": "100000",
                "cpu.cfs_quota_us": "-1",
                "memory.limit_in_bytes": "9223372036854771712",
                "pids.max": "max",
            },
            CpuSettings(),
            id="v1-unlimited-no-burst-file",
        ),
        pytest.param(
            1,
            {
                "cpuset.mems": "0",
                "cpuset.cpus": "0-1",
                "cpu.shares": "2",
                "cpu.cfs_period_us": "100000",
                "cpu.cfs_quota_us": "-1",
                "cpu.cfs_burst_us": "50000",
                "memory.limit_in_bytes": "9223372036854710272",  # 64 KiB pages
                "pids.max": "0",
            },
            CpuSettings(shares=2, burst_us=50_000, cpus="0-1", mems="0", pids_max=0),
            id="v1-inert-burst-64k-pages",
        ),
        pytest.param(
            2,
            {
                "cpuset.mems": "0",
                "cpuset.cpus": "0-3,8",
                "cpu.weight": "20",
                "cpu.max": "50000 100000",
                "cpu.max.burst": "20000",
                "memory.max": str(64 * MI),
                "pids.max": "100",
            },
            CpuSettings(
                shares=501,  # weight 20 reads back as the smallest shares with weight 20
                quota_us=50_000,
                burst_us=20_000,
                cpus="0-3,8",
                mems="0",
                memory_bytes=64 * MI,
                pids_max=100,
            ),
            id="v2-limited",
        ),
        pytest.param(
            2,
            {
                "cpuset.mems": "",
                "cpuset.cpus": "",
                "cpu.weight": "100",
                "cpu.max": "max 100000",
                "memory.max": "max",
                "pids.max": "max",
            },
            CpuSettings(shares=2598),
            id="v2-unlimited-no-burst-file",
        ),
    ],
)
def test_settings_from_files(version: Literal[1, 2], files: dict[str, str], settings: CpuSettings) -> None:
    assert settings_from_files(version, files) == settings


def test_settings_from_files_names_a_garbled_file() -> None:
    files = {k: str(v) for k, v in v1_files(FULL).items()} | {"cpu.shares": "lots"}
    with pytest.raises(CgroupError, match=r"cpu\.shares: unexpected content 'lots'"):
        settings_from_files(1, files)


# --- write ordering ------------------------------------------------------------------------------------------------


Bandwidth = tuple[int | None, int, int]  # quota, period, burst
Memory = tuple[int | None, int | None]  # memory limit, v1 memory+swap limit (None: unlimited)


class KernelModel:
    """The kernel's rules checked on every single write: with a CFS quota set, the burst may not exceed it
    (tg_set_cfs_bandwidth); on v1 the memory limit may not exceed memory+swap (mem_cgroup_resize_max). Holds the
    other files' contents; resolves FROM_PARENT from a parent cpuset."""

    PARENT_CPUS, PARENT_MEMS = "0-7", "0-1"
    INF = 2**63

    def __init__(self, version: Literal[1, 2], cpu: Bandwidth, memory: Memory = (None, None)) -> None:
        self.version = version
        self.quota, self.period, self.burst = cpu
        self.memory, self.memsw = memory
        self.files: dict[str, str] = {}
        self.check("initial state")

    def check(self, what: str) -> None:
        if self.quota is not None and (self.burst > self.quota or self.quota < 1000):
            raise OSError(errno.EINVAL, f"{what}: burst {self.burst} > quota {self.quota}")
        if self.version == 1 and (self.memory or self.INF) > (self.memsw or self.INF):
            raise OSError(errno.EINVAL, f"{what}: memory {self.memory} > memsw {self.memsw}")

    def write(self, name: str, value: Value) -> None:
        before = dict(vars(self), files=dict(self.files))
        try:
            self._write(name, value)
        except OSError:
            vars(self).update(before)  # a refused write changes nothing
            raise

    def _write(self, name: str, value: Value) -> None:
        if value is FROM_PARENT:
            value = self.PARENT_CPUS if name == "cpuset.cpus" else self.PARENT_MEMS
        assert isinstance(value, str)
        if name in ("cpu.cfs_quota_us", "cpu.max"):
            text = value if name == "cpu.cfs_quota_us" else value.split()[0]
            self.quota = None if text in ("-1", "max") else int(text)
            if name == "cpu.max":
                self.period = int(value.split()[1])
        elif name == "cpu.cfs_period_us":
            self.period = int(value)
        elif name in ("cpu.cfs_burst_us", "cpu.max.burst"):
            self.burst = int(value)
        elif name in ("memory.limit_in_bytes", "memory.max"):
            self.memory = None if value in ("-1", "max") else int(value)
        elif name == "memory.memsw.limit_in_bytes":
            assert self.version == 1
            self.memsw = None if value == "-1" else int(value)
        else:
            self.files[name] = value
        self.check(f"write {value!r} to {name}")

    def bandwidth(self) -> Bandwidth:
        return self.quota, self.period, self.burst

    def assert_holds(self, new: CpuSettings) -> None:
        assert self.bandwidth() == (new.quota_us, new.period_us, new.burst_us)
        assert self.memory == new.memory_bytes
        if self.version == 1:
            assert self.memsw == new.memory_bytes, "v1 memory+swap follows the memory limit (no swap)"


def run_plan(
    layout: CgroupLayout, old: CpuSettings | None, new: CpuSettings, cpu: Bandwidth, memory: Memory = (None, None)
) -> KernelModel:
    kernel = KernelModel(layout.version, cpu, memory)
    for name, value in plan_writes(layout, old, new):
        kernel.write(name, value)
    return kernel


def state_of(old: CpuSettings) -> tuple[Bandwidth, Memory]:
    """The kernel state the layer (or runc, with OCI swap = limit) leaves behind for ``old``."""
    return (old.quota_us, old.period_us, old.burst_us), (old.memory_bytes, old.memory_bytes)


def settings(quota: int | None = None, burst: int = 0, **kw: object) -> CpuSettings:
    return CpuSettings(quota_us=quota, burst_us=burst, **kw)  # type: ignore[arg-type]


def v1_names(plan: list[Write]) -> list[tuple[str, str]]:
    return [(n, v if isinstance(v, str) else "<parent>") for n, v in plan]


# (old, new, v1 writes, v2 writes): every ordering case.
ORDERING_CASES = [
    pytest.param(
        None,
        settings(50_000, 50_000, shares=512, cpus="0", mems="0", memory_bytes=64 * MI, pids_max=100),
        [
            ("cpuset.mems", "0"),
            ("cpuset.cpus", "0"),
            ("cpu.shares", "512"),
            ("cpu.cfs_burst_us", "0"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "50000"),
            ("cpu.cfs_burst_us", "50000"),
            ("memory.memsw.limit_in_bytes", "-1"),
            ("memory.limit_in_bytes", str(64 * MI)),
            ("memory.memsw.limit_in_bytes", str(64 * MI)),
            ("pids.max", "100"),
        ],
        [
            ("cpuset.mems", "0"),
            ("cpuset.cpus", "0"),
            ("cpu.weight", "20"),
            ("cpu.max.burst", "0"),
            ("cpu.max", "50000 100000"),
            ("cpu.max.burst", "50000"),
            ("memory.max", str(64 * MI)),
            ("pids.max", "100"),
        ],
        id="fresh-zero-burst-then-quota-then-burst",
    ),
    pytest.param(
        None,
        settings(),
        [
            ("cpuset.mems", "<parent>"),
            ("cpuset.cpus", "<parent>"),
            ("cpu.shares", "1024"),
            ("cpu.cfs_burst_us", "0"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "-1"),
            ("memory.memsw.limit_in_bytes", "-1"),
            ("memory.limit_in_bytes", "-1"),
            ("pids.max", "max"),
        ],
        [
            ("cpuset.mems", ""),
            ("cpuset.cpus", ""),
            ("cpu.weight", "39"),
            ("cpu.max.burst", "0"),
            ("cpu.max", "max 100000"),
            ("memory.max", "max"),
            ("pids.max", "max"),
        ],
        id="fresh-unlimited-cpusets-inherit-on-v1",
    ),
    pytest.param(settings(50_000, 20_000), settings(50_000, 20_000), [], [], id="unchanged-writes-nothing"),
    pytest.param(
        settings(50_000, 50_000),
        settings(30_000, 30_000),
        [("cpu.cfs_burst_us", "30000"), ("cpu.cfs_quota_us", "30000")],
        [("cpu.max.burst", "30000"), ("cpu.max", "30000 100000")],
        id="lower-quota-below-burst-lowers-burst-first",
    ),
    pytest.param(
        settings(50_000, 50_000),
        settings(80_000, 80_000),
        [("cpu.cfs_quota_us", "80000"), ("cpu.cfs_burst_us", "80000")],
        [("cpu.max", "80000 100000"), ("cpu.max.burst", "80000")],
        id="raise-both-raises-quota-first",
    ),
    pytest.param(
        settings(50_000, 0),
        settings(50_000, 50_000),
        [("cpu.cfs_burst_us", "50000")],
        [("cpu.max.burst", "50000")],
        id="raise-burst-within-quota",
    ),
    pytest.param(
        settings(50_000, 50_000),
        settings(50_000, 10_000),
        [("cpu.cfs_burst_us", "10000")],
        [("cpu.max.burst", "10000")],
        id="lower-burst-only",
    ),
    pytest.param(
        settings(50_000, 40_000),
        settings(80_000, 10_000),
        [("cpu.cfs_burst_us", "10000"), ("cpu.cfs_quota_us", "80000")],
        [("cpu.max.burst", "10000"), ("cpu.max", "80000 100000")],
        id="raise-quota-lower-burst",
    ),
    pytest.param(
        settings(80_000, 10_000),
        settings(50_000, 40_000),
        [("cpu.cfs_burst_us", "40000"), ("cpu.cfs_quota_us", "50000")],
        [("cpu.max.burst", "40000"), ("cpu.max", "50000 100000")],
        id="lower-quota-raise-burst-that-fits-the-old-quota",
    ),
    pytest.param(
        settings(50_000, 50_000),
        settings(None, 0),
        [("cpu.cfs_burst_us", "0"), ("cpu.cfs_quota_us", "-1")],
        [("cpu.max.burst", "0"), ("cpu.max", "max 100000")],
        id="remove-quota",
    ),
    pytest.param(
        settings(None, 0),
        settings(50_000, 50_000),
        [("cpu.cfs_burst_us", "50000"), ("cpu.cfs_quota_us", "50000")],
        [("cpu.max.burst", "50000"), ("cpu.max", "50000 100000")],
        id="add-quota-to-unlimited",
    ),
    pytest.param(
        settings(None, 70_000),
        settings(50_000, 50_000),
        [("cpu.cfs_burst_us", "50000"), ("cpu.cfs_quota_us", "50000")],
        [("cpu.max.burst", "50000"), ("cpu.max", "50000 100000")],
        id="add-quota-under-an-inert-burst",
    ),
    pytest.param(
        settings(50_000, 50_000),
        settings(50_000, 50_000, period_us=200_000),
        [("cpu.cfs_period_us", "200000")],
        [("cpu.max", "50000 200000")],
        id="period-only",
    ),
    pytest.param(
        settings(50_000, 50_000),
        settings(100_000, 100_000, period_us=200_000),
        [("cpu.cfs_period_us", "200000"), ("cpu.cfs_quota_us", "100000"), ("cpu.cfs_burst_us", "100000")],
        [("cpu.max", "100000 200000"), ("cpu.max.burst", "100000")],
        id="period-and-quota-up",
    ),
    pytest.param(
        settings(cpus="0-1", mems="0"),
        settings(),
        [("cpuset.mems", "<parent>"), ("cpuset.cpus", "<parent>")],
        [("cpuset.mems", ""), ("cpuset.cpus", "")],
        id="unpin-cpuset",
    ),
    pytest.param(
        settings(),
        settings(cpus="2", shares=2),
        [("cpuset.cpus", "2"), ("cpu.shares", "2")],
        [("cpuset.cpus", "2"), ("cpu.weight", "1")],
        id="pin-cpuset-and-shares",
    ),
    pytest.param(
        settings(memory_bytes=64 * MI, pids_max=100),
        settings(),
        [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1"), ("pids.max", "max")],
        [("memory.max", "max"), ("pids.max", "max")],
        id="drop-memory-and-pids-limits-memsw-first",
    ),
    pytest.param(
        settings(memory_bytes=64 * MI),
        settings(memory_bytes=128 * MI),
        [("memory.memsw.limit_in_bytes", str(128 * MI)), ("memory.limit_in_bytes", str(128 * MI))],
        [("memory.max", str(128 * MI))],
        id="raise-memory-memsw-first",
    ),
    pytest.param(
        settings(memory_bytes=128 * MI),
        settings(memory_bytes=64 * MI),
        [("memory.limit_in_bytes", str(64 * MI)), ("memory.memsw.limit_in_bytes", str(64 * MI))],
        [("memory.max", str(64 * MI))],
        id="lower-memory-memsw-after",
    ),
    pytest.param(
        settings(),
        settings(memory_bytes=64 * MI),
        [("memory.limit_in_bytes", str(64 * MI)), ("memory.memsw.limit_in_bytes", str(64 * MI))],
        [("memory.max", str(64 * MI))],
        id="limit-unlimited-memory",
    ),
    pytest.param(
        settings(shares=1000),
        settings(shares=1024),
        [("cpu.shares", "1024")],
        [],
        id="shares-change-within-one-v2-weight",
    ),
]


@pytest.mark.parametrize(("old", "new", "v1", "v2"), ORDERING_CASES)
def test_plan_writes_orders_writes(
    old: CpuSettings | None, new: CpuSettings, v1: list[tuple[str, str]], v2: list[tuple[str, str]]
) -> None:
    assert v1_names(plan_writes(V1_HERE, old, new)) == v1
    assert plan_writes(V2, old, new) == v2
    cpu, memory = state_of(old) if old else ((None, 100_000, 0), (None, None))
    for layout in (V1_HERE, V2):
        run_plan(layout, old, new, cpu, memory).assert_holds(new)  # raises OSError(EINVAL) on a bad order


def test_plan_writes_without_old_survives_any_current_state() -> None:
    """Unknown state: a burst of 90000 must not block quota 30000, nor memory+swap of 64Mi (runc's, from the
    OCI config) block a 128Mi limit."""
    new = settings(30_000, 30_000, memory_bytes=128 * MI)
    run_plan(V1_HERE, None, new, (100_000, 100_000, 90_000), (64 * MI, 64 * MI)).assert_holds(new)


def test_the_naive_order_is_what_the_kernel_refuses() -> None:
    kernel = KernelModel(1, (50_000, 100_000, 50_000), (64 * MI, 64 * MI))
    with pytest.raises(OSError, match="burst 50000 > quota 30000"):
        kernel.write("cpu.cfs_quota_us", "30000")
    with pytest.raises(OSError, match=f"memory {128 * MI} > memsw {64 * MI}"):
        kernel.write("memory.limit_in_bytes", str(128 * MI))


cpulists = st.none() | st.lists(st.integers(0, 15), min_size=1, max_size=4).map(format_cpulist)


@st.composite
def cpu_settings(draw: st.DrawFn) -> CpuSettings:
    quota = draw(st.none() | st.integers(1000, 4_000_000))
    burst = 0 if quota is None else draw(st.integers(0, quota))
    return CpuSettings(
        shares=draw(st.integers(MIN_SHARES, MAX_SHARES)),
        quota_us=quota,
        period_us=draw(st.sampled_from([100_000, 50_000, 1000, 1_000_000])),
        burst_us=burst,
        cpus=draw(cpulists),
        mems=draw(cpulists),
        memory_bytes=draw(st.none() | st.integers(4 * MI, 1 << 40)),
        pids_max=draw(st.none() | st.integers(0, 100_000)),
    )


@st.composite
def kernel_states(draw: st.DrawFn) -> tuple[Bandwidth, Memory]:
    """Any state the kernel can be in, including an inert burst left behind by removing the quota and a
    memory+swap limit above or equal to the memory limit."""
    quota = draw(st.none() | st.integers(1000, 4_000_000))
    burst = draw(st.integers(0, 4_000_000 if quota is None else quota))
    memory = draw(st.none() | st.integers(4 * MI, 1 << 40))
    memsw = None if memory is None else draw(st.none() | st.integers(memory, 1 << 41))
    return (quota, draw(st.integers(1000, 1_000_000)), burst), (memory, memsw)


layouts = st.sampled_from([V1_HERE, V1_COMOUNTED, V2])


@given(layout=layouts, old=cpu_settings(), new=cpu_settings())
def test_plan_from_known_state_is_accepted_and_reaches_new(
    layout: CgroupLayout, old: CpuSettings, new: CpuSettings
) -> None:
    run_plan(layout, old, new, *state_of(old)).assert_holds(new)
    plan = plan_writes(layout, old, new)
    assert len({name for name, _ in plan}) == len(plan), "a file written twice"


@given(layout=layouts, start=kernel_states(), new=cpu_settings())
def test_plan_from_unknown_state_is_accepted_and_reaches_new(
    layout: CgroupLayout, start: tuple[Bandwidth, Memory], new: CpuSettings
) -> None:
    kernel = run_plan(layout, None, new, *start)
    kernel.assert_holds(new)
    files = v1_files(new) if layout.version == 1 else v2_files(new)
    inherited = {"cpuset.cpus": KernelModel.PARENT_CPUS, "cpuset.mems": KernelModel.PARENT_MEMS}
    for name in ("cpuset.mems", "cpuset.cpus", "pids.max"):
        expected = files[name]
        assert kernel.files[name] == (expected if isinstance(expected, str) else inherited[name])


@given(layout=layouts, s=cpu_settings())
def test_plan_from_self_is_empty(layout: CgroupLayout, s: CpuSettings) -> None:
    assert plan_writes(layout, s, s) == []


@given(old=st.none() | cpu_settings(), new=cpu_settings())
def test_v1_plan_sets_cpusets_first(old: CpuSettings | None, new: CpuSettings) -> None:
    """A v1 task cannot join an empty cpuset: cpusets come before everything else."""
    names = [name for name, _ in plan_writes(V1_HERE, old, new)]
    cpuset = [i for i, n in enumerate(names) if n.startswith("cpuset.")]
    assert cpuset == list(range(len(cpuset)))
    if old is None:
        assert names[:2] == ["cpuset.mems", "cpuset.cpus"]


# --- the v2 shell against a fake cgroup2 tree ----------------------------------------------------------------------


class FakeCgroup2:
    """A directory tree shaped like a cgroup2 mount. The kernel fills a directory with interface files at mkdir;
    here ``populate`` does it for every directory without them, and ``depopulate`` takes them away again
    (rmdir on a real cgroup ignores them, on a plain directory it cannot)."""

    ROOT = {"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc", "cgroup.subtree_control": ""}
    CHILD = {
        "cgroup.controllers": "",
        "cgroup.subtree_control": "",
        "cpu.weight": "100",
        "cpu.max": "max 100000",
        "cpu.max.burst": "0",
        "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        "cpuset.cpus": "",
        "cpuset.mems": "",
        "memory.max": "max",
        "memory.current": "0",
        "pids.max": "max",
    }

    def __init__(self, root: Path) -> None:
        self.root = root
        for name, text in self.ROOT.items():
            (root / name).write_text(text)
        self.layout = CgroupLayout(version=2, controllers=dict.fromkeys(V2.controllers, str(root)), mounts=(str(root),))

    def populate(self) -> None:
        for directory, _, files in os.walk(self.root):
            if Path(directory) != self.root and not files:
                for name, text in self.CHILD.items():
                    (Path(directory) / name).write_text(text)

    def depopulate(self) -> None:
        for directory, _, files in os.walk(self.root):
            if Path(directory) != self.root:
                for name in files:
                    (Path(directory) / name).unlink()

    def dirs(self) -> list[str]:
        return sorted(
            "/" + str(Path(d).relative_to(self.root)) for d, _, _ in os.walk(self.root) if Path(d) != self.root
        )

    def read(self, path: str, name: str) -> str:
        return (self.root / path.lstrip("/") / name).read_text()


@pytest.fixture
def fake(tmp_path: Path) -> FakeCgroup2:
    return FakeCgroup2(tmp_path)


def create(fake: FakeCgroup2, *paths: str) -> Cgroups:
    """Create each path in turn, letting the fake kernel fill each new directory before the next create."""
    cgroups = Cgroups(fake.layout)
    for path in paths:
        cgroups.create(path)
        fake.populate()
    return cgroups


def test_v2_create_enables_controllers_in_every_parent(fake: FakeCgroup2) -> None:
    create(fake, "/corral", "/corral/n1", "/corral/n1/c1")
    assert fake.dirs() == ["/corral", "/corral/n1", "/corral/n1/c1"]
    enable = "+cpu +cpuset +memory +pids"
    assert (fake.root / "cgroup.subtree_control").read_text() == enable
    assert fake.read("/corral", "cgroup.subtree_control") == enable
    assert fake.read("/corral/n1", "cgroup.subtree_control") == enable
    assert fake.read("/corral/n1/c1", "cgroup.subtree_control") == "", "a leaf holds tasks, not children"


def test_v2_create_enables_only_missing_controllers_and_is_idempotent(fake: FakeCgroup2) -> None:
    (fake.root / "cgroup.subtree_control").write_text("cpuset cpu io memory")
    cgroups = create(fake, "/corral")
    assert (fake.root / "cgroup.subtree_control").read_text() == "+pids"
    cgroups.create("/corral")
    assert fake.dirs() == ["/corral"]


def test_v2_apply_then_read_round_trips(fake: FakeCgroup2) -> None:
    cgroups = create(fake, "/corral", "/corral/n1", "/corral/n1/c1")
    want = CpuSettings(
        shares=weight_to_shares(20), quota_us=50_000, burst_us=50_000, cpus="0", mems="0", memory_bytes=64 * MI,
        pids_max=100,
    )  # fmt: skip
    cgroups.apply("/corral/n1/c1", want)
    assert cgroups.read("/corral/n1/c1") == want
    assert fake.read("/corral/n1/c1", "cpu.max") == "50000 100000"
    assert fake.read("/corral/n1/c1", "cpu.max.burst") == "50000"

    lower = CpuSettings(shares=2, quota_us=30_000, burst_us=30_000)
    cgroups.apply("/corral/n1/c1", lower, old=want)
    assert cgroups.read("/corral/n1/c1") == lower
    assert fake.read("/corral/n1/c1", "cpuset.cpus") == "\n", "an empty v2 cpuset is written as a lone newline"


def test_v2_read_without_burst_file(fake: FakeCgroup2) -> None:
    cgroups = create(fake, "/c1")
    (fake.root / "c1" / "cpu.max.burst").unlink()
    assert cgroups.read("/c1") == CpuSettings(shares=2598)


def test_apply_zero_burst_without_burst_file_is_a_no_op(fake: FakeCgroup2) -> None:
    """Kernels before 5.14 have no burst file; a zero burst is already true there."""
    cgroups = create(fake, "/c1")
    (fake.root / "c1" / "cpu.max.burst").unlink()
    cgroups.apply("/c1", CpuSettings(quota_us=20_000))
    assert fake.read("/c1", "cpu.max") == "20000 100000"
    with pytest.raises(CgroupError, match=r"cannot write '5000' to .*/c1/cpu\.max\.burst: No such file") as info:
        cgroups.apply("/c1", CpuSettings(quota_us=20_000, burst_us=5000))
    assert info.value.errno == errno.ENOENT


def test_apply_error_names_file_and_value(fake: FakeCgroup2) -> None:
    cgroups = create(fake, "/c1")
    (fake.root / "c1" / "pids.max").unlink()
    (fake.root / "c1" / "pids.max").mkdir()
    with pytest.raises(CgroupError) as info:
        cgroups.apply("/c1", CpuSettings(pids_max=7))
    assert str(info.value) == f"cannot write '7' to {fake.root}/c1/pids.max: Is a directory (EISDIR)"
    assert (info.value.file, info.value.value, info.value.errno) == (f"{fake.root}/c1/pids.max", "7", errno.EISDIR)


def test_apply_to_a_missing_cgroup_names_the_file(fake: FakeCgroup2) -> None:
    with pytest.raises(CgroupError, match=r"cannot write '' to .*/nope/cpuset\.mems: No such file or directory"):
        Cgroups(fake.layout).apply("/nope", CpuSettings())


def test_v2_remove_climbs_to_root_and_keeps_siblings(fake: FakeCgroup2) -> None:
    cgroups = create(fake, "/corral", "/corral/n1", "/corral/n1/c1", "/corral/n1/c2", "/corral/n2")
    fake.depopulate()
    cgroups.remove("/corral/n1/c1")
    assert fake.dirs() == ["/corral", "/corral/n1", "/corral/n1/c2", "/corral/n2"]
    cgroups.remove("/corral/n1/c2", root="/corral")
    assert fake.dirs() == ["/corral", "/corral/n2"]
    cgroups.remove("/corral/n2")
    assert fake.dirs() == []
    cgroups.remove("/corral/n2")  # idempotent


def test_remove_stops_at_root(fake: FakeCgroup2) -> None:
    cgroups = create(fake, "/corral", "/corral/n1", "/corral/n1/c1")
    fake.depopulate()
    cgroups.remove("/corral/n1/c1", root="/corral/n1")
    assert fake.dirs() == ["/corral", "/corral/n1"]


def test_remove_climbs_even_when_the_leaf_is_gone(fake: FakeCgroup2) -> None:
    """runc delete removes the leaf; the parents are the nodelet's."""
    cgroups = create(fake, "/corral", "/corral/n1")
    fake.depopulate()
    cgroups.remove("/corral/n1/c1")
    assert fake.dirs() == []


@pytest.mark.parametrize("root", ["/other", "/corral/n1/c1", "/corral/n1/c1/x", "/corral/n"])
def test_remove_refuses_a_root_that_is_not_an_ancestor(fake: FakeCgroup2, root: str) -> None:
    with pytest.raises(ValueError, match="is not an ancestor"):
        Cgroups(fake.layout).remove("/corral/n1/c1", root=root)


def test_remove_leaf_that_is_not_a_cgroup_fails_clearly(fake: FakeCgroup2) -> None:
    create(fake, "/c1")  # populated: a plain directory with files is not empty, unlike a cgroup
    with pytest.raises(CgroupError, match=r"cannot remove .*/c1: Directory not empty \(ENOTEMPTY\)"):
        Cgroups(fake.layout).remove("/c1")


def test_detect_layout_checks_v2_controllers(tmp_path: Path, fake: FakeCgroup2) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 22 0:26 / {fake.root} rw - cgroup2 cgroup2 rw\n")
    assert detect_layout(str(mountinfo)) == fake.layout
    (fake.root / "cgroup.controllers").write_text("cpu memory")
    with pytest.raises(CgroupError, match=f"cgroup v2 at {fake.root} lacks the cpuset, pids controller"):
        detect_layout(str(mountinfo))
