"""Projections: current state of nodes, containers and services, folded from the log.

Each entity has a pure fold, ``evolve_*(view | None, event) -> view | None`` (``None``: the entity is gone).
``ClusterState`` is the index those views live in, with a checkpoint (the last position folded in);
``apply`` routes one event to the folds it concerns and stores what they return. The views are immutable;
only the index is updated in place, which is what keeps a replay of a million events fast.

``apply`` run incrementally and a full replay give the same state; so do a snapshot plus its tail.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from msgspec.structs import replace

from wire import events as ev
from wire.resources import Resources
from wire.spec import ContainerSpec, QoS, ServiceSpec
from wire.topology import Topology

SNAPSHOT_SCHEMA = 1


class ContainerState(enum.StrEnum):
    PENDING = "pending"  # submitted, not placed yet
    UNSCHEDULABLE = "unschedulable"  # no node fits now; the scheduler tries again when the cluster changes
    SCHEDULED = "scheduled"  # placed, the nodelet has not reported it running
    RUNNING = "running"
    STOPPING = "stopping"  # a stop was asked for
    EXITED = "exited"  # ended on its own
    STOPPED = "stopped"  # ended because it was stopped
    LOST = "lost"  # its node was lost

    @property
    def terminal(self) -> bool:
        return self in (ContainerState.EXITED, ContainerState.STOPPED, ContainerState.LOST)


class Allocation(msgspec.Struct, frozen=True):
    """What one container holds on a node."""

    qos: QoS
    resources: Resources
    cpuset: tuple[int, ...] = ()
    numa_nodes: tuple[int, ...] = ()


class NodeView(msgspec.Struct, frozen=True):
    name: str
    topology: Topology
    capacity: Resources
    epoch: int
    labels: dict[str, str] = {}
    cpu_map: dict[int, int] = {}
    lost: bool = False
    cordoned: bool = False
    drained: bool = False
    allocations: dict[str, Allocation] = {}  # container id → what it holds

    @property
    def allocated(self) -> Resources:
        total = Resources()
        for a in self.allocations.values():
            total = total + a.resources
        return total

    @property
    def exclusive_cpus(self) -> dict[int, str]:
        """CPU → the container holding it exclusively."""
        return {cpu: cid for cid, a in self.allocations.items() for cpu in a.cpuset}


class ContainerView(msgspec.Struct, frozen=True):
    id: str
    spec: ContainerSpec
    state: ContainerState = ContainerState.PENDING
    service_id: str | None = None
    submitted_position: int = 0
    node: str | None = None
    epoch: int = 0
    cpuset: tuple[int, ...] = ()
    numa_nodes: tuple[int, ...] = ()
    resources: Resources = Resources()
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    started_ns: int | None = None
    finished_ns: int | None = None
    unschedulable: str = ""
    throttled: bool = False
    throttled_ratio: float = 0.0
    burst_us: int | None = None
    cfs_quota_us: int | None = None
    burst_policy: str | None = None


class ServiceView(msgspec.Struct, frozen=True):
    id: str
    spec: ServiceSpec
    replicas: int


class ClusterState(msgspec.Struct):
    """The projection index. ``position`` is the checkpoint: the last log position folded in."""

    position: int = 0
    nodes: dict[str, NodeView] = {}
    containers: dict[str, ContainerView] = {}
    services: dict[str, ServiceView] = {}


# --- pure folds ----------------------------------------------------------------------------------------------


def _release(view: NodeView, container_id: str) -> NodeView:
    if container_id not in view.allocations:
        return view
    allocations = dict(view.allocations)
    del allocations[container_id]
    return replace(view, allocations=allocations)


def evolve_node(view: NodeView | None, event: ev.Event) -> NodeView | None:
    match event:
        case ev.NodeRegistered():
            base = view.allocations if view is not None else {}
            flags = {"cordoned": view.cordoned, "drained": view.drained} if view is not None else {}
            return NodeView(
                name=event.node, topology=event.topology, capacity=event.capacity, epoch=event.epoch,
                labels=dict(event.labels), cpu_map=dict(event.cpu_map), allocations=base, **flags,
            )  # fmt: skip
    if view is None:
        return None  # an event about a node never registered changes nothing
    match event:
        case ev.NodeLost():
            return replace(view, lost=True)
        case ev.NodeRecovered():
            return replace(view, lost=False, epoch=event.epoch)
        case ev.NodeCordoned():
            return replace(view, cordoned=True)
        case ev.NodeUncordoned():
            return replace(view, cordoned=False, drained=False)
        case ev.NodeDrained():
            return replace(view, cordoned=True, drained=True)
        case ev.ContainerScheduled():
            alloc = Allocation(event.qos, event.resources, event.cpuset, event.numa_nodes)
            return replace(view, allocations={**view.allocations, event.container_id: alloc})
        case ev.ContainerExited() | ev.ContainerStopped() | ev.ContainerLost():
            return _release(view, event.container_id)
    return view


def evolve_container(view: ContainerView | None, event: ev.Event, position: int = 0) -> ContainerView | None:
    if isinstance(event, ev.ContainerSubmitted):
        if view is not None:
            return view
        return ContainerView(
            id=event.container_id, spec=event.spec, service_id=event.service_id, submitted_position=position
        )
    if view is None:
        return None
    match event:
        case ev.ContainerScheduled():
            return replace(
                view, state=ContainerState.SCHEDULED, node=event.node, epoch=event.epoch,
                cpuset=event.cpuset, numa_nodes=event.numa_nodes, resources=event.resources, unschedulable="",
            )  # fmt: skip
        case ev.ContainerUnschedulable():
            return replace(view, state=ContainerState.UNSCHEDULABLE, unschedulable=event.message)
        case ev.ContainerStarted():
            if view.state.terminal:
                return view
            state = ContainerState.STOPPING if view.state is ContainerState.STOPPING else ContainerState.RUNNING
            return replace(view, state=state, pid=event.pid, started_ns=event.started_ns)
        case ev.ContainerExited():
            state = ContainerState.STOPPED if view.state is ContainerState.STOPPING else ContainerState.EXITED
            return replace(
                view, state=state, exit_code=event.exit_code, signal=event.signal,
                oom_killed=event.oom_killed, finished_ns=event.exited_ns, throttled=False,
            )  # fmt: skip
        case ev.ContainerStopRequested():
            return view if view.state.terminal else replace(view, state=ContainerState.STOPPING)
        case ev.ContainerStopped():
            code = event.exit_code if event.exit_code is not None else view.exit_code
            return replace(
                view, state=ContainerState.STOPPED, exit_code=code,
                finished_ns=event.stopped_ns or view.finished_ns, throttled=False,
            )  # fmt: skip
        case ev.ContainerLost():
            return replace(view, state=ContainerState.LOST, throttled=False)
        case ev.ContainerThrottled():
            return replace(view, throttled=True, throttled_ratio=event.throttled_ratio)
        case ev.ContainerUnthrottled():
            return replace(view, throttled=False, throttled_ratio=event.throttled_ratio)
        case ev.CpuBurstSet():
            return replace(view, burst_us=event.burst_us)
        case ev.CfsQuotaScaled():
            return replace(view, cfs_quota_us=event.to_us)
        case ev.BurstPolicyChanged():
            return replace(view, burst_policy=event.policy)
    return view


def evolve_service(view: ServiceView | None, event: ev.Event) -> ServiceView | None:
    match event:
        case ev.ServiceCreated():
            return view if view is not None else ServiceView(event.service_id, event.spec, event.spec.replicas)
        case ev.ServiceScaled():
            return None if view is None else replace(view, replicas=event.replicas_to)
        case ev.ServiceDeleted():
            return None
    return view


# --- routing ---------------------------------------------------------------------------------------------------

_NODE_EVENTS = (
    ev.NodeRegistered, ev.NodeLost, ev.NodeRecovered, ev.NodeCordoned, ev.NodeUncordoned, ev.NodeDrained,
    ev.ContainerScheduled, ev.ContainerExited, ev.ContainerStopped, ev.ContainerLost,
)  # fmt: skip
_SERVICE_EVENTS = (ev.ServiceCreated, ev.ServiceScaled, ev.ServiceDeleted)


def _put(index: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        index.pop(key, None)
    else:
        index[key] = value


def _route(cls: type) -> Callable[[ClusterState, int, Any], None]:
    steps: list[Callable[[ClusterState, int, Any], None]] = []
    if cls in _NODE_EVENTS:
        steps.append(lambda s, p, e: _put(s.nodes, e.node, evolve_node(s.nodes.get(e.node), e)))
    if "container_id" in cls.__struct_fields__:  # type: ignore[attr-defined]
        steps.append(
            lambda s, p, e: _put(s.containers, e.container_id, evolve_container(s.containers.get(e.container_id), e, p))
        )
    if cls in _SERVICE_EVENTS:
        steps.append(lambda s, p, e: _put(s.services, e.service_id, evolve_service(s.services.get(e.service_id), e)))
    if len(steps) == 1:
        return steps[0]

    def run_all(s: ClusterState, p: int, e: Any) -> None:
        for step in steps:
            step(s, p, e)

    return run_all


_ROUTES = {cls: _route(cls) for cls in ev.EVENT_TYPES.values()}


def apply(state: ClusterState, position: int, event: ev.Event) -> None:
    """Fold one event at ``position`` into ``state``. Events at or before the checkpoint are skipped, so
    applying the same tail twice is harmless."""
    if position <= state.position:
        return
    _ROUTES[type(event)](state, position, event)
    state.position = position


def apply_all(state: ClusterState, events: Iterable[tuple[int, ev.Event]]) -> ClusterState:
    for position, event in events:
        apply(state, position, event)
    return state


# --- snapshots ---------------------------------------------------------------------------------------------------

_state_decoder = msgspec.msgpack.Decoder(ClusterState)
_encoder = msgspec.msgpack.Encoder()


def encode_snapshot(state: ClusterState) -> bytes:
    return _encoder.encode((SNAPSHOT_SCHEMA, state))


def decode_snapshot(data: bytes) -> ClusterState | None:
    """``None`` when the snapshot was written by another snapshot schema (replay from the log instead)."""
    schema, raw = msgspec.msgpack.decode(data, type=tuple[int, msgspec.Raw])
    return _state_decoder.decode(raw) if schema == SNAPSHOT_SCHEMA else None
