"""What a user asks for: container and service specs, QoS classes and placement policies.

Specs are validated when built or decoded. Messages name the field and the reason, so the API can return
them as they are ("cpu_request_millis: LSE needs a whole number of CPUs, got 1500m").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Annotated

import msgspec

from wire import checks
from wire.checks import schema_pattern
from wire.ids import Name
from wire.resources import MAX_MEMORY_BYTES, CpuMillis, MemoryBytes, format_cpu

MIN_CONTAINER_MEMORY = 4 * 1024 * 1024

# Lengths are checked on decode; patterns in __post_init__ (see wire.checks for why).
LabelKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=253, extra_json_schema=schema_pattern(checks.LABEL_KEY))
]
LabelValue = Annotated[str, msgspec.Meta(max_length=63, extra_json_schema=schema_pattern(checks.LABEL_VALUE))]
Labels = Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=64)]
EnvName = Annotated[str, msgspec.Meta(min_length=1, max_length=256, extra_json_schema=schema_pattern(checks.ENV_NAME))]
Arg = Annotated[str, msgspec.Meta(max_length=32768)]
ImageRef = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=255,
        description="e.g. 'busybox' or 'repo/name:tag'",
        extra_json_schema=schema_pattern(checks.IMAGE_REF),
    ),
]
# An absolute path with no '..' segment and no NUL (what Mount checks), as a pattern for the document.
_SEGMENT = r"(?:[^/\x00.][^/\x00]*|\.(?:[^/\x00.][^/\x00]*)?|\.\.[^/\x00]+)?"
HostPath = Annotated[
    str, msgspec.Meta(min_length=1, max_length=4096, extra_json_schema={"pattern": f"^(?:/{_SEGMENT})+$"})
]


# A container's seccomp profile, as Kubernetes names them: the runtime's default (default-deny), none at all, or
# a profile file installed on the node (``localhost/<name>``).
SECCOMP_RUNTIME_DEFAULT = "RuntimeDefault"
SECCOMP_UNCONFINED = "Unconfined"
SECCOMP_LOCALHOST = "localhost/"
SECCOMP_NAME = r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?"
SeccompProfile = Annotated[
    str,
    msgspec.Meta(
        pattern=f"^(?:RuntimeDefault|Unconfined|localhost/{SECCOMP_NAME})$",
        description="RuntimeDefault, Unconfined (where the node allows it) or localhost/<profile on the node>",
    ),
]


def image_name(ref: str) -> str:
    """The name a node knows an image by: ``alpine`` -> ``alpine:latest``, ``docker.io/library/alpine:3.19`` ->
    ``alpine:3.19``; an image id (``sha256:...``) stays as it is."""
    if ref.startswith("sha256:"):
        return ref
    if ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            return ref.removeprefix(prefix)
    return ref


def host_mount_allowed(source: str, allowed_roots: Iterable[str]) -> bool:
    """Whether ``source`` is one of ``allowed_roots`` or lies under one."""
    path = PurePosixPath(source)
    return any(path == PurePosixPath(root) or PurePosixPath(root) in path.parents for root in allowed_roots)


class QoS(enum.StrEnum):
    """Koordinator's QoS classes."""

    LSE = "LSE"  # latency-sensitive exclusive: a cpuset shared with nobody
    LSR = "LSR"  # latency-sensitive reserved: an exclusive cpuset that BE may share
    LS = "LS"  # latency-sensitive: the shared pool, CFS quota, eligible for CPU Burst
    BE = "BE"  # best effort: the BE pool, lowest shares

    @property
    def exclusive(self) -> bool:
        return self in (QoS.LSE, QoS.LSR)


class CpuBindPolicy(enum.StrEnum):
    DEFAULT = "Default"  # FullPCPUs for exclusive cpusets
    FULL_PCPUS = "FullPCPUs"  # whole physical cores, preferred (single CPUs when whole cores cannot cover it)
    SPREAD_BY_PCPUS = "SpreadByPCPUs"  # one logical CPU per physical core first
    FULL_PCPUS_ONLY = "FullPCPUsOnly"  # whole physical cores, required: a node that cannot give them is refused


class CpuExclusivePolicy(enum.StrEnum):
    """Koordinator's exclusive policy among containers that set the same one: no two PCPULevel containers share a
    physical core (their hyperthread siblings stay out of each other's way); no two NUMANodeLevel containers
    share a NUMA node. A node that cannot keep them apart is refused."""

    NONE = "None"
    PCPU_LEVEL = "PCPULevel"
    NUMA_NODE_LEVEL = "NUMANodeLevel"


