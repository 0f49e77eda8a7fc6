"""Node topology discovery, and the map from a declared topology onto the CPUs that really exist.

Owns: reading a node's CPU and memory layout from Linux sysfs into a ``wire.topology.Topology``, and mapping
a topology declared for tests or hollow nodes onto the real CPUs (the map the nodelet puts into
``NodeRegistered.cpu_map`` and applies to every cpuset it writes).

Functional core, imperative shell: ``topology_from_sysfs``, ``topology_notes``, ``map_declared`` and
``real_cpuset`` are pure and take file texts or Structs; only ``read_sysfs`` and ``discover`` touch the
filesystem. Sysfs files are keyed by their path relative to ``/sys/devices/system`` (``cpu/online``,
``cpu/cpu3/topology/core_id``, ``node/node0/cpulist``, ...); ``/proc/meminfo`` is keyed ``meminfo``.

How sysfs becomes a topology:

- Only CPUs listed in ``cpu/online`` count; files of offline CPUs are ignored.
- Cores are the groups of ``thread_siblings_list`` (the kernel's own statement of which CPUs share a core).
  Linux ``core_id`` is unique only within a package (or die), so cores are renumbered 0.. in (socket, NUMA
  node, lowest CPU) order. Socket ids are ``physical_package_id``; NUMA node ids are the kernel's.
- Without ``node/`` (a kernel built without NUMA) there is one NUMA node 0 holding every online CPU, with
  the memory of ``/proc/meminfo``.
- A NUMA node without online CPUs (memory-only, e.g. CXL or persistent memory) cannot be expressed in a
  ``Topology`` and is left out; packages that share a NUMA node (NUMA off in firmware) become one socket,
  because a topology nests NUMA nodes inside sockets. Both are reported by ``topology_notes``.

May import: ``wire``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from wire.topology import Core, NumaNode, Socket, Topology

__all__ = [
    "discover",
    "map_declared",
    "parse_cpulist",
    "read_sysfs",
    "real_cpuset",
    "topology_from_sysfs",
    "topology_notes",
]

SYSFS_ROOT = Path("/sys/devices/system")
PROC_MEMINFO = Path("/proc/meminfo")
_TOPOLOGY_FILES = ("physical_package_id", "core_id", "thread_siblings_list")
_NODE_FILES = ("cpulist", "meminfo")
_MAX_CPU_ID = 65535  # wire.topology.CpuId

_NODE_KEY = re.compile(r"node/node(0|[1-9][0-9]*)/(?:cpulist|meminfo)")
_CPULIST_ITEM = re.compile(r"(0|[1-9][0-9]*)(?:-(0|[1-9][0-9]*))?")
_NODE_MEMTOTAL = re.compile(r"^Node[ \t]+([0-9]+)[ \t]+MemTotal:[ \t]+([0-9]+)[ \t]+kB[ \t]*$", re.MULTILINE)
_MEMTOTAL = re.compile(r"^MemTotal:[ \t]+([0-9]+)[ \t]+kB[ \t]*$", re.MULTILINE)

log = logging.getLogger(__name__)


# --- pure: parsing --------------------------------------------------------------------------------------------


def parse_cpulist(text: str, file: str = "cpulist") -> tuple[int, ...]:
    """The CPUs of a kernel CPU list such as ``0-3,8-11`` (sorted, de-duplicated; empty text is no CPUs)."""
    text = text.strip()
    if not text:
        return ()
    cpus: set[int] = set()
    for item in text.split(","):
        m = _CPULIST_ITEM.fullmatch(item)
        if m is None:
            raise ValueError(f"{file}: {text!r} is not a CPU list such as '0-3,8-11' (bad item {item!r})")
        first = int(m[1])
        last = first if m[2] is None else int(m[2])
        if first > last or last > _MAX_CPU_ID:
            raise ValueError(f"{file}: {text!r} has range {item!r} that is reversed or beyond CPU {_MAX_CPU_ID}")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def _need(files: Mapping[str, str], key: str, why: str) -> str:
    try:
        return files[key]
    except KeyError:
        raise ValueError(f"{key}: missing ({why})") from None


def _int(files: Mapping[str, str], key: str, minimum: int) -> int:
    text = _need(files, key, "needed for every online CPU").strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{key}: {text!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{key}: {value} is below {minimum}")
    return value


def _node_memory(files: Mapping[str, str], node: int) -> int:
    key = f"node/node{node}/meminfo"
    m = _NODE_MEMTOTAL.search(_need(files, key, f"NUMA node {node} has online CPUs"))
    if m is None:
        raise ValueError(f"{key}: no line 'Node {node} MemTotal: <n> kB'")
    if int(m[1]) != node:
        raise ValueError(f"{key}: MemTotal line is for node {m[1]}, not node {node}")
    return int(m[2]) * 1024


def _proc_memory(files: Mapping[str, str]) -> int:
    m = _MEMTOTAL.search(_need(files, "meminfo", "/proc/meminfo gives the memory when there is no node/ directory"))
    if m is None:
        raise ValueError("meminfo: no line 'MemTotal: <n> kB' (the text of /proc/meminfo)")
    return int(m[1]) * 1024


# --- pure: sysfs → topology -----------------------------------------------------------------------------------


class _Find:
    """Union-find over package ids: packages that share a NUMA node become one socket."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def root(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            x = self.parent[x]
        return x

    def join(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            # The smaller package id names the merged socket.
            self.parent[max(ra, rb)] = min(ra, rb)


def _build(files: Mapping[str, str]) -> tuple[Topology, tuple[str, ...]]:
    notes: list[str] = []
    online = parse_cpulist(_need(files, "cpu/online", "lists the CPUs to read"), "cpu/online")
    if not online:
        raise ValueError("cpu/online: no CPU is online")
    is_online = set(online)

    package: dict[int, int] = {}
    core_id: dict[int, int] = {}
    siblings: dict[int, tuple[int, ...]] = {}
    unknown_package: list[int] = []
    for cpu in online:
        base = f"cpu/cpu{cpu}/topology/"
        package[cpu] = _int(files, base + "physical_package_id", minimum=-1)
        if package[cpu] == -1:
            # Some architectures report -1 when the firmware names no package.
            package[cpu] = 0
            unknown_package.append(cpu)
        core_id[cpu] = _int(files, base + "core_id", minimum=0)
        key = base + "thread_siblings_list"
        listed = parse_cpulist(_need(files, key, "needed for every online CPU"), key)
        if cpu not in listed:
            raise ValueError(f"{key}: {files[key].strip()!r} does not include CPU {cpu} itself")
        siblings[cpu] = tuple(c for c in listed if c in is_online)
    if unknown_package:
        notes.append(f"CPUs {_fmt(unknown_package)} report physical_package_id -1 (unknown); read as package 0")

    # Every sibling of a CPU must name the same siblings, package and core_id.
    for cpu in online:
        for other in siblings[cpu]:
            if siblings[other] != siblings[cpu]:
                raise ValueError(
                    f"cpu/cpu{cpu}/topology/thread_siblings_list: siblings {_fmt(siblings[cpu])} disagree with "
                    f"cpu/cpu{other}/topology/thread_siblings_list ({_fmt(siblings[other])}, online only)"
                )
            if package[other] != package[cpu] or core_id[other] != core_id[cpu]:
                raise ValueError(
                    f"cpu/cpu{cpu}/topology/thread_siblings_list: sibling CPU {other} is in package "
                    f"{package[other]} core {core_id[other]}, CPU {cpu} in package {package[cpu]} core {core_id[cpu]}"
                )

    numa_of: dict[int, int] = {}
    memory: dict[int, int] = {}
    node_ids = sorted({int(m[1]) for k in files if (m := _NODE_KEY.fullmatch(k))})
    if not node_ids:
        memory[0] = _proc_memory(files)
        numa_of = dict.fromkeys(online, 0)
    for node in node_ids:
        key = f"node/node{node}/cpulist"
        cpus = [c for c in parse_cpulist(_need(files, key, f"node/node{node} exists"), key) if c in is_online]
        if not cpus:
            size = f"{_node_memory(files, node)} bytes" if f"node/node{node}/meminfo" in files else "unknown size"
            notes.append(f"NUMA node {node} has no online CPUs; left out of the topology (memory: {size})")
            continue
        memory[node] = _node_memory(files, node)
        for cpu in cpus:
            if cpu in numa_of:
                raise ValueError(f"{key}: CPU {cpu} is also in node/node{numa_of[cpu]}/cpulist")
            numa_of[cpu] = node
    if missing := [c for c in online if c not in numa_of]:
        raise ValueError(f"cpu/online: CPUs {_fmt(missing)} are online but in no node/node<M>/cpulist")

    # A NUMA node sits inside one socket: merge packages that share a node.
    sockets = _Find()
    first_cpu_of_node: dict[int, int] = {}
    for cpu in online:
        node = numa_of[cpu]
        first = first_cpu_of_node.setdefault(node, cpu)
        sockets.join(package[first], package[cpu])
        if numa_of[siblings[cpu][0]] != node:
            raise ValueError(
                f"cpu/cpu{cpu}/topology/thread_siblings_list: sibling CPU {siblings[cpu][0]} is in NUMA node "
                f"{numa_of[siblings[cpu][0]]}, CPU {cpu} in NUMA node {node}"
            )
    merged: dict[int, set[int]] = {}
    for p in sorted(set(package.values())):
        merged.setdefault(sockets.root(p), set()).add(p)
    for sid, packages in sorted(merged.items()):
        if len(packages) > 1:
            notes.append(f"packages {_fmt(sorted(packages))} share a NUMA node; reported as one socket {sid}")

    # socket → NUMA node → core (its online siblings); cores are ordered and renumbered by (socket, node, CPU).
    tree: dict[int, dict[int, set[tuple[int, ...]]]] = {}
    for cpu in online:
        tree.setdefault(sockets.root(package[cpu]), {}).setdefault(numa_of[cpu], set()).add(siblings[cpu])
    out: list[Socket] = []
    next_core = 0
    for sid in sorted(tree):
        numas: list[NumaNode] = []
        for nid in sorted(tree[sid]):
            cores: list[Core] = []
            for members in sorted(tree[sid][nid]):
                cores.append(Core(id=next_core, cpus=members))
                next_core += 1
            numas.append(NumaNode(id=nid, cores=tuple(cores), memory_bytes=memory[nid]))
        out.append(Socket(id=sid, numa_nodes=tuple(numas)))
    topology = Topology(sockets=tuple(out))
    try:
        # Apply the wire bounds (at most 8 threads a core, NUMA id <= 1023) that only decoding checks.
        msgspec.convert(msgspec.to_builtins(topology), Topology)
    except msgspec.ValidationError as e:
        raise ValueError(f"sysfs describes a topology the wire format cannot carry: {e}") from None
    return topology, tuple(notes)


def _fmt(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in cpus)


def topology_from_sysfs(files: Mapping[str, str]) -> Topology:
    """The topology described by the texts of sysfs files (see the module docstring for keys and rules).

    Raises ``ValueError`` naming the file when a needed file is missing, malformed, or contradicts another.
    """
    return _build(files)[0]


def topology_notes(files: Mapping[str, str]) -> tuple[str, ...]:
    """What ``topology_from_sysfs`` left out or reshaped (memory-only NUMA nodes, merged packages), to log."""
    return _build(files)[1]


# --- shell ----------------------------------------------------------------------------------------------------


def read_sysfs(root: Path = SYSFS_ROOT, meminfo: Path = PROC_MEMINFO) -> dict[str, str]:
    """The texts of the files ``topology_from_sysfs`` reads, keyed by path relative to ``root``; files that do
    not exist are left out (offline CPUs have no topology directory)."""
    files: dict[str, str] = {}

    def read(key: str, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            files[key] = path.read_text()

    read("cpu/online", root / "cpu" / "online")
    for cpu_dir in sorted((root / "cpu").glob("cpu[0-9]*")):
        for name in _TOPOLOGY_FILES:
            read(f"cpu/{cpu_dir.name}/topology/{name}", cpu_dir / "topology" / name)
    for node_dir in sorted((root / "node").glob("node[0-9]*")):
        for name in _NODE_FILES:
            read(f"node/{node_dir.name}/{name}", node_dir / name)
    read("meminfo", meminfo)
    return files


def discover(root: Path = SYSFS_ROOT, meminfo: Path = PROC_MEMINFO) -> Topology:
    """This machine's topology; logs a warning for each thing left out or reshaped."""
    topology, notes = _build(read_sysfs(root, meminfo))
    for note in notes:
        log.warning("topology discovery: %s", note)
    return topology


# --- pure: declared topology → real CPUs ----------------------------------------------------------------------


def _cpus_by_numa(topology: Topology) -> list[tuple[int, ...]]:
    """Each NUMA node's CPUs in topology order: sockets and NUMA nodes by id, cores by lowest CPU, then CPUs,
    so hyperthread siblings are adjacent. Independent of the order of the Struct's tuples."""
    out: list[tuple[int, ...]] = []
    for socket in sorted(topology.sockets, key=lambda s: s.id):
        for node in sorted(socket.numa_nodes, key=lambda n: n.id):
            cores = sorted((tuple(sorted(c.cpus)) for c in node.cores), key=lambda cpus: cpus[0])
            out.append(tuple(cpu for cpus in cores for cpu in cpus))
    return out


def map_declared(declared: Topology, real: Topology) -> dict[int, int]:
    """Declared CPU id → real CPU id, for a node that places on a declared topology but runs on ``real``.

    The rule, deterministic and independent of tuple order in either Struct:

    1. Both topologies' NUMA nodes are taken in topology order (socket id, NUMA id) and their CPUs in
       topology order (cores by lowest CPU, siblings adjacent).
    2. Declared NUMA node ``j`` of ``D`` goes to real NUMA node ``j * R // D`` of ``R`` (neighbours share a
       real node when there are more declared nodes; they are spread when there are fewer). The declared CPUs
       sent to one real node are dealt round-robin over its CPUs, continuing from where the previous
       declared node stopped.
    3. If the real machine has at least as many CPUs as declared but step 2 would put two declared CPUs on one
       real CPU, the declared CPUs are instead dealt one-to-one over all real CPUs in topology order.

    So a declared NUMA node always lands in one real NUMA node when the real machine is smaller; declared
    hyperthread siblings land on one real core when both have cores of equal width; and the map is injective
    whenever the real machine has enough CPUs. On a real machine without SMT, a declared core's threads go to
    different real CPUs, so one-thread-per-core cpusets may share real CPUs.
    """
    d_nodes, r_nodes = _cpus_by_numa(declared), _cpus_by_numa(real)
    mapping: dict[int, int] = {}
    dealt = [0] * len(r_nodes)
    for j, cpus in enumerate(d_nodes):
        r = j * len(r_nodes) // len(d_nodes)
        for cpu in cpus:
            mapping[cpu] = r_nodes[r][dealt[r] % len(r_nodes[r])]
            dealt[r] += 1
    if real.cpu_count >= declared.cpu_count and len(set(mapping.values())) < len(mapping):
        real_cpus = [cpu for cpus in r_nodes for cpu in cpus]
        mapping = dict(zip((cpu for cpus in d_nodes for cpu in cpus), real_cpus, strict=False))
    return dict(sorted(mapping.items()))


def real_cpuset(cpu_map: Mapping[int, int], declared_cpus: Iterable[int]) -> tuple[int, ...]:
    """The real CPUs (sorted, de-duplicated) behind declared CPUs. An empty map means no declared topology:
    CPU ids are real (as ``NodeRegistered.cpu_map`` defaults to ``{}``)."""
    cpus = list(declared_cpus)
    if not cpu_map:
        return tuple(sorted(set(cpus)))
    try:
        return tuple(sorted({cpu_map[c] for c in cpus}))
    except KeyError as e:
        raise ValueError(f"declared CPU {e.args[0]} is not in the CPU map") from None
