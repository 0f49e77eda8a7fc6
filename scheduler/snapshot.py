"""The immutable view of the cluster a scheduling decision reads.

A ``Snapshot`` is taken from the store's projection at a log position; each node is a ``NodeSnap`` with what
feasibility and scoring need precomputed (free exclusive CPUs, CPU and memory in use per pool, service
replicas). Placing a container returns a new ``NodeSnap`` (``with_placement``); the scheduler applies its own
placements to its snapshot as a batch goes, and the plan check re-verifies them against the latest state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from scheduler.cpuset import TopologyIndex
from store.projections import Allocation, ClusterState, ContainerState, ContainerView, NodeView
from wire.pss import Enforce
from wire.resources import Resources
from wire.spec import CpuExclusivePolicy, QoS

PENDING_STATES = frozenset({ContainerState.PENDING, ContainerState.UNSCHEDULABLE})


class NodeSnap(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    name: str
    epoch: int
    index: TopologyIndex  # shared by every node of the same topology
    cpus: frozenset[int]  # every CPU the scheduler may hand out on this node
    numa_of: Mapping[int, int]
    capacity: Resources
    labels: Mapping[str, str]
    schedulable: bool
    unschedulable_reason: str = ""
    lse: frozenset[int] = frozenset()  # CPUs held by LSE containers (BE may not use them)
    lsr: frozenset[int] = frozenset()  # CPUs held by LSR containers (BE may)
    ls_millis: int = 0  # CPU requested by LS containers: they share the LS pool
    be_millis: int = 0
    memory: int = 0  # memory reserved by every container on the node
    services: Mapping[str, int] = {}  # service id → replicas on this node
    images: frozenset[str] | None = None  # None: the node did not say what it holds
    pulls: bool = False  # it pulls the images it lacks
    host_mounts: tuple[str, ...] = ()
    seccomp_profiles: tuple[str, ...] = ()  # beyond RuntimeDefault
    pod_security: Enforce = Enforce.PRIVILEGED
    pcpu_level: frozenset[int] = frozenset()  # cores held by PCPULevel containers
    numa_level: frozenset[int] = frozenset()  # NUMA nodes held by NUMANodeLevel containers

    def free_for(self, policy: CpuExclusivePolicy) -> frozenset[int]:
        """The free exclusive CPUs a container with ``policy`` may take: not on a core (PCPULevel) or NUMA node
        (NUMANodeLevel) that another container with the same policy holds."""
        free = self.free_exclusive
        if policy is CpuExclusivePolicy.PCPU_LEVEL and self.pcpu_level:
            core_of = self.index.core_of
            return frozenset(c for c in free if core_of[c] not in self.pcpu_level)
        if policy is CpuExclusivePolicy.NUMA_NODE_LEVEL and self.numa_level:
            return frozenset(c for c in free if self.numa_of[c] not in self.numa_level)
        return free

    @property
    def free_exclusive(self) -> frozenset[int]:
        return self.cpus - self.lse - self.lsr

    @property
    def ls_pool_millis(self) -> int:
        return (len(self.cpus) - len(self.lse) - len(self.lsr)) * 1000

    @property
    def be_pool_millis(self) -> int:
        return (len(self.cpus) - len(self.lse)) * 1000

    @property
    def cpu_millis_used(self) -> int:
        return (len(self.lse) + len(self.lsr)) * 1000 + self.ls_millis + self.be_millis

    def with_placement(
        self,
        qos: QoS,
        cpuset: tuple[int, ...],
        resources: Resources,
        service_id: str | None,
        exclusive: CpuExclusivePolicy = CpuExclusivePolicy.NONE,
    ) -> NodeSnap:
        changes: dict[str, object] = {"memory": self.memory + resources.memory_bytes}
        if exclusive is CpuExclusivePolicy.PCPU_LEVEL:
            changes["pcpu_level"] = self.pcpu_level | {self.index.core_of[c] for c in cpuset}
        elif exclusive is CpuExclusivePolicy.NUMA_NODE_LEVEL:
            changes["numa_level"] = self.numa_level | {self.numa_of[c] for c in cpuset}
        if qos is QoS.LSE:
            changes["lse"] = self.lse | frozenset(cpuset)
        elif qos is QoS.LSR:
            changes["lsr"] = self.lsr | frozenset(cpuset)
        elif qos is QoS.LS:
            changes["ls_millis"] = self.ls_millis + resources.cpu_millis
        else:
            changes["be_millis"] = self.be_millis + resources.cpu_millis
        if service_id is not None:
            changes["services"] = {**self.services, service_id: self.services.get(service_id, 0) + 1}
        return msgspec.structs.replace(self, **changes)


def node_snap(view: NodeView, containers: Mapping[str, ContainerView]) -> NodeSnap:
    """A node's snapshot from its projection view; ``containers`` (the projection's) tells which service each
    allocation belongs to."""
    index = TopologyIndex.of(view.topology)
    numa_of = index.numa_of
    snap = NodeSnap(
        name=view.name,
        epoch=view.epoch,
        index=index,
        cpus=index.cpus.difference(view.reserved_cpus) if view.reserved_cpus else index.cpus,
        numa_of=numa_of,
        capacity=view.capacity,
        labels=view.labels,
        schedulable=not (view.lost or view.cordoned),
        unschedulable_reason="node lost" if view.lost else ("node cordoned" if view.cordoned else ""),
        images=view.images,
        pulls=view.pulls,
        host_mounts=view.host_mounts,
        seccomp_profiles=view.seccomp_profiles,
        pod_security=view.pod_security,
    )
    return _with_allocations(snap, view.allocations.items(), containers)


def _with_allocations(
    snap: NodeSnap, allocations: Iterable[tuple[str, Allocation]], containers: Mapping[str, ContainerView]
) -> NodeSnap:
    lse: set[int] = set()
    lsr: set[int] = set()
    ls = be = memory = 0
    per_service: dict[str, int] = {}
    pcpu: set[int] = set()
    numa: set[int] = set()
    for container_id, a in allocations:
        memory += a.resources.memory_bytes
        c = containers.get(container_id)
        if a.cpuset and c is not None and c.spec.cpu_exclusive_policy is not CpuExclusivePolicy.NONE:
            if c.spec.cpu_exclusive_policy is CpuExclusivePolicy.PCPU_LEVEL:
                pcpu.update(snap.index.core_of[cpu] for cpu in a.cpuset)
            else:
                numa.update(snap.numa_of[cpu] for cpu in a.cpuset)
        if a.qos is QoS.LSE:
            lse.update(a.cpuset)
        elif a.qos is QoS.LSR:
            lsr.update(a.cpuset)
        elif a.qos is QoS.LS:
            ls += a.resources.cpu_millis
        else:
            be += a.resources.cpu_millis
        sid = c.service_id if c is not None else None
        if sid is not None:
            per_service[sid] = per_service.get(sid, 0) + 1
    return msgspec.structs.replace(
        snap,
        lse=frozenset(lse),
        lsr=frozenset(lsr),
        ls_millis=ls,
        be_millis=be,
        memory=memory,
        services=per_service,
        pcpu_level=frozenset(pcpu),
        numa_level=frozenset(numa),
    )


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    position: int  # the log position the snapshot reflects
    nodes: Mapping[str, NodeSnap]
    order: tuple[str, ...]  # node names, sorted: the base order the deterministic shuffle permutes


def take_snapshot(state: ClusterState) -> Snapshot:
    nodes = {name: node_snap(view, state.containers) for name, view in state.nodes.items()}
    return Snapshot(state.position, nodes, tuple(sorted(nodes)))
