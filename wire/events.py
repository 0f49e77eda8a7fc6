"""The event vocabulary: past-tense, frozen, tagged Structs.

An event's payload holds only what happened. Where and when it was stored (position, stream, version, event
id, occurred/recorded times, correlation and causation ids) is the envelope the store adds.

Schema evolution: a new field gets a default; an existing field never changes type.
"""

from __future__ import annotations

import enum
import typing
from typing import Annotated

import msgspec

from wire import checks
from wire.burst import BurstConfig
from wire.ids import ContainerId, NodeName, ServiceId
from wire.pss import Enforce
from wire.resources import CpuMillis, Resources
from wire.spec import ContainerSpec, HostPath, ImageRef, QoS, SeccompProfile, ServiceSpec
from wire.topology import CpuId, Topology

Cpuset = tuple[CpuId, ...]
Epoch = Annotated[int, msgspec.Meta(ge=0)]
Label = Annotated[str, msgspec.Meta(max_length=253)]
Images = Annotated[tuple[ImageRef, ...], msgspec.Meta(max_length=4096)]
# Who asked, on the events a request causes: an API principal's name (api.tokens); "" when the control
# plane did it of itself (a service replacing a replica, say).
Actor = Annotated[str, msgspec.Meta(max_length=64)]
HostPaths = Annotated[tuple[HostPath, ...], msgspec.Meta(max_length=256)]
SeccompProfiles = Annotated[tuple[SeccompProfile, ...], msgspec.Meta(max_length=256)]


class _Event(msgspec.Struct, frozen=True, gc=False, tag_field="type", forbid_unknown_fields=False, kw_only=True):
    """Base of every event; the tag is the class name. ``wire.codec.decode_event`` checks ids and node names
    of events that cross a process boundary (a per-event ``__post_init__`` would tax the log's replay)."""


# --- nodes -------------------------------------------------------------------------------------------------


class NodeRegistered(_Event, frozen=True, tag=True):
    node: NodeName
    topology: Topology
    capacity: Resources
    epoch: Epoch
    labels: dict[Label, Label] = {}
    # Set when a declared topology is mapped onto fewer real CPUs (a test node): declared CPU → real CPU.
    cpu_map: dict[CpuId, CpuId] = {}
    # What the node can run, so that a submission no node would run is refused: the images it holds (as
    # ``wire.spec.image_name`` spells them; None when it did not say) and the host paths it lets containers mount.
    images: Images | None = None
    host_mounts: HostPaths = ()
    reserved_cpus: Cpuset = ()  # kept for the system: never handed to containers, outside every pool
    seccomp_profiles: SeccompProfiles = ()  # what it offers beyond RuntimeDefault (which every node runs)
    pod_security: Enforce = Enforce.PRIVILEGED  # the Pod Security Standard its containers must meet
    pulls: bool = False  # it pulls an image a container needs and it lacks


class NodeImagesChanged(_Event, frozen=True, tag=True):
    """The node's image store changed (an import): what it holds now."""

    node: NodeName
    images: Images


class ImagePulling(_Event, frozen=True, tag=True):
    """A node began to pull an image (asked to, or to start a container that needs it)."""

    node: NodeName
    image: ImageRef


class ImagePulled(_Event, frozen=True, tag=True):
    """A node pulled an image from its registry."""

    node: NodeName
    image: ImageRef  # as it was asked for
    image_id: Annotated[str, msgspec.Meta(pattern="^sha256:[a-f0-9]{64}$")]
    seconds: Annotated[float, msgspec.Meta(ge=0)]
    size_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0  # its layers as the registry sent them


class ImagePullFailed(_Event, frozen=True, tag=True):
    """A node could not pull an image: why, in words a user acts on (``manifest unknown``, ``unauthorized``)."""

    node: NodeName
    image: ImageRef
    reason: Annotated[str, msgspec.Meta(max_length=1000)]


