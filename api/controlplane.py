"""The control plane: one asyncio process holding the event log, the scheduler and (later) the HTTP API; the
single writer of the log.

NATS wiring, per the architecture page:
- ``corral.register.<node>``: a nodelet registers; the node gets the next fencing epoch (``NodeRegistered``).
- ``corral.lease.<node>``: heartbeats renew a lease kept in memory; a node silent for ``lease_s`` becomes
  ``NodeLost`` (only the transition is an event).
- ``corral.evt.<node>``: events a nodelet reports, appended to the container's stream idempotently by their
  event id (a retried report is acknowledged, not appended twice), then acked.
- ``corral.sync.<node>``: "what should I run?" — the containers placed on the node that should be running.
- ``corral.cmd.<node>``: commands the scheduler sends (``NatsPublisher``), with acks and retries; a command the
  node refuses ends the container with the node's reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from api.delivery import Delivery
from api.leases import LeaseTable
from scheduler.dispatch import Dispatcher, start_command, stop_command
from scheduler.service import Scheduler
from store.errors import StoreClosed
from store.log import EventLog
from store.projection import Projection
from store.projections import ClusterState, ContainerState, ContainerView
from store.recorder import ANY
from store.sqlite import SqliteRecorder
from store.telemetry import TelemetryTable
from wire import events as ev
from wire import subjects
from wire.codec import encode, node_message_decoder, reply_decoder
from wire.commands import (
    IMPORT_CHUNK,
    AuditContainer,
    AuditReply,
    CommandAccepted,
    CommandRejected,
    ConfigureBurst,
    EventAck,
    GetLogs,
    Heartbeat,
    HeartbeatReply,
    ImageImported,
    ImagesReply,
    ImportChunk,
    ListImages,
    LogsReply,
    NodeEvent,
    PullImage,
    Register,
    Registered,
    Reject,
    RemoveContainer,
    RemoveImage,
    Reply,
    StartContainer,
    StatsSample,
    StopContainer,
    SyncReply,
    SyncRequest,
    UpdateResources,
)
from wire.files import private_dir
from wire.ids import container_stream, node_stream

log = logging.getLogger("corral.controlplane")

ON_NODE = (ContainerState.SCHEDULED, ContainerState.RUNNING, ContainerState.STOPPING)
# Refusals that say nothing about the container (the node is at another epoch, or fenced itself off): never an
# end of it; the node's sync, at its current epoch, settles what it should run.
LEFT_TO_SYNC = frozenset({Reject.STALE_EPOCH, Reject.FENCED})

# Events a nodelet may report about its containers.
REPORTABLE = (
    ev.NodeImagesChanged,
    ev.ImagePulling,
    ev.ImagePulled,
    ev.ImagePullFailed,
    ev.ContainerWaiting,
    ev.ContainerStarted,
    ev.ContainerExited,
    ev.ContainerStopped,
    ev.ContainerThrottled,
    ev.ContainerUnthrottled,
    ev.CpuBurstSet,
    ev.CfsQuotaScaled,
)


# Events after which a container no longer waits on a command sent about it.
_SETTLED = (ev.ContainerStarted, ev.ContainerExited, ev.ContainerStopped, ev.ContainerLost, ev.ContainerRemoved)


NodeQuery = GetLogs | AuditContainer | PullImage | ListImages | RemoveImage | ImportChunk


async def _pieces(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """The bytes of ``chunks`` again, in pieces of exactly ``size`` (the last one shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class NatsPublisher:
    """Sends commands to nodelets as requests, each in its own task (the scheduler never waits on a node);
    retries until the node answers or the command can no longer matter."""

    def __init__(
        self,
        nc: Client,
        on_rejected: Callable[[str, StartContainer, CommandRejected], Awaitable[None]],
        on_absent: Callable[[str, StopContainer], Awaitable[None]],
        wanted: Callable[[str, StartContainer | StopContainer], bool] = lambda node, command: True,
    ) -> None:
        self.nc = nc
        self.wanted = wanted
        self.on_rejected = on_rejected
        self.on_absent = on_absent
        self.tasks: set[asyncio.Task[None]] = set()
        self.attempts = 10
        self.deliveries: dict[str, Delivery] = {}  # by container: the last command sent about it, as it went

    async def start(self, node: str, command: StartContainer) -> None:
        self._spawn(self._send(node, command))

    async def update(self, node: str, command: UpdateResources) -> None:
        self._spawn(self._update(node, command))

    async def _update(self, node: str, command: UpdateResources) -> None:
        """A few tries until the node answers (its sync repairs what is still lost); the answer is logged."""
        for attempt in range(5):
            try:
                msg = await self.nc.request(subjects.cmd(node), encode(command), 5.0)
            except nats.errors.Error:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            reply = reply_decoder.decode(msg.data)
            if isinstance(reply, CommandRejected):
                log.warning("resize of %s on %s refused: %s", command.container_id, node, reply.message)
            return

    def configure(self, nodes: list[str], command: ConfigureBurst) -> None:
        """Push a configuration to each node, once (one not reached gets it at its next sync)."""
        for node in nodes:
            self._spawn(self._push(node, command))

    async def _push(self, node: str, command: ConfigureBurst) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.nc.request(subjects.cmd(node), encode(command), 2.0)

    async def stop(self, node: str, command: StopContainer) -> None:
        self._spawn(self._send(node, command))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, node: str, command: StartContainer | StopContainer) -> None:
        """Send until answered; a refusal that may pass later (another epoch a moment ahead, CPUs still held by a
        container being killed) is retried too, and only a final one, or the last, ends a start. How it goes is
        kept in ``deliveries`` (shown as the reason a container waits)."""
        op = "start" if isinstance(command, StartContainer) else "stop"
        d = Delivery(op, node, command.epoch, first_ns=time.time_ns())
        self.deliveries[command.container_id] = d
        delay = 0.1
        reply: object = None
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                if not self.wanted(node, command):
                    if self.deliveries.get(command.container_id) is d:
                        del self.deliveries[command.container_id]
                    return  # the node was lost or registered again, or the container moved on: nothing to do
            d.attempts += 1
            try:
                msg = await self.nc.request(subjects.cmd(node), encode(command), timeout=30)
                reply = reply_decoder.decode(msg.data)
            except (nats.errors.Error, msgspec.DecodeError, msgspec.ValidationError) as e:
                d.last = f"no answer: {type(e).__name__}"
                log.info("%s to %s: %r; retrying", type(command).__name__, node, e)
                continue
            if isinstance(reply, CommandRejected) and reply.code.retryable and attempt < self.attempts - 1:
                d.last = f"refused for now: {reply.message}"
                log.info("%s to %s: %s; retrying", type(command).__name__, node, reply.message)
                continue
            break
        else:
            d.done = True
            log.warning("%s to %s: no answer; the node's next sync will settle it", type(command).__name__, node)
            return
        d.done = True
        if not isinstance(reply, CommandRejected):
            d.last = "accepted"
            return
        d.last, d.refusal = f"refused: {reply.message}", reply.message
        if reply.code in LEFT_TO_SYNC:
            log.info("%s to %s: %s; the node's sync settles it", type(command).__name__, node, reply.message)
        elif isinstance(command, StartContainer) and reply.code is not Reject.DUPLICATE_ID:  # duplicate: it is there
            await self.on_rejected(node, command, reply)
        elif isinstance(command, StopContainer) and reply.code is Reject.UNKNOWN_CONTAINER:
            await self.on_absent(node, command)
        elif reply.code is not Reject.DUPLICATE_ID:
            log.warning("%s to %s: %s", type(command).__name__, node, reply)
        else:
            d.last, d.refusal = "accepted", ""  # a duplicate: the node has it

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class ControlPlane:
    def __init__(
        self,
        data_dir: str | Path,
        nats_url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        nkey_seed: str | None = None,
        lease_s: float = 2.5,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.nats_url = nats_url
        self.user = user
        self.password = password
        self.nkey_seed = nkey_seed
        self.lease_s = lease_s
        self.clock = clock
        self.leases = LeaseTable(int(lease_s * 1e9), grace_ns=int(2 * lease_s * 1e9))
        self.refused_reports: collections.Counter[tuple[str, str]] = collections.Counter()  # (node, reason)
        self.telemetry = TelemetryTable()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ingesting: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        private_dir(self.data_dir)
        self.recorder = await SqliteRecorder.open(self.data_dir / "corral.db")
        self.log = EventLog(self.recorder)
        auth: dict[str, Any] = {}
        if self.nkey_seed is not None:
            auth = {"nkeys_seed": self.nkey_seed}
        elif self.user is not None:
            auth = {"user": self.user, "password": self.password}
        self.nc = await nats.connect(
            self.nats_url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            inbox_prefix=subjects.CONTROL_INBOX.encode(),  # its permissions allow only these replies
            **auth,
        )
        self.publisher = NatsPublisher(self.nc, self._refused, self._absent, self._wanted)
        self.projection = await Projection.load(self.recorder)  # the one owner of the cluster state
        self.scheduler = Scheduler(self.log, projection=self.projection)
        self.dispatcher = Dispatcher(self.projection, self.publisher)  # every command, derived from the log
        self.projection.observers.append(self._observe)
        now = time.monotonic_ns()
        self.leases.hear(now)  # leases count from now: a restart of the control plane loses no node
        for name, view in self.projection.state.nodes.items():
            self.leases.load(name, view.epoch, view.lost, now)
        handlers = (self._on_register, self._on_heartbeat, self._on_event, self._on_sync, self._on_stats)
        for subject, handler in zip(subjects.control_subscriptions(), handlers, strict=True):
            await self.nc.subscribe(subject, cb=handler)
        await self.nc.flush()
        self._tasks = [
            asyncio.create_task(self.scheduler.run(self._stop), name="scheduler"),
            asyncio.create_task(self.dispatcher.run(self._stop), name="dispatcher"),
            asyncio.create_task(self._watch_leases(), name="leases"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """A loop of the control plane that ends with an error ends the process (``failed``), never silently."""
        if task.cancelled() or self._stop.is_set():
            return
        error = task.exception() or RuntimeError(f"the {task.get_name()} loop ended")
        log.error("the %s loop failed: %s", task.get_name(), error)
        if not self.failed.done():
            self.failed.set_result(error)

    def _observe(self, position: int, event: ev.Event, before: ContainerView | None) -> None:
        if isinstance(event, ev.ContainerRemoved):
            self.telemetry.forget(event.container_id)  # a removed container's samples go with it
        if isinstance(event, _SETTLED):
            self.publisher.deliveries.pop(event.container_id, None)  # no longer waits: nothing to explain
        if isinstance(event, ev.BurstPolicyChanged):  # nodes apply it within a second, not at their next sync
            live = [n.name for n in self.projection.state.nodes.values() if not n.lost]
            self.publisher.configure(live, ConfigureBurst(command_id=uuid.uuid4(), config=event.config))

    async def _on_disconnected(self) -> None:
        self.leases.deaf()  # what cannot be heard is not judged
        log.warning("disconnected from NATS: leases are not judged until it is back")

    async def _on_reconnected(self) -> None:
        self.leases.hear(time.monotonic_ns(), reconnected=True)
        log.info("reconnected to NATS: every lease counts from now")

    async def stop(self) -> None:
        """Stop what ``start`` started, also after a ``start`` that failed half-way."""
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if hasattr(self, "publisher"):
            await self.publisher.close()
        if hasattr(self, "nc"):
            with contextlib.suppress(Exception):
                await self.nc.drain()  # no report comes in after this
        for t in self._ingesting:
            t.cancel()
        await asyncio.gather(*self._ingesting, return_exceptions=True)
        if hasattr(self, "recorder"):
            await self.recorder.close()

    # --- nodes -----------------------------------------------------------------------------------------------

    @staticmethod
    def _node_of(msg: Msg) -> str:
        return msg.subject.rsplit(".", 1)[1]

    async def _on_register(self, msg: Msg) -> None:
        try:
            reg = node_message_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            await msg.respond(encode(CommandRejected(command_id=None, code=Reject.INVALID_REGISTER, message=str(e))))
            return
        if not isinstance(reg, Register) or reg.node != self._node_of(msg):
            await msg.respond(
                encode(
                    CommandRejected(
                        command_id=None,
                        code=Reject.INVALID_REGISTER,
                        message="a node registers itself, on its own subject",
                    )
                )
            )
            return
        state = await self.projection.catch_up()
        if (known := state.nodes.get(reg.node)) is not None and known.lost:
            # What it ran is no longer its: recorded before it is recovered (and before it hears its new epoch),
            # so the sync that follows finds those containers lost and the node kills them.
            await asyncio.gather(*(self._lose(cid, reg.node) for cid in self._placed_on(reg.node)))
        chosen: dict[str, int] = {}  # the epoch decided, and whether the node comes back from lost

        def register(state: ClusterState) -> list[ev.Event]:
            view = state.nodes.get(reg.node)
            epoch = (view.epoch + 1) if view is not None else 1
            registered = ev.NodeRegistered(
                node=reg.node,
                topology=reg.topology,
                capacity=reg.capacity,
                epoch=epoch,
                labels=reg.labels,
                cpu_map=reg.cpu_map,
                images=reg.images,
                host_mounts=reg.host_mounts,
                reserved_cpus=reg.reserved_cpus,
                seccomp_profiles=reg.seccomp_profiles,
                pod_security=reg.pod_security,
                pulls=reg.pulls,
            )
            chosen.update(epoch=epoch, recovered=int(view is not None and view.lost))
            if chosen["recovered"]:
                return [registered, ev.NodeRecovered(node=reg.node, epoch=epoch)]  # back, under a new epoch
            return [registered]

        # The next epoch, against the node's version: two registrations at once never share an epoch.
        await self.projection.decide(self.log, ("node", reg.node), node_stream(reg.node), register)
        epoch = chosen["epoch"]
        self.leases.registered(reg.node, epoch, time.monotonic_ns())
        await msg.respond(encode(Registered(node=reg.node, epoch=epoch, lease_s=self.lease_s)))
        log.info("node %s registered, epoch %d%s", reg.node, epoch, " (recovered)" if chosen["recovered"] else "")

    def _placed_on(self, node: str) -> list[str]:
        return [c.id for c in self.projection.state.containers.values() if c.node == node and c.state in ON_NODE]

    async def _lose(self, cid: str, node: str) -> None:
        def lost(state: ClusterState) -> list[ev.Event]:
            c = state.containers.get(cid)
            if c is None or c.node != node or c.state not in ON_NODE:
                return []
            return [ev.ContainerLost(container_id=cid, node=node, reason="node lost")]

        await self.projection.decide(self.log, ("container", cid), container_stream(cid), lost)

    async def _on_heartbeat(self, msg: Msg) -> None:
        """Renew the node's lease; the answer tells a node that cannot renew to register again."""
        try:
            beat = node_message_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return
        if not isinstance(beat, Heartbeat) or beat.node != self._node_of(msg):
            return
        status = self.leases.heartbeat(beat.node, beat.epoch, time.monotonic_ns(), beat.unanswered_ns)
        if msg.reply:
            lease = self.leases.leases.get(beat.node)
            epoch = lease.epoch if lease is not None else 0
            with contextlib.suppress(nats.errors.Error):  # the node asks again at its next beat
                await msg.respond(encode(HeartbeatReply(node=beat.node, epoch=epoch, status=status)))

    async def _watch_leases(self) -> None:
        while True:
            await asyncio.sleep(min(0.25, self.lease_s / 4))
            for node, epoch in self.leases.expire(time.monotonic_ns()):

                def lose(state: ClusterState, node: str = node, epoch: int = epoch) -> list[ev.Event]:
                    view = state.nodes.get(node)
                    if view is None or view.lost or view.epoch != epoch:
                        return []  # registered again meanwhile, or lost already
                    return [ev.NodeLost(node=node, epoch=epoch, last_seen_ns=self.clock())]

                try:
                    if not await self.projection.decide(self.log, ("node", node), node_stream(node), lose):
                        continue
                except StoreClosed:
                    return
                except Exception:  # recorded next time: the loop must not die with the node unjudged
                    log.exception("node %s: cannot record its loss", node)
                    self.leases.unlose(node)
                    continue
                log.warning("node %s lost: no heartbeat for %.1f s", node, self.lease_s)

    async def _on_event(self, msg: Msg) -> None:
        """Each report in a task of its own: the reports of many nodes are appended side by side, so the log's
        group commit takes them in one transaction (a node orders its own reports by waiting for their acks)."""
        task = asyncio.ensure_future(self._ingest(msg))
        self._ingesting.add(task)
        task.add_done_callback(self._ingested)

    def _ingested(self, task: asyncio.Task[None]) -> None:
        self._ingesting.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._stop.is_set():
            log.error("a node's report was not taken (the node sends it again): %r", task.exception())

    async def _ingest(self, msg: Msg) -> None:
        node = self._node_of(msg)
        try:
            m = node_message_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            log.warning("bad event from %s: %s", node, e)
            await self._refuse_report(msg, f"not a report this control plane reads: {e}")
            return  # refused for good: sent again, it would only block the node's later reports
        if not isinstance(m, NodeEvent) or m.node != node or not isinstance(m.event, REPORTABLE):
            await self._refuse_report(msg, f"not a report node {node} may make")
            return
        event = m.event
        await self.projection.catch_up()
        refusal = report_refusal(self.projection.state, node, m.epoch, event)
        if refusal is not None:
            reason, why = refusal
            self.refused_reports[(node, reason)] += 1
            log.warning("report %s from %s refused: %s", type(event).__name__, node, why)
            # An older epoch's report is sent again once the node has registered anew: the answer says so.
            code = Reject.STALE_EPOCH if reason in RETRY_AFTER_REGISTERING else Reject.NOT_OWNER
            reply = CommandRejected(command_id=None, code=code, message=f"{reason}: {why}")
            await msg.respond(encode(reply))
            return
        if isinstance(event, ev.NodeImagesChanged | ev.ImagePulling | ev.ImagePulled | ev.ImagePullFailed):
            stream = node_stream(node)
        else:
            stream = container_stream(event.container_id)
        await self.log.append(stream, [event], ANY, event_ids=[m.event_id])
        await msg.respond(encode(EventAck(event_id=m.event_id)))

    @staticmethod
    async def _refuse_report(msg: Msg, why: str) -> None:
        if msg.reply:
            await msg.respond(encode(CommandRejected(command_id=None, code=Reject.INVALID_COMMAND, message=why)))

    async def _on_stats(self, msg: Msg) -> None:
        """Samples go to the bounded telemetry table, never to the log."""
        with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
            sample = node_message_decoder.decode(msg.data)
            if isinstance(sample, StatsSample) and sample.node == self._node_of(msg):
                self.telemetry.record(sample)

    async def _on_sync(self, msg: Msg) -> None:
        node = self._node_of(msg)
        try:
            req = node_message_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return
        if not isinstance(req, SyncRequest) or req.node != node:
            return
        await self.projection.catch_up()
        state = self.projection.state
        view = state.nodes.get(node)
        if view is None or view.lost or req.epoch != view.epoch:
            # Not the node's current incarnation (or lost): it registers again before it acts on anything.
            why = "lost" if view is not None and view.lost else f"epoch {req.epoch} is not current"
            await msg.respond(encode(CommandRejected(command_id=None, code=Reject.STALE_EPOCH, message=why)))
            return
        epoch = view.epoch
        desired = tuple(
            start_command(c, epoch)
            for c in state.containers.values()
            if c.node == node and c.state in (ContainerState.SCHEDULED, ContainerState.RUNNING)
        )
        stopping = tuple(
            stop_command(c, epoch)
            for c in state.containers.values()
            if c.node == node and c.state is ContainerState.STOPPING
        )
        throttled = tuple(
            c.id
            for c in state.containers.values()
            if c.node == node and c.state is ContainerState.RUNNING and c.throttled
        )
        reply = SyncReply(
            node=node, epoch=epoch, desired=desired, stopping=stopping, throttled=throttled, burst=state.burst
        )
        await msg.respond(encode(reply))

    async def remove(self, container_id: str, actor: str = "") -> None:
        """Forget an ended container: its node drops what it kept (best effort), then ``ContainerRemoved``."""
        await self.projection.catch_up()
        view = self.projection.state.containers.get(container_id)
        node = self.projection.state.nodes.get(view.node) if view is not None and view.node else None
        if node is not None and not node.lost:
            command = RemoveContainer(command_id=uuid.uuid4(), epoch=node.epoch, container_id=container_id)
            with contextlib.suppress(NatsTimeout, NoRespondersError):
                await self.nc.request(subjects.cmd(node.name), encode(command), timeout=10)
        removed = ev.ContainerRemoved(container_id=container_id, actor=actor)
        await self.log.append(container_stream(container_id), [removed])

    async def get_logs(
        self, node: str, container_id: str, *, since: int | None = None, tail: int | None = None
    ) -> LogsReply | CommandRejected:
        """Ask a node for a container's log lines (``GetLogs`` over NATS)."""
        command = GetLogs(command_id=uuid.uuid4(), container_id=container_id, since_line=since, tail=tail)
        reply = await self._ask(node, command)
        return reply if isinstance(reply, LogsReply | CommandRejected) else self._unexpected(command.command_id, reply)

    async def audit(self, node: str, container_id: str) -> AuditReply | CommandRejected:
        """Ask a node what a running container's process is (``AuditContainer`` over NATS)."""
        command = AuditContainer(command_id=uuid.uuid4(), container_id=container_id)
        reply = await self._ask(node, command)
        return reply if isinstance(reply, AuditReply | CommandRejected) else self._unexpected(command.command_id, reply)

    async def pull_image(self, node: str, image: str) -> CommandAccepted | CommandRejected:
        """Have a node pull an image (answered once pulled: a pull may take minutes)."""
        command = PullImage(command_id=uuid.uuid4(), image=image)
        reply = await self._ask(node, command, timeout_s=660)
        if isinstance(reply, CommandAccepted | CommandRejected):
            return reply
        return self._unexpected(command.command_id, reply)

    async def list_images(self, node: str) -> ImagesReply | CommandRejected:
        command = ListImages(command_id=uuid.uuid4())
        reply = await self._ask(node, command)
        if isinstance(reply, ImagesReply | CommandRejected):
            return reply
        return self._unexpected(command.command_id, reply)

    async def remove_image(self, node: str, image: str, force: bool) -> CommandAccepted | CommandRejected:
        command = RemoveImage(command_id=uuid.uuid4(), image=image, force=force)
        reply = await self._ask(node, command, timeout_s=120)
        if isinstance(reply, CommandAccepted | CommandRejected):
            return reply
        return self._unexpected(command.command_id, reply)

    async def import_image(self, node: str, chunks: AsyncIterator[bytes]) -> ImageImported | CommandRejected:
        """Send an image tarball to a node in pieces, each answered before the next goes (a lost answer: the
        piece is sent again, and the node answers it again); the last piece imports it."""
        import_id = uuid.uuid4()
        seq = 0
        pending: bytes | None = None
        async for data in _pieces(chunks, IMPORT_CHUNK):
            if pending is not None:
                reply = await self._piece(node, import_id, seq, pending, last=False)
                if not isinstance(reply, CommandAccepted):
                    return reply if isinstance(reply, CommandRejected) else self._unexpected(import_id, reply)
                seq += 1
            pending = data
        reply = await self._piece(node, import_id, seq, pending or b"", last=True, timeout_s=600)
        return reply if isinstance(reply, ImageImported | CommandRejected) else self._unexpected(import_id, reply)

    async def _piece(
        self, node: str, import_id: uuid.UUID, seq: int, data: bytes, *, last: bool, timeout_s: float = 30
    ) -> Reply:
        command = ImportChunk(command_id=uuid.uuid4(), import_id=import_id, seq=seq, data=data, last=last)
        for _ in range(3):
            reply = await self._ask(node, command, timeout_s)
            if not (isinstance(reply, CommandRejected) and reply.code is Reject.NODE_UNREACHABLE):
                return reply
        return reply

    async def _ask(self, node: str, command: NodeQuery, timeout_s: float = 10) -> Reply:
        try:
            msg = await self.nc.request(subjects.cmd(node), encode(command), timeout=timeout_s)
        except (NatsTimeout, NoRespondersError) as e:
            return CommandRejected(command_id=command.command_id, code=Reject.NODE_UNREACHABLE, message=repr(e))
        try:
            return reply_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            return self._unexpected(command.command_id, e)

    @staticmethod
    def _unexpected(command_id: uuid.UUID, reply: object) -> CommandRejected:
        return CommandRejected(command_id=command_id, code=Reject.UNEXPECTED_REPLY, message=str(reply))

    def _wanted(self, node: str, command: StartContainer | StopContainer) -> bool:
        """Whether a command still matters: its node at the command's epoch and not lost, its container still
        placed there and, for a start, not started yet."""
        state = self.projection.state
        view, c = state.nodes.get(node), state.containers.get(command.container_id)
        if view is None or view.lost or view.epoch != command.epoch or c is None or c.node != node:
            return False
        return c.state is ContainerState.SCHEDULED if isinstance(command, StartContainer) else not c.state.terminal

    async def _absent(self, node: str, command: StopContainer) -> None:
        """A node that never had a container was asked to stop it (its start was lost): nothing ran, it is
        stopped — if it is still on that node and stopping (anything else it reports itself)."""
        cid = command.container_id

        def stopped(state: ClusterState) -> list[ev.Event]:
            view = state.containers.get(cid)
            if view is None or view.node != node or view.state is not ContainerState.STOPPING:
                return []
            return [ev.ContainerStopped(container_id=cid, node=node, stopped_ns=self.clock())]

        await self.projection.decide(self.log, ("container", cid), container_stream(cid), stopped)

    async def _refused(self, node: str, command: StartContainer, reply: CommandRejected) -> None:
        """A node refused to start a container: it never ran; say why — if it is still placed there and not
        started (a start that succeeded another way, or a stop meanwhile, is not undone)."""
        cid = command.container_id

        def refused(state: ClusterState) -> list[ev.Event]:
            view = state.containers.get(cid)
            if (
                view is None
                or view.node != node
                or view.state not in (ContainerState.SCHEDULED, ContainerState.STOPPING)
            ):
                return []
            message = f"{reply.code}: {reply.message}"
            return [
                ev.ContainerExited(container_id=cid, node=node, exit_code=None, exited_ns=self.clock(), message=message)
            ]

        await self.projection.decide(self.log, ("container", cid), container_stream(cid), refused)


def report_refusal(state: ClusterState, node: str, epoch: int, event: ev.Event) -> tuple[str, str] | None:
    """Why a node's report is not accepted (a reason and a message), or None: a node speaks only for itself, in
    its current epoch, and only about containers placed on it that have not ended (a container lost with its
    node is no longer its). ``unknown_node`` and ``stale_epoch`` pass once the node has registered again."""
    view = state.nodes.get(node)
    if view is None:
        return "unknown_node", f"node {node} is not registered"
    if view.lost or epoch != view.epoch:
        return "stale_epoch", f"sent at epoch {epoch}, the node is {'lost' if view.lost else f'at {view.epoch}'}"
    if getattr(event, "node", node) != node:
        return "other_node", f"the event names node {getattr(event, 'node', '')}"
    cid = getattr(event, "container_id", None)
    if cid is None:
        return None
    c = state.containers.get(cid)
    if c is None or c.node != node:
        return "not_placed_here", f"container {cid} is not placed on {node}"
    if c.state.terminal:
        return "ended", f"container {cid} is {c.state}"
    return None


RETRY_AFTER_REGISTERING = frozenset({"unknown_node", "stale_epoch"})
