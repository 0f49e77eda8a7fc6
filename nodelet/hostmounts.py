"""Host paths bind-mounted into containers, checked where they are and pinned before runc sees them.

The allow-list check in ``wire.spec`` is lexical: ``/data/link-to-root`` passes an allow-list of ``/data``, and a
bind mount follows the link. So the node opens the source one component at a time from the allowed root it lies
under (the root itself as the node's admin wrote it), never following a symbolic link (``O_PATH|O_NOFOLLOW``),
and refuses a path that holds one. The descriptor it ends with is bind-mounted (through ``/proc/self/fd``) onto a
staging point in the node's own directory, and runc is given that point: a component swapped for a link after
the check changes nothing, since the mount holds the very directory or file that was checked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from nodelet.ocispec import MountNotAllowed
from nodelet.procfacts import mount_points

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {source} on {target}: {os.strerror(e)}")


def allowed_root(source: str, allowed_roots: Sequence[str]) -> PurePosixPath:
    """The shallowest allowed root ``source`` lies under (lexically); MountNotAllowed when none. The shallowest:
    with /data and /data/t1 both allowed, a tenant who can write /data must not be able to make t1 a link that
    the walk would follow."""
    path = PurePosixPath(source)
    roots = [PurePosixPath(r) for r in allowed_roots]
    under = [r for r in roots if path == r or r in path.parents]
    if not under:
        raise MountNotAllowed(f"mounts: host path {source!r} is not allowed on this node")
    return min(under, key=lambda r: len(r.parts))


def open_beneath(source: str, allowed_roots: Sequence[str]) -> int:
    """An ``O_PATH`` descriptor of ``source``, reached from its allowed root without following any symbolic
    link. MountNotAllowed when it is outside the allow-list, missing, or reached through a link."""
    root = allowed_root(source, allowed_roots)
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise MountNotAllowed(f"mounts: allowed root {str(root)!r}: {e.strerror}") from None
    try:
        walked = root
        for part in PurePosixPath(source).relative_to(root).parts:
            walked /= part
            try:
                child = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise MountNotAllowed(f"mounts: host path {source!r} does not exist") from None
            except OSError as e:
                raise MountNotAllowed(f"mounts: host path {source!r}: {e.strerror}") from None
            os.close(fd)
            fd = child
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise MountNotAllowed(
                    f"mounts: host path {source!r}: {str(walked)!r} is a symbolic link; name the real path"
                )
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_beneath(root: Path, rel: str, limit: int = 1 << 20) -> str | None:
    """The text of ``root/rel`` reached without following a link (an image's /etc/passwd may be a link to the
    host's files once read from outside): None when it is missing, a link, or not a regular file."""
    try:
        fd = open_beneath(str(root / rel), [str(root)])
    except MountNotAllowed:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            return f.read(limit).decode(errors="replace")
    finally:
        os.close(fd)


def stage(source: str, allowed_roots: Sequence[str], target: Path, read_only: bool) -> Path:
    """Pin ``source`` at ``target`` (a directory or an empty file made for it): the checked directory or file
    itself, read-only there too when the container's mount is. Returns ``target``, the source to give runc."""
    fd = open_beneath(source, allowed_roots)
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            target.mkdir(mode=0o700, exist_ok=True)
        else:
            target.touch(mode=0o600, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", str(target), MS_BIND | MS_REC)
    finally:
        os.close(fd)
    if read_only:  # a slip that walks into the staging point (an rm -r) cannot write through it either
        try:
            _mount("none", str(target), MS_REMOUNT | MS_BIND | MS_RDONLY)
        except OSError:
            unstage(target.parent)
            raise
    return target


def unstage(directory: Path) -> None:
    """Detach every staging point under ``directory`` and remove the emptied points and the directory. Never
    removes anything that is still mounted (that would reach into the host's files)."""
    if not directory.is_dir():
        return
    directory = directory.resolve()  # the mount table names real paths
    for point in sorted(directory.iterdir()):
        while _mounted(point):  # a bind mount may be stacked more than once
            if _libc.umount2(str(point).encode(), MNT_DETACH) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"umount {point}: {os.strerror(e)}")
        with contextlib.suppress(FileNotFoundError):
            point.rmdir() if point.is_dir() else point.unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()


def _mounted(path: Path) -> bool:
    """Whether something is mounted at ``path`` (``os.path.ismount`` misses binds within one file system)."""
    return str(path) in mount_points()
