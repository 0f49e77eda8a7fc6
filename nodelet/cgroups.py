"""The nodelet's cgroup layer: what a container's CPU, cpuset, memory and pids limits are, and how they reach
the kernel on cgroup v1 (cpu and cpuacct mounted apart or together) and on cgroup v2.

Owns: ``CpuSettings`` and their derivation from a ``ContainerSpec`` (Kubernetes' mapping), cpulist syntax,
the v1/v2 file mapping, the order of writes (the kernel rejects a CPU burst above the quota, so the plan never
lets it see one; on v1 the same for memory+swap, kept equal to the memory limit: no swap, as the OCI config
asks), layout detection from ``/proc/self/mountinfo``, and the ``Cgroups`` shell that creates,
writes, reads and removes cgroup directories. Everything above ``Cgroups`` is pure.

Does not own: moving tasks into cgroups (runc does), the CPU Burst policy (it only chooses ``burst_us`` and
quotas), telemetry sampling (it only gets ``stats_paths``). May import ``wire`` only.
"""

from __future__ import annotations

import enum
import errno
import os
import time
from collections.abc import Iterable
from typing import Final, Literal

import msgspec

from wire.spec import ContainerSpec, QoS, derive_qos

# The controllers a container is limited by; cpuacct is v1's CPU usage counter (v2 has it in cpu.stat).
CONTROLLERS: Final = ("cpu", "cpuacct", "cpuset", "memory", "pids")
# What a v2 parent must enable in cgroup.subtree_control for its children to get these files.
V2_CONTROLLERS: Final = ("cpu", "cpuset", "memory", "pids")

MIN_SHARES: Final = 2
MAX_SHARES: Final = 262_144
MIN_WEIGHT: Final = 1
MAX_WEIGHT: Final = 10_000
DEFAULT_SHARES: Final = 1024
DEFAULT_PERIOD_US: Final = 100_000
MIN_PERIOD_US: Final = 1_000
MAX_PERIOD_US: Final = 1_000_000
MIN_QUOTA_US: Final = 1_000
# v1 reports "no memory limit" as LONG_MAX rounded down to a page; any value this large means unlimited.
_V1_MEMORY_UNLIMITED_FLOOR: Final = 2**62
_MAX_CPU_ID: Final = 65_535

DEFAULT_MOUNTINFO: Final = "/proc/self/mountinfo"


class CgroupError(Exception):
    """A cgroup operation failed. ``file`` is the path involved, ``value`` what was being written (if anything),
    ``errno`` the kernel's error number (if any)."""

    def __init__(self, message: str, *, file: str | None = None, value: str | None = None, errno: int | None = None):
        super().__init__(message)
        self.file = file
        self.value = value
        self.errno = errno


