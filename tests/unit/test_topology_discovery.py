"""nodelet.topology: sysfs texts → Topology, and the map from a declared topology onto real CPUs.

Fake sysfs is a mapping of file texts keyed by path relative to /sys/devices/system, as ``read_sysfs`` returns.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelet.topology import map_declared, parse_cpulist, real_cpuset, topology_from_sysfs, topology_notes
from wire.codec import decode_event, encode
from wire.events import NodeRegistered
from wire.resources import Resources
from wire.topology import Core, NumaNode, Socket, Topology

KB = 1024
T = TypeVar("T")

# --- fake sysfs builders --------------------------------------------------------------------------------------


def cpulist(cpus: Iterable[int]) -> str:
    """The kernel's CPU-list text: sorted, consecutive ids as ranges ("0-3,8-11")."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(set(cpus)):
        if run and c != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(c)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out) + "\n"


def cpu(n: int, package: int, core_id: int, siblings: Iterable[int]) -> dict[str, str]:
    base = f"cpu/cpu{n}/topology/"
    return {
        base + "physical_package_id": f"{package}\n",
        base + "core_id": f"{core_id}\n",
        base + "thread_siblings_list": cpulist(siblings),
    }


def node(m: int, cpus: Iterable[int], mem_kb: int) -> dict[str, str]:
    meminfo = f"Node {m} MemTotal:       {mem_kb} kB\nNode {m} MemFree:        {mem_kb // 2} kB\n"
    return {f"node/node{m}/cpulist": cpulist(cpus), f"node/node{m}/meminfo": meminfo}


def proc_meminfo(mem_kb: int) -> dict[str, str]:
    return {"meminfo": f"MemTotal:       {mem_kb} kB\nMemFree:        {mem_kb // 2} kB\nBuffers: 0 kB\n"}


