"""What a container's process is, read from /proc by its node (for ``wire.pss``): capabilities, no_new_privs,
seccomp mode and user from ``status``, the namespaces it shares with the node, and its mounts."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from wire.pss import Mounted, ProcessFacts

NAMESPACES = ("pid", "net", "ipc", "uts", "mnt", "cgroup", "user")


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_points(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Where things are mounted, as this process sees it (escapes decoded)."""
    return [unescape(line.split()[4]) for line in mountinfo.read_text().splitlines()]


def parse_mountinfo(text: str) -> tuple[Mounted, ...]:
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 1:
            continue
        options = fields[5].split(",")
        mounts.append(Mounted(unescape(fields[4]), tail[0], unescape(fields[3]), "ro" in options))
    return tuple(mounts)


def parse_status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def read(pid: int, proc: Path = Path("/proc")) -> ProcessFacts:
    """The facts of process ``pid`` (raises OSError when it is gone)."""
    base = proc / str(pid)
    status = parse_status((base / "status").read_text())
    shared = tuple(ns for ns in NAMESPACES if os.readlink(base / "ns" / ns) == os.readlink(proc / "self" / "ns" / ns))
    apparmor = ""
    with contextlib.suppress(OSError):
        if Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y":
            apparmor = (base / "attr" / "current").read_text().strip().removesuffix(" (enforce)")
    return ProcessFacts(
        pid=pid,
        uid=int(status["Uid"].split()[1]),  # the effective one
        gid=int(status["Gid"].split()[1]),
        cap_effective=int(status["CapEff"], 16),
        cap_bounding=int(status["CapBnd"], 16),
        no_new_privs=status.get("NoNewPrivs") == "1",
        seccomp_mode=int(status.get("Seccomp", "0")),
        host_namespaces=shared,
        mounts=parse_mountinfo((base / "mountinfo").read_text()),
        apparmor=apparmor,
    )
