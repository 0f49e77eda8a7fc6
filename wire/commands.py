"""Commands from the control plane to a nodelet, their replies, and the nodelet's own messages.

Every command carries a command id (the nodelet dedupes retries by it) and the fencing epoch of the node it
was sent to: a nodelet that re-registered under a newer epoch rejects commands of an older one.
"""

from __future__ import annotations

import enum
import functools
import uuid
from typing import Annotated

import msgspec

from wire import checks
from wire.burst import BurstConfig
from wire.events import ID_CHECKS, Cpuset, Epoch, Event, HostPaths, Images, SeccompProfiles
from wire.ids import ContainerId, NodeName
from wire.pss import Enforce, ProcessFacts
from wire.resources import CpuMillis, Resources
from wire.spec import ContainerSpec, ImageRef
from wire.topology import Topology


class _Message(msgspec.Struct, frozen=True, gc=False, tag_field="type", forbid_unknown_fields=False, kw_only=True):
    def __post_init__(self) -> None:
        checks.check_ids(self, _id_checks(type(self)))


class StartContainer(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    epoch: Epoch
    container_id: ContainerId
    spec: ContainerSpec
    cpuset: Cpuset = ()  # exclusive CPUs; empty: the node's shared pool for the spec's QoS
    numa_nodes: tuple[int, ...] = ()


class StopContainer(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    epoch: Epoch
    container_id: ContainerId
    grace_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0


class RemoveContainer(_Message, frozen=True, tag=True):
    """Drop an ended container's kept state on the node: its bundle, logs and exit record."""

    command_id: uuid.UUID
    epoch: Epoch
    container_id: ContainerId


class UpdateResources(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    epoch: Epoch
    container_id: ContainerId
    cpu_limit_millis: CpuMillis | None = None
    cpu_request_millis: CpuMillis | None = None  # shares follow it (Kubernetes' mapping)
    cpuset: Cpuset | None = None
    burst_us: Annotated[int, msgspec.Meta(ge=0)] | None = None


class GetLogs(_Message, frozen=True, tag=True):
    """Log lines of a container. ``since_line`` (an absolute line number, from ``LogsReply.next_line``) asks
    for what came after an earlier reply — how ``logs --follow`` polls; ``tail`` keeps only the last lines."""

    command_id: uuid.UUID
    container_id: ContainerId
    tail: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    since_line: Annotated[int, msgspec.Meta(ge=0)] | None = None


class AuditContainer(_Message, frozen=True, tag=True):
    """What the container's first process is, as its node reads it from /proc (see ``wire.pss``)."""

    command_id: uuid.UUID
    container_id: ContainerId


class AuditReply(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    facts: ProcessFacts


class PullImage(_Message, frozen=True, tag=True):
    """Pull an image from its registry into the node's store (answered once pulled, or why not)."""

    command_id: uuid.UUID
    image: ImageRef


class ListImages(_Message, frozen=True, tag=True):
    """What images the node holds, with sizes and last use (answered with ``ImagesReply``)."""

    command_id: uuid.UUID


ImageId = Annotated[str, msgspec.Meta(pattern="^sha256:[a-f0-9]{64}$")]


class ImageEntry(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    id: ImageId
    tags: tuple[ImageRef, ...] = ()
    size_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    last_used_ns: int = 0
    in_use: bool = False  # a container here was made from it: removal and image GC leave it


class ImagesReply(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    images: Annotated[tuple[ImageEntry, ...], msgspec.Meta(max_length=4096)] = ()


class RemoveImage(_Message, frozen=True, tag=True):
    """``docker rmi``: a name loses that name (the image goes with its last one); an id, or ``force``, removes
    the image and every name. Never one a container here was made from."""

    command_id: uuid.UUID
    image: ImageRef
    force: bool = False


IMPORT_CHUNK = 512 << 10  # bytes per chunk of an image tarball sent to a node (NATS' payload limit is 1 MiB)


class ImportChunk(_Message, frozen=True, tag=True):
    """One piece of an image tarball (a ``docker save`` or an OCI layout) sent to a node, in order; the last
    one imports it, and is answered with ``ImageImported`` or why not. Each is answered before the next goes."""

    command_id: uuid.UUID
    import_id: uuid.UUID
    seq: Annotated[int, msgspec.Meta(ge=0)]
    data: Annotated[bytes, msgspec.Meta(max_length=IMPORT_CHUNK)]
    last: bool = False


class ImageImported(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    image_id: ImageId
    tags: tuple[ImageRef, ...] = ()


class ConfigureBurst(_Message, frozen=True, tag=True):
    """The cluster's CPU Burst configuration, pushed when it changes (each sync carries it too)."""

    command_id: uuid.UUID
    config: BurstConfig


ContainerCommand = StartContainer | StopContainer | RemoveContainer | UpdateResources | GetLogs | AuditContainer
Command = ContainerCommand | ConfigureBurst | PullImage | ListImages | RemoveImage | ImportChunk


class CommandAccepted(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    duplicate: bool = False  # the command id was seen before; this is the first answer again


class Reject(enum.StrEnum):
    """Why a command, a registration or a report was refused; one vocabulary for nodelet and control plane."""

    STALE_EPOCH = "stale_epoch"  # sent for another epoch of the node: send again with the current one
    DUPLICATE_ID = "duplicate_id"  # the container is on the node already
    UNKNOWN_IMAGE = "unknown_image"
    IMPOSSIBLE_CPUSET = "impossible_cpuset"  # its CPUs are held (maybe by a container being killed) or absent
    INVALID_SPEC = "invalid_spec"
    MOUNT_NOT_ALLOWED = "mount_not_allowed"
    IMAGE_PULL_FAILED = "image_pull_failed"
    IMAGE_IN_USE = "image_in_use"  # a container on the node was made from it
    INVALID_IMAGE = "invalid_image"  # an imported tarball the store refuses
    POD_SECURITY = "pod_security"  # the container does not meet the Pod Security Standard the node enforces
    SECCOMP_NOT_ALLOWED = "seccomp_not_allowed"  # Unconfined where the node forbids it, or a profile it lacks
    START_FAILED = "start_failed"
    UNKNOWN_CONTAINER = "unknown_container"  # the node does not have it
    ILLEGAL_STATE = "illegal_state"
    INVALID_UPDATE = "invalid_update"
    UPDATE_FAILED = "update_failed"
    INVALID_COMMAND = "invalid_command"
    INTERNAL = "internal"
    INVALID_REGISTER = "invalid_register"
    NODE_UNREACHABLE = "node_unreachable"
    UNEXPECTED_REPLY = "unexpected_reply"
    NOT_OWNER = "not_owner"  # a report about a container the node does not hold in its current epoch
    FENCED = "fenced"  # cut off from the control plane, the node takes no start until it is heard again

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later, unchanged or at the node's current epoch."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {Reject.STALE_EPOCH, Reject.IMPOSSIBLE_CPUSET, Reject.INTERNAL, Reject.NODE_UNREACHABLE, Reject.FENCED}
)


class CommandRejected(_Message, frozen=True, tag=True):
    command_id: uuid.UUID | None
    code: Reject
    message: str


class LogsReply(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    lines: tuple[str, ...] = ()
    truncated: bool = False  # some asked-for lines are gone (rotated away) or were cut by ``tail``
    next_line: int = 0  # pass as ``since_line`` to get only what comes after
    more: bool = False  # the page is full: lines after ``next_line`` are there already (ask again at once)


Reply = CommandAccepted | CommandRejected | LogsReply | AuditReply | ImagesReply | ImageImported


# --- nodelet → control plane ---------------------------------------------------------------------------------


class Register(_Message, frozen=True, tag=True):
    node: NodeName
    topology: Topology
    capacity: Resources
    labels: dict[str, str] = {}
    cpu_map: dict[int, int] = {}
    images: Images | None = None
    host_mounts: HostPaths = ()
    reserved_cpus: Cpuset = ()  # kept for the system (kubelet's reservedSystemCPUs): never handed to containers
    seccomp_profiles: SeccompProfiles = ()  # beyond RuntimeDefault: Unconfined if allowed, localhost/<name>
    pod_security: Enforce = Enforce.PRIVILEGED
    pulls: bool = False  # it pulls missing images itself

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reserved_cpus:
            cpus = set(self.topology.cpus())
            if not set(self.reserved_cpus) <= cpus:
                raise ValueError(f"reserved_cpus: {sorted(set(self.reserved_cpus) - cpus)} are not in the topology")
            if len(set(self.reserved_cpus)) >= len(cpus):
                raise ValueError("reserved_cpus: every CPU reserved leaves none for containers")


class Registered(_Message, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch
    lease_s: float


class Heartbeat(_Message, frozen=True, tag=True):
    """Sent as a request: the answer (``HeartbeatReply``) says whether it renewed the node's lease."""

    node: NodeName
    epoch: Epoch
    seq: int
    sent_ns: int
    # How long before this beat the node last heard the control plane answer (by its own clock): a lease is
    # renewed by a round trip, so a node that can still send but no longer hear is lost like a silent one.
    unanswered_ns: Annotated[int, msgspec.Meta(ge=0)] = 0


class LeaseStatus(enum.StrEnum):
    RENEWED = "renewed"
    LOST = "lost"  # the node was declared lost: register again, kill what it no longer owns
    STALE = "stale"  # an older epoch than the registered one: register again
    UNKNOWN = "unknown"  # not registered with this control plane: register

    @property
    def reregister(self) -> bool:
        return self is not LeaseStatus.RENEWED


class HeartbeatReply(_Message, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch  # the node's epoch as the control plane knows it
    status: LeaseStatus


class SyncRequest(_Message, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch
    running: tuple[ContainerId, ...] = ()


class SyncReply(_Message, frozen=True, tag=True):
    """What the node must run (``desired``), and what it must stop, with its grace (``stopping``: a stop the
    node never got is carried out now); anything else it ran when it asked, it no longer owns."""

    node: NodeName
    epoch: Epoch
    desired: tuple[StartContainer, ...] = ()
    stopping: tuple[StopContainer, ...] = ()
    # Of its running containers, those the control plane holds as throttled: a restarted node's detector starts
    # from there, so it reports the end of a throttling it did not see begin.
    throttled: tuple[ContainerId, ...] = ()
    burst: BurstConfig | None = None  # the cluster's CPU Burst configuration (None: from a control plane without)


class ContainerSample(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One container's counters at one moment (array-like: samples are many and small)."""

    container_id: str
    usage_ns: int
    nr_periods: int
    nr_throttled: int
    throttled_ns: int
    nr_bursts: int
    burst_ns: int
    memory_bytes: int


class StatsSample(_Message, frozen=True, tag=True):
    node: NodeName
    at_ns: int
    node_cpu_busy_ns: int
    node_cpu_total_ns: int
    containers: tuple[ContainerSample, ...] = ()


class NodeEvent(_Message, frozen=True, tag=True):
    """An event a nodelet reports, sent as a request: the control plane appends it (deduplicating by
    ``event_id``, which stays the same across retries) and then acks."""

    node: NodeName
    event_id: uuid.UUID
    occurred_ns: int
    event: Event
    epoch: Epoch = 0  # the node's epoch when it sent it: a report of an older incarnation is refused

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.check_ids(self.event, ID_CHECKS[type(self.event)])  # the event crossed a process boundary too


class EventAck(_Message, frozen=True, tag=True):
    event_id: uuid.UUID


NodeMessage = Register | Heartbeat | SyncRequest | StatsSample | NodeEvent


@functools.cache
def _id_checks(cls: type) -> checks.IdChecks:
    return checks.id_checks(cls)


ControlReply = Registered | HeartbeatReply | SyncReply | EventAck | CommandRejected
