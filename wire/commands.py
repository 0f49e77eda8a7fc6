"""Commands from the control plane to a nodelet, their replies, and the nodelet's own messages.

Every command carries a command id (the nodelet dedupes retries by it) and the fencing epoch of the node it
was sent to: a nodelet that re-registered under a newer epoch rejects commands of an older one.
"""

from __future__ import annotations

import functools
import uuid
from typing import Annotated

import msgspec

from wire import checks
from wire.events import ID_CHECKS, Cpuset, Epoch, Event, HostPaths, Images
from wire.ids import ContainerId, NodeName
from wire.resources import CpuMillis, Resources
from wire.spec import ContainerSpec
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
    cpuset: Cpuset | None = None
    burst_us: Annotated[int, msgspec.Meta(ge=0)] | None = None


class GetLogs(_Message, frozen=True, tag=True):
    """Log lines of a container. ``since_line`` (an absolute line number, from ``LogsReply.next_line``) asks
    for what came after an earlier reply — how ``logs --follow`` polls; ``tail`` keeps only the last lines."""

    command_id: uuid.UUID
    container_id: ContainerId
    tail: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    since_line: Annotated[int, msgspec.Meta(ge=0)] | None = None


Command = StartContainer | StopContainer | RemoveContainer | UpdateResources | GetLogs


class CommandAccepted(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    duplicate: bool = False  # the command id was seen before; this is the first answer again


class CommandRejected(_Message, frozen=True, tag=True):
    command_id: uuid.UUID | None
    code: str  # machine-readable: stale_epoch, unknown_image, invalid_spec, ...
    message: str


class LogsReply(_Message, frozen=True, tag=True):
    command_id: uuid.UUID
    lines: tuple[str, ...] = ()
    truncated: bool = False  # some asked-for lines are gone (rotated away) or were cut by ``tail``
    next_line: int = 0  # pass as ``since_line`` to get only what comes after


Reply = CommandAccepted | CommandRejected | LogsReply


# --- nodelet → control plane ---------------------------------------------------------------------------------


class Register(_Message, frozen=True, tag=True):
    node: NodeName
    topology: Topology
    capacity: Resources
    labels: dict[str, str] = {}
    cpu_map: dict[int, int] = {}
    images: Images | None = None
    host_mounts: HostPaths = ()


class Registered(_Message, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch
    lease_s: float


class Heartbeat(_Message, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch
    seq: int
    sent_ns: int


class SyncRequest(_Message, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch
    running: tuple[ContainerId, ...] = ()


class SyncReply(_Message, frozen=True, tag=True):
    node: NodeName
    epoch: Epoch
    desired: tuple[StartContainer, ...] = ()


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

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.check_ids(self.event, ID_CHECKS[type(self.event)])  # the event crossed a process boundary too


class EventAck(_Message, frozen=True, tag=True):
    event_id: uuid.UUID


NodeMessage = Register | Heartbeat | SyncRequest | StatsSample | NodeEvent


@functools.cache
def _id_checks(cls: type) -> checks.IdChecks:
    return checks.id_checks(cls)


ControlReply = Registered | SyncReply | EventAck | CommandRejected