# --- cpulists --------------------------------------------------------------------------------------------------


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Kernel list syntax → sorted unique ids: "0-2,5" → (0, 1, 2, 5); "" → (). Raises ValueError."""
    ids: set[int] = set()
    stripped = text.strip()
    if not stripped:
        return ()
    for part in stripped.split(","):
        low, sep, high = part.partition("-")
        try:
            first = _cpu_id(low)
            last = _cpu_id(high) if sep else first
        except ValueError:
            raise ValueError(f"cpulist {text!r}: {part!r} is not a number or a range a-b") from None
        if last < first:
            raise ValueError(f"cpulist {text!r}: range {part!r} runs backwards")
        ids.update(range(first, last + 1))
    return tuple(sorted(ids))


def _cpu_id(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(text)
    value = int(text)
    if value > _MAX_CPU_ID:
        raise ValueError(text)
    return value


def format_cpulist(ids: Iterable[int]) -> str:
    """Ids → kernel list syntax with ranges: (0, 1, 2, 5) → "0-2,5"; () → ""."""
    unique = sorted(set(ids))
    if unique and (unique[0] < 0 or unique[-1] > _MAX_CPU_ID):
        raise ValueError(f"cpulist: ids must be within 0..{_MAX_CPU_ID}, got {unique[0]}..{unique[-1]}")
    parts: list[str] = []
    i = 0
    while i < len(unique):
        j = i
        while j + 1 < len(unique) and unique[j + 1] == unique[j] + 1:
            j += 1
        parts.append(str(unique[i]) if i == j else f"{unique[i]}-{unique[j]}")
        i = j + 1
    return ",".join(parts)


# --- settings ----------------------------------------------------------------------------------------------------


class CpuSettings(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A container's cgroup limits in v1 units. The defaults are a fresh cgroup's (no limits, inherit cpusets).

    ``quota_us`` None is no CFS quota; ``burst_us`` must not exceed a set quota (the kernel's rule; without a
    quota the kernel keeps a burst but it has no effect). ``cpus``/``mems`` None inherit the parent's; set, they
    are normalised to the kernel's list syntax ("1,0,2" → "0-2")."""

    shares: int = DEFAULT_SHARES
    quota_us: int | None = None
    period_us: int = DEFAULT_PERIOD_US
    burst_us: int = 0
    cpus: str | None = None
    mems: str | None = None
    memory_bytes: int | None = None
    pids_max: int | None = None

    def __post_init__(self) -> None:
        if not MIN_SHARES <= self.shares <= MAX_SHARES:
            raise ValueError(f"shares: {self.shares} is outside {MIN_SHARES}..{MAX_SHARES}")
        if not MIN_PERIOD_US <= self.period_us <= MAX_PERIOD_US:
            raise ValueError(f"period_us: {self.period_us} is outside {MIN_PERIOD_US}..{MAX_PERIOD_US}")
        if self.quota_us is not None and self.quota_us < MIN_QUOTA_US:
            raise ValueError(f"quota_us: {self.quota_us} is below the kernel's minimum of {MIN_QUOTA_US}")
        if self.burst_us < 0:
            raise ValueError(f"burst_us: {self.burst_us} is negative")
        if self.quota_us is not None and self.burst_us > self.quota_us:
            raise ValueError(f"burst_us: {self.burst_us} is above quota_us {self.quota_us} (the kernel refuses it)")
        for field in ("cpus", "mems"):
            text = getattr(self, field)
            if text is None:
                continue
            try:
                ids = parse_cpulist(text)
            except ValueError as exc:
                raise ValueError(f"{field}: {exc}") from None
            if not ids:
                raise ValueError(f"{field}: empty; use None to inherit the parent's")
            msgspec.structs.force_setattr(self, field, format_cpulist(ids))
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ValueError(f"memory_bytes: {self.memory_bytes} must be positive, or None for no limit")
        if self.pids_max is not None and self.pids_max < 0:
            raise ValueError(f"pids_max: {self.pids_max} is negative")