# Node labels that set a node's cpuset policies (Koordinator's names): the bind policy a container that asks for
# none gets there (FullPCPUsOnly: every exclusive container there gets whole cores, or does not go there), and
# the order NUMA nodes and sockets are filled in (MostAllocated packs, LeastAllocated spreads).
NODE_CPU_BIND_POLICY = "node.koordinator.sh/cpu-bind-policy"
NODE_NUMA_STRATEGY = "node.koordinator.sh/numa-allocate-strategy"


class NumaPolicy(enum.StrEnum):
    NONE = "None"
    BEST_EFFORT = "BestEffort"
    RESTRICTED = "Restricted"
    SINGLE_NUMA_NODE = "SingleNUMANode"


class RestartPolicy(enum.StrEnum):
    NEVER = "Never"
    ON_FAILURE = "OnFailure"
    ALWAYS = "Always"


# Restart back-off, as Kubernetes' CrashLoopBackOff: 10 s, doubling per restart, at most 5 min; a run of 10 min
# resets it.
BACKOFF_FIRST_NS = 10 * 10**9
BACKOFF_MAX_NS = 300 * 10**9
BACKOFF_RESET_NS = 600 * 10**9


def restart_backoff(restarts: int, ran_ns: int) -> tuple[int, int]:
    """For a container that ended after ``ran_ns`` of running, ``restarts`` restarts into its chain: the delay
    before it is replaced, and the restart count its replacement carries."""
    n = 0 if ran_ns >= BACKOFF_RESET_NS else min(restarts, 16)
    return min(BACKOFF_FIRST_NS << n, BACKOFF_MAX_NS), n + 1


def restarts_on_exit(policy: RestartPolicy, exit_code: int | None, in_service: bool) -> bool:
    """Whether a container that exited by itself (not asked to stop) is replaced: a service keeps its replica
    count whatever the policy; a standalone container per its policy (an unknown exit code is a failure)."""
    if in_service or policy is RestartPolicy.ALWAYS:
        return True
    return policy is RestartPolicy.ON_FAILURE and exit_code != 0


# Capabilities a container may be given: the Pod Security Standards' baseline set. Anything else (SYS_ADMIN,
# NET_ADMIN, ...) is refused: no container is privileged.
BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
     "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)  # fmt: skip
CapabilityName = Annotated[str, msgspec.Meta(pattern="^[A-Z_]{2,32}$")]


class Capabilities(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, kw_only=True):
    """Kubernetes' securityContext.capabilities: drop some (or ``ALL``) of the defaults, add from the baseline
    set. Names without ``CAP_``."""

    drop: Annotated[tuple[CapabilityName, ...], msgspec.Meta(max_length=64)] = ()
    add: Annotated[tuple[CapabilityName, ...], msgspec.Meta(max_length=64)] = ()

    def __post_init__(self) -> None:
        if checks.is_trusted():
            return
        refused = sorted(set(self.add) - BASELINE_CAPABILITIES)
        if refused:
            raise ValueError(f"capabilities: {', '.join(refused)} may not be added (only the baseline set may)")
        unknown = sorted(set(self.drop) - BASELINE_CAPABILITIES - {"ALL", "NET_RAW"})
        if unknown:
            raise ValueError(f"capabilities: {', '.join(unknown)} is not a capability a container has")

    def applied(self, defaults: frozenset[str]) -> frozenset[str]:
        """The set a container gets from ``defaults``."""
        kept = frozenset() if "ALL" in self.drop else defaults - set(self.drop)
        return kept | set(self.add)


_ID = r"(?:[0-9]{1,10}|[a-z_][a-z0-9_.-]{0,31})"
UserSpec = Annotated[str, msgspec.Meta(pattern=f"^{_ID}(?::{_ID})?$", description="uid[:gid] or name[:group]")]
MIN_EPHEMERAL = 1 << 20  # a container's writable layer and /tmp: at least 1 MiB
KERNEL_PATHS = ("/proc", "/sys", "/dev")  # the host's kernel interfaces: no container mounts them


class PullPolicy(enum.StrEnum):
    """When a node pulls the image, as Kubernetes' imagePullPolicy (Docker's ``--pull always|missing|never``)."""

    ALWAYS = "Always"  # ask the registry at every start; pull only when the tag moved (layers already held stay)
    IF_NOT_PRESENT = "IfNotPresent"  # pull when the node lacks it
    NEVER = "Never"  # only nodes that hold it run it


