"""Plans and their check by the single writer (Nomad's plan applier, as a pure function).

The scheduler submits a plan — placements decided against a snapshot at some log position. Before appending,
the writer re-checks every placement against the latest state with the same fit rules the scheduler used
(``scheduler.feasible``) plus what only the latest state can show: the container is still pending, the node
is still there with the same epoch, and no exclusive CPU is held twice. Accepted placements become
``ContainerScheduled``; rejected ones go back to the scheduler with the position to refresh from.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import msgspec

from scheduler.feasible import Request, cpu, memory, request_of
from scheduler.snapshot import PENDING_STATES, NodeSnap, node_snap
from scheduler.stack import Placement
from store.projections import ClusterState, ContainerState
from wire import events as ev
from wire.spec import QoS


class Plan(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    eval_id: uuid.UUID
    snapshot_position: int
    placements: tuple[Placement, ...]
    requests: Mapping[str, Request]  # container id → what it asked (for the re-check)


class Rejection(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    placement: Placement
    reason: str


class PlanResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    accepted: tuple[Placement, ...]
    rejected: tuple[Rejection, ...]
    refresh_position: int  # the position the rejected placements should be re-planned from


def check_plan(state: ClusterState, plan: Plan) -> PlanResult:
    """Re-check each placement in order against ``state`` plus the placements accepted before it."""
    nodes: dict[str, NodeSnap] = {}
    accepted: list[Placement] = []
    rejected: list[Rejection] = []
    for p in plan.placements:
        reason = _check_one(state, plan, p, nodes)
        if reason is None:
            node = nodes[p.node]
            req = plan.requests[p.container_id]
            nodes[p.node] = node.with_placement(p.qos, p.cpuset, p.resources, req.service_id, req.exclusive)
            accepted.append(p)
        else:
            rejected.append(Rejection(placement=p, reason=reason))
    return PlanResult(accepted=tuple(accepted), rejected=tuple(rejected), refresh_position=state.position)


def _check_one(state: ClusterState, plan: Plan, p: Placement, nodes: dict[str, NodeSnap]) -> str | None:
    container = state.containers.get(p.container_id)
    if container is None or container.state not in PENDING_STATES:
        return "container is no longer pending"
    view = state.nodes.get(p.node)
    if view is None:
        return "node is gone"
    if p.node not in nodes:
        nodes[p.node] = node_snap(view, state.containers)
    node = nodes[p.node]
    if not node.schedulable:
        return node.unschedulable_reason
    if node.epoch != p.epoch:
        return f"node epoch changed ({p.epoch} → {node.epoch})"
    req = plan.requests[p.container_id]
    if p.cpuset:
        taken = set(p.cpuset) & (node.lse | node.lsr)
        if taken:
            return f"CPUs {sorted(taken)} are already held exclusively"
        if not set(p.cpuset) <= node.free_for(req.exclusive):
            return f"CPUs {sorted(p.cpuset)} are not apart from the other {req.exclusive} containers"
        if not set(p.cpuset) <= node.cpus:
            return "cpuset names CPUs the node does not have"
    return cpu(node, req) or memory(node, req)


def scheduled_event(p: Placement) -> ev.ContainerScheduled:
    return ev.ContainerScheduled(
        container_id=p.container_id,
        node=p.node,
        epoch=p.epoch,
        qos=p.qos,
        cpuset=p.cpuset,
        numa_nodes=p.numa_nodes,
        resources=p.resources,
        score=p.score,
        reason=p.reason,
        cpus_reason=p.cpus_reason,
        runners_up=tuple(ev.RunnerUp(node=n, score=s) for n, s in p.runners_up),
        snapshot_position=p.snapshot_position,
        seed=p.seed,
        batch_index=p.batch_index,
    )


# --- in-place resize -----------------------------------------------------------------------------------------------


class ResizeRefused(msgspec.Struct, frozen=True, gc=False):
    """Why a resize cannot be done: ``conflict`` (the container or its node as they are now) or not."""

    field: str
    reason: str
    conflict: bool = True


def resize(
    state: ClusterState, container_id: str, request: int, limit: int | None, actor: str = ""
) -> ev.ContainerResized | ResizeRefused | None:
    """The event that changes a live container's CPU request and limit in place, if its node can hold the new
    request beside everything else it holds. Only LS containers, and only within their kind: a limit stays a
    limit (a quota cannot appear or vanish under a running process), exclusive CPUs (LSE/LSR) and best-effort
    containers keep what they have (their QoS class would change), as Kubernetes' in-place resize keeps it.
    None: it has these values already (nothing to append)."""
    c = state.containers.get(container_id)
    if c is None:
        return ResizeRefused("container_id", f"no container {container_id}", conflict=False)
    if c.state not in (ContainerState.SCHEDULED, ContainerState.RUNNING) or c.node is None:
        return ResizeRefused("state", f"container {container_id} is {c.state}: only a live one is resized")
    if (request, limit) == (c.spec.cpu_request_millis, c.spec.cpu_limit_millis):
        return None
    qos = c.spec.qos or QoS.LS
    if qos is not QoS.LS:
        return ResizeRefused("qos", f"a {qos} container keeps its CPUs (resizing would change its QoS class)")
    if (limit is None) != (c.spec.cpu_limit_millis is None):
        had = "has a CPU limit" if c.spec.cpu_limit_millis is not None else "has no CPU limit"
        return ResizeRefused("cpu_limit_millis", f"the container {had}: a limit can be changed, not added or removed")
    if request == 0 and limit is None:
        return ResizeRefused("cpu_request_millis", "a request of 0 without a limit would make it best effort")
    try:
        spec = msgspec.structs.replace(c.spec, cpu_request_millis=request, cpu_limit_millis=limit)
    except ValueError as e:
        field, _, reason = str(e).partition(": ")
        return ResizeRefused(field if reason else "cpu_request_millis", reason or str(e), conflict=False)
    view = state.nodes.get(c.node)
    if view is None or view.lost:
        return ResizeRefused("node", f"node {c.node} is {'lost' if view is not None else 'gone'}")
    others = {k: v for k, v in view.allocations.items() if k != container_id}
    node = node_snap(msgspec.structs.replace(view, allocations=others), state.containers)
    wanted = request_of(container_id, spec, c.service_id)
    why = cpu(node, wanted)
    if why is not None:
        free = node.ls_pool_millis - node.ls_millis
        return ResizeRefused(
            "cpu_request_millis", f"{why} on node {c.node}: {request}m asked, {free}m free in its pool"
        )
    resources = msgspec.structs.replace(c.resources, cpu_millis=request)
    return ev.ContainerResized(
        container_id=container_id,
        node=c.node,
        cpu_request_millis=request,
        cpu_limit_millis=limit,
        resources=resources,
        actor=actor,
    )