class BurstClamp(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A requested CPU burst was lowered to what the kernel accepts; callers report it (event or metric)."""

    requested_us: int
    granted_us: int
    reason: str


def settings_for(
    spec: ContainerSpec,
    cpuset: tuple[int, ...],
    mems: tuple[int, ...],
    pids_max: int,
    burst_us: int = 0,
) -> tuple[CpuSettings, BurstClamp | None]:
    """Kubernetes' CPU mapping plus Corral's placement: shares from the request (BE gets the minimum), a quota
    from the limit, none for exclusive (LSE/LSR) containers, which get their cpuset instead. ``cpuset``/``mems``
    empty mean inherit. ``burst_us`` is clamped to the quota (0 without one); the clamp is returned."""
    qos = spec.qos or derive_qos(spec.cpu_request_millis, spec.cpu_limit_millis, spec.memory_limit_bytes)
    if burst_us < 0:
        raise ValueError(f"burst_us: {burst_us} is negative")
    if qos.exclusive and len(set(cpuset)) != spec.exclusive_cpus:
        raise ValueError(f"cpuset: a {qos} container needs {spec.exclusive_cpus} exclusive CPUs, got {cpuset}")
    shares = shares_for(spec.cpu_request_millis)
    if qos is QoS.BE:
        shares = MIN_SHARES
    limit = spec.cpu_limit_millis
    quota = None if qos.exclusive or limit is None else max(limit * DEFAULT_PERIOD_US // 1000, MIN_QUOTA_US)
    granted = 0 if quota is None else min(burst_us, quota)
    clamp = None
    if granted != burst_us:
        reason = "no CPU quota to burst above" if quota is None else f"above the CPU quota of {quota}us"
        clamp = BurstClamp(requested_us=burst_us, granted_us=granted, reason=reason)
    settings = CpuSettings(
        shares=shares,
        quota_us=quota,
        burst_us=granted,
        cpus=format_cpulist(cpuset) if cpuset else None,
        mems=format_cpulist(mems) if mems else None,
        memory_bytes=spec.memory_limit_bytes,
        pids_max=pids_max,
    )
    return settings, clamp


def shares_for(request_millis: int) -> int:
    """Kubernetes' mapping of a CPU request to cpu.shares: 1024 a CPU, within the kernel's bounds."""
    return min(max(request_millis * 1024 // 1000, MIN_SHARES), MAX_SHARES)


def shares_to_weight(shares: int) -> int:
    """v1 cpu.shares → v2 cpu.weight (Kubernetes' and runc's formula): 2 → 1, 1024 → 39, 262144 → 10000."""
    shares = min(max(shares, MIN_SHARES), MAX_SHARES)
    return 1 + ((shares - 2) * 9999) // 262_142


def weight_to_shares(weight: int) -> int:
    """The smallest shares with this weight (the mapping is many-to-one, so v2 cannot give back the original)."""
    weight = min(max(weight, MIN_WEIGHT), MAX_WEIGHT)
    return 2 + ((weight - 1) * 262_142 + 9998) // 9999


# --- the files of each cgroup version ----------------------------------------------------------------------------


class Inherit(enum.Enum):
    """A value copied from the parent cgroup's file of the same name when written (an empty v1 cpuset admits
    no task, so "inherit" must be spelled out on v1)."""

    FROM_PARENT = "from parent"


FROM_PARENT: Final = Inherit.FROM_PARENT

Value = str | Inherit
Write = tuple[str, Value]  # (file name, value), e.g. ("cpu.cfs_quota_us", "50000")


class _Files(msgspec.Struct, frozen=True, gc=False):
    """The file names of one cgroup version, by role. v2 keeps quota and period in one file."""

    mems: str
    cpus: str
    shares: str
    period: str | None
    quota: str
    burst: str
    memory: str
    pids: str


_V1_PERIOD: Final = "cpu.cfs_period_us"
_V1: Final = _Files(
    "cpuset.mems",
    "cpuset.cpus",
    "cpu.shares",
    _V1_PERIOD,
    "cpu.cfs_quota_us",
    "cpu.cfs_burst_us",
    "memory.limit_in_bytes",
    "pids.max",
)
_V2: Final = _Files(
    "cpuset.mems", "cpuset.cpus", "cpu.weight", None, "cpu.max", "cpu.max.burst", "memory.max", "pids.max"
)
_BURST_FILES: Final = frozenset({_V1.burst, _V2.burst})
# v1 memory+swap: must never be below memory.limit_in_bytes (EINVAL). runc sets it at create (OCI swap).
_V1_MEMSW: Final = "memory.memsw.limit_in_bytes"


def v1_files(s: CpuSettings) -> dict[str, Value]:
    """What each v1 file holds for these settings."""
    return {
        _V1.mems: s.mems if s.mems is not None else FROM_PARENT,
        _V1.cpus: s.cpus if s.cpus is not None else FROM_PARENT,
        _V1.shares: str(s.shares),
        _V1_PERIOD: str(s.period_us),
        _V1.quota: str(s.quota_us) if s.quota_us is not None else "-1",
        _V1.burst: str(s.burst_us),
        _V1.memory: str(s.memory_bytes) if s.memory_bytes is not None else "-1",
        _V1.pids: str(s.pids_max) if s.pids_max is not None else "max",
    }


def v2_files(s: CpuSettings) -> dict[str, Value]:
    """What each v2 file holds for these settings (an empty cpuset inherits the parent's on v2)."""
    return {
        _V2.mems: s.mems or "",
        _V2.cpus: s.cpus or "",
        _V2.shares: str(shares_to_weight(s.shares)),
        _V2.quota: f"{s.quota_us if s.quota_us is not None else 'max'} {s.period_us}",
        _V2.burst: str(s.burst_us),
        _V2.memory: str(s.memory_bytes) if s.memory_bytes is not None else "max",
        _V2.pids: str(s.pids_max) if s.pids_max is not None else "max",
    }


def plan_writes(layout: CgroupLayout, old: CpuSettings | None, new: CpuSettings) -> list[Write]:
    """The writes that take a cgroup from ``old`` to ``new``, in an order the kernel accepts.

    ``old`` None means the current values are unknown (a new cgroup, or one to repair): every file is written,
    and the burst is zeroed before the quota is set, since any burst already there could exceed the new quota.
    Otherwise only changed files are written, and the burst goes first unless it would not fit under the old
    quota (then the quota is raised first). cpusets come first: on v1 a task cannot join an empty one.
    On v1, memory+swap follows the memory limit (raised before it, lowered after it; unlimited first when
    unknown), since the kernel refuses memory above memory+swap.
    """
    f = _V1 if layout.version == 1 else _V2
    want = v1_files(new) if layout.version == 1 else v2_files(new)
    have = None if old is None else v1_files(old) if layout.version == 1 else v2_files(old)

    def changed(*names: str | None) -> list[Write]:
        return [(n, want[n]) for n in names if n is not None and (have is None or have[n] != want[n])]

    if old is None:
        bandwidth = [(f.burst, "0"), *changed(f.period, f.quota)]
        if new.burst_us:
            bandwidth.append((f.burst, want[f.burst]))
    elif old.quota_us is not None and new.burst_us > old.quota_us:
        bandwidth = changed(f.period, f.quota, f.burst)
    else:
        bandwidth = changed(f.burst, f.period, f.quota)
    memory = changed(f.memory)
    if layout.version == 1 and old is None:
        limit = want[f.memory]
        memory = [(_V1_MEMSW, "-1"), *memory, *([(_V1_MEMSW, limit)] if limit != "-1" else [])]
    elif layout.version == 1 and old is not None and memory:
        was = old.memory_bytes
        raising = new.memory_bytes is None or (was is not None and new.memory_bytes > was)
        memory = [(_V1_MEMSW, want[f.memory]), *memory] if raising else [*memory, (_V1_MEMSW, want[f.memory])]
    return [*changed(f.mems, f.cpus, f.shares), *bandwidth, *memory, *changed(f.pids)]


def settings_from_files(version: Literal[1, 2], files: dict[str, str]) -> CpuSettings:
    """Decode file contents (keyed by file name, as read) into settings. A missing burst file reads as 0.

    v1 cpusets read as the kernel holds them (an inherited cpuset shows the parent's CPUs); v2 shares come back
    as the smallest shares with the same weight; memory limits come back page-rounded by the kernel."""

    def number(name: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise CgroupError(f"{name}: unexpected content {text!r}", file=name) from None

    def limit(name: str, unlimited: str) -> int | None:
        text = files[name]
        return None if text == unlimited else number(name, text)

    if version == 1:
        quota = number(_V1.quota, files[_V1.quota])
        memory = number(_V1.memory, files[_V1.memory])
        return CpuSettings(
            shares=number(_V1.shares, files[_V1.shares]),
            quota_us=None if quota < 0 else quota,
            period_us=number(_V1_PERIOD, files[_V1_PERIOD]),
            burst_us=number(_V1.burst, files.get(_V1.burst, "0")),
            cpus=files[_V1.cpus] or None,
            mems=files[_V1.mems] or None,
            memory_bytes=None if memory < 0 or memory >= _V1_MEMORY_UNLIMITED_FLOOR else memory,
            pids_max=limit(_V1.pids, "max"),
        )
    quota_text, _, period_text = files[_V2.quota].partition(" ")
    return CpuSettings(
        shares=weight_to_shares(number(_V2.shares, files[_V2.shares])),
        quota_us=None if quota_text == "max" else number(_V2.quota, quota_text),
        period_us=number(_V2.quota, period_text),
        burst_us=number(_V2.burst, files.get(_V2.burst, "0")),
        cpus=files[_V2.cpus] or None,
        mems=files[_V2.mems] or None,
        memory_bytes=limit(_V2.memory, "max"),
        pids_max=limit(_V2.pids, "max"),
    )


# --- layout ------------------------------------------------------------------------------------------------------


class CgroupLayout(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Where the hierarchies are. ``controllers`` maps each of CONTROLLERS to its mount point (all the same on
    v2; cpu and cpuacct the same when co-mounted); ``mounts`` lists every cgroup mount, because runc creates a
    container's cgroup in all of them and its parents must be removed from all of them."""

    version: Literal[1, 2]
    controllers: dict[str, str]
    mounts: tuple[str, ...]

    def directory(self, controller: str, path: str) -> str:
        """The directory of cgroup ``path`` (absolute, e.g. "/corral/n1/c1") in ``controller``'s hierarchy."""
        return _join(self.controllers[controller], path)

    def file(self, name: str, path: str) -> str:
        """The path of a controller file ("cpu.shares") of cgroup ``path``; the prefix names the controller."""
        return os.path.join(self.directory(name.partition(".")[0], path), name)

    def hierarchies(self) -> tuple[str, ...]:
        """The distinct mount points of CONTROLLERS, in a stable order."""
        return tuple(dict.fromkeys(self.controllers[c] for c in CONTROLLERS))


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> CgroupLayout:
    """Find the cgroup hierarchies in ``/proc/<pid>/mountinfo`` text.

    v1 if any of CONTROLLERS is on a v1 hierarchy (then all must be: split v1/v2 setups are refused), else v2 if
    a cgroup2 filesystem is mounted (the one at /sys/fs/cgroup if several). Whether a v2 mount really offers the
    controllers is in its cgroup.controllers, which ``detect_layout`` checks."""
    v1: dict[str, str] = {}
    v2: list[str] = []
    mounts: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            sep = fields.index("-", 6)
            mount_point, fstype, super_options = _unescape(fields[4]), fields[sep + 1], fields[sep + 3]
        except (ValueError, IndexError):
            raise CgroupError(f"mountinfo line {number} is malformed: {line!r}") from None
        if fstype == "cgroup":
            mounts.append(mount_point)
            for option in super_options.split(","):
                if option in CONTROLLERS:
                    v1.setdefault(option, mount_point)
        elif fstype == "cgroup2":
            mounts.append(mount_point)
            v2.append(mount_point)
    if v1:
        missing = [c for c in CONTROLLERS if c not in v1]
        if missing:
            raise CgroupError(
                f"cgroup v1 without a hierarchy for {', '.join(missing)} (controllers split between v1 and v2 "
                "are not supported)"
            )
        return CgroupLayout(version=1, controllers=v1, mounts=tuple(dict.fromkeys(mounts)))
    if v2:
        unified = "/sys/fs/cgroup" if "/sys/fs/cgroup" in v2 else v2[0]
        return CgroupLayout(
            version=2, controllers=dict.fromkeys(CONTROLLERS, unified), mounts=tuple(dict.fromkeys(mounts))
        )
    raise CgroupError("no cgroup filesystem is mounted (no 'cgroup' or 'cgroup2' entry in mountinfo)")


def _parts(path: str) -> list[str]:
    """The components of an absolute, normalised, non-root cgroup path; ValueError otherwise."""
    parts = path.split("/")
    if not path.startswith("/") or path == "/" or "\0" in path or any(p in ("", ".", "..") for p in parts[1:]):
        raise ValueError(f"cgroup path {path!r} must be absolute and normalised, like '/corral/n1/c1'")
    return parts[1:]


def _join(mount: str, path: str) -> str:
    return mount if path == "/" else os.path.join(mount, *_parts(path))


def _parent(path: str) -> str:
    return os.path.dirname(path) or "/"


# --- shell -------------------------------------------------------------------------------------------------------


class StatsPaths(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Files a telemetry sampler re-reads. v1: ``cpu_stat`` has throttled_time and burst_time in ns,
    ``cpu_usage`` is cpuacct.usage (ns, one number), ``memory_usage`` is memory.usage_in_bytes. v2: ``cpu_stat``
    has throttled_usec and burst_usec, ``cpu_usage`` is the same cpu.stat (key usage_usec), ``memory_usage`` is
    memory.current."""

    version: Literal[1, 2]
    cpu_stat: str
    cpu_usage: str
    memory_usage: str


def _read(file: str) -> str:
    try:
        with open(file, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise CgroupError(f"cannot read {file}: {_describe(exc)}", file=file, errno=exc.errno) from exc


_HINTS: Final = {
    ("cpuset.cpus", errno.EINVAL): " (CPUs must exist, be online and lie within the parent's cpuset)",
    ("cpuset.cpus", errno.ERANGE): " (no such CPU on this machine)",
    ("cpuset.mems", errno.EINVAL): " (memory nodes must exist and lie within the parent's cpuset)",
    ("cpu.cfs_burst_us", errno.EINVAL): " (burst must not exceed the quota)",
    ("cpu.cfs_quota_us", errno.EINVAL): " (quota must be at least 1000 and not below the burst)",
    ("cpu.max.burst", errno.EINVAL): " (burst must not exceed the quota)",
    ("cpu.max", errno.EINVAL): " (quota must be at least 1000 and not below the burst)",
    ("memory.limit_in_bytes", errno.EBUSY): " (usage is above the new limit and could not be reclaimed)",
    ("memory.max", errno.EBUSY): " (usage is above the new limit and could not be reclaimed)",
}


def _describe(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "?")
    return f"{os.strerror(exc.errno)} ({code})" if exc.errno else str(exc)


def _write(file: str, value: str) -> None:
    # O_TRUNC and no O_CREAT, as runc does: a missing file is an error, never a stray file.
    data = (value or "\n").encode("ascii")  # a zero-length write never reaches the kernel; a newline does
    try:
        fd = os.open(file, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        hint = _HINTS.get((os.path.basename(file), exc.errno or 0), "")
        raise CgroupError(
            f"cannot write {value!r} to {file}: {_describe(exc)}{hint}", file=file, value=value, errno=exc.errno
        ) from exc


class Cgroups:
    """Creates, configures, reads and removes cgroups over one layout. Paths are absolute cgroup paths
    ("/corral/<node>/<container>"), the same in every hierarchy, as runc's cgroupfs driver uses them."""

    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout

    def create(self, path: str) -> None:
        """Create ``path`` and its missing parents in every hierarchy; idempotent. On v1, each cpuset directory
        with an empty cpuset gets its parent's (or no task could join); on v2, each parent enables the
        controllers in cgroup.subtree_control so its children get the files."""
        parts = _parts(path)
        layout = self.layout
        for mount in layout.hierarchies():
            directory = mount
            for part in parts:
                if layout.version == 2:
                    self._enable_controllers(directory)
                directory = os.path.join(directory, part)
                try:
                    os.mkdir(directory)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise CgroupError(
                        f"cannot create {directory}: {_describe(exc)}", file=directory, errno=exc.errno
                    ) from exc
                if layout.version == 1 and mount == layout.controllers["cpuset"]:
                    self._inherit_cpuset(directory)

    def limit_pids(self, path: str, pids_max: int | None) -> None:
        """Create ``path`` and cap the processes of everything below it (a node's cap over all its containers,
        kubelet's podPidsLimit and system reserve in one); None lifts the cap."""
        self.create(path)
        _write(self.layout.file("pids.max", path), "max" if pids_max is None else str(pids_max))

    def apply(self, path: str, new: CpuSettings, old: CpuSettings | None = None) -> None:
        """Write ``new`` to the files of ``path`` as ``plan_writes`` orders it. ``old`` is what the files hold
        now, if known (only changes are written). Raises CgroupError naming the file and value on failure."""
        for name, value in plan_writes(self.layout, old, new):
            file = self.layout.file(name, path)
            text = value if isinstance(value, str) else _read(self.layout.file(name, _parent(path)))
            try:
                _write(file, text)
            except CgroupError as exc:
                # Without CPU burst (kernel < 5.14) there is no burst file, and a zero burst is already true;
                # without swap accounting there is no memsw file, and the memory limit alone applies.
                optional = (name in _BURST_FILES and text == "0") or name == _V1_MEMSW
                if not (exc.errno == errno.ENOENT and optional):
                    raise

    def read(self, path: str) -> CpuSettings:
        """The settings the files of ``path`` hold now (see ``settings_from_files`` for what round-trips)."""
        f = _V1 if self.layout.version == 1 else _V2
        files: dict[str, str] = {}
        for name in (f.mems, f.cpus, f.shares, f.period, f.quota, f.burst, f.memory, f.pids):
            if name is None:
                continue
            file = self.layout.file(name, path)
            if name in _BURST_FILES and not os.path.exists(file):
                continue
            files[name] = _read(file)
        return settings_from_files(self.layout.version, files)

    def remove(self, path: str, root: str = "/", busy_timeout_s: float = 1.0) -> None:
        """Remove ``path`` from every hierarchy, then its parents while they are empty, stopping below ``root``
        (an ancestor of ``path``, kept). Idempotent: missing directories are skipped. A leaf that is busy (its
        last tasks still exiting) is retried for up to ``busy_timeout_s``; a parent that is busy or not empty is
        in use by others and ends the climb quietly."""
        parts = _parts(path)
        kept = [] if root == "/" else _parts(root)
        if len(kept) >= len(parts) or parts[: len(kept)] != kept:
            raise ValueError(f"remove: root {root!r} is not an ancestor of {path!r}")
        for mount in self.layout.mounts:
            self._rmdir_retrying(_join(mount, path), busy_timeout_s)
            parent = _parent(path)
            while parent != root:
                directory = _join(mount, parent)
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
                        break
                    raise CgroupError(
                        f"cannot remove {directory}: {_describe(exc)}", file=directory, errno=exc.errno
                    ) from exc
                parent = _parent(parent)

    def stats_paths(self, path: str) -> StatsPaths:
        """The files telemetry reads for ``path``."""
        cpu_stat = self.layout.file("cpu.stat", path)
        if self.layout.version == 1:
            return StatsPaths(
                version=1,
                cpu_stat=cpu_stat,
                cpu_usage=self.layout.file("cpuacct.usage", path),
                memory_usage=self.layout.file("memory.usage_in_bytes", path),
            )
        return StatsPaths(
            version=2, cpu_stat=cpu_stat, cpu_usage=cpu_stat, memory_usage=self.layout.file("memory.current", path)
        )

    def _inherit_cpuset(self, directory: str) -> None:
        for name in ("cpuset.cpus", "cpuset.mems"):
            file = os.path.join(directory, name)
            if not _read(file):
                _write(file, _read(os.path.join(os.path.dirname(directory), name)))

    def _enable_controllers(self, directory: str) -> None:
        enabled = set(_read(os.path.join(directory, "cgroup.subtree_control")).split())
        missing = [c for c in V2_CONTROLLERS if c not in enabled]
        if missing:
            _write(os.path.join(directory, "cgroup.subtree_control"), " ".join(f"+{c}" for c in missing))

    @staticmethod
    def _rmdir_retrying(directory: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            try:
                os.rmdir(directory)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise CgroupError(
                        f"cannot remove {directory}: {_describe(exc)}"
                        + (" (tasks or child cgroups remain)" if exc.errno == errno.EBUSY else ""),
                        file=directory,
                        errno=exc.errno,
                    ) from exc
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)


def detect_layout(mountinfo: str = DEFAULT_MOUNTINFO) -> CgroupLayout:
    """This host's layout, from mountinfo; on v2, checks cgroup.controllers offers what containers need."""
    with open(mountinfo, encoding="utf-8") as fh:
        layout = parse_mountinfo(fh.read())
    if layout.version == 2:
        unified = layout.controllers["cpu"]
        available = set(_read(os.path.join(unified, "cgroup.controllers")).split())
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if missing:
            raise CgroupError(f"cgroup v2 at {unified} lacks the {', '.join(missing)} controller(s)")
    return layout
