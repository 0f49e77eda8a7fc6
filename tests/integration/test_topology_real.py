"""nodelet.topology's shell against real files: this machine's sysfs, and sysfs-shaped trees in a temporary
directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nodelet.topology import discover, read_sysfs
from wire.topology import Core, NumaNode, Socket, Topology

SYSFS = Path("/sys/devices/system")
needs_sysfs = pytest.mark.skipif(not (SYSFS / "cpu" / "online").exists(), reason="no Linux sysfs here")


def expand(cpulist: str) -> tuple[int, ...]:
    """The CPUs of a kernel CPU list, written apart from nodelet.topology's parser."""
    cpus: list[int] = []
    for item in filter(None, cpulist.strip().split(",")):
        first, _, last = item.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return tuple(sorted(cpus))


@needs_sysfs
def test_discover_on_this_machine_sees_every_online_cpu() -> None:
    topology = discover()
    assert topology.cpu_count == os.cpu_count()
    assert topology.cpus() == expand((SYSFS / "cpu" / "online").read_text())
    assert topology.memory_bytes > 0


@needs_sysfs
def test_discover_on_this_machine_keeps_the_kernels_numa_ids() -> None:
    nodes = SYSFS / "node"
    with_cpus = sorted(
        int(d.name.removeprefix("node"))
        for d in nodes.glob("node[0-9]*")
        if set(expand((d / "cpulist").read_text())) & set(expand((SYSFS / "cpu" / "online").read_text()))
    )
    assert [n.id for n in discover().numa_nodes()] == (with_cpus or [0])


def write_tree(root: Path, files: dict[str, str]) -> None:
    for key, text in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_discover_reads_a_sysfs_tree(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    write_tree(
        sysfs,
        {
            "cpu/online": "0,2-3\n",
            "cpu/offline": "1\n",
            "cpu/possible": "0-3\n",
            "cpu/kernel_max": "8191\n",
            "cpu/cpufreq/boost": "1\n",
            # CPU 1 is offline: its directory has no topology/.
            "cpu/cpu1/online": "0\n",
            **{
                f"cpu/cpu{c}/topology/{name}": text
                for c, core_id, siblings in [(0, 0, "0,2"), (2, 0, "0,2"), (3, 1, "3")]
                for name, text in [
                    ("physical_package_id", "0\n"),
                    ("core_id", f"{core_id}\n"),
                    ("thread_siblings_list", f"{siblings}\n"),
                    ("core_siblings_list", "0-3\n"),
                ]
            },
            "node/online": "0-1\n",
            "node/node0/cpulist": "0-3\n",
            "node/node0/meminfo": "Node 0 MemTotal:  24576000 kB\nNode 0 MemFree:  1 kB\n",
            "node/node0/distance": "10 20\n",
            "node/node1/cpulist": "\n",
            "node/node1/meminfo": "Node 1 MemTotal:  1048576 kB\n",
        },
    )
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  99 kB\n")

    assert read_sysfs(sysfs, meminfo) == {
        "cpu/online": "0,2-3\n",
        "cpu/cpu0/topology/physical_package_id": "0\n",
        "cpu/cpu0/topology/core_id": "0\n",
        "cpu/cpu0/topology/thread_siblings_list": "0,2\n",
        "cpu/cpu2/topology/physical_package_id": "0\n",
        "cpu/cpu2/topology/core_id": "0\n",
        "cpu/cpu2/topology/thread_siblings_list": "0,2\n",
        "cpu/cpu3/topology/physical_package_id": "0\n",
        "cpu/cpu3/topology/core_id": "1\n",
        "cpu/cpu3/topology/thread_siblings_list": "3\n",
        "node/node0/cpulist": "0-3\n",
        "node/node0/meminfo": "Node 0 MemTotal:  24576000 kB\nNode 0 MemFree:  1 kB\n",
        "node/node1/cpulist": "\n",
        "node/node1/meminfo": "Node 1 MemTotal:  1048576 kB\n",
        "meminfo": "MemTotal:  99 kB\n",
    }
    assert discover(sysfs, meminfo) == Topology(
        sockets=(
            Socket(
                id=0,
                numa_nodes=(
                    NumaNode(
                        id=0, cores=(Core(id=0, cpus=(0, 2)), Core(id=1, cpus=(3,))), memory_bytes=24576000 * 1024
                    ),
                ),
            ),
        )
    )


def test_discover_logs_what_it_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tree(
        tmp_path,
        {
            "cpu/online": "0\n",
            "cpu/cpu0/topology/physical_package_id": "0\n",
            "cpu/cpu0/topology/core_id": "0\n",
            "cpu/cpu0/topology/thread_siblings_list": "0\n",
            "node/node0/cpulist": "0\n",
            "node/node0/meminfo": "Node 0 MemTotal: 4 kB\n",
            "node/node1/cpulist": "\n",
            "node/node1/meminfo": "Node 1 MemTotal: 8 kB\n",
        },
    )
    with caplog.at_level(logging.WARNING, logger="nodelet.topology"):
        topology = discover(tmp_path, tmp_path / "no-meminfo")
    assert [n.id for n in topology.numa_nodes()] == [0]
    assert caplog.messages == [
        "topology discovery: NUMA node 1 has no online CPUs; left out of the topology (memory: 8192 bytes)"
    ]


def test_discover_without_node_dir_uses_proc_meminfo(tmp_path: Path) -> None:
    write_tree(
        tmp_path / "sys",
        {
            "cpu/online": "0\n",
            "cpu/cpu0/topology/physical_package_id": "0\n",
            "cpu/cpu0/topology/core_id": "0\n",
            "cpu/cpu0/topology/thread_siblings_list": "0\n",
        },
    )
    (tmp_path / "meminfo").write_text("MemTotal:       16 kB\nMemFree:  1 kB\n")
    assert discover(tmp_path / "sys", tmp_path / "meminfo") == Topology.uniform(1, 1, 1, 1, memory_per_numa=16 * 1024)


def test_discover_names_the_missing_file(tmp_path: Path) -> None:
    write_tree(tmp_path, {"cpu/online": "0-1\n", "cpu/cpu0/topology/core_id": "0\n"})
    with pytest.raises(ValueError, match=r"cpu/cpu0/topology/physical_package_id: missing"):
        discover(tmp_path, tmp_path / "meminfo")
