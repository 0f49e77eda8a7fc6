"""nodelet.telemetry on this machine's real cgroups (root only): 100 container cgroups under a unique
/corral-tele-<random>/n1, one of them held to 1 % of a CPU with a busy process in it. The tree is removed from
every hierarchy afterwards, even when a test fails, and nothing may be left.

Run with -s to see the measured sweep time."""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from nodelet.cgroups import CgroupError, CgroupLayout, Cgroups, CpuSettings, detect_layout
from nodelet.telemetry import Sampler, ThrottleDetector, ThrottleTransition, container_sample
from tests.builders import cid
from wire.commands import ContainerSample

if os.geteuid() != 0:
    pytest.skip("needs root to create cgroups and move a process into one", allow_module_level=True)
try:
    LAYOUT = detect_layout()
except (OSError, CgroupError) as exc:
    pytest.skip(f"needs a usable cgroup filesystem: {exc}", allow_module_level=True)

CONTAINERS = 100
BUSY_S = 1.5
SWEEP_EVERY_S = 0.25  # the sampling cadence, not a wait for some state


class Tree(NamedTuple):
    cgroups: Cgroups
    root: str
    paths: tuple[str, ...]  # /<root>/n1/c<i>, container id cid(i)


def leftovers(layout: CgroupLayout, root: str) -> list[str]:
    """Directories of ``root`` in any hierarchy."""
    return [d for mount in layout.mounts if os.path.isdir(d := os.path.join(mount, root.lstrip("/")))]


def remove_tree(cgroups: Cgroups, root: str) -> None:
    """Remove every cgroup under ``root`` (and ``root``), deepest first, from every hierarchy."""
    below: set[str] = set()
    for top in leftovers(cgroups.layout, root):
        mount = top[: -len(root)]
        below.update("/" + os.path.relpath(d, mount) for d, _, _ in os.walk(top))
    for cgroup in sorted(below, key=lambda p: p.count("/"), reverse=True):
        cgroups.remove(cgroup)


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    cgroups = Cgroups(LAYOUT)
    root = f"/corral-tele-{secrets.token_hex(4)}"
    try:
        paths = tuple(f"{root}/n1/c{i}" for i in range(CONTAINERS))
        started = time.perf_counter()
        for path in paths:
            cgroups.create(path)
        print(f"\ncreated {CONTAINERS} cgroups in {(time.perf_counter() - started) * 1000:.0f} ms")
        yield Tree(cgroups, root, paths)
    finally:
        remove_tree(cgroups, root)
        assert leftovers(LAYOUT, root) == []


def join(layout: CgroupLayout, path: str, pid: int) -> None:
    """Move ``pid`` into ``path`` for CPU limits and CPU accounting (one directory when co-mounted or on v2)."""
    for directory in dict.fromkeys(layout.directory(c, path) for c in ("cpu", "cpuacct")):
        Path(directory, "cgroup.procs").write_text(str(pid))


def sampler_of(tree: Tree) -> Sampler:
    sampler = Sampler()
    for i, path in enumerate(tree.paths):
        sampler.add(cid(i), tree.cgroups.stats_paths(path))
    return sampler


def by_id(sweep: list[ContainerSample]) -> dict[str, ContainerSample]:
    return {s.container_id: s for s in sweep}


def test_a_busy_container_under_a_tiny_quota_is_throttled_and_the_idle_ones_are_not(tree: Tree) -> None:
    busy_path, busy = tree.paths[0], cid(0)
    tree.cgroups.apply(busy_path, CpuSettings(quota_us=1_000, period_us=100_000))
    detector = ThrottleDetector()
    transitions: dict[str, list[ThrottleTransition]] = {}
    with sampler_of(tree) as sampler:
        first = by_id(sampler.sweep())
        detector.feed_all(first.values())
        process = subprocess.Popen(["sh", "-c", "while :; do :; done"])
        try:
            join(LAYOUT, busy_path, process.pid)
            deadline = time.monotonic() + BUSY_S
            sweeps = 0
            while time.monotonic() < deadline:
                time.sleep(SWEEP_EVERY_S)
                last = by_id(sampler.sweep())
                sweeps += 1
                for container_id, transition in detector.feed_all(last.values()).items():
                    transitions.setdefault(container_id, []).append(transition)
        finally:
            process.kill()
            process.wait(timeout=10)
        assert sampler.take_gone() == frozenset()

    assert sweeps >= 3
    assert last[busy].nr_throttled > first[busy].nr_throttled
    assert last[busy].throttled_ns > first[busy].throttled_ns
    assert last[busy].usage_ns > first[busy].usage_ns
    # Throttled once and stayed so: edge-triggered, no flapping; nothing for the 99 idle containers.
    assert {c: [t.kind for t in ts] for c, ts in transitions.items()} == {busy: ["throttled"]}
    assert transitions[busy][0].ratio >= detector.hysteresis.enter_ratio
    assert detector.throttled() == {busy}
    idle = [s for c, s in last.items() if c != busy]
    assert len(idle) == CONTAINERS - 1
    assert all(s.nr_periods == s.nr_throttled == s.usage_ns == 0 for s in idle)


def test_a_sweep_reads_what_the_files_hold(tree: Tree) -> None:
    idle = tree.paths[1:4]
    with sampler_of(tree) as sampler:
        sweep = by_id(sampler.sweep())
    assert len(sweep) == CONTAINERS
    for i, path in enumerate(idle, start=1):
        files = tree.cgroups.stats_paths(path)
        read = container_sample(
            cid(i),
            files.version,
            Path(files.cpu_stat).read_text(),
            Path(files.cpu_usage).read_text(),
            Path(files.memory_usage).read_text(),
        )
        assert sweep[cid(i)] == read


def test_a_removed_cgroup_is_dropped_and_reported_once(tree: Tree) -> None:
    gone_path, gone = f"{tree.root}/n1/gone", cid(10_000)
    tree.cgroups.create(gone_path)
    with sampler_of(tree) as sampler:
        sampler.add(gone, tree.cgroups.stats_paths(gone_path))
        assert len(sampler.sweep()) == CONTAINERS + 1
        tree.cgroups.remove(gone_path, root=tree.root)
        sweep = sampler.sweep()
        assert len(sweep) == CONTAINERS
        assert gone not in by_id(sweep)
        assert gone not in sampler
        assert sampler.take_gone() == {gone}
        assert sampler.take_gone() == frozenset()
        assert len(sampler.sweep()) == CONTAINERS


def test_sweep_time_of_100_containers(tree: Tree) -> None:
    """Printed, not asserted: this machine is shared and noisy."""
    with sampler_of(tree) as sampler:
        sampler.sweep()  # warm
        times_ns = []
        for _ in range(20):
            started = time.perf_counter_ns()
            sweep = sampler.sweep()
            times_ns.append(time.perf_counter_ns() - started)
        node_ns = []
        for _ in range(20):
            started = time.perf_counter_ns()
            sampler.node_cpu()
            node_ns.append(time.perf_counter_ns() - started)
    assert len(sweep) == CONTAINERS
    print(
        f"\nsweep of {CONTAINERS} containers: median {statistics.median(times_ns) / 1e6:.3f} ms "
        f"(min {min(times_ns) / 1e6:.3f}, max {max(times_ns) / 1e6:.3f}) over 20 sweeps; "
        f"node_cpu median {statistics.median(node_ns) / 1e3:.1f} µs"
    )
