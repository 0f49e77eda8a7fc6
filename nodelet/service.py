"""The node service: what the nodelet does with a command, behind the NATS agent.

It composes the image store, the OCI config, the cgroup layer, the runtime and the lifecycle table:
``StartContainer`` checks everything it can before touching the host (image, cpuset, spec, mounts), then
prepares the root, has the monitor run ``runc create``, writes CPU burst (runc 1.1 ignores it) and starts the
container; any failure undoes every step, so a rejected command leaves no cgroup, bundle or process behind.
Commands are idempotent by command id, across restarts too (the id is kept with the container). A restarted
service re-adopts what its monitors kept running and reports exits that happened while it was down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from nodelet import lifecycle, procfacts
from nodelet.cgroups import (
    CgroupError,
    Cgroups,
    CpuSettings,
    StatsPaths,
    format_cpulist,
    settings_for,
    shares_for,
)
from nodelet.hostmounts import read_beneath, stage, unstage
from nodelet.images import ImageRecord, ImageStore, UnknownImage, mount_overlay, unmount_overlay
from nodelet.lifecycle import IllegalTransition, Op, State
from nodelet.logs import page, read_lines
from nodelet.ocispec import BUSYBOX_CONFIG, MountNotAllowed, NoCommand, oci_config
from nodelet.pools import Pools, cpuset_for, pools
from nodelet.pull import Puller, PullFailed, parse_reference
from nodelet.runtime import ExitStatus, Runtime, RuntimeError_
from nodelet.seccomp import profile_for
from nodelet.topology import real_cpuset
from nodelet.users import Identity, UserError
from nodelet.users import resolve as resolve_user
from wire import events as ev
from wire.commands import (
    AuditContainer,
    AuditReply,
    CommandAccepted,
    CommandRejected,
    ContainerCommand,
    GetLogs,
    ImageEntry,
    ImageImported,
    ImportChunk,
    LogsReply,
    Reject,
    RemoveContainer,
    Reply,
    StartContainer,
    StopContainer,
    UpdateResources,
)
from wire.files import private_dir, write_private
from wire.pss import Enforce, admission
from wire.spec import SECCOMP_RUNTIME_DEFAULT, SECCOMP_UNCONFINED, ContainerSpec, PullPolicy, QoS, host_mount_allowed

log = logging.getLogger("corral.nodelet")
Emit = Callable[[ev.Event], Awaitable[None]]
_start_decoder = msgspec.json.Decoder(StartContainer)
REPLY_MEMORY = 10_000  # command ids remembered for dedupe (beyond those kept with containers)


class NodeConfig(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    data_dir: str
    cgroup_root: str = "/corral"
    pids_limit: int = 1024  # each container's
    node_pids_max: int | None = None  # all the node's containers together (None: no cap of the node's own)
    allowed_host_mounts: tuple[str, ...] = ()
    # Seccomp beyond RuntimeDefault: Unconfined where allowed, and the profiles installed (localhost/<name>).
    allow_unconfined_seccomp: bool = False
    # A container's writable layer and /tmp, when its spec does not say (a tmpfs of this size: bounded in RAM).
    ephemeral_storage_bytes: int = 1 << 30
    # The most a spec may ask for: the layer is a tmpfs, in RAM, charged to the container's memory cgroup (as
    # Kubernetes' emptyDir with medium Memory); a container without a memory limit is bounded by this alone.
    ephemeral_storage_max: int = 4 << 30
    pod_security: Enforce = Enforce.PRIVILEGED  # the Pod Security Standard containers here must meet
    # Containers asking for a user namespace map 0..size-1 inside onto base.. outside (one range for all of
    # them, as Docker's userns-remap). Far above /etc/subuid's usual ranges (100000 + 65536·n), which a host
    # user could map into with newuidmap.
    userns_base: int = 0x70000000
    userns_size: int = 65_536
    seccomp_profiles: dict[str, dict[str, Any]] = {}
    cpu_map: dict[int, int] = {}  # declared CPU → real CPU, when the node declares a topology it lacks
    cpus: tuple[int, ...] = ()  # the real CPUs containers may be pinned to
    mount_roots: bool = True  # False only for hollow nodes (scale tests): no overlay mounts
    # Containers created and started at once: each holds a runc init process (some 8 MB) from its create to its
    # start, so a burst of hundreds of starts waits its turn rather than fill memory with them.
    parallel_starts: int = 8
    # A failed pull for a start is tried again after 10 s, then twice as long each time up to 300 s (kubelet's).
    pull_backoff_s: tuple[float, float] = (10.0, 300.0)
    # kubelet's image GC: past high percent of the image store's file system used, unused images go, least
    # recently used first, until below low.
    image_gc_high_percent: int = 85
    image_gc_low_percent: int = 80
    image_gc_min_age_s: float = 120.0  # images used or imported more recently stay (kubelet's minimum age)

    @property
    def seccomp_profiles_offered(self) -> tuple[str, ...]:
        """What the node runs beyond RuntimeDefault, as it registers it."""
        return ((SECCOMP_UNCONFINED,) if self.allow_unconfined_seccomp else ()) + tuple(sorted(self.seccomp_profiles))


class _Container:
    """What the service knows of one container (mutable, owned by the service)."""

    def __init__(self, command: StartContainer, bundle: Path, cgroup: str) -> None:
        self.command = command
        self.bundle = bundle
        self.cgroup = cgroup
        self.state = lifecycle.INITIAL
        self.settings: CpuSettings | None = None
        self.cpus: tuple[int, ...] = ()  # real CPUs it holds exclusively (LSE/LSR)
        self.pid = 0
        self.mount_sources: tuple[str, ...] = ()  # its host mounts as staged for runc (nodelet.hostmounts)
        self.identity = Identity(0, 0, ())  # who its process runs as
        self.image_id: str | None = None  # the image its root is made of (None: the built-in busybox)
        self.image_config = BUSYBOX_CONFIG
        self.watcher: asyncio.Task[None] | None = None
        self.released: asyncio.Future[None] | None = None  # its root unmounted and cgroup removed, once ended
        self.started_report: asyncio.Future[None] | None = None  # ContainerStarted, until the control plane acks

    @property
    def id(self) -> str:
        return self.command.container_id


IMPORT_IDLE_S = 600.0  # an image upload not heard of for this long is dropped


class _Upload:
    """An image tarball arriving in pieces."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.next = 0  # the piece expected next
        self.size = 0
        self.touched = time.monotonic()
        self.last_reply: Reply | None = None  # the answer to the last piece, for a retry of it
        self.lock = asyncio.Lock()  # one piece at a time

    @property
    def done(self) -> bool:
        return isinstance(self.last_reply, ImageImported | CommandRejected)


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class _Waiting:
    """A container placed here whose image is being pulled (or whose pull waits out a back-off)."""

    def __init__(self, command: StartContainer) -> None:
        self.command = command  # the newest start for it (a sync at a later epoch replaces it)
        self.task: asyncio.Future[None] | None = None


