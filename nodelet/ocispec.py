"""The OCI runtime config of a container: secure by default, built by a pure function.

Defaults (Docker's and Kubernetes' baseline, tightened): no new privileges; Docker's default capabilities
minus NET_RAW and MKNOD; a seccomp profile that denies what Docker's default profile denies; masked and
read-only kernel paths; a pids limit; fresh pid, network, ipc, uts and mount namespaces (never the host's);
no host mounts unless the spec asks and the node's allow-list covers them. CPU and memory limits go into
``linux.resources`` so runc applies them at create; CPU burst does not (runc 1.1 ignores it) and is written
by the cgroup layer between create and start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wire.spec import ContainerSpec, host_mount_allowed

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAPABILITIES = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# What Docker's default seccomp profile leaves out of its allow-list (for a container without extra
# capabilities): kernel modules, clocks, keyrings, namespaces, mounts, tracing, BPF, reboot and friends.
DENIED_SYSCALLS = (
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "_sysctl",
    "sysfs",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
EPERM = 1
ENOSYS = 38


class MountNotAllowed(ValueError):
    pass


def seccomp_profile() -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            # clone may not make namespaces (Docker: only with CAP_SYS_ADMIN); clone3 cannot be filtered by
            # flag, so it answers ENOSYS and the C library falls back to clone.
            # One rule per flag: "(flags & f) == f" for any namespace flag f (rules are OR'ed; a single
            # masked compare cannot say "any of these bits").
            *(
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": EPERM,
                    "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
                }
                for flag in CLONE_NAMESPACE_FLAGS
            ),
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }


def oci_config(
    spec: ContainerSpec,
    *,
    container_id: str,
    rootfs: str,
    cgroups_path: str,
    cpus: str | None,
    mems: str | None,
    cpu_shares: int,
    cpu_quota_us: int | None,
    cpu_period_us: int = 100_000,
    pids_limit: int = 1024,
    allowed_host_mounts: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``config.json`` for one container. Raises ``MountNotAllowed`` for a host mount outside the node's
    allow-list."""
    for m in spec.mounts:
        if not host_mount_allowed(m.source, allowed_host_mounts):
            raise MountNotAllowed(f"mounts: host path {m.source!r} is not allowed on this node")
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.name, **spec.env}
    cpu: dict[str, Any] = {"shares": cpu_shares, "period": cpu_period_us}
    if cpu_quota_us is not None:
        cpu["quota"] = cpu_quota_us
    if cpus is not None:
        cpu["cpus"] = cpus
    if mems is not None:
        cpu["mems"] = mems
    resources: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "cpu": cpu,
        "pids": {"limit": pids_limit},
    }
    if spec.memory_limit_bytes is not None:
        resources["memory"] = {"limit": spec.memory_limit_bytes, "swap": spec.memory_limit_bytes}
    caps = list(CAPABILITIES)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(spec.command) or ["sh"],
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": spec.read_only_root},
        "hostname": spec.name,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
            *(
                {
                    "destination": m.destination,
                    "type": "bind",
                    "source": m.source,
                    "options": ["rbind", "nosuid", "nodev", "ro" if m.read_only else "rw"],
                }
                for m in spec.mounts
            ),
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp_profile(),
        },
        "annotations": {"io.corral.container-id": container_id},
    }