class Mount(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, kw_only=True):
    """A host path bind-mounted into the container; a node runs it only if its allow-list covers the source."""

    source: HostPath
    destination: HostPath
    read_only: bool = True

    def __post_init__(self) -> None:
        if checks.is_trusted():
            return
        for field, path in (("source", self.source), ("destination", self.destination)):
            if not path.startswith("/") or "/../" in f"{path}/" or "\0" in path:
                raise ValueError(f"mounts: {field} {path!r} must be an absolute path without '..'")
        source = PurePosixPath(self.source)
        if source == PurePosixPath("/"):
            raise ValueError("mounts: source '/' would hand the container the host's whole file system")
        if any(source == PurePosixPath(k) or PurePosixPath(k) in source.parents for k in KERNEL_PATHS):
            raise ValueError(f"mounts: source {self.source!r} is a kernel interface of the host; it is never mounted")


# --- CPU Burst: Koordinator's names and defaults (wire.burst has the cluster's and nodes' strategies) -------


class BurstPolicy(enum.StrEnum):
    NONE = "none"  # neither; earlier changes are undone (burst 0, quota back to its base)
    CPU_BURST_ONLY = "cpuBurstOnly"  # cfs burst only
    CFS_QUOTA_BURST_ONLY = "cfsQuotaBurstOnly"  # dynamic quota only
    AUTO = "auto"  # both

    @property
    def burst(self) -> bool:
        return self in (BurstPolicy.CPU_BURST_ONLY, BurstPolicy.AUTO)

    @property
    def scales_quota(self) -> bool:
        return self in (BurstPolicy.CFS_QUOTA_BURST_ONLY, BurstPolicy.AUTO)


Percent = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
QuotaPercent = Annotated[int, msgspec.Meta(ge=100, le=100_000)]  # a ceiling below the base quota means nothing
PeriodSeconds = Annotated[int, msgspec.Meta(ge=-1, le=86_400 * 365)]  # -1: no time budget
ThresholdPercent = Annotated[int, msgspec.Meta(ge=1, le=100)]


