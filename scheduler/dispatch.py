"""Commands derived from the log: the dispatcher watches the projection fold the log and tells each node what
the log says it must do — a container that became ``scheduled`` gets its start, one that became ``stopping``
its stop — each to the container's node at the node's current epoch, with an id derived from container, epoch
and operation (a node answers a command it has seen with its first answer, so a repeat is harmless).

It is level-triggered: a container is marked due when an event touches it, and what is sent is read from the
state when it is sent (a container scheduled and then stopped before the dispatcher got to it gets only its
stop). When it starts, everything the log says is under way is due (a control plane that died between an
append and its send loses nothing). Whatever is still lost in transit, each node's periodic sync against
``corral.sync.<node>`` repairs: the same derivation, pulled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from store.projection import Projection
from store.projections import ClusterState, ContainerState, ContainerView
from wire import events as ev
from wire.commands import StartContainer, StopContainer, UpdateResources
from wire.ids import command_id

log = logging.getLogger("corral.dispatch")

_TOUCHES = (ev.ContainerScheduled, ev.ContainerStopRequested)  # events after which a node must be told


class Publisher(Protocol):
    """Delivers commands to nodelets. Calls return at once; delivery, retries and acks are the publisher's."""

    async def start(self, node: str, command: StartContainer) -> None: ...

    async def stop(self, node: str, command: StopContainer) -> None: ...

    async def update(self, node: str, command: UpdateResources) -> None: ...


def start_command(c: ContainerView, epoch: int) -> StartContainer:
    """The start of a placed container for its node at ``epoch``, with the id every sender gives it."""
    return StartContainer(
        command_id=command_id(c.id, epoch, "start"),
        epoch=epoch,
        container_id=c.id,
        spec=c.spec,
        cpuset=c.cpuset,
        numa_nodes=c.numa_nodes,
    )


def stop_command(c: ContainerView, epoch: int) -> StopContainer:
    return StopContainer(
        command_id=command_id(c.id, epoch, "stop"), epoch=epoch, container_id=c.id, grace_s=c.stop_grace_s
    )


def resize_command(state: ClusterState, container_id: str, position: int) -> tuple[str, UpdateResources] | None:
    """The node's update after a resize folded at ``position``, while the container runs on a live node (one
    resized while it was being started is sent this once it runs; a lost update is repaired by the node's
    sync)."""
    c = state.containers.get(container_id)
    if c is None or c.node is None or c.state is not ContainerState.RUNNING:
        return None
    node = state.nodes.get(c.node)
    if node is None or node.lost:
        return None
    return node.name, UpdateResources(
        command_id=command_id(c.id, node.epoch, f"resize@{position}"),
        epoch=node.epoch,
        container_id=c.id,
        cpu_request_millis=c.spec.cpu_request_millis,
        cpu_limit_millis=c.spec.cpu_limit_millis,
    )


def command_for(state: ClusterState, container_id: str) -> tuple[str, StartContainer | StopContainer] | None:
    """What the log says the container's node must be told now, and the node: its start while it is
    ``scheduled``, its stop while ``stopping``; nothing for a container without a live node (a lost node's
    containers are declared lost) or in any other state."""
    c = state.containers.get(container_id)
    if c is None or c.node is None:
        return None
    node = state.nodes.get(c.node)
    if node is None or node.lost:
        return None
    if c.state is ContainerState.SCHEDULED:
        return node.name, start_command(c, node.epoch)
    if c.state is ContainerState.STOPPING:
        return node.name, stop_command(c, node.epoch)
    return None


class Dispatcher:
    def __init__(self, projection: Projection, publisher: Publisher) -> None:
        self.projection = projection
        self.publisher = publisher
        self._due: dict[str, None] = {}  # containers an event touched since the last dispatch, in order
        self._resized: dict[str, int] = {}  # containers resized since, and the position of the last resize
        self._resized_early: dict[str, int] = {}  # resized while being started: sent once they run
        self._wake = asyncio.Event()
        self.sent = 0
        projection.observers.append(self._observe)

    def _observe(self, position: int, event: ev.Event, before: ContainerView | None) -> None:
        if isinstance(event, _TOUCHES):
            self._due[event.container_id] = None
            self._wake.set()
        elif isinstance(event, ev.ContainerResized):
            self._resized[event.container_id] = position
            self._wake.set()
        elif isinstance(event, (ev.ContainerExited, ev.ContainerStopped, ev.ContainerLost)):
            self._resized_early.pop(event.container_id, None)  # ended before it ran: nothing to send
        elif isinstance(event, ev.ContainerStarted) and event.container_id in self._resized_early:
            # Resized after its start was sent: the node started it with the old values.
            self._resized[event.container_id] = self._resized_early.pop(event.container_id)
            self._wake.set()

    def everything_under_way(self) -> None:
        """Mark due every container the log says is being started or stopped."""
        for c in self.projection.state.containers.values():
            if c.state is ContainerState.SCHEDULED or c.state is ContainerState.STOPPING:
                self._due[c.id] = None
        self._wake.set()

    async def dispatch(self) -> int:
        """Send what is due, as the state says now; returns how many commands went out."""
        self._wake.clear()
        due, self._due = self._due, {}
        sent = 0
        for cid in due:
            found = command_for(self.projection.state, cid)
            if found is None:
                continue
            node, command = found
            if isinstance(command, StartContainer):
                await self.publisher.start(node, command)
            else:
                await self.publisher.stop(node, command)
            sent += 1
        resized, self._resized = self._resized, {}
        for cid, position in resized.items():
            c = self.projection.state.containers.get(cid)
            if c is not None and c.state is ContainerState.SCHEDULED:
                self._resized_early[cid] = position
                continue
            update = resize_command(self.projection.state, cid, position)
            if update is not None:
                await self.publisher.update(*update)
                sent += 1
        self.sent += sent
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch whenever an event makes a command due, until ``stop`` is set."""
        await self.projection.catch_up()
        self.everything_under_way()
        while not stop.is_set():
            await self.dispatch()
            waker = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waker, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for f in (waker, stopper):
                    f.cancel()
                await asyncio.gather(waker, stopper, return_exceptions=True)