class NodeLost(_Event, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch
    last_seen_ns: int = 0


class NodeRecovered(_Event, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch


class NodeCordoned(_Event, frozen=True, tag=True):
    node: NodeName
    reason: str = ""
    actor: Actor = ""


class NodeUncordoned(_Event, frozen=True, tag=True):
    node: NodeName
    actor: Actor = ""


class NodeDrained(_Event, frozen=True, tag=True):
    node: NodeName
    actor: Actor = ""


# --- containers --------------------------------------------------------------------------------------------


class ContainerSubmitted(_Event, frozen=True, tag=True):
    container_id: ContainerId
    spec: ContainerSpec
    service_id: ServiceId | None = None
    idempotency_key: str | None = None
    replaces: ContainerId | None = None  # a container that ended and that this one takes the place of
    restarts: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0  # restarts in its chain (for the back-off)
    actor: Actor = ""


class RunnerUp(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A node that was ranked and not chosen, with its score."""

    node: NodeName
    score: float


class ContainerScheduled(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName
    epoch: Epoch
    qos: QoS
    cpuset: Cpuset = ()  # exclusive CPUs (LSE/LSR); empty means the node's shared pool
    numa_nodes: tuple[int, ...] = ()
    resources: Resources = Resources()  # what the placement reserved on the node
    score: float = 0.0
    reason: str = ""  # why this node, for `history`
    cpus_reason: str = ""  # why these CPUs: bind policy, NUMA strategy and policy, what the pick spans
    runners_up: Annotated[tuple[RunnerUp, ...], msgspec.Meta(max_length=8)] = ()  # the next best, best first
    # To replay the decision: the log position of the snapshot it read, its seed, and how many placements of the
    # same evaluation (the append's correlation id) came before it in the batch.
    snapshot_position: int = 0
    seed: int = 0
    batch_index: int = 0


class ContainerResized(_Event, frozen=True, tag=True):
    """A live container's CPU request and limit changed in place (``docker update``, Kubernetes' in-place
    resize): its node's allocation follows, and the node changes the cgroup files."""

    container_id: ContainerId
    node: NodeName
    cpu_request_millis: CpuMillis
    cpu_limit_millis: CpuMillis | None
    resources: Resources  # what it now holds on the node
    actor: Actor = ""


class ContainerUnschedulable(_Event, frozen=True, tag=True):
    container_id: ContainerId
    nodes_total: int
    reasons: dict[str, int] = {}  # reason → how many nodes it excluded
    message: str = ""


class ContainerStarted(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName
    pid: int
    started_ns: int


class WaitReason(enum.StrEnum):
    """Why a placed container has not started yet, in Kubernetes' words."""

    PULLING = "Pulling"  # its node is pulling the image
    ERR_IMAGE_PULL = "ErrImagePull"  # the pull failed; it is tried again after a back-off
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"  # waiting out that back-off


class ContainerWaiting(_Event, frozen=True, tag=True):
    """Its node holds it but cannot start it yet, and says why (cleared when it starts or ends)."""

    container_id: ContainerId
    node: NodeName
    reason: WaitReason
    message: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class ContainerExited(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName
    exit_code: int | None  # None: unknowable (say so rather than invent one)
    exited_ns: int
    signal: int | None = None
    oom_killed: bool = False
    message: str = ""  # why, when it never ran (e.g. the node refused to start it)


class ContainerStopRequested(_Event, frozen=True, tag=True):
    container_id: ContainerId
    grace_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    reason: str = ""
    actor: Actor = ""


class ContainerStopped(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName | None = None  # None: it was stopped before it was placed
    exit_code: int | None = None
    stopped_ns: int = 0


class ContainerRemoved(_Event, frozen=True, tag=True):
    """An ended container is forgotten: its view leaves the state, its node drops its logs and files."""

    container_id: ContainerId
    actor: Actor = ""


class ContainerLost(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName
    reason: str = ""


# --- services ----------------------------------------------------------------------------------------------


class ServiceCreated(_Event, frozen=True, tag=True):
    service_id: ServiceId
    spec: ServiceSpec
    actor: Actor = ""


class ServiceScaled(_Event, frozen=True, tag=True):
    service_id: ServiceId
    replicas_from: int
    replicas_to: int
    actor: Actor = ""


class ServiceDeleted(_Event, frozen=True, tag=True):
    service_id: ServiceId
    actor: Actor = ""


# --- CPU ---------------------------------------------------------------------------------------------------


class ContainerThrottled(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName
    throttled_ratio: float  # throttled periods / periods over the sampling window


class ContainerUnthrottled(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName
    throttled_ratio: float


class CpuBurstSet(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName
    burst_us: int
    reason: str = ""  # the policy that set it, and a clamp to the quota if there was one


class CfsQuotaScaled(_Event, frozen=True, tag=True):
    container_id: ContainerId
    node: NodeName
    from_us: int
    to_us: int
    reason: str = ""
    burst_us: int | None = None  # the burst it changed with (it follows a quota it is clamped to), if it did
    burst_reason: str = ""


class BurstPolicyChanged(_Event, frozen=True, tag=True):
    """The cluster's CPU Burst configuration, whole, as it is from now on."""

    config: BurstConfig
    actor: Actor = ""


Event = (
    NodeRegistered
    | NodeImagesChanged
    | NodeLost
    | NodeRecovered
    | NodeCordoned
    | NodeUncordoned
    | NodeDrained
    | ContainerSubmitted
    | ContainerScheduled
    | ContainerResized
    | ContainerUnschedulable
    | ContainerStarted
    | ContainerExited
    | ContainerStopRequested
    | ContainerStopped
    | ContainerLost
    | ContainerRemoved
    | ServiceCreated
    | ServiceScaled
    | ServiceDeleted
    | ContainerThrottled
    | ContainerUnthrottled
    | CpuBurstSet
    | CfsQuotaScaled
    | BurstPolicyChanged
    | ImagePulling
    | ImagePulled
    | ImagePullFailed
    | ContainerWaiting
)

EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in typing.get_args(Event)}
ID_CHECKS: dict[type, checks.IdChecks] = {cls: checks.id_checks(cls) for cls in EVENT_TYPES.values()}