class BurstSettings(
    msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A container's own settings (in its spec): each field set overrides the node's."""

    policy: BurstPolicy | None = None
    cpu_burst_percent: Percent | None = None
    cfs_quota_burst_percent: QuotaPercent | None = None
    cfs_quota_burst_period_seconds: PeriodSeconds | None = None


class ContainerSpec(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, kw_only=True):
    """A container to run. ``qos`` left empty is derived as Kubernetes maps pod classes onto Koordinator's:
    Guaranteed (CPU request == limit, whole CPUs, memory limit set) → LSR, no CPU request and no limits → BE,
    anything else → LS."""

    name: Name
    image: ImageRef
    # As ``docker run``: ``command`` replaces the image's Cmd, ``entrypoint`` its Entrypoint (None: the
    # image's; () clears it, as --entrypoint ""). Kubernetes calls them args and command.
    command: Annotated[tuple[Arg, ...], msgspec.Meta(max_length=1024)] = ()
    entrypoint: Annotated[tuple[Arg, ...], msgspec.Meta(max_length=1024)] | None = None
    working_dir: HostPath | None = None  # None: the image's WorkingDir, else /
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    env: Annotated[dict[EnvName, Arg], msgspec.Meta(max_length=1024)] = {}
    cpu_request_millis: CpuMillis = 0
    cpu_limit_millis: CpuMillis | None = None
    memory_limit_bytes: MemoryBytes | None = None
    qos: QoS | None = None
    cpu_bind_policy: CpuBindPolicy = CpuBindPolicy.DEFAULT
    cpu_exclusive_policy: CpuExclusivePolicy = CpuExclusivePolicy.NONE
    numa_policy: NumaPolicy = NumaPolicy.NONE
    node_selector: Labels = {}
    restart_policy: RestartPolicy = RestartPolicy.NEVER
    labels: Labels = {}
    read_only_root: bool = False
    mounts: Annotated[tuple[Mount, ...], msgspec.Meta(max_length=64)] = ()
    # Never two copies at once (Nomad's stop_after_client_disconnect): its node stops it when cut off from the
    # control plane for longer than it can be sure to keep its lease, before a replacement can start elsewhere.
    at_most_one: bool = False
    burst: BurstSettings | None = None  # CPU Burst settings of its own, over its node's (LS with a CPU limit only)
    seccomp_profile: SeccompProfile = SECCOMP_RUNTIME_DEFAULT
    # Who its process runs as, as Docker's --user and Kubernetes' runAsUser/runAsGroup: uid, uid:gid, name or
    # name:group (names from the image's /etc/passwd and /etc/group). None: the image's User, else root.
    user: UserSpec | None = None
    run_as_non_root: bool = False  # refuse to start it as uid 0 (Kubernetes' runAsNonRoot)
    capabilities: Capabilities | None = None  # None: Docker's defaults less NET_RAW and MKNOD
    # A user namespace of its own (Kubernetes' hostUsers: false): root inside is an unprivileged uid outside.
    user_namespace: bool = False
    # Its writable layer and /tmp together (Kubernetes' ephemeral-storage limit): past it, writes fail with
    # ENOSPC in the container alone. None: the node's default.
    ephemeral_storage_bytes: Annotated[int, msgspec.Meta(ge=MIN_EPHEMERAL, le=MAX_MEMORY_BYTES)] | None = None

    def __post_init__(self) -> None:
        if checks.is_trusted():
            if self.qos is not None:
                return  # a spec from the log was checked, and its QoS resolved, when it was submitted
        else:
            checks.dns1123_label("name", self.name)
            checks.image_ref("image", self.image)
            checks.env_names("env", self.env)
            wd = self.working_dir
            if wd is not None and (not wd.startswith("/") or "/../" in f"{wd}/" or "\0" in wd):
                raise ValueError(f"working_dir: {wd!r} must be an absolute path without '..'")
            checks.labels("node_selector", self.node_selector)
            checks.labels("labels", self.labels)
        req, lim, mem = self.cpu_request_millis, self.cpu_limit_millis, self.memory_limit_bytes
        if lim is not None and lim == 0:
            raise ValueError("cpu_limit_millis: must be positive, or left out for no limit")
        if lim is not None and req > lim:
            raise ValueError(f"cpu_request_millis: request {format_cpu(req)} is above the limit {format_cpu(lim)}")
        if mem is not None and mem < MIN_CONTAINER_MEMORY:
            raise ValueError(f"memory_limit_bytes: {mem} is below the minimum of 4Mi")
        qos = self.qos
        if qos is None:
            qos = derive_qos(req, lim, mem)
            msgspec.structs.force_setattr(self, "qos", qos)
        if qos.exclusive:
            if lim is None or req != lim:
                raise ValueError(f"cpu_limit_millis: {qos} needs a CPU limit equal to the request")
            if req == 0 or req % 1000:
                raise ValueError(f"cpu_request_millis: {qos} needs a whole number of CPUs, got {format_cpu(req)}")
        elif self.cpu_bind_policy is not CpuBindPolicy.DEFAULT:
            raise ValueError(f"cpu_bind_policy: only LSE and LSR get exclusive CPUs; this container is {qos}")
        elif self.cpu_exclusive_policy is not CpuExclusivePolicy.NONE:
            raise ValueError(f"cpu_exclusive_policy: only LSE and LSR get exclusive CPUs; this container is {qos}")
        if self.run_as_non_root and self.user is not None and self.user.partition(":")[0] in ("0", "root"):
            raise ValueError(f"user: {self.user!r} is root, and run_as_non_root asks for anyone but root")
        if self.burst is not None and (qos is not QoS.LS or lim is None):
            why = f"this container is {qos}" if qos is not QoS.LS else "this one has none"
            raise ValueError(f"burst: CPU Burst is for LS containers with a CPU limit; {why}")

    @property
    def pullable(self) -> bool:
        """Whether a node that lacks the image may pull it: a name, not a bare image id, and a policy that
        pulls."""
        return self.image_pull_policy is not PullPolicy.NEVER and not self.image.startswith("sha256:")

    @property
    def exclusive_cpus(self) -> int:
        """How many CPUs the container holds exclusively (0 outside LSE/LSR)."""
        return self.cpu_request_millis // 1000 if self.qos is not None and self.qos.exclusive else 0


def derive_qos(request: int, limit: int | None, memory: int | None) -> QoS:
    if limit is not None and request == limit and request % 1000 == 0 and memory is not None:
        return QoS.LSR
    if request == 0 and limit is None and memory is None:
        return QoS.BE
    return QoS.LS


class ServiceSpec(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, kw_only=True):
    """N replicas of one container template, spread across nodes."""

    name: Name
    replicas: Annotated[int, msgspec.Meta(ge=0, le=10_000)]
    template: ContainerSpec

    def __post_init__(self) -> None:
        if not checks.is_trusted():
            checks.dns1123_label("name", self.name)