def render(topology: Topology, *, numa_dir: bool = True) -> dict[str, str]:
    """A fake sysfs for a topology, Linux-style: core_id counts from 0 within each socket (so it repeats
    across sockets), the memory of a topology without ``node/`` goes to /proc/meminfo."""
    files = {"cpu/online": cpulist(topology.cpus())}
    for s in topology.sockets:
        cores = [c for n in s.numa_nodes for c in n.cores]
        for i, c in enumerate(cores):
            for n in c.cpus:
                files |= cpu(n, s.id, i, c.cpus)
        for nn in s.numa_nodes:
            if numa_dir:
                files |= node(nn.id, [n for c in nn.cores for n in c.cpus], nn.memory_bytes // KB)
    if not numa_dir:
        files |= proc_meminfo(topology.memory_bytes // KB)
    return files


def without(files: dict[str, str], *keys: str) -> dict[str, str]:
    return {k: v for k, v in files.items() if k not in keys}


def vm() -> dict[str, str]:
    """This machine kind: 1 socket, 1 NUMA node, 2 CPUs, no SMT."""
    return {"cpu/online": "0-1\n"} | cpu(0, 0, 0, [0]) | cpu(1, 0, 1, [1]) | node(0, [0, 1], 24576000)


# --- table: sysfs → Topology ----------------------------------------------------------------------------------

VM = Topology(
    sockets=(
        Socket(
            id=0,
            numa_nodes=(
                NumaNode(id=0, cores=(Core(id=0, cpus=(0,)), Core(id=1, cpus=(1,))), memory_bytes=24576000 * KB),
            ),
        ),
    )
)

# Intel-style core ids: unique within a package only, with gaps.
_INTEL_CORE_IDS = [0, 1, 2, 3, 8, 9, 10, 11]


def two_socket_smt() -> dict[str, str]:
    """2 sockets x 2 NUMA x 4 cores x 2 threads; CPU c and c + 16 are siblings."""
    files = {"cpu/online": "0-31\n"}
    for c in range(16):
        for n in (c, c + 16):
            files |= cpu(n, package=c // 8, core_id=_INTEL_CORE_IDS[c % 8], siblings=[c, c + 16])
    for m in range(4):
        files |= node(m, [*range(4 * m, 4 * m + 4), *range(16 + 4 * m, 16 + 4 * m + 4)], 8 << 20)
    return files


CASES = [
    pytest.param(
        vm(),
        VM,
        id="a-1-socket-1-numa-2-cpus-no-smt",
    ),
    pytest.param(
        two_socket_smt(),
        Topology.uniform(2, 2, 4, 2, memory_per_numa=8 << 30),
        id="b-2-sockets-2-numa-4-cores-2-threads",
    ),
    pytest.param(
        {"cpu/online": "0-3\n"}
        | cpu(0, 0, 0, [0, 2])
        | cpu(1, 0, 1, [1, 3])
        | cpu(2, 0, 0, [0, 2])
        | cpu(3, 0, 1, [1, 3])
        | proc_meminfo(16384),
        Topology(
            sockets=(
                Socket(
                    id=0,
                    numa_nodes=(
                        NumaNode(
                            id=0, cores=(Core(id=0, cpus=(0, 2)), Core(id=1, cpus=(1, 3))), memory_bytes=16384 * KB
                        ),
                    ),
                ),
            )
        ),
        id="c-no-node-dir-memory-from-proc-meminfo",
    ),
    pytest.param(
        # CPU 1 is offline: no topology files, still listed by its sibling and its node.
        {"cpu/online": "0,2-3\n"}
        | cpu(0, 0, 0, [0, 2])
        | cpu(2, 0, 0, [0, 2])
        | cpu(3, 0, 1, [1, 3])
        | node(0, [0, 1, 2, 3], 1024),
        Topology(
            sockets=(
                Socket(
                    id=0,
                    numa_nodes=(
                        NumaNode(id=0, cores=(Core(id=0, cpus=(0, 2)), Core(id=1, cpus=(3,))), memory_bytes=1024 * KB),
                    ),
                ),
            )
        ),
        id="d-offline-cpu-skipped",
    ),
    pytest.param(
        # Offline CPUs whose stale files are still there (even malformed) are not read.
        vm() | cpu(2, 0, 2, [2]) | {"cpu/cpu3/topology/core_id": "garbage\n"},
        VM,
        id="d-offline-cpu-files-ignored",
    ),
    pytest.param(
        {"cpu/online": "0-3\n"}
        | cpu(0, 0, 0, [0])
        | cpu(1, 0, 1, [1])
        | cpu(2, 1, 0, [2])
        | cpu(3, 1, 1, [3])
        | node(0, [0, 1], 1024)
        | node(1, [2, 3], 2048),
        Topology(
            sockets=(
                Socket(
                    id=0,
                    numa_nodes=(
                        NumaNode(id=0, cores=(Core(id=0, cpus=(0,)), Core(id=1, cpus=(1,))), memory_bytes=1024 * KB),
                    ),
                ),
                Socket(
                    id=1,
                    numa_nodes=(
                        NumaNode(id=1, cores=(Core(id=2, cpus=(2,)), Core(id=3, cpus=(3,))), memory_bytes=2048 * KB),
                    ),
                ),
            )
        ),
        id="e-core-ids-repeat-across-sockets-renumbered",
    ),
    pytest.param(
        # NUMA node 1 is memory only (CXL): left out, and reported by topology_notes.
        vm() | node(1, [], 1 << 20),
        VM,
        id="memory-only-numa-node-left-out",
    ),
    pytest.param(
        # Node ids need not start at 0 or be dense; NUMA ids are the kernel's.
        {"cpu/online": "0-1\n"} | cpu(0, 3, 7, [0, 1]) | cpu(1, 3, 7, [0, 1]) | node(2, [0, 1], 4),
        Topology(
            sockets=(Socket(id=3, numa_nodes=(NumaNode(id=2, cores=(Core(id=0, cpus=(0, 1)),), memory_bytes=4 * KB),)),)
        ),
        id="sparse-ids-kept-for-socket-and-numa",
    ),
    pytest.param(
        # NUMA off in firmware: one node spans two packages, which become one socket (the smaller id).
        {"cpu/online": "0-3\n"}
        | cpu(0, 0, 0, [0])
        | cpu(1, 0, 1, [1])
        | cpu(2, 1, 0, [2])
        | cpu(3, 1, 1, [3])
        | node(0, [0, 1, 2, 3], 1024),
        Topology.uniform(1, 1, 4, 1, memory_per_numa=1024 * KB),
        id="packages-sharing-a-numa-node-merged",
    ),
    pytest.param(
        {"cpu/online": "0-1\n"} | cpu(0, -1, 0, [0]) | cpu(1, -1, 1, [1]) | proc_meminfo(8),
        Topology.uniform(1, 1, 2, 1, memory_per_numa=8 * KB),
        id="package-id-minus-one-read-as-0",
    ),
]


@pytest.mark.parametrize(("files", "expected"), CASES)
def test_topology_from_sysfs(files: dict[str, str], expected: Topology) -> None:
    assert topology_from_sysfs(files) == expected


@pytest.mark.parametrize(
    ("files", "notes"),
    [
        pytest.param(vm(), (), id="nothing-to-say"),
        pytest.param(
            vm() | node(1, [], 1 << 20),
            ("NUMA node 1 has no online CPUs; left out of the topology (memory: 1073741824 bytes)",),
            id="memory-only-node",
        ),
        pytest.param(
            {"cpu/online": "0\n"} | cpu(0, 0, 0, [0, 1]) | node(0, [0], 1) | node(1, [1], 1),
            ("NUMA node 1 has no online CPUs; left out of the topology (memory: 1024 bytes)",),
            id="node-whose-cpus-are-offline",
        ),
        pytest.param(
            {"cpu/online": "0-1\n"} | cpu(0, 0, 0, [0]) | cpu(1, 1, 0, [1]) | node(0, [0, 1], 1),
            ("packages 0,1 share a NUMA node; reported as one socket 0",),
            id="merged-packages",
        ),
        pytest.param(
            {"cpu/online": "0\n"} | cpu(0, -1, 0, [0]) | proc_meminfo(1),
            ("CPUs 0 report physical_package_id -1 (unknown); read as package 0",),
            id="unknown-package",
        ),
    ],
)
def test_topology_notes_report_what_was_left_out_or_reshaped(files: dict[str, str], notes: tuple[str, ...]) -> None:
    assert topology_notes(files) == notes


# --- table: malformed input names the file --------------------------------------------------------------------

MALFORMED = [
    pytest.param(without(vm(), "cpu/online"), "cpu/online: missing", id="online-missing"),
    pytest.param(vm() | {"cpu/online": "0-x\n"}, "cpu/online: '0-x' is not a CPU list", id="online-syntax"),
    pytest.param(vm() | {"cpu/online": "\n"}, "cpu/online: no CPU is online", id="online-empty"),
    pytest.param(vm() | {"cpu/online": "1-0\n"}, "cpu/online: '1-0' has range '1-0' that is reversed", id="reversed"),
    pytest.param(vm() | {"cpu/online": "0-70000\n"}, "cpu/online: '0-70000' has range", id="cpu-id-too-large"),
    pytest.param(vm() | {"cpu/online": "0-1:2\n"}, "cpu/online: '0-1:2' is not a CPU list", id="stride-syntax"),
    pytest.param(vm() | {"cpu/online": "0, 1\n"}, "cpu/online: '0, 1' is not a CPU list", id="space-in-list"),
    pytest.param(
        vm() | {"cpu/cpu1/topology/core_id": "abc\n"}, "cpu/cpu1/topology/core_id: 'abc' is not an integer", id="core"
    ),
    pytest.param(
        without(vm(), "cpu/cpu1/topology/core_id"), "cpu/cpu1/topology/core_id: missing", id="core-id-missing"
    ),
    pytest.param(
        vm() | {"cpu/cpu0/topology/physical_package_id": "-2\n"},
        "cpu/cpu0/topology/physical_package_id: -2 is below -1",
        id="package-negative",
    ),
    pytest.param(
        vm() | {"cpu/cpu0/topology/physical_package_id": "\n"},
        "cpu/cpu0/topology/physical_package_id: '' is not an integer",
        id="package-empty",
    ),
    pytest.param(
        without(vm(), "cpu/cpu0/topology/thread_siblings_list"),
        "cpu/cpu0/topology/thread_siblings_list: missing",
        id="siblings-missing",
    ),
    pytest.param(
        vm() | {"cpu/cpu0/topology/thread_siblings_list": "1\n"},
        "cpu/cpu0/topology/thread_siblings_list: '1' does not include CPU 0 itself",
        id="siblings-without-self",
    ),
    pytest.param(
        vm() | {"cpu/cpu0/topology/thread_siblings_list": "0-1\n"},
        "cpu/cpu0/topology/thread_siblings_list: siblings 0,1 disagree with cpu/cpu1/topology/thread_siblings_list",
        id="siblings-disagree",
    ),
    pytest.param(
        vm() | cpu(0, 0, 0, [0, 1]) | cpu(1, 1, 0, [0, 1]),
        "cpu/cpu0/topology/thread_siblings_list: sibling CPU 1 is in package 1 core 0",
        id="siblings-in-two-packages",
    ),
    pytest.param(
        {"cpu/online": "0-1\n"} | cpu(0, 0, 0, [0, 1]) | cpu(1, 0, 0, [0, 1]) | node(0, [0], 1) | node(1, [1], 1),
        "cpu/cpu1/topology/thread_siblings_list: sibling CPU 0 is in NUMA node 0, CPU 1 in NUMA node 1",
        id="siblings-in-two-numa-nodes",
    ),
    pytest.param(
        vm() | {"node/node0/cpulist": "0-1,\n"},
        "node/node0/cpulist: '0-1,' is not a CPU list",
        id="node-cpulist-syntax",
    ),
    pytest.param(
        without(vm(), "node/node0/cpulist"), "node/node0/cpulist: missing (node/node0 exists)", id="cpulist-missing"
    ),
    pytest.param(
        vm() | {"node/node0/meminfo": "Node 0 MemFree: 5 kB\n"},
        "node/node0/meminfo: no line 'Node 0 MemTotal: <n> kB'",
        id="node-meminfo-no-memtotal",
    ),
    pytest.param(
        vm() | {"node/node0/meminfo": "Node 0 MemTotal: 5 MB\n"},
        "node/node0/meminfo: no line 'Node 0 MemTotal: <n> kB'",
        id="node-meminfo-unit",
    ),
    pytest.param(
        vm() | {"node/node0/meminfo": "Node 3 MemTotal: 5 kB\n"},
        "node/node0/meminfo: MemTotal line is for node 3, not node 0",
        id="node-meminfo-other-node",
    ),
    pytest.param(without(vm(), "node/node0/meminfo"), "node/node0/meminfo: missing", id="node-meminfo-missing"),
    pytest.param(
        vm() | {"node/node0/cpulist": "0\n"},
        "cpu/online: CPUs 1 are online but in no node/node<M>/cpulist",
        id="cpu-in-no-node",
    ),
    pytest.param(
        vm() | node(1, [1], 1),
        "node/node1/cpulist: CPU 1 is also in node/node0/cpulist",
        id="cpu-in-two-nodes",
    ),
    pytest.param(
        without(vm(), "node/node0/cpulist", "node/node0/meminfo"),
        "meminfo: missing (/proc/meminfo gives the memory when there is no node/ directory)",
        id="no-node-dir-no-proc-meminfo",
    ),
    pytest.param(
        without(vm(), "node/node0/cpulist", "node/node0/meminfo") | {"meminfo": "MemFree: 1 kB\n"},
        "meminfo: no line 'MemTotal: <n> kB'",
        id="proc-meminfo-no-memtotal",
    ),
    pytest.param(
        {"cpu/online": "0-8\n"} | {k: v for c in range(9) for k, v in cpu(c, 0, 0, range(9)).items()} | proc_meminfo(1),
        "sysfs describes a topology the wire format cannot carry: Expected `array` of length <= 8",
        id="nine-threads-per-core",
    ),
]


@pytest.mark.parametrize(("files", "message"), MALFORMED)
def test_malformed_sysfs_raises_value_error_naming_the_file(files: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        topology_from_sysfs(files)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,8-11\n", (0, 1, 2, 3, 8, 9, 10, 11)),
        ("0\n", (0,)),
        ("", ()),
        ("\n", ()),
        ("5,1,3-4,1", (1, 3, 4, 5)),
        ("65535", (65535,)),
    ],
)
def test_parse_cpulist(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpulist(text) == cpus


# --- property: render(t) round-trips --------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
memories = st.integers(0, 1 << 40).map(lambda kb: kb * KB)


@given(shapes, memories)
def test_uniform_topology_rendered_to_sysfs_reads_back_equal(shape: tuple[int, int, int, int], memory: int) -> None:
    t = Topology.uniform(*shape, memory_per_numa=memory)
    assert topology_from_sysfs(render(t)) == t


@given(st.integers(1, 8), st.integers(1, 4), memories)
def test_single_numa_topology_without_node_dir_reads_back_equal(cores: int, threads: int, memory: int) -> None:
    t = Topology.uniform(1, 1, cores, threads, memory_per_numa=memory)
    assert topology_from_sysfs(render(t, numa_dir=False)) == t


def test_renderer_emits_linux_style_files() -> None:
    # The renderer under the round-trip property, spelled out once for a tiny machine.
    assert render(Topology.uniform(2, 1, 1, 2, memory_per_numa=2 * KB)) == {
        "cpu/online": "0-3\n",
        "cpu/cpu0/topology/physical_package_id": "0\n",
        "cpu/cpu0/topology/core_id": "0\n",
        "cpu/cpu0/topology/thread_siblings_list": "0,2\n",
        "cpu/cpu2/topology/physical_package_id": "0\n",
        "cpu/cpu2/topology/core_id": "0\n",
        "cpu/cpu2/topology/thread_siblings_list": "0,2\n",
        "cpu/cpu1/topology/physical_package_id": "1\n",
        "cpu/cpu1/topology/core_id": "0\n",
        "cpu/cpu1/topology/thread_siblings_list": "1,3\n",
        "cpu/cpu3/topology/physical_package_id": "1\n",
        "cpu/cpu3/topology/core_id": "0\n",
        "cpu/cpu3/topology/thread_siblings_list": "1,3\n",
        "node/node0/cpulist": "0,2\n",
        "node/node0/meminfo": "Node 0 MemTotal:       2 kB\nNode 0 MemFree:        1 kB\n",
        "node/node1/cpulist": "1,3\n",
        "node/node1/meminfo": "Node 1 MemTotal:       2 kB\nNode 1 MemFree:        1 kB\n",
    }


# --- map_declared: table --------------------------------------------------------------------------------------

THIS_VM = Topology.uniform(1, 1, 2, 1)
DECLARED_64 = Topology.uniform(2, 2, 8, 2)


def test_declared_64_cpus_on_this_vm_deals_siblings_over_both_real_cpus() -> None:
    m = map_declared(DECLARED_64, THIS_VM)
    # Topology order deals 0, 32, 1, 33, ... over real 0, 1: first threads → 0, second threads → 1.
    assert m == {c: 0 if c < 32 else 1 for c in range(64)}
    assert list(m) == list(range(64))  # keys sorted, as they go into NodeRegistered.cpu_map
    # A whole declared core gets both real CPUs.
    assert real_cpuset(m, [5, 37]) == (0, 1)


def test_declared_64_cpus_on_2_numa_machine_keeps_numa_grouping_and_siblings() -> None:
    real = Topology.uniform(1, 2, 2, 2)  # NUMA 0: cores (0,4) (1,5); NUMA 1: cores (2,6) (3,7)
    m = map_declared(DECLARED_64, real)
    # Declared NUMA 0 and 1 (socket 0) → real NUMA 0; declared NUMA 2 and 3 (socket 1) → real NUMA 1.
    for declared_numa, real_cpus in [(0, {0, 1, 4, 5}), (1, {0, 1, 4, 5}), (2, {2, 3, 6, 7}), (3, {2, 3, 6, 7})]:
        cpus = [c for n in DECLARED_64.numa_nodes() if n.id == declared_numa for core in n.cores for c in core.cpus]
        assert {m[c] for c in cpus} == real_cpus
    # Declared core 0 (CPUs 0, 32) → real core 0 (CPUs 0, 4); declared core 1 → real core 1.
    assert [m[0], m[32], m[1], m[33], m[2], m[34]] == [0, 4, 1, 5, 0, 4]


def test_fewer_declared_numa_nodes_are_spread_over_real_ones() -> None:
    declared = Topology.uniform(1, 2, 2, 1)  # NUMA 0: 0, 1; NUMA 1: 2, 3
    real = Topology.uniform(2, 2, 2, 1)  # NUMA 0: 0, 1; 1: 2, 3; 2: 4, 5; 3: 6, 7
    assert map_declared(declared, real) == {0: 0, 1: 1, 2: 4, 3: 5}


def test_when_numa_grouping_would_double_up_a_bigger_real_machine_is_dealt_one_to_one() -> None:
    declared = Topology.uniform(1, 1, 8, 1)
    real = Topology.uniform(1, 2, 4, 1)  # 8 CPUs, but only 4 per NUMA node
    assert map_declared(declared, real) == {c: c for c in range(8)}


def test_cpu_map_fits_node_registered() -> None:
    m = map_declared(DECLARED_64, THIS_VM)
    e = NodeRegistered(node="n1", topology=DECLARED_64, capacity=Resources(64000, 0), epoch=1, cpu_map=m)
    assert decode_event(encode(e)) == e


@pytest.mark.parametrize(
    ("cpu_map", "declared", "real"),
    [
        ({0: 1, 1: 1, 2: 0}, [2, 1, 0, 1], (0, 1)),
        ({0: 1, 1: 1, 2: 0}, [1, 0], (1,)),
        ({0: 1}, [], ()),
        ({}, [3, 1, 3], (1, 3)),  # no declared topology: ids are real
    ],
)
def test_real_cpuset(cpu_map: dict[int, int], declared: list[int], real: tuple[int, ...]) -> None:
    assert real_cpuset(cpu_map, declared) == real


def test_real_cpuset_of_an_unmapped_cpu_is_an_error() -> None:
    with pytest.raises(ValueError, match="declared CPU 7 is not in the CPU map"):
        real_cpuset({0: 0}, [0, 7])


# --- map_declared: properties ---------------------------------------------------------------------------------


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    """Irregular topologies: 1-3 sockets, 1-3 NUMA nodes each, 1-4 cores of 1-4 threads, scattered ids."""
    widths = draw(
        st.lists(
            st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=4), min_size=1, max_size=3),
            min_size=1,
            max_size=3,
        )
    )
    n_cpus = sum(w for s in widths for n in s for w in n)
    n_numa = sum(len(s) for s in widths)
    cpu_ids = iter(draw(st.lists(st.integers(0, 300), min_size=n_cpus, max_size=n_cpus, unique=True)))
    numa_ids = iter(draw(st.permutations(range(n_numa))))
    socket_ids = draw(st.permutations(range(len(widths))))
    core_id = 0
    sockets = []
    for sid, s in zip(socket_ids, widths, strict=True):
        numas = []
        for n in s:
            cores = []
            for w in n:
                cores.append(Core(id=core_id, cpus=tuple(next(cpu_ids) for _ in range(w))))
                core_id += 1
            numas.append(NumaNode(id=next(numa_ids), cores=tuple(cores)))
        sockets.append(Socket(id=sid, numa_nodes=tuple(numas)))
    return Topology(sockets=tuple(sockets))


def shuffled(t: Topology, rnd: random.Random) -> Topology:
    """The same topology with every tuple in another order."""

    def mix(items: Iterable[T]) -> tuple[T, ...]:
        out = list(items)
        rnd.shuffle(out)
        return tuple(out)

    return Topology(
        sockets=mix(
            Socket(
                id=s.id,
                numa_nodes=mix(
                    NumaNode(id=n.id, cores=mix(Core(id=c.id, cpus=mix(c.cpus)) for c in n.cores)) for n in s.numa_nodes
                ),
            )
            for s in t.sockets
        )
    )


def numa_of(t: Topology) -> dict[int, int]:
    return {i.cpu: i.numa for i in t.cpu_infos()}


@given(topologies(), topologies())
def test_every_declared_cpu_maps_to_a_real_cpu(declared: Topology, real: Topology) -> None:
    m = map_declared(declared, real)
    assert sorted(m) == list(declared.cpus())
    assert set(m.values()) <= set(real.cpus())


@given(topologies(), topologies(), st.randoms(use_true_random=False))
def test_map_is_deterministic_and_ignores_tuple_order(declared: Topology, real: Topology, rnd: random.Random) -> None:
    m = map_declared(declared, real)
    assert map_declared(declared, real) == m
    assert map_declared(shuffled(declared, rnd), shuffled(real, rnd)) == m


@given(topologies(), topologies())
def test_map_is_injective_when_the_real_machine_is_big_enough(declared: Topology, real: Topology) -> None:
    m = map_declared(declared, real)
    if real.cpu_count >= declared.cpu_count:
        assert len(set(m.values())) == len(m)


@given(topologies(), topologies())
def test_a_declared_numa_node_lands_in_one_real_numa_node_on_a_smaller_machine(
    declared: Topology, real: Topology
) -> None:
    m = map_declared(declared, real)
    if real.cpu_count < declared.cpu_count:
        real_numa = numa_of(real)
        for n in declared.numa_nodes():
            assert len({real_numa[m[c]] for core in n.cores for c in core.cpus}) == 1


@given(shapes, shapes, st.integers(1, 4))
def test_siblings_stay_siblings_when_cores_have_equal_width(
    d: tuple[int, int, int, int], r: tuple[int, int, int, int], threads: int
) -> None:
    declared = Topology.uniform(*d[:3], threads)
    real = Topology.uniform(*r[:3], threads)
    real_core = {i.cpu: i.core for i in real.cpu_infos()}
    m = map_declared(declared, real)
    for n in declared.numa_nodes():
        for core in n.cores:
            assert len({real_core[m[c]] for c in core.cpus}) == 1


@given(topologies())
def test_a_topology_maps_onto_itself_as_identity(t: Topology) -> None:
    assert map_declared(t, t) == {c: c for c in t.cpus()}


@given(topologies(), topologies(), st.lists(st.integers(0, 300)))
def test_real_cpuset_is_the_sorted_image(declared: Topology, real: Topology, picks: list[int]) -> None:
    m = map_declared(declared, real)
    chosen = [c for c in picks if c in m]
    cpus = real_cpuset(m, chosen)
    assert cpus == tuple(sorted({m[c] for c in chosen}))
    assert set(cpus) <= set(real.cpus())
