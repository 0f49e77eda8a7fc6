"""The nodelet's NATS agent: a thin shell between the node's subjects and the node service.

It registers the node (topology, capacity, labels, CPU map) and takes the fencing epoch the control plane
gives it; serves commands on ``corral.cmd.<node>``; heartbeats on ``corral.lease.<node>``; asks
``corral.sync.<node>`` what it should run and reconciles; and reports events as requests on
``corral.evt.<node>``, retried with the same event id until the control plane acks them (at least once,
deduplicated there). A container's exit is marked reported only after its ack, so a nodelet killed before the
ack reports it again when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from nodelet.burst import BurstController, Running
from nodelet.images import InUse, UnknownImage
from nodelet.outbox import Entry, Outbox
from nodelet.pull import PullFailed
from nodelet.service import NodeService
from nodelet.telemetry import Sampler, ThrottleDetector, stats_sample, throttle_event
from wire import events as ev
from wire import subjects
from wire.burst import BurstConfig, resolve
from wire.codec import command_decoder, control_reply_decoder, encode
from wire.commands import (
    CommandAccepted,
    CommandRejected,
    ConfigureBurst,
    ContainerSample,
    EventAck,
    Heartbeat,
    HeartbeatReply,
    ImagesReply,
    ImportChunk,
    LeaseStatus,
    ListImages,
    NodeEvent,
    PullImage,
    Register,
    Registered,
    Reject,
    RemoveImage,
    Reply,
    StopContainer,
    SyncReply,
    SyncRequest,
    UpdateResources,
)
from wire.ids import new_command_id, new_event_id
from wire.resources import Resources
from wire.spec import ContainerSpec
from wire.topology import Topology

log = logging.getLogger("corral.nodelet.agent")


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str
    node: str
    topology: Topology
    capacity: Resources
    labels: dict[str, str] = {}
    cpu_map: dict[int, int] = {}
    reserved_cpus: tuple[int, ...] = ()  # of the topology: kept for the system
    user: str | None = None
    password: str | None = None
    nkey_seed: str | None = None  # path of an nkey seed file; preferred to a password
    heartbeat_s: float = 0.5
    stats_s: float = 1.0  # telemetry sweep period
    log_max_bytes: int = 10 << 20  # a container's log is rotated past this (one old file kept)
    request_timeout_s: float = 2.0
    retry_max_s: float = 2.0
    images_s: float = 2.0  # how often the image store is looked at for imports
    sync_s: float = 10.0  # level-triggered reconciliation with the control plane, also after every reconnect


def raise_if_cancelled() -> None:
    """For a loop that retries requests: on Python 3.11, ``asyncio.wait_for`` (inside nats-py's request) drops a
    cancellation that lands as the answer arrives (gh-86296); the task stays cancelling and would retry forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        service: NodeService,
        outbox: Outbox,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.service = service
        self.outbox = outbox
        self.clock = clock
        self.nc: Client | None = None
        self.registered = asyncio.Event()
        self.ready = asyncio.Event()  # registered and recovered: commands are served from then on
        self._stopping = asyncio.Event()
        self._heartbeats = 0
        self._pending: set[asyncio.Future[None]] = set()
        self._images: tuple[str, ...] = ()  # as last reported
        self._resync = asyncio.Event()  # sync now (reconnected, or told to register again)
        self._renewed = time.monotonic()  # from when the control plane renewed this node's lease, at the latest
        self._answered = time.monotonic()  # when the control plane last answered a heartbeat or registration
        self._lease_s = 0.0  # as the control plane said at registration
        self._rejoin = False  # the control plane does not hold this incarnation: register again first
        self._detector = ThrottleDetector()
        self._synced = asyncio.Event()  # a sync was answered: the detector knows what was reported before
        self.burst_config: BurstConfig | None = None  # the cluster's, as last heard (None: not yet: touch nothing)
        self._burst = BurstController()
        self._reported_throttling: dict[str, bool] = {}  # by an earlier run, in reports sent again now

    async def emit(self, event: ev.Event) -> None:
        """Report one event: kept in the outbox first (an unacked report outlives this process), then sent until
        the control plane acks it (retrying with the same id) or refuses it for good (the container is not this
        node's, in its current epoch: nothing to retry)."""
        event_id, occurred = new_event_id(), self.clock()
        try:
            entry: Entry | None = await self.outbox.put(event_id, occurred, event)
        except OSError as e:  # a full or failing disk must not silence the node: send it, unkept
            log.warning("outbox: cannot keep %s (%s); sending it anyway", type(event).__name__, e)
            entry = None
        await self._send_event(event_id, occurred, event)
        if entry is not None:
            with contextlib.suppress(OSError):
                await self.outbox.done(entry)

    async def _send_event(self, event_id: uuid.UUID, occurred: int, event: ev.Event) -> None:
        delay = 0.05
        while True:
            raise_if_cancelled()
            await self.registered.wait()
            assert self.nc is not None
            message = NodeEvent(
                node=self.config.node, event_id=event_id, occurred_ns=occurred, event=event, epoch=self.service.epoch
            )
            try:
                reply = control_reply_decoder.decode(
                    (
                        await self.nc.request(
                            subjects.evt(self.config.node), encode(message), self.config.request_timeout_s
                        )
                    ).data
                )
                if isinstance(reply, EventAck) and reply.event_id == message.event_id:
                    return
                if isinstance(reply, CommandRejected) and not reply.code.retryable:
                    log.warning("event %s refused: %s", type(event).__name__, reply.message)
                    return
                log.warning("event %s not acked: %s", message.event_id, reply)
            except (nats.errors.Error, msgspec.DecodeError, msgspec.ValidationError) as e:
                log.info("event %s: %r; retrying", message.event_id, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max_s)

    async def _send_leftovers(self, entries: list[Entry]) -> None:
        """Send what an earlier run of this nodelet reported and never got acked, in the order it was made."""
        for entry in entries:
            await self._send_event(entry.event_id, entry.occurred_ns, entry.event)
            await self.outbox.done(entry)

    async def run(self) -> None:
        """Connect, register, serve until ``stop``. Containers keep running when this returns."""
        options: dict[str, object] = {
            "inbox_prefix": subjects.inbox_prefix(self.config.node).encode(),
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.2,
        }
        if self.config.nkey_seed is not None:
            options |= {"nkeys_seed": self.config.nkey_seed}
        elif self.config.user is not None:
            options |= {"user": self.config.user, "password": self.config.password}
        self.nc = await nats.connect(self.config.nats_url, reconnected_cb=self._on_reconnected, **options)
        try:
            await self.nc.subscribe(subjects.cmd(self.config.node), cb=self._on_command)
            leftovers = await self.outbox.pending()
            for stale in [e for e in leftovers if isinstance(e.event, ev.NodeImagesChanged)]:
                leftovers.remove(stale)  # the registration says which images the node holds now
                await self.outbox.done(stale)
            for entry in leftovers:
                if isinstance(entry.event, ev.ContainerThrottled | ev.ContainerUnthrottled):
                    self._reported_throttling[entry.event.container_id] = isinstance(entry.event, ev.ContainerThrottled)
            await self._register()
            if leftovers:
                log.info("sending %d reports an earlier run left unacked", len(leftovers))
                self._track(self._send_leftovers(leftovers))
            await self.service.recover()
            self.ready.set()
            if not await self._sync():
                self._resync.set()  # the loop below tries again soon
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeat())
                tg.create_task(self._fence())
                tg.create_task(self._reconcile())
                tg.create_task(self._telemetry())
                tg.create_task(self._watch_images())
                await self._stopping.wait()
                raise _Stop
        except* _Stop:
            pass
        finally:
            for task in list(self._pending):  # beats, reports and commands under way
                task.cancel()
            await asyncio.gather(*self._pending, return_exceptions=True)
            await self.service.close()
            with contextlib.suppress(Exception):
                await self.nc.drain()

    def stop(self) -> None:
        self._stopping.set()

    async def _image_names(self) -> tuple[str, ...]:
        return tuple(sorted(await asyncio.to_thread(self.service.images.names)))

    async def _watch_images(self) -> None:
        """Collect unused images past the disk's high-water mark, and say when what the node holds changed
        (a pull, an import, a removal): the scheduler prefers nodes that hold an image, and places a container
        that may not be pulled only there. Looked at every ``images_s``, and at once after a pull or removal."""
        while True:
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.images_s):
                    await self.service.images_changed.wait()
            self.service.images_changed.clear()
            try:
                await self.service.collect_images()
                await self.service.sweep_imports()
                await self._say_images()
            except (OSError, msgspec.DecodeError) as e:
                log.warning("cannot list images: %r", e)

    async def _say_images(self) -> None:
        names = await self._image_names()
        if names != self._images:
            self._images = names
            self._report(ev.NodeImagesChanged(node=self.config.node, images=names))

    async def _register(self) -> None:
        assert self.nc is not None
        self._images = await self._image_names()
        message = encode(
            Register(
                node=self.config.node,
                topology=self.config.topology,
                capacity=self.config.capacity,
                labels=self.config.labels,
                cpu_map=self.config.cpu_map,
                images=self._images,
                host_mounts=self.service.config.allowed_host_mounts,
                reserved_cpus=self.config.reserved_cpus,
                seccomp_profiles=self.service.config.seccomp_profiles_offered,
                pod_security=self.service.config.pod_security,
                pulls=self.service.puller is not None,
            )
        )
        delay = 0.05
        while True:
            raise_if_cancelled()
            try:
                asked = time.monotonic()  # the control plane's lease counts from no earlier than this
                msg = await self.nc.request(subjects.register(self.config.node), message, self.config.request_timeout_s)
                reply = control_reply_decoder.decode(msg.data)
                if isinstance(reply, Registered):
                    self.service.epoch = reply.epoch
                    self._lease_s = reply.lease_s
                    self._renewed, self._answered = asked, time.monotonic()
                    self.service.fenced = False  # heard: the sync that follows may start what it should
                    if reply.lease_s < 5 * self.config.heartbeat_s:
                        log.warning(
                            "lease %.1f s is under five heartbeats (%.1f s): at-most-one containers may be fenced "
                            "off in normal operation",
                            reply.lease_s,
                            self.config.heartbeat_s,
                        )
                    self.registered.set()
                    log.info("registered as %s, epoch %d", self.config.node, reply.epoch)
                    return
                log.error("registration refused: %s", reply)
            except (nats.errors.Error, msgspec.DecodeError, msgspec.ValidationError) as e:
                log.info("no control plane yet (%r); retrying", e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max_s)

    async def _on_reconnected(self) -> None:
        self._resync.set()

    async def _reconcile(self) -> None:
        """Sync every ``sync_s``, after every reconnect, and at once when told to register again; a sync that
        failed (no control plane yet, after an outage) is tried again within a second, not a period later."""
        synced = True
        while True:
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.sync_s if synced else min(1.0, self.config.sync_s)):
                    await self._resync.wait()
            self._resync.clear()
            if self._rejoin:
                await self._register()
                self._rejoin = False
            synced = await self._sync()

    async def _sync(self) -> bool:
        """Level-triggered reconciliation: kill at once what this node ran but no longer owns, start what it
        should run. Only what ran when it asked is judged: a start that arrives meanwhile is newer than the
        answer. Returns whether the control plane answered."""
        assert self.nc is not None
        running = self.service.running()
        waiting = self.service.waiting()  # as it asked too: a start that begins to wait meanwhile is newer
        # What each ran with when it asked: an update that lands while the answer is on its way is newer.
        asked_specs = {cid: spec for cid, spec, _ in self.service.bandwidth()}
        request = encode(SyncRequest(node=self.config.node, epoch=self.service.epoch, running=running))
        try:
            msg = await self.nc.request(subjects.sync(self.config.node), request, self.config.request_timeout_s)
            reply = control_reply_decoder.decode(msg.data)
        except (nats.errors.Error, msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("sync failed: %r", e)
            return False
        if isinstance(reply, CommandRejected) and reply.code is Reject.STALE_EPOCH:
            log.warning("sync: %s; registering again", reply.message)
            self._rejoin = True
            self._resync.set()
            return True
        if not isinstance(reply, SyncReply) or reply.epoch != self.service.epoch:
            log.warning("sync refused: %s", reply)
            return False
        if reply.burst is not None:
            self._configure_burst(reply.burst)
        desired = {d.container_id: d for d in reply.desired}
        stopping = {s.container_id: s for s in reply.stopping}
        # What ran when it asked, and what a command of an older epoch (one queued while this node was paused or
        # cut off, say) started meanwhile: not in the answer, so not this node's.
        await self.service.settle()
        for cid in sorted(set(running) | self.service.older_than(reply.epoch)):
            if cid not in desired and cid not in stopping:
                log.warning("container %s is no longer this node's: killing it", cid)
                stop = StopContainer(command_id=new_command_id(), epoch=self.service.epoch, container_id=cid, grace_s=0)
                await self.service.handle(stop)
        for cid in waiting:
            if cid not in desired:  # stopped, lost or moved while its image was pulled
                self.service.cancel_waiting(cid)
        for cid, stop in stopping.items():
            if cid in running:
                await self.service.handle(stop)  # the same id as the control plane's own: carried out once
            elif cid not in self.service.containers and not self.service.kept(cid):
                # Asked to stop, and never here (its start was lost): it is stopped, and nothing ran.
                self._report(ev.ContainerStopped(container_id=cid, node=self.config.node))
        running_specs = {cid: spec for cid, spec, _ in self.service.bandwidth() if asked_specs.get(cid) == spec}
        for cid, start in desired.items():
            if cid not in self.service.containers:
                await self.service.handle(start)
            elif (mine := running_specs.get(cid)) is not None and _cpu(mine) != _cpu(start.spec):
                # Resized while the update did not reach this node: the same values, pulled.
                want_request, want_limit = _cpu(start.spec)
                update = UpdateResources(
                    command_id=new_command_id(),
                    epoch=self.service.epoch,
                    container_id=cid,
                    cpu_request_millis=want_request,
                    cpu_limit_millis=want_limit,
                )
                await self.service.handle(update)
        # Throttling as last reported (by an earlier run's reports sent again, else as the control plane holds it)
        # for running containers the detector has not seen: it reports the end of a throttling that began before.
        sampled = self.service.stats_paths()
        for cid in desired:
            if cid in sampled:
                self._detector.assume(cid, self._reported_throttling.get(cid, cid in reply.throttled))
        self._reported_throttling.clear()
        self._synced.set()
        return True

    def _report(self, event: ev.Event) -> None:
        """Emit in the background (retried until acked or refused)."""
        self._track(self.emit(event))

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the agent cancels and awaits when it stops."""
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _on_command(self, msg: Msg) -> None:
        """Each command in its own task: a slow start never holds up the node's other commands (the service
        keeps one container's commands in order)."""
        self._track(self._serve(msg))

    async def _serve(self, msg: Msg) -> None:
        await self.ready.wait()  # not before the epoch is known and earlier containers are re-adopted
        try:
            command = command_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            command_id = None
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                command_id = _command_id.decode(msg.data).command_id  # so the caller can match the error
            await msg.respond(
                encode(CommandRejected(command_id=command_id, code=Reject.INVALID_COMMAND, message=str(e)))
            )
            return
        if isinstance(command, ConfigureBurst):
            self._configure_burst(command.config)
            await msg.respond(encode(CommandAccepted(command_id=command.command_id)))
            return
        if isinstance(command, PullImage | ListImages | RemoveImage | ImportChunk):
            await msg.respond(encode(await self._image_command(command)))
            return
        try:
            reply = await self.service.handle(command)
        except Exception as e:  # a bug must still answer, and must not kill the subscription
            log.exception("command %s failed", command.command_id)
            reply = CommandRejected(command_id=command.command_id, code=Reject.INTERNAL, message=repr(e))
        await msg.respond(encode(reply))

    async def _image_command(self, command: PullImage | ListImages | RemoveImage | ImportChunk) -> Reply:
        """Pull (``docker pull`` asks the registry even when the image is here: a moved tag is pulled again),
        list, remove or import images; what the node holds is said at once when it changed."""
        cid = command.command_id
        try:
            match command:
                case PullImage():
                    await self.service.pull_image(command.image, always=True)
                    reply: Reply = CommandAccepted(command_id=cid)
                case ListImages():
                    return ImagesReply(command_id=cid, images=tuple(await self.service.list_images()))
                case RemoveImage():
                    await self.service.remove_image(command.image, force=command.force)
                    reply = CommandAccepted(command_id=cid)
                case ImportChunk():
                    reply = await self.service.import_chunk(command)
        except PullFailed as e:
            return CommandRejected(command_id=cid, code=Reject.IMAGE_PULL_FAILED, message=str(e))
        except UnknownImage as e:
            return CommandRejected(command_id=cid, code=Reject.UNKNOWN_IMAGE, message=str(e))
        except InUse as e:
            return CommandRejected(command_id=cid, code=Reject.IMAGE_IN_USE, message=str(e))
        except Exception as e:  # a bug, or the disk: still answered, and the subscription lives on
            log.exception("image command %s failed", cid)
            return CommandRejected(command_id=cid, code=Reject.INTERNAL, message=repr(e))
        if not isinstance(reply, CommandRejected) and not (isinstance(command, ImportChunk) and not command.last):
            await self._say_images()
        return reply

    async def _heartbeat(self) -> None:
        """Beat every ``heartbeat_s``, each beat its own task: a slow answer never delays the next beat. An
        answer that the lease was not renewed (lost, or another epoch) makes the node register again."""
        assert self.nc is not None
        while True:
            raise_if_cancelled()
            self._heartbeats += 1
            sent = time.monotonic()
            beat = Heartbeat(
                node=self.config.node,
                epoch=self.service.epoch,
                seq=self._heartbeats,
                sent_ns=self.clock(),
                unanswered_ns=max(0, int((sent - self._answered) * 1e9)),
            )
            self._track(self._beat(beat, sent))
            await asyncio.sleep(self.config.heartbeat_s)

    def fence_after_s(self) -> float:
        """How long this node may go unheard before it stops its at-most-one containers: the lease less a margin
        (two heartbeats, at least a fifth of the lease), so they end before the control plane can call the node
        lost and start replacements."""
        return self._lease_s - max(2 * self.config.heartbeat_s, self._lease_s / 5)

    async def _fence(self) -> None:
        """Self-fencing: cut off for longer than ``fence_after_s``, kill the containers that ask for at most one
        copy (a partition must never leave two running)."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.config.heartbeat_s / 2)
            self.service.fenced = self._lease_s > 0 and time.monotonic() - self._renewed > self.fence_after_s()
            if not self.service.fenced:
                continue
            for cid in self.service.at_most_one():
                log.warning(
                    "cut off from the control plane for %.1f s: stopping %s (at most one copy)",
                    time.monotonic() - self._renewed,
                    cid,
                )
                stop = StopContainer(command_id=new_command_id(), epoch=self.service.epoch, container_id=cid, grace_s=0)
                await self.service.handle(stop)

    async def _beat(self, beat: Heartbeat, sent: float) -> None:
        assert self.nc is not None
        try:
            # Waited for as long as a lease: a late answer still says the control plane can reach this node.
            timeout = max(self.config.heartbeat_s * 2, self._lease_s)
            msg = await self.nc.request(subjects.lease(self.config.node), encode(beat), timeout)
            reply = control_reply_decoder.decode(msg.data)
        except NoRespondersError:
            # NATS is there and no control plane listens (it is restarting): none can call this node lost now,
            # and one that starts gives every node a full lease first.
            self._renewed = max(self._renewed, sent)
            return
        except (nats.errors.Error, msgspec.DecodeError, msgspec.ValidationError) as e:
            log.debug("heartbeat %d: %r", beat.seq, e)  # unheard: beat on
            return
        self._answered = max(self._answered, time.monotonic())
        if isinstance(reply, HeartbeatReply) and reply.status is LeaseStatus.RENEWED:
            # The control plane renews back to when this node last heard it before the beat (a round trip).
            self._renewed = max(self._renewed, sent - beat.unanswered_ns / 1e9)
            self.service.fenced = False
        if isinstance(reply, HeartbeatReply) and reply.status.reregister and beat.epoch == self.service.epoch:
            if not self._rejoin:
                log.warning("heartbeat: %s at epoch %d; registering again", reply.status, beat.epoch)
            self._rejoin = True
            self._resync.set()

    async def _telemetry(self) -> None:
        """Sweep the running containers' cgroups every ``stats_s``: samples go to the stats subject (fire and
        forget); throttling transitions, edge-triggered with hysteresis, become events. A sweep that fails (a
        file the kernel wrote in a form not understood) is logged and the next one tried: telemetry never
        takes the node down."""
        with Sampler() as sampler:
            while True:
                raise_if_cancelled()
                try:
                    await self._sweep(sampler, self._detector)
                except Exception:
                    log.exception("telemetry sweep failed; trying again")
                await asyncio.sleep(self.config.stats_s)

    async def _sweep(self, sampler: Sampler, detector: ThrottleDetector) -> None:
        assert self.nc is not None
        wanted = self.service.stats_paths()
        for cid in [c for c in sampler.ids() if c not in wanted]:
            sampler.remove(cid)
            detector.forget(cid)
        for cid, paths in wanted.items():
            if cid not in sampler:
                with contextlib.suppress(OSError):  # exited between the listing and the open
                    sampler.add(cid, paths)
        # Every running container's cgroup files, read on a thread: the loop never waits on them. Cut short, the
        # read is waited for all the same (the sampler's files must not close under it).
        reading = asyncio.ensure_future(asyncio.to_thread(lambda: (sampler.sweep(), sampler.node_cpu())))
        try:
            sweep, (busy, total) = await asyncio.shield(reading)
        except asyncio.CancelledError:
            await asyncio.wait([reading])
            raise
        for gone in sampler.take_gone():
            detector.forget(gone)
        sample = stats_sample(self.config.node, self.clock(), sweep, busy, total)
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(subjects.stats(self.config.node), encode(sample))
        if self._synced.is_set():  # else the detector does not know yet what was reported before this run
            for cid, transition in detector.feed_all(sweep).items():
                self._report(throttle_event(self.config.node, cid, transition))
        try:
            await self._apply_burst(busy, sweep)
        except Exception:  # the burst loop must not stop telemetry or log rotation
            log.exception("CPU Burst step failed; trying again next sweep")
        await self.service.rotate_logs(self.config.log_max_bytes)

    def _configure_burst(self, config: BurstConfig) -> None:
        if config != self.burst_config:
            log.info("CPU Burst configuration: %s", msgspec.json.encode(config).decode())
            self.burst_config = config

    async def _apply_burst(self, node_busy_ns: int, sweep: list[ContainerSample]) -> None:
        """CPU Burst, once a sweep (every second): the controller decides from the counters just read; each
        change is written to the cgroup and reported (the burst with its reason, a quota with its decision)."""
        config = self.burst_config
        if config is None:
            return
        usage = {s.container_id: (s.usage_ns, s.nr_periods, s.nr_throttled) for s in sweep}
        running = [
            Running(
                container_id=cid,
                spec=spec,
                quota_us=settings.quota_us,
                burst_us=settings.burst_us,
                policy=resolve(config, self.config.labels, spec.burst),
            )
            for cid, spec, settings in self.service.bandwidth()
        ]
        by_id = {r.container_id: r for r in running}
        pool = self.service.share_pool_cpus()
        for change in self._burst.step(time.monotonic_ns(), node_busy_ns, usage, running, pool):
            r = by_id[change.container_id]
            seen = (r.quota_us, r.burst_us, r.spec.cpu_limit_millis)
            old = await self.service.set_bandwidth(change.container_id, change.quota_us, change.burst_us, seen)
            if old is None:
                continue
            node, cid, burst = self.config.node, change.container_id, change.burst
            if old.quota_us != change.quota_us:  # one report for both when the burst follows the quota
                moved = burst.burst_us if old.burst_us != burst.burst_us else None
                scaled = ev.CfsQuotaScaled(
                    container_id=cid,
                    node=node,
                    from_us=old.quota_us or -1,
                    to_us=change.quota_us,
                    reason=str(change.scale),
                    burst_us=moved,
                    burst_reason=burst.reason if moved is not None else "",
                )
                self._report(scaled)
            elif old.burst_us != burst.burst_us:
                self._report(ev.CpuBurstSet(container_id=cid, node=node, burst_us=burst.burst_us, reason=burst.reason))


def _cpu(spec: ContainerSpec) -> tuple[int, int | None]:
    return spec.cpu_request_millis, spec.cpu_limit_millis


class _CommandId(msgspec.Struct):
    command_id: uuid.UUID


_command_id = msgspec.msgpack.Decoder(_CommandId)


class _Stop(Exception):
    pass
