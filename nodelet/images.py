"""Images on a node, and each container's writable root over its image.

For now one image is built in: ``busybox``, made at first use from the host's static busybox (Debian's
``busybox-static``) with a symlink per applet. Importing image tarballs (OCI layout, ``docker save``) comes next.
A container's root is an overlay: the image read-only below, the container's own upper directory above.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
BUILTIN = {"busybox", "busybox:latest"}


class UnknownImage(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"image {ref!r} is not on this node (built in: busybox)")
        self.ref = ref


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, ref: str) -> Path:
        """The read-only root filesystem of an image; raises ``UnknownImage``."""
        if ref in BUILTIN:
            return self._busybox()
        raise UnknownImage(ref)

    def _busybox(self) -> Path:
        rootfs = self.root / "builtin" / "busybox" / "rootfs"
        if rootfs.is_dir():
            return rootfs
        if not BUSYBOX.exists():
            raise UnknownImage("busybox (install busybox-static: /bin/busybox is missing)")
        staging = rootfs.with_name(f"rootfs.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root", "var/tmp"):
            (staging / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, staging / "bin" / "busybox")
        applets = subprocess.run(
            [str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True
        ).stdout.split()
        for applet in applets:  # e.g. "bin/sh", "usr/bin/env"
            link = staging / applet
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")
        (staging / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        (staging / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (staging / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
        os.replace(staging, rootfs)  # atomic: a half-built image is never seen
        return rootfs


def mount_overlay(lower: Path, container_dir: Path) -> Path:
    """Mount the container's root (image below, ``container_dir/upper`` above) at ``container_dir/rootfs``."""
    upper, work, merged = (container_dir / d for d in ("upper", "work", "rootfs"))
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(merged):
        return merged
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
        check=True,
        capture_output=True,
    )
    return merged


def unmount_overlay(container_dir: Path) -> None:
    merged = container_dir / "rootfs"
    if os.path.ismount(merged):
        subprocess.run(["umount", str(merged)], check=True, capture_output=True)
