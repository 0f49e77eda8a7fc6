"""The OCI runtime config of a container: secure by default, built by a pure function.

Defaults (Docker's and Kubernetes' baseline, tightened): no new privileges; Docker's default capabilities
minus NET_RAW and MKNOD; a default-deny seccomp profile (``nodelet.seccomp``); masked and
read-only kernel paths; a pids limit; fresh pid, network, ipc, uts and mount namespaces (never the host's);
no host mounts unless the spec asks and the node's allow-list covers them. CPU and memory limits go into
``linux.resources`` so runc applies them at create; CPU burst does not (runc 1.1 ignores it) and is written
by the cgroup layer between create and start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nodelet.images import ImageConfig
from nodelet.seccomp import RUNTIME_DEFAULT
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


BUSYBOX_CONFIG = ImageConfig(cmd=("sh",))


class MountNotAllowed(ValueError):
    pass


class NoCommand(ValueError):
    pass


def process_args(spec: ContainerSpec, image: ImageConfig) -> list[str]:
    """What ``docker run`` runs: the Entrypoint (the spec's, else the image's) followed by the command (the
    spec's, else the image's Cmd, unless the spec set its own Entrypoint: that drops the image's Cmd)."""
    entrypoint = spec.entrypoint if spec.entrypoint is not None else image.entrypoint
    cmd = spec.command or (() if spec.entrypoint is not None else image.cmd)
    args = [*entrypoint, *cmd]
    if not args:
        raise NoCommand("no command: the image has no Entrypoint or Cmd, and the spec gives neither")
    return args


def process_env(spec: ContainerSpec, image: ImageConfig) -> list[str]:
    """PATH (the image's, else the usual one), HOSTNAME, the image's Env, then the spec's over them."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.name}
    for item in image.env:
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value
    env.update(spec.env)
    return [f"{k}={v}" for k, v in env.items()]


def process_cwd(spec: ContainerSpec, image: ImageConfig) -> str:
    """The spec's working_dir, else the image's WorkingDir (a relative one is taken from /), else /."""
    if spec.working_dir is not None:
        return spec.working_dir
    return "/" + image.working_dir.lstrip("/") if image.working_dir else "/"


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
    seccomp: dict[str, Any] | None = RUNTIME_DEFAULT,
    mount_sources: Sequence[str] | None = None,
    identity: tuple[int, int, Sequence[int]] = (0, 0, ()),
    userns: tuple[int, int] | None = None,
    image: ImageConfig = BUSYBOX_CONFIG,
) -> dict[str, Any]:
    """The ``config.json`` for one container (``seccomp`` None: no filter, for ``Unconfined``; ``mount_sources``
    where the node staged each host mount, else the spec's sources). Raises ``MountNotAllowed`` for a host mount
    outside the node's allow-list, ``NoCommand`` when neither the spec nor the image (``image``: its config) says
    what to run."""
    for m in spec.mounts:
        if not host_mount_allowed(m.source, allowed_host_mounts):
            raise MountNotAllowed(f"mounts: host path {m.source!r} is not allowed on this node")
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
    defaults = frozenset(c.removeprefix("CAP_") for c in CAPABILITIES)
    chosen = spec.capabilities.applied(defaults) if spec.capabilities is not None else defaults
    caps = [f"CAP_{c}" for c in sorted(chosen)]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": identity[0], "gid": identity[1], "additionalGids": list(identity[2])},
            "args": process_args(spec, image),
            "env": process_env(spec, image),
            "cwd": process_cwd(spec, image),
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
            *(
                {
                    "destination": m.destination,
                    "type": "bind",
                    "source": source,
                    # rro: read-only all the way down (mount_setattr), not only its top mount
                    "options": ["rbind", "nosuid", "nodev", *(("ro", "rro") if m.read_only else ("rw",))],
                }
                for m, source in zip(spec.mounts, mount_sources or [m.source for m in spec.mounts], strict=True)
            ),
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": resources,
            # cgroup: the container sees its own cgroup as the root, not the node's paths
            "namespaces": [
                {"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup", *(("user",) if userns else ()))
            ],
            # uid and gid 0 up to ``size`` inside are ``base`` up outside (a user namespace of its own)
            **(
                {
                    "uidMappings": [{"containerID": 0, "hostID": userns[0], "size": userns[1]}],
                    "gidMappings": [{"containerID": 0, "hostID": userns[0], "size": userns[1]}],
                }
                if userns
                else {}
            ),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            **({"seccomp": seccomp} if seccomp is not None else {}),
        },
        "annotations": {"io.corral.container-id": container_id},
    }
