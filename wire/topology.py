"""Node topology: sockets → NUMA nodes → physical cores → logical CPUs (hyperthreads).

A topology is checked when built or decoded: every level is non-empty, ids are unique at their level (CPU
ids across the node) and non-negative, and a node has at most 4096 CPUs. Decoding also applies the field
bounds declared with ``msgspec.Meta``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import msgspec

from wire import checks

CpuId = Annotated[int, msgspec.Meta(ge=0, le=65535)]
MAX_CPUS = 4096


class Core(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """A physical core and its logical CPUs (hyperthread siblings)."""

    id: Annotated[int, msgspec.Meta(ge=0)]
    cpus: Annotated[tuple[CpuId, ...], msgspec.Meta(min_length=1, max_length=8)]


class NumaNode(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=0, le=1023)]
    cores: Annotated[tuple[Core, ...], msgspec.Meta(min_length=1)]
    memory_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0


class Socket(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=0)]
    numa_nodes: Annotated[tuple[NumaNode, ...], msgspec.Meta(min_length=1)]


class CpuInfo(msgspec.Struct, frozen=True, gc=False):
    """Where one logical CPU sits."""

    cpu: int
    core: int
    numa: int
    socket: int


def _unique(ids: list[int], what: str) -> None:
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"topology: {what} id {i} appears twice")
        seen.add(i)


class Topology(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """The CPU and memory layout of a node."""

    sockets: Annotated[tuple[Socket, ...], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        if checks.is_trusted():
            return
        numas = [n for s in self.sockets for n in s.numa_nodes]
        cores = [c for n in numas for c in n.cores]
        cpus = [cpu for c in cores for cpu in c.cpus]
        if not self.sockets or any(not s.numa_nodes for s in self.sockets):
            raise ValueError("topology: needs at least one socket, each with at least one NUMA node")
        if any(not n.cores for n in numas) or any(not c.cpus for c in cores):
            raise ValueError("topology: every NUMA node needs a core and every core a CPU")
        if min(cpus) < 0 or min(c.id for c in cores) < 0 or min(n.id for n in numas) < 0:
            raise ValueError("topology: ids must be non-negative")
        if len(cpus) > MAX_CPUS:
            raise ValueError(f"topology: {len(cpus)} CPUs is more than {MAX_CPUS}")
        _unique([s.id for s in self.sockets], "socket")
        _unique([n.id for n in numas], "NUMA node")
        _unique([c.id for c in cores], "core")
        _unique(cpus, "CPU")

    @classmethod
    def uniform(
        cls,
        sockets: int = 1,
        numa_per_socket: int = 1,
        cores_per_numa: int = 1,
        threads_per_core: int = 1,
        memory_per_numa: int = 0,
    ) -> Topology:
        """A regular topology. CPU ids follow Linux's usual numbering: the first thread of every core comes
        first (0..cores-1), then the second threads, so siblings are ``c`` and ``c + total_cores``."""
        total_cores = sockets * numa_per_socket * cores_per_numa
        out = []
        core = 0
        for s in range(sockets):
            numas = []
            for n in range(numa_per_socket):
                cores = []
                for _ in range(cores_per_numa):
                    cpus = tuple(core + t * total_cores for t in range(threads_per_core))
                    cores.append(Core(id=core, cpus=cpus))
                    core += 1
                numas.append(NumaNode(id=s * numa_per_socket + n, cores=tuple(cores), memory_bytes=memory_per_numa))
            out.append(Socket(id=s, numa_nodes=tuple(numas)))
        return cls(sockets=tuple(out))

    def numa_nodes(self) -> Iterator[NumaNode]:
        for s in self.sockets:
            yield from s.numa_nodes

    def cpu_infos(self) -> Iterator[CpuInfo]:
        for s in self.sockets:
            for n in s.numa_nodes:
                for c in n.cores:
                    for cpu in c.cpus:
                        yield CpuInfo(cpu=cpu, core=c.id, numa=n.id, socket=s.id)

    def cpus(self) -> tuple[int, ...]:
        return tuple(sorted(i.cpu for i in self.cpu_infos()))

    @property
    def cpu_count(self) -> int:
        return sum(len(c.cpus) for n in self.numa_nodes() for c in n.cores)

    @property
    def memory_bytes(self) -> int:
        return sum(n.memory_bytes for n in self.numa_nodes())
