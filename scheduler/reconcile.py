"""The reconciler: desired state against actual state, as a pure function returning the events to append.

- A service runs ``replicas`` live containers: missing ones are submitted from its template, extra ones are
  asked to stop (pending ones first, then the newest). A deleted service's containers are asked to stop.
- A container on a lost node becomes ``ContainerLost``; a service then replaces it through its replica count.
- A container asked to stop before it was placed is stopped at once (nothing runs).
- A container on a drained node is asked to stop (also one placed there as the drain was recorded).
- A standalone container that ended is replaced per its restart policy (``Always``; ``OnFailure`` when the
  exit code was not 0 or unknown), once: the replacement names the container it replaces.
- A container that exited by itself (a service replica, or standalone per its policy) is replaced only after
  its back-off (``backoff_until_ns``: 10 s doubling to 5 min, reset by a 10-minute run); its replacement
  carries the chain's restart count. A lost container is replaced at once: its node failed, not it.

Idempotent: run twice on the same state it asks for nothing more the second time, once its events are applied.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from store.projections import ClusterState, ContainerState, ContainerView
from wire import events as ev
from wire.ids import container_stream
from wire.spec import RestartPolicy, restart_backoff

ENDED = frozenset({ContainerState.EXITED, ContainerState.STOPPED, ContainerState.LOST})
ON_NODE = frozenset({ContainerState.SCHEDULED, ContainerState.RUNNING, ContainerState.STOPPING})


class Action(msgspec.Struct, frozen=True, gc=False):
    stream: str
    event: ev.Event


def reconcile(state: ClusterState, new_id: Callable[[], str], now_ns: int) -> list[Action]:
    actions: list[Action] = []
    by_service: dict[str, list[ContainerView]] = {}
    crashed: dict[str, list[ContainerView]] = {}  # service → replicas that exited by themselves, not replaced yet
    replaced = {c.replaces for c in state.containers.values() if c.replaces is not None}
    for c in state.containers.values():
        if c.state is ContainerState.STOPPING and c.node is None:
            # Asked to stop before it was placed: nothing runs, so it is stopped now.
            actions.append(Action(container_stream(c.id), ev.ContainerStopped(container_id=c.id)))
            continue
        if c.state in ON_NODE and c.node is not None:
            node = state.nodes.get(c.node)
            if node is not None and node.lost:
                actions.append(
                    Action(container_stream(c.id), ev.ContainerLost(container_id=c.id, node=c.node, reason="node lost"))
                )
                if c.service_id is None and c.id not in replaced and _restarts(c, lost=True):
                    actions.append(_replacement(c, new_id()))
                continue  # lost: no longer live; a service replaces it through its replica count
            if node is not None and node.drained and c.state is not ContainerState.STOPPING:
                # Drained: whatever was placed there, even a placement that raced the drain, is stopped.
                actions.append(_stop(c, "node drained"))
                continue  # no longer live; a service replaces it through its replica count
        if c.service_id is not None:
            if c.state not in ENDED and c.state is not ContainerState.STOPPING:
                by_service.setdefault(c.service_id, []).append(c)
            elif c.backoff_until_ns is not None and c.id not in replaced:
                crashed.setdefault(c.service_id, []).append(c)
        elif c.state in ENDED and c.id not in replaced and _restarts(c) and _due(c, now_ns):
            actions.append(_replacement(c, new_id()))
    for service_id, live in by_service.items():
        if service_id not in state.services:
            actions += [_stop(c, "its service was deleted") for c in live]
    for service_id, svc in state.services.items():
        live = by_service.get(service_id, [])
        missing = svc.replicas - len(live)
        waiting = sorted(crashed.get(service_id, []), key=lambda c: c.finished_ns or 0)
        for slot in range(missing):
            old = waiting[slot] if slot < len(waiting) else None
            if old is not None and not _due(old, now_ns):
                continue  # a crashed replica holds its slot through its back-off
            cid = new_id()
            if old is None:
                submitted = ev.ContainerSubmitted(container_id=cid, spec=svc.spec.template, service_id=service_id)
            else:
                submitted = ev.ContainerSubmitted(
                    container_id=cid,
                    spec=svc.spec.template,
                    service_id=service_id,
                    replaces=old.id,
                    restarts=_next_restarts(old),
                )
            actions.append(Action(container_stream(cid), submitted))
        if missing < 0:
            # Unplaced ones first (nothing to stop on a node), then the newest.
            extra = sorted(live, key=lambda c: (c.node is not None, -c.submitted_position))
            actions += [_stop(c, "scaled down") for c in extra[:-missing]]
    return actions


def _restarts(c: ContainerView, *, lost: bool = False) -> bool:
    """Whether an ended (or, with ``lost``, just lost) standalone container is replaced. One that was asked to
    stop never is, however it then ended."""
    if c.stop_requested or c.state is ContainerState.STOPPED:
        return False
    policy = c.spec.restart_policy
    if policy is RestartPolicy.ALWAYS:
        return True
    if policy is RestartPolicy.ON_FAILURE:
        return lost or c.state is ContainerState.LOST or (c.state is ContainerState.EXITED and c.exit_code != 0)
    return False


def next_restart_ns(state: ClusterState, now_ns: int) -> int | None:
    """The earliest back-off still running: when a reconcile has something new to do without any new event."""
    replaced = {c.replaces for c in state.containers.values() if c.replaces is not None}
    due = [
        c.backoff_until_ns
        for c in state.containers.values()
        if c.backoff_until_ns is not None and c.backoff_until_ns > now_ns and c.id not in replaced
    ]
    return min(due, default=None)


def _due(c: ContainerView, now_ns: int) -> bool:
    return c.backoff_until_ns is None or c.backoff_until_ns <= now_ns


def _next_restarts(c: ContainerView) -> int:
    if c.state is not ContainerState.EXITED:
        return c.restarts  # lost: not a crash of its own
    ran = (c.finished_ns or 0) - c.started_ns if c.started_ns is not None else 0
    return restart_backoff(c.restarts, ran)[1]


def _replacement(c: ContainerView, cid: str) -> Action:
    event = ev.ContainerSubmitted(container_id=cid, spec=c.spec, replaces=c.id, restarts=_next_restarts(c))
    return Action(container_stream(cid), event)


def _stop(c: ContainerView, reason: str) -> Action:
    return Action(container_stream(c.id), ev.ContainerStopRequested(container_id=c.id, grace_s=10.0, reason=reason))
