"""Projections: current state of nodes, containers and services, folded from the log.

Each entity has a pure fold, ``evolve_*(view | None, event) -> view | None`` (``None``: the entity is gone).
``ClusterState`` is the index those views live in, with a checkpoint (the last position folded in);
``apply`` routes one event to the folds it concerns and stores what they return. The views are immutable;
only the index is updated in place, which is what keeps a replay of a million events fast.

``apply`` run incrementally and a full replay give the same state; so do a snapshot plus its tail.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec
from msgspec.structs import replace

from wire import events as ev
from wire.burst import BurstConfig
from wire.pss import Enforce
from wire.resources import Resources
from wire.spec import ContainerSpec, QoS, ServiceSpec, restart_backoff, restarts_on_exit
from wire.topology import Topology

SNAPSHOT_SCHEMA = 4  # 4: nodes say whether they pull; containers why they wait


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
        return self in TERMINAL


TERMINAL = frozenset({ContainerState.EXITED, ContainerState.STOPPED, ContainerState.LOST})


class Allocation(msgspec.Struct, frozen=True, gc=False):
    """What one container holds on a node."""

    qos: QoS
    resources: Resources
    cpuset: tuple[int, ...] = ()
    numa_nodes: tuple[int, ...] = ()


class NodeView(msgspec.Struct, frozen=True, gc=False):
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
    images: frozenset[str] | None = None  # None: the node did not say
    host_mounts: tuple[str, ...] = ()
    reserved_cpus: tuple[int, ...] = ()  # kept for the system: no container gets them
    seccomp_profiles: tuple[str, ...] = ()  # beyond RuntimeDefault
    pod_security: Enforce = Enforce.PRIVILEGED
    pulls: bool = False  # it pulls the images it lacks

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


class ContainerView(msgspec.Struct, frozen=True, gc=False):
    id: str
    spec: ContainerSpec
    state: ContainerState = ContainerState.PENDING
    service_id: str | None = None
    replaces: str | None = None
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
    burst_reason: str = ""  # why the burst is what it is (its policy, a clamp to the quota)
    cfs_quota_us: int | None = None
    quota_reason: str = ""  # the last change of the quota: scale up / scale down / reset / update
    stop_requested: bool = False  # kept when it then ends some other way (lost): it was not meant to run on
    stop_grace_s: float = 10.0  # the grace of the stop asked for, if one was
    message: str = ""  # why it ended, when it never ran (e.g. its node refused to start it)
    restarts: int = 0  # restarts in its chain before it
    backoff_until_ns: int | None = None  # ended and to be replaced: not before this time
    wait_reason: str = ""  # placed and not started yet, why (wire.events.WaitReason): Pulling, ImagePullBackOff...
    wait_message: str = ""


class ServiceView(msgspec.Struct, frozen=True, gc=False):
    id: str
    spec: ServiceSpec
    replicas: int


class ClusterState(msgspec.Struct):
    """The projection index. ``position`` is the checkpoint: the last log position folded in. ``versions``: each
    entity's stream version as folded (what a decision appends against; a removed container's is dropped)."""

    position: int = 0
    nodes: dict[str, NodeView] = {}
    containers: dict[str, ContainerView] = {}
    services: dict[str, ServiceView] = {}
    versions: dict[str, int] = {}  # "container/<id>", "node/<name>", "service/<id>" → stream version
    burst: BurstConfig = BurstConfig()  # the cluster's CPU Burst configuration


# --- pure folds ----------------------------------------------------------------------------------------------
# Each fold dispatches on the event's type through a table (a ``match`` over twenty classes costs more than
# the update itself during a replay). An event type absent from a table leaves the view as it is.

# Enum members as module constants: on Python 3.11, ``ContainerState.RUNNING`` is a descriptor lookup that
# costs more than the fold around it.
PENDING, UNSCHEDULABLE, SCHEDULED, RUNNING, STOPPING, EXITED, STOPPED, LOST = ContainerState
_Fold = Callable[[Any, Any, int], Any]
_V = TypeVar("_V", NodeView, ContainerView, ServiceView)


def _node_registered(view: NodeView | None, e: ev.NodeRegistered, _: int) -> NodeView:
    kept: dict[str, Any] = (
        {} if view is None else {"allocations": view.allocations, "cordoned": view.cordoned, "drained": view.drained}
    )
    return NodeView(
        name=e.node,
        topology=e.topology,
        capacity=e.capacity,
        epoch=e.epoch,
        labels=dict(e.labels),
        cpu_map=dict(e.cpu_map),
        images=None if e.images is None else frozenset(e.images),
        host_mounts=e.host_mounts,
        reserved_cpus=e.reserved_cpus,
        seccomp_profiles=e.seccomp_profiles,
        pod_security=e.pod_security,
        pulls=e.pulls,
        **kept,
    )


def _node_scheduled(view: NodeView, e: ev.ContainerScheduled, _: int) -> NodeView:
    alloc = Allocation(e.qos, e.resources, e.cpuset, e.numa_nodes)
    return replace(view, allocations={**view.allocations, e.container_id: alloc})


def _node_released(view: NodeView, e: ev.ContainerExited | ev.ContainerStopped | ev.ContainerLost, _: int) -> NodeView:
    if e.container_id not in view.allocations:
        return view
    allocations = dict(view.allocations)
    del allocations[e.container_id]
    return replace(view, allocations=allocations)


_NODE_FOLDS: dict[type, _Fold] = {
    ev.NodeRegistered: _node_registered,
    ev.NodeImagesChanged: lambda v, e, _: replace(v, images=frozenset(e.images)),
    ev.NodeLost: lambda v, e, _: replace(v, lost=True) if e.epoch == v.epoch else v,  # an older incarnation's
    ev.NodeRecovered: lambda v, e, _: replace(v, lost=False, epoch=e.epoch),
    ev.NodeCordoned: lambda v, e, _: replace(v, cordoned=True),
    ev.NodeUncordoned: lambda v, e, _: replace(v, cordoned=False, drained=False),
    ev.NodeDrained: lambda v, e, _: replace(v, cordoned=True, drained=True),
    ev.ContainerScheduled: _node_scheduled,
    ev.ContainerExited: _node_released,
    ev.ContainerStopped: _node_released,
    ev.ContainerLost: _node_released,
}


def evolve_node(view: NodeView | None, event: ev.Event, position: int = 0) -> NodeView | None:
    return _evolve(_NODE_FOLDS, view, event, position)


def _submitted(v: ContainerView | None, e: ev.ContainerSubmitted, position: int) -> ContainerView:
    if v is not None:
        return v
    return ContainerView(
        id=e.container_id,
        spec=e.spec,
        service_id=e.service_id,
        replaces=e.replaces,
        submitted_position=position,
        restarts=e.restarts,
    )


def _unschedulable(v: ContainerView, e: ev.ContainerUnschedulable, _: int) -> ContainerView:
    # A verdict reached before a stop (or an end) was folded must not bring the container back to life.
    if v.state is STOPPING or v.state in TERMINAL:
        return replace(v, unschedulable=e.message)
    return replace(v, state=UNSCHEDULABLE, unschedulable=e.message)


def _scheduled(v: ContainerView, e: ev.ContainerScheduled, _: int) -> ContainerView:
    if v.state in TERMINAL:
        return v  # a placement that arrives after the end changes nothing
    return replace(
        v,
        state=STOPPING if v.state is STOPPING else SCHEDULED,
        node=e.node,
        epoch=e.epoch,
        cpuset=e.cpuset,
        numa_nodes=e.numa_nodes,
        resources=e.resources,
        unschedulable="",
        wait_reason="",
        wait_message="",
    )


def _started(v: ContainerView, e: ev.ContainerStarted, _: int) -> ContainerView:
    if v.state in TERMINAL:
        return v
    state = STOPPING if v.state is STOPPING else RUNNING
    return replace(v, state=state, pid=e.pid, started_ns=e.started_ns, wait_reason="", wait_message="")


def _backoff_until(v: ContainerView, e: ev.ContainerExited) -> int | None:
    if v.stop_requested or v.state is STOPPING or v.state in TERMINAL:
        return None
    if not restarts_on_exit(v.spec.restart_policy, e.exit_code, v.service_id is not None):
        return None
    ran = e.exited_ns - v.started_ns if v.started_ns is not None else 0
    return e.exited_ns + restart_backoff(v.restarts, ran)[0]


def _exited(v: ContainerView, e: ev.ContainerExited, _: int) -> ContainerView:
    if v.state in TERMINAL:
        return v  # an end is final: a late report (the kill of a container lost with its node) changes nothing
    backoff_until = _backoff_until(v, e)
    state = STOPPED if v.state is STOPPING else EXITED
    return replace(
        v,
        state=state,
        exit_code=e.exit_code,
        signal=e.signal,
        oom_killed=e.oom_killed,
        finished_ns=e.exited_ns,
        throttled=False,
        message=e.message,
        backoff_until_ns=backoff_until,
        wait_reason="",
        wait_message="",
    )


def _stop_requested(v: ContainerView, e: ev.ContainerStopRequested, _: int) -> ContainerView:
    if v.state in TERMINAL:
        # Ended, maybe waiting out a restart back-off: a stop now means it is not to be restarted.
        return v if v.backoff_until_ns is None else replace(v, stop_requested=True, backoff_until_ns=None)
    return replace(v, state=STOPPING, stop_requested=True, stop_grace_s=e.grace_s)


def _stopped(v: ContainerView, e: ev.ContainerStopped, _: int) -> ContainerView:
    if v.state in TERMINAL:
        return v
    code = e.exit_code if e.exit_code is not None else v.exit_code
    return replace(
        v,
        state=STOPPED,
        exit_code=code,
        finished_ns=e.stopped_ns or v.finished_ns,
        throttled=False,
        wait_reason="",
        wait_message="",
    )


def _waiting(v: ContainerView, e: ev.ContainerWaiting, _: int) -> ContainerView:
    if v.state not in (SCHEDULED, STOPPING) or v.node != e.node:
        return v  # started, ended or moved on meanwhile
    return replace(v, wait_reason=str(e.reason), wait_message=e.message)


_CONTAINER_FOLDS: dict[type, _Fold] = {
    ev.ContainerSubmitted: _submitted,
    ev.ContainerScheduled: _scheduled,
    ev.ContainerUnschedulable: _unschedulable,
    ev.ContainerStarted: _started,
    ev.ContainerExited: _exited,
    ev.ContainerStopRequested: _stop_requested,
    ev.ContainerStopped: _stopped,
    ev.ContainerWaiting: _waiting,
    ev.ContainerLost: lambda v, e, _: (
        v if v.state in TERMINAL else replace(v, state=LOST, throttled=False, wait_reason="", wait_message="")
    ),
    ev.ContainerThrottled: lambda v, e, _: replace(v, throttled=True, throttled_ratio=e.throttled_ratio),
    ev.ContainerUnthrottled: lambda v, e, _: replace(v, throttled=False, throttled_ratio=e.throttled_ratio),
    ev.CpuBurstSet: lambda v, e, _: replace(v, burst_us=e.burst_us, burst_reason=e.reason),
    ev.CfsQuotaScaled: lambda v, e, _: (
        replace(v, cfs_quota_us=e.to_us, quota_reason=e.reason)
        if e.burst_us is None
        else replace(v, cfs_quota_us=e.to_us, quota_reason=e.reason, burst_us=e.burst_us, burst_reason=e.burst_reason)
    ),
    ev.ContainerRemoved: lambda v, e, _: v if v.state not in TERMINAL else None,
}


def evolve_container(view: ContainerView | None, event: ev.Event, position: int = 0) -> ContainerView | None:
    return _evolve(_CONTAINER_FOLDS, view, event, position)


_SERVICE_FOLDS: dict[type, _Fold] = {
    ev.ServiceCreated: lambda v, e, _: v if v is not None else ServiceView(e.service_id, e.spec, e.spec.replicas),
    ev.ServiceScaled: lambda v, e, _: replace(v, replicas=e.replicas_to),
    ev.ServiceDeleted: lambda v, e, _: None,
}


def evolve_service(view: ServiceView | None, event: ev.Event, position: int = 0) -> ServiceView | None:
    return _evolve(_SERVICE_FOLDS, view, event, position)


# Events that bring an entity into being; every other event about an unknown entity changes nothing.
_CREATES = frozenset({ev.NodeRegistered, ev.ContainerSubmitted, ev.ServiceCreated})


def _evolve(folds: dict[type, _Fold], view: _V | None, event: ev.Event, position: int) -> _V | None:
    fold = folds.get(type(event))
    if fold is None or (view is None and type(event) not in _CREATES):
        return view
    new: _V | None = fold(view, event, position)
    return new


# --- routing ---------------------------------------------------------------------------------------------------
# Which folds an event type concerns, and under which key, decided once per type.

_Step = Callable[[ClusterState, int, Any], None]
BURST_POLICY_KEY = "cluster/burst-policy"  # its version in ``ClusterState.versions``


def _entity_step(index: str, key: str, fold: _Fold, creates: bool) -> _Step:
    """Apply ``fold`` to the view that ``event.<key>`` names in ``state.<index>``."""
    views_of, key_of = operator.attrgetter(index), operator.attrgetter(key)

    def step(state: ClusterState, position: int, event: Any) -> None:
        views, k = views_of(state), key_of(event)
        view = views.get(k)
        if view is not None or creates:
            new = fold(view, event, position)
            if new is None:
                views.pop(k, None)
            elif new is not view:
                views[k] = new

    return step


def _placement_step(fold: _Fold, allocates: bool) -> _Step:
    """Container events that move CPUs and memory: the node's allocations follow the container's own state,
    so a node holds resources only for a live container placed on it. A placement after the end allocates
    nothing; a move releases the old node; an exit releases the node the container was placed on, whatever
    node the event names."""

    def step(state: ClusterState, position: int, event: Any) -> None:
        containers, cid = state.containers, event.container_id
        before = containers.get(cid)
        if before is None:
            return  # never submitted: nothing to place or release
        after = fold(before, event, position)
        if after is before:
            return
        containers[cid] = after
        nodes = state.nodes
        old = before.node if before.state not in TERMINAL else None
        new = after.node if after.state not in TERMINAL else None
        if old is not None and old != new and old in nodes:
            nodes[old] = _node_released(nodes[old], event, position)
        if allocates and new is not None and new in nodes:
            nodes[new] = _node_scheduled(nodes[new], event, position)

    return step


_PLACEMENT_EVENTS = (ev.ContainerScheduled, ev.ContainerExited, ev.ContainerStopped, ev.ContainerLost)


def version(state: ClusterState, kind: str, ident: str) -> int:
    """The stream version of a container, node or service as folded (-1, i.e. ``NO_STREAM``, if none)."""
    return state.versions.get(f"{kind}/{ident}", -1)


def version_key(event: ev.Event) -> str:
    """The key of the stream an event belongs to in ``ClusterState.versions``: its container's, else its
    service's, else its node's (as the control plane appends them)."""
    return _VERSION_KEY[type(event)](event)


def _version_key_of(cls: type) -> Callable[[Any], str]:
    if cls is ev.BurstPolicyChanged:
        return lambda _: BURST_POLICY_KEY
    fields = set(getattr(cls, "__struct_fields__", ()))
    for kind, attr in (("container", "container_id"), ("service", "service_id"), ("node", "node")):
        if attr in fields:
            return _key_maker(f"{kind}/", operator.attrgetter(attr))
    raise TypeError(f"{cls.__name__} names no stream")


def _key_maker(prefix: str, attr: Callable[[Any], str]) -> Callable[[Any], str]:
    def key(event: Any) -> str:
        return prefix + attr(event)

    return key


_VERSION_KEY = {cls: _version_key_of(cls) for cls in ev.EVENT_TYPES.values()}


def _versioned(step: _Step, cls: type) -> _Step:
    key_of = _VERSION_KEY[cls]
    forgets = cls is ev.ContainerRemoved

    def run(state: ClusterState, position: int, event: Any) -> None:
        step(state, position, event)
        versions, key = state.versions, key_of(event)
        if forgets and event.container_id not in state.containers:
            versions.pop(key, None)
        else:
            versions[key] = versions.get(key, -1) + 1

    return run


def _route(cls: type) -> _Step:
    return _versioned(_route_views(cls), cls)


def _burst_policy(state: ClusterState, _: int, event: ev.BurstPolicyChanged) -> None:
    state.burst = event.config


def _resized(state: ClusterState, _: int, e: ev.ContainerResized) -> None:
    """A live container placed on the event's node takes the new request and limit, and so does what its node
    holds for it; anything else (ended, moved) is left as it is."""
    c = state.containers.get(e.container_id)
    if c is None or c.state in TERMINAL or c.node != e.node:
        return
    spec = replace(c.spec, cpu_request_millis=e.cpu_request_millis, cpu_limit_millis=e.cpu_limit_millis)
    state.containers[e.container_id] = replace(c, spec=spec, resources=e.resources)
    node = state.nodes.get(e.node)
    held = None if node is None else node.allocations.get(e.container_id)
    if node is not None and held is not None:
        allocations = {**node.allocations, e.container_id: replace(held, resources=e.resources)}
        state.nodes[e.node] = replace(node, allocations=allocations)


def _route_views(cls: type) -> _Step:
    if cls is ev.BurstPolicyChanged:
        return _burst_policy
    if cls is ev.ContainerResized:
        return _resized
    if cls in _PLACEMENT_EVENTS:
        return _placement_step(_CONTAINER_FOLDS[cls], allocates=cls is ev.ContainerScheduled)
    steps = [
        _entity_step(index, key, folds[cls], cls in _CREATES)
        for index, key, folds in (
            ("nodes", "node", _NODE_FOLDS),
            ("containers", "container_id", _CONTAINER_FOLDS),
            ("services", "service_id", _SERVICE_FOLDS),
        )
        if cls in folds
    ]
    if len(steps) == 1:
        return steps[0]

    def run_all(state: ClusterState, position: int, event: Any) -> None:
        for step in steps:
            step(state, position, event)

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
    """Fold events in position order (as ``apply`` does, one by one, without its per-call overhead)."""
    routes = _ROUTES
    checkpoint = state.position
    try:
        for position, event in events:
            if position > checkpoint:
                routes[type(event)](state, position, event)
                checkpoint = position
    finally:
        state.position = checkpoint
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
