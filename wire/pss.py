"""A running container judged against the Kubernetes Pod Security Standards (baseline and restricted), from facts
its node read about the process itself (``/proc/<pid>``: capabilities, no_new_privs, seccomp mode, user,
namespaces, mounts) rather than from what Corral meant to set. Pure: ``ProcessFacts`` in, one verdict per control
out.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from wire.spec import BASELINE_CAPABILITIES, SECCOMP_UNCONFINED, ContainerSpec

# Capability numbers (linux/capability.h) of the caps the standards name.
CAPS: Final = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11, "NET_ADMIN": 12,
    "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18,
    "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24,
    "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip
RESTRICTED_CAPS: Final = frozenset({"NET_BIND_SERVICE"})
# What a container mounts of its own (not of the host's files): its root, kernel file systems, its tmpfs.
OWN_FS: Final = frozenset({"overlay", "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"})


class Mounted(msgspec.Struct, frozen=True, gc=False):
    point: str
    fs_type: str
    root: str  # the path within its file system (a bind mount's source there)
    read_only: bool


class ProcessFacts(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What a node read of a container's first process."""

    pid: int
    uid: int
    gid: int
    cap_effective: int
    cap_bounding: int
    no_new_privs: bool
    seccomp_mode: int  # 0: none, 1: strict, 2: a filter
    host_namespaces: tuple[str, ...]  # namespaces it shares with the node (pid, net, ipc, uts, mnt, cgroup, user)
    mounts: tuple[Mounted, ...]
    apparmor: str = ""  # its AppArmor label ("" where the node has no AppArmor)
    selinux: str = ""


class Level(enum.StrEnum):
    BASELINE = "baseline"
    RESTRICTED = "restricted"


class Verdict(msgspec.Struct, frozen=True, gc=False):
    level: Level
    control: str
    ok: bool
    detail: str


def cap_names(mask: int) -> frozenset[str]:
    return frozenset(name for name, bit in CAPS.items() if mask >> bit & 1)


def host_paths(facts: ProcessFacts) -> list[Mounted]:
    """Mounts of the host's own files: a bind mount of a file system that is not the container's own, outside
    the kernel's trees (where the runtime masks paths with the host's /dev/null)."""
    kernel = ("/proc/", "/sys/", "/dev/")
    return [
        m
        for m in facts.mounts
        if m.point != "/" and not m.point.startswith(kernel) and (m.fs_type not in OWN_FS or m.root != "/")
    ]  # a bind of a tmpfs or an overlay of the host's has a root below its file system's


def judge(facts: ProcessFacts) -> list[Verdict]:
    """Every baseline control, then the restricted ones on top, in the standards' order."""
    b, r = Level.BASELINE, Level.RESTRICTED
    shared = set(facts.host_namespaces)
    caps = cap_names(facts.cap_effective) | cap_names(facts.cap_bounding)
    extra = sorted(caps - BASELINE_CAPABILITIES)
    hostish = host_paths(facts)
    masked = any(m.point in ("/proc/kcore", "/proc/keys", "/proc/timer_list") for m in facts.mounts)
    host_ns = sorted(shared & {"net", "pid", "ipc"})
    out = [
        Verdict(b, "HostProcess", True, "not a Windows host process"),
        Verdict(b, "Host Namespaces", not host_ns, f"shares {', '.join(host_ns)} with the node" if host_ns
                else "own network, PID and IPC namespaces"),
        Verdict(b, "Privileged Containers", "SYS_ADMIN" not in caps,
                "has CAP_SYS_ADMIN" if "SYS_ADMIN" in caps else "not privileged"),
        Verdict(b, "Capabilities", not extra, f"beyond the baseline: {', '.join(extra)}" if extra
                else f"{len(caps)} capabilities, all within the baseline"),
        Verdict(b, "HostPath Volumes", not hostish, "mounts of the node's files: " + ", ".join(
            f"{m.root} at {m.point}" for m in hostish) if hostish else "none"),
        Verdict(b, "Host Ports", "net" not in shared, "its own network namespace: no host port" if "net" not in shared
                else "shares the node's network"),
        Verdict(b, "AppArmor", facts.apparmor != "unconfined", f"profile {facts.apparmor!r}" if facts.apparmor
                else "the node has no AppArmor"),
        Verdict(b, "SELinux", True, facts.selinux or "the node has no SELinux"),
        Verdict(b, "/proc Mount Type", masked, "kernel paths masked" if masked else "/proc unmasked"),
        Verdict(b, "Seccomp", facts.seccomp_mode == 2, "a seccomp filter" if facts.seccomp_mode == 2
                else "no seccomp filter (Unconfined)"),
        Verdict(b, "Sysctls", True, "no sysctls set"),
        Verdict(r, "Volume Types", not hostish, "no host paths" if not hostish else f"{len(hostish)} host path(s)"),
        Verdict(r, "Privilege Escalation", facts.no_new_privs, "no_new_privs set" if facts.no_new_privs
                else "may gain privileges (no_new_privs unset)"),
        Verdict(r, "Running as Non-root", facts.uid != 0, f"uid {facts.uid}"),
        Verdict(r, "Running as Non-root user", facts.uid != 0, f"uid {facts.uid}, gid {facts.gid}"),
        Verdict(r, "Seccomp (restricted)", facts.seccomp_mode == 2, "RuntimeDefault or a node profile"
                if facts.seccomp_mode == 2 else "Unconfined"),
        Verdict(r, "Capabilities (restricted)", not (caps - RESTRICTED_CAPS),
                f"keeps {', '.join(sorted(caps - RESTRICTED_CAPS))}" if caps - RESTRICTED_CAPS
                else "all dropped but NET_BIND_SERVICE"),
    ]  # fmt: skip
    return out


class Enforce(enum.StrEnum):
    """What a node admits (the Pod Security Admission levels): anything Corral runs, or only containers that
    meet the baseline or the restricted standard."""

    PRIVILEGED = ""  # no more than Corral's own defaults and the node's allow-lists
    BASELINE = "baseline"
    RESTRICTED = "restricted"


def admission(spec: ContainerSpec, level: Enforce, uid: int | None = None) -> list[str]:
    """The controls of ``level`` a container with ``spec`` would fail, predicted from the spec (``uid``: the
    user it resolved to on the node, when known). Empty: admitted."""
    if level is Enforce.PRIVILEGED:
        return []
    failed = []
    if spec.seccomp_profile == SECCOMP_UNCONFINED:
        failed.append("Seccomp: Unconfined")
    if spec.mounts:
        failed.append("HostPath Volumes: " + ", ".join(m.source for m in spec.mounts))
    if level is Enforce.RESTRICTED:
        named_root = spec.user is not None and spec.user.partition(":")[0] in ("0", "root")
        if not spec.run_as_non_root or named_root or uid == 0:
            failed.append("Running as Non-root: set run_as_non_root (and a user other than root)")
        caps = spec.capabilities.applied(BASELINE_CAPABILITIES) if spec.capabilities else BASELINE_CAPABILITIES
        if caps - RESTRICTED_CAPS:
            failed.append("Capabilities: drop ALL (NET_BIND_SERVICE may be added back)")
    return failed
