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

from scheduler.feasible import Request, cpu, memory
from scheduler.snapshot import PENDING_STATES, NodeSnap, node_snap
from scheduler.stack import Placement
from store.projections import ClusterState
from wire import events as ev


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
            nodes[p.node] = node.with_placement(p.qos, p.cpuset, p.resources, plan.requests[p.container_id].service_id)
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
    )
