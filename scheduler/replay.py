"""A recorded placement, decided again from what it read: the state at its snapshot position, the placements of
the same evaluation decided before it in its batch, its seed. The same inputs give the same node and CPUs (the
stack and the cpuset picker are pure and deterministic), so ``corral inspect``'s "why" can be checked.

Exact unless a placement decided earlier in the same batch was refused by the plan check (it left no event,
yet the batch's working snapshot held it), or the log was truncated past the snapshot position.
"""

from __future__ import annotations

import msgspec

from scheduler.feasible import request_of
from scheduler.snapshot import take_snapshot
from scheduler.stack import DEFAULT, Placement, StackConfig, Unschedulable, place
from store.log import EventLog
from store.projections import ClusterState, apply_all
from wire import events as ev

PAGE = 10_000


class NotReplayable(Exception):
    pass


async def replay(
    log: EventLog, position: int, config: StackConfig = DEFAULT
) -> tuple[ev.ContainerScheduled, Placement | Unschedulable]:
    """The placement recorded at ``position``, and the decision made again from its inputs."""
    found = await log.read_all(position, 1)
    if not found or found[0].position != position or not isinstance(found[0].event, ev.ContainerScheduled):
        raise NotReplayable(f"position {position} holds no placement")
    recorded, event = found[0], found[0].event
    if event.snapshot_position <= 0 or event.snapshot_position >= position:
        raise NotReplayable(f"the placement at {position} does not say what it read")
    state = ClusterState()
    at = 1
    while at <= event.snapshot_position:
        rows = await log.read_all(at, min(PAGE, event.snapshot_position - at + 1))
        if not rows or rows[0].position != at:
            raise NotReplayable(f"the log no longer starts at {at}")
        apply_all(state, ((r.position, r.event) for r in rows))
        at = rows[-1].position + 1
    snapshot = take_snapshot(state)
    earlier: list[ev.ContainerScheduled] = []
    at = event.snapshot_position + 1
    while at < position:
        rows = await log.read_all(at, min(PAGE, position - at))
        for r in rows:
            e = r.event
            same = r.correlation is not None and r.correlation == recorded.correlation
            if same and isinstance(e, ev.ContainerScheduled) and e.batch_index < event.batch_index:
                earlier.append(e)
        if not rows:
            break
        at = rows[-1].position + 1
    nodes = dict(snapshot.nodes)
    for e in sorted(earlier, key=lambda e: e.batch_index):
        c = state.containers.get(e.container_id)
        if c is None or e.node not in nodes:
            raise NotReplayable(f"placement {e.container_id} of the same batch was not pending at the snapshot")
        req = request_of(e.container_id, c.spec, c.service_id)
        nodes[e.node] = nodes[e.node].with_placement(e.qos, e.cpuset, e.resources, c.service_id, req.exclusive)
    snapshot = msgspec.structs.replace(snapshot, nodes=nodes)
    c = state.containers.get(event.container_id)
    if c is None:
        raise NotReplayable(f"container {event.container_id} was not submitted at the snapshot")
    return event, place(snapshot, request_of(event.container_id, c.spec, c.service_id), event.seed, config)