class PodSecurityRefused(ValueError):
    pass


class Rejected(Exception):
    def __init__(self, code: Reject, message: str) -> None:
        super().__init__(message)
        self.code = code


class NodeService:
    def __init__(
        self,
        config: NodeConfig,
        *,
        runtime: Runtime,
        images: ImageStore,
        cgroups: Cgroups | None,
        emit: Emit,
        clock: Callable[[], int] = time.time_ns,
        puller: Puller | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.images = images
        self.cgroups = cgroups
        self.emit = emit
        self.clock = clock
        self.epoch = 0  # set by the agent when the control plane registers this node
        self.containers: dict[str, _Container] = {}
        self._replies: collections.OrderedDict[uuid.UUID, Reply] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting: dict[str, _Container] = {}  # being started: their CPUs are held already
        self._start_slots = asyncio.Semaphore(config.parallel_starts)
        # Changes of a running container's cgroup (moves between pools, updates): one at a time, each planned and
        # written under it, so a change planned from settings another has replaced is never written.
        self.cgroup_writes = asyncio.Lock()
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # per container: one command at a time, in
        # arrival order; with how many commands hold or wait for it (dropped when none do)
        self.fenced = False  # cut off from the control plane: no start is taken (set by the agent)
        data = Path(config.data_dir).resolve()  # real paths: the mount table names them so (see unstage)
        self.root = private_dir(private_dir(data) / "containers")
        self.staged = private_dir(data / "hostmounts")  # never removed with rm -r: see unstage
        self.puller = puller  # None: this node does not pull (a hollow node)
        self._pulls: dict[str, asyncio.Future[ImageRecord]] = {}  # by reference: one pull at a time
        self._waiting: dict[str, _Waiting] = {}  # containers waiting for their image
        self.images_changed = asyncio.Event()  # set when a pull or a removal changed the images held
        self._no_gc = asyncio.Event()  # cleared while images are removed: a start waits, then sees what is left
        self._no_gc.set()
        self._imports: dict[uuid.UUID, _Upload] = {}

    # --- commands ------------------------------------------------------------------------------------------

    async def handle(self, command: ContainerCommand) -> Reply:
        """Answer one command; a command id seen before gets its first answer again. Commands for different
        containers run side by side; those for one container, one at a time in the order they came."""
        if isinstance(command, GetLogs):
            return await self._handle(command)
        async with self._one_at_a_time(command.container_id):
            return await self._handle(command)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, cid: str) -> AsyncIterator[None]:
        """One command (or pulled start) for a container at a time, in the order they came."""
        lock, users = self._locks.setdefault(cid, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[cid]

    async def _handle(self, command: ContainerCommand) -> Reply:
        seen = self._replies.get(command.command_id)
        if seen is not None:
            return msgspec.structs.replace(seen, duplicate=True) if isinstance(seen, CommandAccepted) else seen
        try:
            if not isinstance(command, GetLogs | AuditContainer):
                self._admit(command)
            match command:
                case StartContainer():
                    reply: Reply = await self._start(command)
                case StopContainer():
                    reply = self._stop(command)
                case RemoveContainer():
                    reply = await self._remove(command)
                case UpdateResources():
                    reply = await self._update(command)
                case GetLogs():
                    reply = await asyncio.to_thread(self._logs, command)  # whole files: never on the loop
                case AuditContainer():
                    reply = await asyncio.to_thread(self._audit, command)
        except Rejected as r:
            reply = CommandRejected(command_id=command.command_id, code=r.code, message=str(r))
        if not isinstance(command, GetLogs | AuditContainer) and not (
            isinstance(reply, CommandRejected) and reply.code.retryable
        ):
            self._remember(command.command_id, reply)  # a refusal that may pass later is not the final answer
        return reply

    def _admit(self, command: StartContainer | StopContainer | RemoveContainer | UpdateResources) -> None:
        """Refuse a command for another epoch of this node, and a start while the node is fenced."""
        if command.epoch != self.epoch:
            raise Rejected(Reject.STALE_EPOCH, f"command for epoch {command.epoch}; this node is at {self.epoch}")
        if isinstance(command, StartContainer) and self.fenced:
            raise Rejected(Reject.FENCED, f"node {self.config.node} is cut off from the control plane")

    def _remember(self, command_id: uuid.UUID, reply: Reply) -> None:
        self._replies[command_id] = reply
        while len(self._replies) > REPLY_MEMORY:
            self._replies.popitem(last=False)

    def _own_cpus(self, cmd: StartContainer) -> tuple[int, ...]:
        if not (cmd.spec.qos or QoS.LS).exclusive or not cmd.cpuset:
            return ()
        return real_cpuset(self.config.cpu_map, cmd.cpuset)

    def _live(self) -> list[_Container]:
        live = [c for c in self.containers.values() if c.state not in lifecycle.TERMINAL]
        return live + [c for c in self._starting.values() if c.id not in self.containers]

    def _pools(self, extra: Sequence[tuple[QoS, tuple[int, ...]]] = ()) -> Pools:
        held = [
            (c.command.spec.qos or QoS.LS, c.cpus) for c in self._live() if (c.command.spec.qos or QoS.LS).exclusive
        ]
        return pools(self.config.cpus, [*held, *extra])

    async def _rebalance(self) -> None:
        """Move every running LS and BE container onto its pool as it is now (after an exclusive container
        came or went). One move at a time, each planned from the pools as they are when it begins; the cgroup
        writes (a cpuset write migrates tasks, and can take milliseconds) run on a thread."""
        if self.cgroups is None or not self.config.cpus:
            return
        async with self.cgroup_writes:
            pool = self._pools()
            moves: list[tuple[_Container, CpuSettings, CpuSettings]] = []
            for c in self._live():
                qos = c.command.spec.qos or QoS.LS
                if qos.exclusive or c.settings is None or c.state is not State.RUNNING:
                    continue
                want = format_cpulist(cpuset_for(qos, (), pool))
                if c.settings.cpus != want:
                    moves.append((c, c.settings, msgspec.structs.replace(c.settings, cpus=want)))
            if moves:
                for c, new in await asyncio.to_thread(self._move, moves):
                    c.settings = new

    def _move(self, moves: list[tuple[_Container, CpuSettings, CpuSettings]]) -> list[tuple[_Container, CpuSettings]]:
        """Write the moves (on a thread); return those made."""
        assert self.cgroups is not None
        made = []
        for c, old, new in moves:
            try:
                self.cgroups.apply(c.cgroup, new, old)
                made.append((c, new))
            except CgroupError as e:
                log.warning("container %s: cannot move to CPUs %s: %s", c.id, new.cpus, e)
        return made

    def _check(self, cmd: StartContainer, pulled: bool) -> tuple[list[Path] | None, CpuSettings, str | None]:
        """Everything that can be checked before the host is touched; the image's layers last (None: it is to
        be pulled first), and its id (None: the built-in busybox), looked up once for the whole start."""
        if cmd.container_id in self.containers or (self.root / cmd.container_id).exists():
            raise Rejected(
                Reject.DUPLICATE_ID, f"container {cmd.container_id} already exists on node {self.config.node}"
            )
        try:
            cpus = real_cpuset(self.config.cpu_map, cmd.cpuset) if cmd.cpuset else ()
        except ValueError as e:
            raise Rejected(Reject.IMPOSSIBLE_CPUSET, f"cpuset: {e}") from None
        missing = sorted(set(cpus) - set(self.config.cpus)) if self.config.cpus else []
        if missing:
            raise Rejected(Reject.IMPOSSIBLE_CPUSET, f"cpuset: CPUs {missing} do not exist on node {self.config.node}")
        qos = cmd.spec.qos or QoS.LS
        if qos.exclusive and not self.config.cpu_map:  # a declared topology maps many CPUs onto few: no check
            held = {cpu: c.id for c in self._live() if (c.command.spec.qos or QoS.LS).exclusive for cpu in c.cpus}
            taken = sorted(cpu for cpu in cpus if cpu in held)
            if taken:
                raise Rejected(
                    Reject.IMPOSSIBLE_CPUSET, f"cpuset: CPUs {taken} are held exclusively by container {held[taken[0]]}"
                )
        mems = () if self.config.cpu_map else cmd.numa_nodes
        try:
            settings, _ = settings_for(cmd.spec, () if self.config.cpu_map else cpus, mems, self.config.pids_limit)
        except ValueError as e:
            raise Rejected(Reject.INVALID_SPEC, str(e)) from None
        if self.config.cpus:  # pin to the pool (or own CPUs); without a CPU list, inherit the parent's
            pool = self._pools(extra=[(qos, cpus)] if qos.exclusive else [])
            settings = msgspec.structs.replace(settings, cpus=format_cpulist(cpuset_for(qos, cpus, pool)))
        for m in cmd.spec.mounts:
            if not host_mount_allowed(m.source, self.config.allowed_host_mounts):
                raise Rejected(Reject.MOUNT_NOT_ALLOWED, f"mounts: host path {m.source!r} is not allowed on this node")
        asked = cmd.spec.ephemeral_storage_bytes
        if asked is not None and asked > self.config.ephemeral_storage_max:
            raise Rejected(
                Reject.INVALID_SPEC,
                f"ephemeral_storage_bytes: {asked} is above this node's maximum of {self.config.ephemeral_storage_max}",
            )
        profile = cmd.spec.seccomp_profile
        if profile != SECCOMP_RUNTIME_DEFAULT and profile not in self.config.seccomp_profiles_offered:
            why = "Unconfined is not allowed" if profile == SECCOMP_UNCONFINED else f"no profile {profile!r}"
            raise Rejected(Reject.SECCOMP_NOT_ALLOWED, f"seccomp_profile: {why} on this node")
        pulls = self.puller is not None and cmd.spec.pullable
        if pulls and not pulled and cmd.spec.image_pull_policy is PullPolicy.ALWAYS:
            return None, settings, None
        image_id = self.images.image_id(cmd.spec.image)
        try:
            return self.images.lowerdirs(image_id or cmd.spec.image), settings, image_id
        except UnknownImage as e:
            if pulls and not pulled:
                return None, settings, None
            raise Rejected(Reject.UNKNOWN_IMAGE, str(e)) from None
        except OSError as e:  # a layer directory gone: the image is damaged (remove it; it is pulled again)
            raise Rejected(Reject.START_FAILED, f"image {cmd.spec.image!r} is damaged: {e}") from None

    async def _start(self, cmd: StartContainer, pulled: bool = False) -> Reply:
        waiting = self._waiting.get(cmd.container_id)
        if waiting is not None and not pulled:
            waiting.command = cmd  # already waiting for its image: the newest start is the one carried out
            return CommandAccepted(command_id=cmd.command_id)
        while not self._no_gc.is_set():  # images are being removed: then see what is left
            await self._no_gc.wait()
        lower, settings, image_id = self._check(cmd, pulled)  # nothing awaited from here until it is in _starting
        if lower is None:
            self._wait_for_image(cmd)
            return CommandAccepted(command_id=cmd.command_id)
        bundle = self.root / cmd.container_id
        cgroup = f"{self.config.cgroup_root}/{self.config.node}/{cmd.container_id}"
        c = _Container(cmd, bundle, cgroup)
        c.settings = settings
        c.cpus = self._own_cpus(cmd)
        c.image_id = image_id
        self._starting[c.id] = c  # checked and holding its CPUs from here on, across the awaits below
        try:
            return await self._create_and_start(c, lower, settings)
        finally:
            del self._starting[c.id]

    def _prepare(self, c: _Container, lower: list[Path]) -> Path:
        """The bundle and its root (mkdir, files, the overlay mount: on a worker thread)."""
        c.bundle.mkdir(mode=0o700)
        write_private(c.bundle / "command.json", msgspec.json.encode(c.command))  # the spec holds env values
        if not self.config.mount_roots:
            return c.bundle / "rootfs"
        storage = c.command.spec.ephemeral_storage_bytes or self.config.ephemeral_storage_bytes
        spec = c.command.spec
        owner = (self.config.userns_base, self.config.userns_base) if spec.user_namespace else None
        if owner is not None:
            # Its root, an unprivileged uid outside, must pass through to its root file system: the directories
            # above get its group and search for that group alone (0710; the files in them stay 0600 root's).
            for d in (self.root.parent, self.root, c.bundle):
                os.chown(d, -1, owner[1])
                d.chmod(0o710)
        rootfs = mount_overlay(lower, c.bundle, scratch_bytes=storage, owner=owner)
        if c.image_id is not None:
            (c.bundle / "image-id").write_text(c.image_id)  # what image GC must keep while it is here
            self.images.touch(c.image_id)
        c.image_config = self.images.config(c.image_id or spec.image)
        user = spec.user or c.image_config.user
        c.identity = resolve_user(user, read_beneath(rootfs, "etc/passwd"), read_beneath(rootfs, "etc/group"))
        if spec.run_as_non_root and c.identity.uid == 0:
            why = f"user {user!r} is uid 0" if user else "the image runs as root"
            raise UserError(f"run_as_non_root: {why}; set user, or use an image whose User is not root")
        failed = admission(spec, self.config.pod_security, c.identity.uid)
        if failed:
            raise PodSecurityRefused(f"the node enforces {self.config.pod_security}: " + "; ".join(failed))
        c.mount_sources = tuple(
            str(stage(m.source, self.config.allowed_host_mounts, self.staged / c.id / str(i), m.read_only))
            for i, m in enumerate(c.command.spec.mounts)
        )
        return rootfs

    async def _create_and_start(self, c: _Container, lower: list[Path], settings: CpuSettings) -> Reply:
        cmd, bundle, cgroup = c.command, c.bundle, c.cgroup
        async with self._start_slots:
            self._admit(cmd)  # waiting for a slot may take long in a burst: checked again
            prepared = asyncio.ensure_future(asyncio.to_thread(self._prepare, c, lower))
            creating: asyncio.Future[int] | None = None
            try:
                rootfs = await asyncio.shield(prepared)
                config = oci_config(
                    cmd.spec,
                    container_id=cmd.container_id,
                    rootfs=str(rootfs),
                    cgroups_path=cgroup,
                    cpus=settings.cpus,
                    mems=settings.mems,
                    cpu_shares=settings.shares,
                    cpu_quota_us=settings.quota_us,
                    cpu_period_us=settings.period_us,
                    pids_limit=self.config.pids_limit,
                    allowed_host_mounts=self.config.allowed_host_mounts,
                    seccomp=profile_for(cmd.spec.seccomp_profile, self.config.seccomp_profiles),
                    mount_sources=c.mount_sources or None,
                    identity=c.identity,
                    userns=(self.config.userns_base, self.config.userns_size) if cmd.spec.user_namespace else None,
                    image=c.image_config,
                )
                creating = asyncio.ensure_future(self.runtime.create(cmd.container_id, bundle, config))
                c.pid = await asyncio.shield(creating)  # conmon goes on creating if we are cancelled: see below
                if self.cgroups is not None:
                    await asyncio.to_thread(self.cgroups.apply, cgroup, settings)  # burst: between create and start
                await self.runtime.start(cmd.container_id)
            except Exception as e:  # whatever failed, nothing is left behind (an image's odd passwd, a mount)
                await self._undo(c)
                code = (
                    Reject.MOUNT_NOT_ALLOWED
                    if isinstance(e, MountNotAllowed)
                    else Reject.INVALID_SPEC
                    if isinstance(e, UserError | NoCommand)
                    else Reject.POD_SECURITY
                    if isinstance(e, PodSecurityRefused)
                    else Reject.START_FAILED
                )
                if code is Reject.START_FAILED and not isinstance(e, RuntimeError_ | CgroupError | OSError):
                    log.warning("container %s: start failed: %r", cmd.container_id, e)  # not one we foresaw
                raise Rejected(code, f"container {cmd.container_id}: {e}") from None
            except asyncio.CancelledError:
                # The nodelet stops mid-start: leave no container created and never started (its runc init would
                # wait for a start forever); the start was not answered, so the control plane sends it again.
                await asyncio.shield(self._undo_when(c, prepared, creating))
                raise
        c.state = lifecycle.transition(c.state, Op.START)
        self.containers[c.id] = c
        # Reported in the background (the answer does not wait for the control plane); its exit after it.
        started = ev.ContainerStarted(container_id=c.id, node=self.config.node, pid=c.pid, started_ns=self.clock())
        c.started_report = asyncio.ensure_future(self.emit(started))
        self._tasks.add(c.started_report)
        c.started_report.add_done_callback(self._tasks.discard)
        self._watch(c)  # watched and reported before any await: a start cut short after this still ends known
        if (cmd.spec.qos or QoS.LS).exclusive:
            await self._rebalance()
        return CommandAccepted(command_id=cmd.command_id)

    async def _undo_when(self, c: _Container, *steps: asyncio.Future[Any] | None) -> None:
        """Undo a start once the steps under way are over (a mount or a create finishes first, then is undone:
        undone earlier, it would leave a container runc creates after the undo)."""
        for step in steps:
            if step is not None:
                with contextlib.suppress(Exception):
                    await step
        await self._undo(c)

    async def _undo(self, c: _Container) -> None:
        """Leave no process, mount, bundle or cgroup of a container that did not start."""
        with contextlib.suppress(RuntimeError_):
            if await self.runtime.status(c.id) in ("created", "running"):
                await self.runtime.kill(c.id, 9)
                await self.runtime.wait(c.id, 10)
        with contextlib.suppress(RuntimeError_):
            await self.runtime.delete(c.id)
        await asyncio.to_thread(self._release, c)
        await asyncio.to_thread(self._forget, c)

    async def _teardown(self, c: _Container) -> None:
        with contextlib.suppress(RuntimeError_):
            await self.runtime.delete(c.id)
        await asyncio.to_thread(self._release, c)  # umount and rmdir may wait on the kernel

    def _release(self, c: _Container) -> None:
        """Unmount the root and remove the cgroup (kept: the bundle with its command and the logs, and the
        node's own cgroup, which starts create theirs in: removing it when empty raced with a start)."""
        try:
            unstage(self.staged / c.id)
        except OSError as e:
            log.warning("container %s: %s", c.id, e)
        try:
            unmount_overlay(c.bundle)
        except OSError as e:
            log.warning("container %s: %s", c.id, e)
        shutil.rmtree(c.bundle / "upper", ignore_errors=True)
        shutil.rmtree(c.bundle / "work", ignore_errors=True)
        if self.cgroups is not None:
            try:
                self.cgroups.remove(c.cgroup, root=f"{self.config.cgroup_root}/{self.config.node}")
            except CgroupError as e:
                log.warning("container %s: %s", c.id, e)

    def _stop(self, cmd: StopContainer) -> Reply:
        c = self.containers.get(cmd.container_id)
        if c is None:
            self.cancel_waiting(cmd.container_id)  # never started: it is simply not here
            raise Rejected(Reject.UNKNOWN_CONTAINER, f"container {cmd.container_id} is not on node {self.config.node}")
        try:
            before, c.state = c.state, lifecycle.transition(c.state, Op.STOP)
        except IllegalTransition as e:
            raise Rejected(Reject.ILLEGAL_STATE, str(e)) from None
        if before in (State.RUNNING, State.CREATED):
            self._spawn(self._stop_in_background(c, cmd.grace_s))
        return CommandAccepted(command_id=cmd.command_id)

    async def _remove(self, cmd: RemoveContainer) -> Reply:
        c = self.containers.get(cmd.container_id)
        if c is None:
            if (self.root / cmd.container_id).exists() or self.runtime.logs(cmd.container_id).exists():
                c = _Container(
                    _start_decoder.decode((self.root / cmd.container_id / "command.json").read_bytes()),
                    self.root / cmd.container_id,
                    "",
                )
                c.state = lifecycle.LEFTOVER
            else:
                return CommandAccepted(command_id=cmd.command_id)  # gone already: removing is idempotent
        try:
            c.state = lifecycle.transition(c.state, Op.REMOVE)
        except IllegalTransition as e:
            raise Rejected(Reject.ILLEGAL_STATE, str(e)) from None
        self.containers.pop(c.id, None)
        if c.released is not None:
            await asyncio.shield(c.released)  # an exit still being handled: never delete a mounted root
        await asyncio.to_thread(self._forget, c)
        return CommandAccepted(command_id=cmd.command_id)

    def _forget(self, c: _Container) -> None:
        """Drop everything kept of a container: exit record, logs (current and rotated), bundle."""
        if hasattr(self.runtime, "forget"):
            self.runtime.forget(c.id)
        log_file = self.runtime.logs(c.id)
        for f in (log_file, log_file.with_name(log_file.name + ".1")):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        shutil.rmtree(c.bundle, ignore_errors=True)

    async def _stop_in_background(self, c: _Container, grace_s: float) -> None:
        with contextlib.suppress(RuntimeError_):
            await self.runtime.stop(c.id, grace_s)  # the watcher reports the exit

    async def _update(self, cmd: UpdateResources) -> Reply:
        async with self.cgroup_writes:
            c = self.containers.get(cmd.container_id)
            if c is None or c.settings is None:
                raise Rejected(
                    Reject.UNKNOWN_CONTAINER, f"container {cmd.container_id} is not on node {self.config.node}"
                )
            if c.state is not State.RUNNING:
                raise Rejected(Reject.ILLEGAL_STATE, f"cannot update container in state {c.state}")
            old = c.settings
            changes: dict[str, object] = {}
            spec = c.command.spec
            if cmd.cpu_limit_millis is not None and cmd.cpu_limit_millis != spec.cpu_limit_millis:
                quota = max(cmd.cpu_limit_millis * old.period_us // 1000, 1000)
                # A quota lowered under the burst takes the burst down with it (the kernel's rule).
                changes |= {"quota_us": quota, "burst_us": min(old.burst_us, quota)}
                spec = msgspec.structs.replace(spec, cpu_limit_millis=cmd.cpu_limit_millis)
            if cmd.cpu_request_millis is not None:
                changes["shares"] = shares_for(cmd.cpu_request_millis)
                spec = msgspec.structs.replace(spec, cpu_request_millis=cmd.cpu_request_millis)
            if cmd.cpuset is not None:
                changes["cpus"] = ",".join(map(str, real_cpuset(self.config.cpu_map, cmd.cpuset)))
            if cmd.burst_us is not None:
                changes["burst_us"] = cmd.burst_us
            try:
                new = msgspec.structs.replace(old, **changes)
            except ValueError as e:
                raise Rejected(Reject.INVALID_UPDATE, str(e)) from None
            if self.cgroups is not None:
                try:
                    await asyncio.to_thread(self.cgroups.apply, c.cgroup, new, old)
                except CgroupError as e:
                    raise Rejected(Reject.UPDATE_FAILED, str(e)) from None
            c.settings = new
            # What it runs with from now on: the CPU Burst loop's base quota, and syncs, compare against it.
            c.command = msgspec.structs.replace(c.command, spec=spec)
        if new.burst_us != old.burst_us:
            burst = ev.CpuBurstSet(container_id=c.id, node=self.config.node, burst_us=new.burst_us, reason="update")
            await self.emit(burst)
        if new.quota_us != old.quota_us:
            await self.emit(
                ev.CfsQuotaScaled(
                    container_id=c.id,
                    node=self.config.node,
                    from_us=old.quota_us or -1,
                    to_us=new.quota_us or -1,
                    reason="update",
                )
            )
        return CommandAccepted(command_id=cmd.command_id)

    def _logs(self, cmd: GetLogs) -> Reply:
        path = self.runtime.logs(cmd.container_id)
        if cmd.container_id not in self.containers and not path.exists():
            raise Rejected(Reject.UNKNOWN_CONTAINER, f"container {cmd.container_id} is not on node {self.config.node}")
        files = (path.with_name(path.name + ".1"), path)  # the rotated file first
        base = self._log_base(cmd.container_id)  # lines rotated away for good
        p = page(read_lines(files), base, cmd.since_line, cmd.tail)
        return LogsReply(
            command_id=cmd.command_id, lines=p.lines, truncated=p.truncated, next_line=p.next_line, more=p.more
        )

    def _audit(self, cmd: AuditContainer) -> Reply:
        c = self.containers.get(cmd.container_id)
        if c is None or c.state is not State.RUNNING or not c.pid:
            raise Rejected(Reject.UNKNOWN_CONTAINER, f"container {cmd.container_id} is not running on this node")
        try:
            return AuditReply(command_id=cmd.command_id, facts=procfacts.read(c.pid))
        except (OSError, KeyError, ValueError) as e:  # it ended meanwhile
            raise Rejected(Reject.UNKNOWN_CONTAINER, f"container {cmd.container_id}: {e}") from None

    def _log_base(self, container_id: str) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((self.root / container_id / "log.base").read_text())
        return 0

    # --- images ---------------------------------------------------------------------------------------------------

    def _wait_for_image(self, cmd: StartContainer) -> None:
        w = _Waiting(cmd)
        self._waiting[cmd.container_id] = w
        w.task = self._spawn(self._pull_then_start(w))

    async def _pull_then_start(self, w: _Waiting) -> None:
        """Pull the container's image, again after a back-off while pulls fail (saying why, as kubelet's
        ErrImagePull and ImagePullBackOff), then start it. A start refused for good ends it, with the reason."""
        cid = w.command.container_id
        said: tuple[ev.WaitReason, str] | None = None
        told: asyncio.Future[None] | None = None  # the last report: each goes after the one before

        def say(reason: ev.WaitReason, message: str) -> None:
            nonlocal said, told
            if (reason, message) == said:  # a back-off at its longest is said once, not every time
                return
            said = (reason, message)
            wait = ev.ContainerWaiting(container_id=cid, node=self.config.node, reason=reason, message=message[:1000])
            told = self._report_after(told, wait)

        first, longest = self.config.pull_backoff_s
        failures = 0
        try:
            while True:
                image = w.command.spec.image
                if not failures:
                    say(ev.WaitReason.PULLING, f"pulling image {image}")
                try:
                    await self.pull_image(image, always=w.command.spec.image_pull_policy is PullPolicy.ALWAYS)
                    break
                except PullFailed as e:
                    failures += 1
                    delay = min(first * 2 ** (failures - 1), longest)
                    if failures == 1:
                        say(ev.WaitReason.ERR_IMAGE_PULL, f"image pull failed: {e}")
                    else:
                        say(ev.WaitReason.IMAGE_PULL_BACK_OFF, f"back-off {delay:g} s pulling image: {e}")
                    await asyncio.sleep(delay)
            async with self._one_at_a_time(cid):
                if self._waiting.get(cid) is not w:
                    return  # stopped or no longer this node's meanwhile
                try:
                    await self._start(w.command, pulled=True)
                except Rejected as r:
                    if r.code is Reject.DUPLICATE_ID:
                        return  # started by another way meanwhile
                    if r.code.retryable:  # fenced, its CPUs still held: the next sync's start is taken afresh
                        log.info("container %s: start after pull: %s (its node's sync starts it)", cid, r)
                        self._replies.pop(w.command.command_id, None)
                        return
                    self._ended_unstarted(cid, f"{r.code}: {r}", told)
                except Exception as e:  # a layer gone missing, say: it never ran, and the control plane hears why
                    log.exception("container %s: start after pull failed", cid)
                    self._ended_unstarted(cid, f"{Reject.START_FAILED}: {e!r}", told)
        finally:
            if self._waiting.get(cid) is w:
                del self._waiting[cid]

    def _report_after(self, before: asyncio.Future[None] | None, event: ev.Event) -> asyncio.Future[None]:
        """Report ``event`` in the background, once ``before`` (an earlier report) is done: in order."""

        async def report() -> None:
            if before is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(before)
            await self.emit(event)

        return self._spawn(report())

    def _ended_unstarted(self, cid: str, why: str, after: asyncio.Future[None] | None) -> None:
        ended = ev.ContainerExited(
            container_id=cid, node=self.config.node, exit_code=None, exited_ns=self.clock(), message=why[:1000]
        )
        self._report_after(after, ended)

    def cancel_waiting(self, container_id: str) -> bool:
        """Stop waiting for a container's image (it was stopped, or is no longer this node's)."""
        w = self._waiting.pop(container_id, None)
        if w is None:
            return False
        if w.task is not None:
            w.task.cancel()
        self._replies.pop(w.command.command_id, None)  # its start, sent again, is taken afresh
        return True

    def waiting(self) -> tuple[str, ...]:
        """The containers waiting for their image."""
        return tuple(sorted(self._waiting))

    async def pull_image(self, image: str, *, always: bool = False) -> ImageRecord:
        """Pull ``image`` (joining a pull of it under way), saying so in ImagePulling, then ImagePulled or
        ImagePullFailed. ``always``: ask the registry even when the image is here (pulled again only if the
        name now points elsewhere). Raises PullFailed."""
        if self.puller is None:
            raise PullFailed(f"{image}: this node does not pull images")
        try:
            key = f"{parse_reference(image)}{' always' if always else ''}"
        except ValueError as e:
            raise PullFailed(str(e)) from None
        running = self._pulls.get(key)
        if running is None:
            running = asyncio.ensure_future(self._pull_image(image, always))
            self._pulls[key] = running
            running.add_done_callback(lambda _: self._pulls.pop(key, None))
        return await asyncio.shield(running)

    async def _pull_image(self, image: str, always: bool) -> ImageRecord:
        assert self.puller is not None
        node = self.config.node
        pulling = self._report_after(None, ev.ImagePulling(node=node, image=image))
        started = time.monotonic()
        try:
            record = await self.puller.pull(image, always=always)
        except (PullFailed, OSError, ValueError, LookupError) as e:  # ValueError: the store refused what came
            self._report_after(pulling, ev.ImagePullFailed(node=node, image=image, reason=str(e)[:1000]))
            raise PullFailed(str(e)) from None
        seconds = round(time.monotonic() - started, 3)
        pulled = ev.ImagePulled(node=node, image=image, image_id=record.id, seconds=seconds, size_bytes=record.size)
        self._report_after(pulling, pulled)
        self.images_changed.set()
        return record

    def images_in_use(self) -> frozenset[str]:
        """Ids of the images containers here were made from (ended ones too, until removed), and of those
        being started: image GC and removal keep them."""
        return frozenset(c.image_id for c in (*self.containers.values(), *self._starting.values()) if c.image_id)

    def _images_waited_for(self) -> frozenset[str]:
        """The names of the images containers here wait to start from (pulled, or being pulled): the store
        resolves them under its lock, so an image that lands meanwhile is kept too."""
        return frozenset(w.command.spec.image for w in self._waiting.values())

    @contextlib.asynccontextmanager
    async def _removing_images(self) -> AsyncIterator[frozenset[str]]:
        """While images are removed no start begins (each waits, then finds what is left)."""
        while not self._no_gc.is_set():
            await self._no_gc.wait()
        self._no_gc.clear()
        try:
            yield self.images_in_use()
        finally:
            self._no_gc.set()

    async def collect_images(self) -> list[str]:
        """Image GC (kubelet's): the ids removed. Starts wait only while images are being removed."""
        if not await asyncio.to_thread(self.images.over, self.config.image_gc_high_percent):
            return []
        async with self._removing_images() as in_use:
            removed = await asyncio.to_thread(
                self.images.collect,
                in_use,
                high_percent=self.config.image_gc_high_percent,
                low_percent=self.config.image_gc_low_percent,
                min_age_s=self.config.image_gc_min_age_s,
                names_in_use=self._images_waited_for(),
            )
        if removed:
            log.info("image GC removed %s", ", ".join(removed))
            self.images_changed.set()
        return removed

    async def remove_image(self, ref: str, force: bool = False) -> list[str]:
        """``docker rmi``; raises UnknownImage, or InUse for an image a container here was made from (or one
        a container waits to start from)."""
        async with self._removing_images() as in_use:
            waited_for = self._images_waited_for()
            removed = await asyncio.to_thread(self.images.remove, ref, in_use, force=force, names_in_use=waited_for)
        self.images_changed.set()
        return removed

    async def list_images(self) -> list[ImageEntry]:
        in_use = self.images_in_use()
        held = await asyncio.to_thread(self.images.held)
        return [
            ImageEntry(id=i.id, tags=i.tags, size_bytes=i.size, last_used_ns=i.last_used_ns, in_use=i.id in in_use)
            for i in held
        ]

    async def import_chunk(self, cmd: ImportChunk) -> Reply:
        """Take one piece of an image tarball; the last imports it. Pieces of one upload are taken one at a
        time, in order; a piece sent again (its answer was lost) is answered again, once it is done; one out of
        order ends the upload."""
        state = self._imports.get(cmd.import_id)
        if cmd.seq == 0 and state is None:
            await self.sweep_imports()
            private_dir(self._imports_dir)
            state = self._imports[cmd.import_id] = _Upload(self._imports_dir / f"{cmd.import_id}.tar")
        if state is None:
            return CommandRejected(command_id=cmd.command_id, code=Reject.INVALID_COMMAND, message="unknown import")
        async with state.lock:
            if cmd.seq == state.next - 1 and state.last_reply is not None:
                return state.last_reply  # sent again: the same answer
            if cmd.seq != state.next or state.done:
                await self._end_import(cmd.import_id)
                why = f"piece {cmd.seq} out of order (expected {state.next})"
                return CommandRejected(command_id=cmd.command_id, code=Reject.INVALID_COMMAND, message=why)
            state.next += 1
            state.size += len(cmd.data)
            state.touched = time.monotonic()
            if state.size > self.images.max_bytes:
                await self._end_import(cmd.import_id)
                why = f"the tarball is over {self.images.max_bytes} bytes"
                return CommandRejected(command_id=cmd.command_id, code=Reject.INVALID_IMAGE, message=why)
            await asyncio.to_thread(_append, state.path, cmd.data)
            if not cmd.last:
                state.last_reply = CommandAccepted(command_id=cmd.command_id)
                return state.last_reply
            try:
                record = await asyncio.to_thread(self.images.import_tar, state.path)
            except (ValueError, OSError) as e:  # InvalidImage, or a tarball that is not one
                reply: Reply = CommandRejected(command_id=cmd.command_id, code=Reject.INVALID_IMAGE, message=str(e))
            else:
                self.images_changed.set()
                reply = ImageImported(command_id=cmd.command_id, image_id=record.id, tags=record.tags)
            finally:
                await asyncio.to_thread(state.path.unlink, missing_ok=True)
            state.last_reply = reply
            return reply

    @property
    def _imports_dir(self) -> Path:
        return self.root.parent / "imports"

    async def _end_import(self, import_id: uuid.UUID) -> None:
        state = self._imports.pop(import_id, None)
        if state is not None:
            await asyncio.to_thread(state.path.unlink, missing_ok=True)

    async def sweep_imports(self) -> None:
        """Drop uploads not heard of for ten minutes (a finished one after a minute: it is kept only to answer
        its last piece again). An earlier run's files go when this one starts (``recover``)."""
        now = time.monotonic()
        for import_id, state in list(self._imports.items()):
            if now - state.touched > (60.0 if state.done else IMPORT_IDLE_S) and not state.lock.locked():
                await self._end_import(import_id)

    # --- exits ------------------------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        """Run ``coro`` as a task the service cancels and awaits when it closes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _watch(self, c: _Container) -> None:
        async def watch() -> None:
            status = await self.runtime.wait(c.id)
            await self._exited(c, status or ExitStatus(code=None))

        c.watcher = asyncio.ensure_future(watch())
        self._tasks.add(c.watcher)
        c.watcher.add_done_callback(self._tasks.discard)

    async def _exited(self, c: _Container, status: ExitStatus) -> None:
        c.state = lifecycle.transition(c.state, Op.EXIT)
        c.released = asyncio.ensure_future(self._teardown(c))  # before any await: a remove waits for it
        if (c.command.spec.qos or QoS.LS).exclusive:
            await self._rebalance()  # its CPUs return to the pools
        await c.released
        if c.started_report is not None:
            with contextlib.suppress(Exception):  # reported in order: started (if it could be), then exited
                await asyncio.shield(c.started_report)
        await self.emit(
            ev.ContainerExited(
                container_id=c.id,
                node=self.config.node,
                exit_code=status.code,
                exited_ns=self.clock(),
                signal=status.signal,
                oom_killed=status.oom_killed,
            )
        )
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            (c.bundle / "exit.reported").touch()

    # --- restart safety -------------------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Re-adopt the containers of an earlier run of this service, without restarting any: running ones
        are watched again; exits recorded while the service was down are reported with their codes; a
        container whose monitor died is reported with an unknown exit code (and killed if it still runs)."""
        if self.cgroups is not None:
            node_cgroup = f"{self.config.cgroup_root}/{self.config.node}"
            await asyncio.to_thread(self.cgroups.limit_pids, node_cgroup, self.config.node_pids_max)
        # An earlier run's image uploads cannot be resumed (their pieces' answers went with it).
        await asyncio.to_thread(shutil.rmtree, self._imports_dir, ignore_errors=True)
        for bundle in sorted(p for p in self.root.iterdir() if p.is_dir()):
            try:
                cmd = _start_decoder.decode((bundle / "command.json").read_bytes())
            except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
                shutil.rmtree(bundle, ignore_errors=True)  # never got as far as being created
                continue
            if (bundle / "exit.reported").exists():
                continue
            c = _Container(cmd, bundle, f"{self.config.cgroup_root}/{self.config.node}/{cmd.container_id}")
            c.cpus = self._own_cpus(cmd)
            try:
                c.image_id = (bundle / "image-id").read_text().strip() or None
            except FileNotFoundError:
                c.image_id = self.images.image_id(cmd.spec.image)
            self._remember(cmd.command_id, CommandAccepted(command_id=cmd.command_id))
            monitor_alive = self.runtime.adopt(c.id, bundle)
            recorded = self.runtime.exit_status(c.id)
            status = await self.runtime.status(c.id)
            c.state = lifecycle.adopted(status)
            self.containers[c.id] = c
            if recorded is not None:
                await self._exited(c, recorded)
            elif monitor_alive and status == "running":
                c.pid = _pid(bundle)
                if self.cgroups is not None:
                    with contextlib.suppress(CgroupError, OSError, ValueError):
                        c.settings = await asyncio.to_thread(self.cgroups.read, c.cgroup)
                self._watch(c)  # adopted, untouched
            elif monitor_alive:
                self._watch(c)  # created or exiting: the monitor will record the code
                if status == "created":
                    with contextlib.suppress(RuntimeError_):
                        await self.runtime.kill(c.id, 9)
            else:
                if status in ("running", "created"):
                    with contextlib.suppress(RuntimeError_):
                        await self.runtime.kill(c.id, 9)  # an orphan: no code or logs will ever come
                await self._exited(c, ExitStatus(code=None))
        await self._rebalance()

    async def rotate_logs(self, max_bytes: int) -> None:
        """Rotate the log of every running container that has grown past ``max_bytes`` (one old file kept); the
        files are looked at and counted on a thread."""
        live = [(c.id, c.bundle) for c in self._live()]
        await asyncio.to_thread(self._rotate, live, max_bytes)

    def _rotate(self, live: list[tuple[str, Path]], max_bytes: int) -> None:
        for cid, bundle in live:
            try:
                current = self.runtime.logs(cid)
                if current.stat().st_size > max_bytes:
                    older = current.with_name(current.name + ".1")
                    if older.exists():  # about to be replaced: its lines leave for good
                        (bundle / "log.base").write_text(str(self._log_base(cid) + _count_lines(older)))
                    self.runtime.rotate_logs(cid)
            except (OSError, RuntimeError_) as e:  # gone meanwhile, or its monitor busy: the next sweep tries again
                log.debug("container %s: %s", cid, e)

    def share_pool_cpus(self) -> int:
        """The CPUs LS containers share now: the node's, less exclusive and reserved ones."""
        return len(self._pools().ls) if self.config.cpus else (os.cpu_count() or 1)

    def bandwidth(self) -> list[tuple[str, ContainerSpec, CpuSettings]]:
        """Each running container's spec and cgroup settings, as the CPU Burst loop reads them."""
        return [
            (cid, c.command.spec, c.settings)
            for cid, c in self.containers.items()
            if c.state is State.RUNNING and c.settings is not None
        ]

    async def set_bandwidth(
        self, container_id: str, quota_us: int, burst_us: int, seen: tuple[int | None, int, int | None]
    ) -> CpuSettings | None:
        """Give a running container this CFS quota and burst (written in an order the kernel accepts), if its
        (quota, burst, CPU limit) is still ``seen``; the settings it had, or None if nothing was written."""
        async with self.cgroup_writes:
            c = self.containers.get(container_id)
            if c is None or c.settings is None or c.state is not State.RUNNING:
                return None
            old = c.settings
            if (old.quota_us, old.burst_us, c.command.spec.cpu_limit_millis) != seen:
                return None  # changed meanwhile (an update, a resize): the next round decides again
            try:
                new = msgspec.structs.replace(old, quota_us=quota_us, burst_us=burst_us)
                if self.cgroups is not None:
                    await asyncio.to_thread(self.cgroups.apply, c.cgroup, new, old)
            except (ValueError, CgroupError) as e:
                log.warning("container %s: cannot set quota %d burst %d: %s", container_id, quota_us, burst_us, e)
                return None
            c.settings = new
            return old

    def stats_paths(self) -> dict[str, StatsPaths]:
        """The telemetry files of each running container."""
        if self.cgroups is None:
            return {}
        return {
            cid: self.cgroups.stats_paths(c.cgroup) for cid, c in self.containers.items() if c.state is State.RUNNING
        }

    async def settle(self) -> None:
        """Wait until the commands under way now are done (later ones are not waited for)."""
        for lock, _ in list(self._locks.values()):
            async with lock:
                pass

    def older_than(self, epoch: int) -> set[str]:
        """The live containers started by a command of an epoch before ``epoch``."""
        return {c.id for c in self._live() if c.command.epoch < epoch}

    def at_most_one(self) -> list[str]:
        """The running containers whose spec asks for at most one copy."""
        return [c.id for c in self._live() if c.command.spec.at_most_one and c.state is State.RUNNING]

    def kept(self, container_id: str) -> bool:
        """Whether anything of the container is on this node (a bundle: running, ended or being set up)."""
        return (self.root / container_id).exists()

    def running(self) -> tuple[str, ...]:
        return tuple(sorted(cid for cid, c in self.containers.items() if c.state not in lifecycle.TERMINAL))

    async def close(self) -> None:
        """Stop watching (containers keep running under their monitors)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _pid(bundle: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((bundle / "pidfile").read_text())
    return 0


def _count_lines(path: Path) -> int:
    """Newlines in ``path``, read a megabyte at a time."""
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count
