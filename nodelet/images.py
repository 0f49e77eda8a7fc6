"""Images on a node, and each container's writable root over its image.

Owns the node's image store: the built-in ``busybox`` image (made at first use from the host's static busybox,
Debian's ``busybox-static``, with a symlink per applet), the import of image tarballs (an OCI image layout or a
``docker save`` archive), tags, and the overlay mounts that give a container its root.

Store layout under ``root``:

- ``blobs/sha256/<hex>``: manifests, configs and layer blobs as imported, each named by its verified digest.
- ``layers/<hex>/``: each layer unpacked once, named by its diff id (the digest of the uncompressed tar), and
  shared by every image that lists it. Whiteouts are in overlayfs form: a 0:0 character device deletes a
  lower entry; ``trusted.overlay.opaque=y`` on a directory hides the lower directory's contents.
- ``images/<hex>.json``: an image's layers, bottom first; the image id is the digest of its config.
- ``tags.json``: names (``alpine:3.19``) to image ids.

An import stages everything in ``tmp/`` and moves it into place only once every digest matched and every layer
unpacked cleanly, so a rejected tarball leaves nothing behind. Imports need root: layers keep their files'
owners, and whiteouts are device nodes. A container's root is an overlay: the image's layers read-only below,
the container's own upper directory above.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gzip
import hashlib
import os
import platform
import posixpath
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Annotated, Protocol, TypeVar

import msgspec
import zstandard

from wire.spec import image_name

BUSYBOX = Path("/bin/busybox")
BUILTIN = "busybox:latest"  # made from the host's static busybox
DEFAULT_MAX_BYTES = 8 << 30  # uncompressed layer data per import
MIN_GC_AGE_S = 120.0  # image GC leaves images used or imported more recently (kubelet's minimum-image-ttl)
_JSON_MAX_BYTES = 4 << 20  # index, manifest, config

_MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
_INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
_CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
_LAYER_TYPES = {  # media type -> compression
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
PLATFORM = ("linux", _GOARCH.get(platform.machine(), platform.machine()))  # the only images an import picks

OPAQUE_XATTR = "trusted.overlay.opaque"
# Extended attributes a layer may set; others (trusted.overlay.* above all, which steer overlayfs) are dropped.
_XATTR_ALLOWED = re.compile(r"user\..+|security\.capability")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_COMPONENT = r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?::[0-9]+)?(?:/{_COMPONENT})*:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


class UnknownImage(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"image {ref!r} is not on this node (import it; built in: busybox)")
        self.ref = ref


class InvalidImage(ValueError):
    """A tarball the store refuses: the message names the entry or blob at fault."""


class LayeredImage(ValueError):
    """The image is a stack of layers, not one directory: mount ``ImageStore.lowerdirs(ref)``."""


class ImageRecord(msgspec.Struct, frozen=True):
    id: str  # sha256 digest of the config
    layers: tuple[str, ...]  # diff ids, bottom first
    tags: tuple[str, ...] = ()  # the names this import pointed at the image
    size: int = 0  # its layer blobs as imported (compressed, as a registry serves them)
    blobs: tuple[str, ...] = ()  # digests of its manifest, config and layer blobs


class ImageConfig(msgspec.Struct, frozen=True):
    """How an image says to run it (its config's ``config``): what ``docker run`` starts from."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # KEY=VALUE
    working_dir: str = ""
    user: str = ""


class ImageInfo(msgspec.Struct, frozen=True):
    """An image held here, as ``corral image ls`` shows it."""

    id: str
    tags: tuple[str, ...]
    size: int
    last_used_ns: int  # its last start here (or its import)


def normalize(ref: str) -> str:
    """``alpine`` -> ``alpine:latest``; ``docker.io/library/alpine:3.19`` -> ``alpine:3.19``."""
    return image_name(ref)


# The JSON documents of an image tarball, decoded and type-checked by msgspec.
_Digest = Annotated[str, msgspec.Meta(pattern=f"^{_DIGEST.pattern}$")]


class _Platform(msgspec.Struct):
    os_: str = msgspec.field(default="", name="os")
    architecture: str = ""


class _Descriptor(msgspec.Struct, rename="camel"):
    media_type: str
    digest: _Digest
    size: Annotated[int, msgspec.Meta(ge=0)]
    annotations: dict[str, str] = {}
    platform: _Platform | None = None


class _Layout(msgspec.Struct, rename="camel"):
    image_layout_version: str


class _Index(msgspec.Struct, rename="camel"):
    manifests: list[_Descriptor]


class _Manifest(msgspec.Struct, rename="camel"):
    config: _Descriptor
    layers: list[_Descriptor]
    media_type: str = ""


class _RootFS(msgspec.Struct):
    type: str
    diff_ids: list[_Digest]


class _Config(msgspec.Struct):
    rootfs: _RootFS


class _RunConfig(msgspec.Struct, rename="pascal"):  # the "config" of an image config: how to run it
    user: str | int = ""  # some tools write a bare number
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str = ""


class _RunOnly(msgspec.Struct):
    config: _RunConfig | None = None


class _SaveEntry(msgspec.Struct, rename="pascal"):  # one image in a docker save manifest.json
    config: str
    layers: list[str]
    repo_tags: list[str] | None = None


class _Stored(msgspec.Struct):  # images/<hex>.json (its mtime: when a container last started from it)
    layers: list[str]
    size: int = 0
    blobs: list[str] | None = None  # None: stored before blobs were recorded (never collected blob by blob)


class InUse(Exception):
    """The image is what a container here runs (or was made from and still holds)."""


_T = TypeVar("_T")


def _decode(data: bytes, type_: type[_T], name: str) -> _T:
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.DecodeError as e:
        raise InvalidImage(f"{name}: {e}") from None


class ImageStore:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def resolve(self, ref: str) -> Path:
        """The image's read-only root as one directory: the built-in busybox, or an image of one layer.

        Raises ``UnknownImage``, or ``LayeredImage`` for a stack of layers (see ``lowerdirs``).
        """
        dirs = self.lowerdirs(ref)
        if len(dirs) > 1:
            raise LayeredImage(f"image {ref!r} has {len(dirs)} layers: mount ImageStore.lowerdirs(ref)")
        return dirs[0]

    def lowerdirs(self, ref: str) -> list[Path]:
        """The image's layer directories, topmost first: overlayfs's ``lowerdir`` order.

        ``ref`` is a name (``myapp`` means ``myapp:latest``) or an image id; raises ``UnknownImage``.
        """
        image_id = self._image_id(ref)
        if image_id is None:
            if normalize(ref) == BUILTIN:
                return [self._busybox()]
            raise UnknownImage(ref)
        stored = msgspec.json.decode((self.root / "images" / f"{image_id[7:]}.json").read_bytes(), type=_Stored)
        dirs: list[Path] = []
        for diff_id in reversed(stored.layers):
            layer = self.root / "layers" / diff_id[7:]
            if layer in dirs:
                continue  # overlayfs refuses a repeated lowerdir; the upper copy already shows all the lower one would
            if not layer.is_dir():
                raise FileNotFoundError(f"image {ref!r}: layer directory {layer} is missing")
            dirs.append(layer)
            if _is_opaque(layer):
                break  # a layer that makes / opaque hides all below; overlayfs ignores the mark on a layer's root
        return dirs

    def config(self, ref: str) -> ImageConfig:
        """How the image says to run it; the built-in busybox runs ``sh``."""
        image_id = self._image_id(ref)
        if image_id is None:
            if normalize(ref) == BUILTIN:
                return ImageConfig(cmd=("sh",))
            raise UnknownImage(ref)
        c = msgspec.json.decode((self.root / "blobs" / "sha256" / image_id[7:]).read_bytes(), type=_RunOnly).config
        if c is None:
            return ImageConfig()
        return ImageConfig(
            entrypoint=tuple(c.entrypoint or ()),
            cmd=tuple(c.cmd or ()),
            env=tuple(c.env or ()),
            working_dir=c.working_dir,
            user=str(c.user),
        )

    def image_id(self, ref: str) -> str | None:
        """The id of the image ``ref`` names here (None: not here, or the built-in busybox)."""
        return self._image_id(ref)

    def record(self, image_id: str) -> ImageRecord:
        """What is stored of an image held here (raises ``UnknownImage``)."""
        try:
            stored = msgspec.json.decode((self.root / "images" / f"{image_id[7:]}.json").read_bytes(), type=_Stored)
        except FileNotFoundError:
            raise UnknownImage(image_id) from None
        tags = tuple(sorted(n for n, i in self._tags().items() if i == image_id))
        return ImageRecord(image_id, tuple(stored.layers), tags, stored.size, tuple(stored.blobs or ()))

    def touch(self, image_id: str) -> None:
        """Mark the image used now (image GC removes the least recently used first)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.root / "images" / f"{image_id[7:]}.json")

    def held(self) -> list[ImageInfo]:
        """Every image held here (not the built-in busybox), most recently used first."""
        by_id: dict[str, list[str]] = {}
        for name, image_id in self._tags().items():
            by_id.setdefault(image_id, []).append(name)
        out = []
        for path in (self.root / "images").glob("*.json"):
            try:
                stored = msgspec.json.decode(path.read_bytes(), type=_Stored)
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue  # removed meanwhile
            image_id = f"sha256:{path.stem}"
            out.append(ImageInfo(image_id, tuple(sorted(by_id.get(image_id, ()))), stored.size, mtime))
        return sorted(out, key=lambda i: (-i.last_used_ns, i.id))

    def remove(
        self, ref: str, in_use: frozenset[str], *, force: bool = False, names_in_use: frozenset[str] = frozenset()
    ) -> list[str]:
        """``docker rmi``: a name loses that name, and the image goes with its last name; an id (or ``force``)
        removes the image and all its names. Never an image in ``in_use`` (ids) or named in ``names_in_use``
        (resolved under the lock): raises ``InUse``. Returns the ids removed (empty when only a name went)."""
        image_id = self._image_id(ref)
        if image_id is None:
            raise UnknownImage(ref)  # the built-in busybox too: it is made again at its next use anyway
        with self._locked():
            tags = self._tags()
            image_id = self._image_id(ref)
            if image_id is None:
                raise UnknownImage(ref)
            names = [n for n, i in tags.items() if i == image_id]
            by_name = not _DIGEST.fullmatch(ref)
            if by_name and len(names) > 1 and not force:
                del tags[normalize(ref)]
                _write_atomic(self.root / "tags.json", msgspec.json.encode(dict(sorted(tags.items()))))
                return []
            if image_id in self._kept(in_use, names_in_use):
                raise InUse(f"image {ref!r} ({image_id[:19]}) is used by a container on this node")
            self._delete([image_id], tags)
            return [image_id]

    def over(self, high_percent: int) -> bool:
        """Whether the store's file system is fuller than ``high_percent`` (image GC is due)."""
        return (self.root / "images").is_dir() and _used_percent(self.root) > high_percent

    def collect(
        self,
        in_use: frozenset[str],
        *,
        high_percent: int,
        low_percent: int,
        min_age_s: float = MIN_GC_AGE_S,
        names_in_use: frozenset[str] = frozenset(),
    ) -> list[str]:
        """kubelet's image GC: once the store's file system is fuller than ``high_percent``, remove unused
        images, least recently used first, until it is below ``low_percent``; never one in ``in_use`` (ids) or
        named in ``names_in_use`` (resolved under the lock), nor one used or imported less than ``min_age_s``
        ago (kubelet's minimum age: a pull's image is its container's before it starts). An import under way
        holds the store: this round is skipped. Returns the ids removed."""
        if not self.over(high_percent):
            return []
        removed: list[str] = []
        with self._locked(wait=False) as locked:
            if not locked:
                return []
            kept = self._kept(in_use, names_in_use)
            young = time.time_ns() - int(min_age_s * 1e9)
            for info in reversed(self.held()):  # least recently used first
                if _used_percent(self.root) < low_percent:
                    break
                if info.id in kept or info.last_used_ns > young:
                    continue
                self._delete([info.id], self._tags())
                removed.append(info.id)
        return removed

    def _kept(self, in_use: frozenset[str], names_in_use: frozenset[str]) -> frozenset[str]:
        """Ids in use, with those the names resolve to now (under the lock: as removal sees the store)."""
        return in_use | {i for i in map(self._image_id, names_in_use) if i is not None}

    def _delete(self, ids: list[str], tags: dict[str, str]) -> None:
        """Remove images (under the lock): their records and names, then every layer and blob no other image
        lists. An image stored before blobs were recorded keeps every blob (none can be told apart)."""
        kept = {n: i for n, i in tags.items() if i not in ids}  # names first: none ever points at nothing
        _write_atomic(self.root / "tags.json", msgspec.json.encode(dict(sorted(kept.items()))))
        for image_id in ids:
            (self.root / "images" / f"{image_id[7:]}.json").unlink(missing_ok=True)
        layers: set[str] = set()
        blobs: set[str] | None = set()
        for path in (self.root / "images").glob("*.json"):
            stored = msgspec.json.decode(path.read_bytes(), type=_Stored)
            layers.update(d[7:] for d in stored.layers)
            if stored.blobs is None:
                blobs = None
            elif blobs is not None:
                blobs.update(d[7:] for d in stored.blobs)
        for layer in (self.root / "layers").iterdir():
            if layer.name.startswith(".gone-"):
                shutil.rmtree(layer, ignore_errors=True)  # a removal a crash cut short
            elif layer.name not in layers:
                _remove_tree(layer)
        if blobs is not None:
            for blob in (self.root / "blobs" / "sha256").iterdir():
                if blob.name not in blobs:
                    blob.unlink(missing_ok=True)

    def names(self) -> frozenset[str]:
        """Every reference this store resolves, as ``image_name`` spells it: tags, image ids, the built-in."""
        ids = {f"sha256:{p.stem}" for p in (self.root / "images").glob("*.json")}
        return frozenset({*self._tags(), *ids, *([BUILTIN] if BUSYBOX.exists() else [])})

    def import_tar(self, src: str | os.PathLike[str] | IO[bytes], names: Sequence[str] = ()) -> ImageRecord:
        """Import one image from an OCI image layout or ``docker save`` tarball (plain or compressed), named
        ``names`` too (a pull names what it pulled, in the same step: never an image without its name).

        Raises ``InvalidImage`` for anything malformed, malicious or not matching its digest; then nothing of
        this import is left in the store.
        """
        if os.geteuid() != 0:
            raise PermissionError("importing images needs root: layers keep owners, whiteouts are device nodes")
        for d in ("blobs/sha256", "layers", "images", "tmp"):
            (self.root / d).mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked():
            for leftover in (self.root / "tmp").iterdir():  # from an import that crashed
                shutil.rmtree(leftover, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(dir=self.root / "tmp"))
            try:
                with _open_tar(src, staging) as tar:
                    staged = _Import(self, _Archive(tar), staging).run()
                if names:
                    staged = msgspec.structs.replace(staged, tags=tuple(sorted({*staged.tags, *map(normalize, names)})))
                return self._commit(staging, staged)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self, wait: bool = True) -> Iterator[bool]:
        """One writer at a time per store (readers need no lock: every file appears by rename); ``wait=False``
        yields False at once when another holds it."""
        with open(self.root / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True

    def _commit(self, staging: Path, image: ImageRecord) -> ImageRecord:
        _syncfs(staging)  # the staged files reach the disk before they appear under their digests
        for src, dest in (("blobs", "blobs/sha256"), ("layers", "layers")):
            for staged in (staging / src).iterdir():
                target = self.root / dest / staged.name
                if not target.exists():  # an earlier import may have brought it: content-addressed, so equal
                    staged.rename(target)
        stored = _Stored(list(image.layers), image.size, list(image.blobs))
        _write_atomic(self.root / "images" / f"{image.id[7:]}.json", msgspec.json.encode(stored))
        if image.tags:
            tags = self._tags()
            tags.update(dict.fromkeys(image.tags, image.id))
            _write_atomic(self.root / "tags.json", msgspec.json.encode(dict(sorted(tags.items()))))
        return image

    def _tags(self) -> dict[str, str]:
        path = self.root / "tags.json"
        return msgspec.json.decode(path.read_bytes(), type=dict[str, str]) if path.exists() else {}

    def _image_id(self, ref: str) -> str | None:
        image_id = ref if _DIGEST.fullmatch(ref) else self._tags().get(normalize(ref))
        return image_id if image_id and (self.root / "images" / f"{image_id[7:]}.json").exists() else None

    def _busybox(self) -> Path:
        rootfs = self.root / "builtin" / "busybox" / "rootfs"
        if rootfs.is_dir():
            for tmp in (rootfs / "tmp", rootfs / "var" / "tmp"):  # made 0755 by earlier versions
                if tmp.stat().st_mode & 0o7777 != 0o1777:
                    tmp.chmod(0o1777)
            return rootfs
        if not BUSYBOX.exists():
            raise UnknownImage("busybox (install busybox-static: /bin/busybox is missing)")
        staging = rootfs.with_name(f"rootfs.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root", "var/tmp"):
            (staging / d).mkdir(parents=True, exist_ok=True)
        for tmp in (staging / "tmp", staging / "var" / "tmp"):
            tmp.chmod(0o1777)  # anyone may write there, as on any system (a container may run as any user)
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


_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(path: Path) -> None:
    """Flush the file system holding ``path`` (syncfs(2)): that one only, not every disk the host has."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _used_percent(path: Path) -> float:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize or 1
    return 100.0 * (st.f_blocks - st.f_bavail) * st.f_frsize / total


def _remove_tree(path: Path) -> None:
    """Remove an unpacked layer: moved aside first, so a crash midway never leaves half a layer under its name."""
    doomed = path.with_name(f".gone-{path.name}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _open_tar(src: str | os.PathLike[str] | IO[bytes], staging: Path) -> Iterator[tarfile.TarFile]:
    with contextlib.ExitStack() as stack:
        f: IO[bytes]
        if isinstance(src, str | os.PathLike):
            f = stack.enter_context(open(src, "rb"))
        elif src.seekable():
            f = src
        else:  # a pipe: members are read out of order, so spool it first
            with open(staging / "source.tar", "wb") as spool:
                shutil.copyfileobj(src, spool, 1 << 20)
            f = stack.enter_context(open(staging / "source.tar", "rb"))
        try:
            tar = stack.enter_context(tarfile.open(fileobj=f, mode="r:*"))
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise InvalidImage(f"not a readable tar archive: {e}") from None
        yield tar


def _archive_name(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


class _Archive:
    """The outer tarball, never extracted: its members are only looked up by name and read."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise InvalidImage(f"corrupt image tarball: {e}") from None
        for member in members:
            name = _archive_name(member.name)
            if name in self.members:
                raise InvalidImage(f"duplicate entry {name!r} in the image tarball")
            self.members[name] = member

    def has(self, name: str) -> bool:
        return _archive_name(name) in self.members

    def open(self, name: str) -> tuple[IO[bytes], int]:
        """The member's content and size, following links inside the archive (docker save links equal layers)."""
        path = _archive_name(name)
        for _ in range(8):
            member = self.members.get(path)
            if member is None:
                raise InvalidImage(f"missing entry {path!r} in the image tarball (wanted for {name!r})")
            if member.isreg():
                f = self.tar.extractfile(member)
                assert f is not None
                return f, member.size
            if member.issym():
                path = _archive_name(posixpath.join(posixpath.dirname(path), member.linkname))
            elif member.islnk():
                path = _archive_name(member.linkname)
            else:
                raise InvalidImage(f"entry {path!r} in the image tarball is not a file")
        raise InvalidImage(f"entry {name!r} in the image tarball: too many links")


class _Budget:
    """Bytes one import may still use; a tar bomb runs out of it."""

    def __init__(self, limit: int, what: str) -> None:
        self.left = limit
        self.limit = limit
        self.what = what

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise InvalidImage(f"{self.what} exceed the size limit of {self.limit} bytes")


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _HashingReader:
    """Reads a layer's uncompressed tar stream, hashing it and charging it to a budget."""

    def __init__(self, raw: _Readable, budget: _Budget) -> None:
        self.raw = raw
        self.budget = budget
        self.sha256 = hashlib.sha256()

    def read(self, size: int) -> bytes:
        data = self.raw.read(size)
        self.budget.spend(len(data))
        self.sha256.update(data)
        return data

    def drain(self) -> str:
        """Read to the end (tar padding counts too) and return the digest of everything read."""
        while self.read(1 << 20):
            pass
        return f"sha256:{self.sha256.hexdigest()}"


class _Import:
    """One import: reads the tarball's documents and blobs into ``staging``, checking every digest."""

    def __init__(self, store: ImageStore, archive: _Archive, staging: Path) -> None:
        self.store = store
        self.archive = archive
        self.staging = staging
        self.layers: set[str] = set()  # diff-id hex of layers unpacked in this import
        self.stream_budget = _Budget(store.max_bytes, "the image's uncompressed layers")
        self.file_budget = _Budget(store.max_bytes, "the files in the image's layers")
        for d in ("blobs", "layers", "partial"):
            (staging / d).mkdir()

    def run(self) -> ImageRecord:
        if self.archive.has("oci-layout"):
            return self._oci()
        if self.archive.has("manifest.json"):
            return self._docker_save()
        raise InvalidImage("not an image tarball: no oci-layout (OCI image layout) and no manifest.json (docker save)")

    def _oci(self) -> ImageRecord:
        layout = _decode(self._read("oci-layout"), _Layout, "oci-layout")
        if not layout.image_layout_version.startswith("1."):
            raise InvalidImage(f"oci-layout: unsupported imageLayoutVersion {layout.image_layout_version!r}")
        index = _decode(self._read("index.json"), _Index, "index.json")
        picked: dict[str, tuple[_Descriptor, list[str]]] = {}
        for desc, names in self._manifests(index, [], "index.json"):
            picked.setdefault(desc.digest, (desc, []))[1].extend(names)
        if len(picked) != 1:
            found = "no image" if not picked else f"{len(picked)} images"
            raise InvalidImage(f"index.json lists {found} for {'/'.join(PLATFORM)}; import exactly one at a time")
        desc, names = next(iter(picked.values()))
        manifest = self._blob_json(desc, "manifest", _Manifest)
        if manifest.media_type and manifest.media_type != desc.media_type:
            raise InvalidImage(f"manifest {desc.digest}: mediaType {manifest.media_type!r} != {desc.media_type!r}")
        if manifest.config.media_type not in _CONFIG_TYPES:
            raise InvalidImage(f"manifest {desc.digest}: unsupported config media type {manifest.config.media_type!r}")
        for i, layer in enumerate(manifest.layers, 1):
            if layer.media_type not in _LAYER_TYPES:
                raise InvalidImage(f"manifest {desc.digest}: layer {i} has unsupported media type {layer.media_type!r}")
        config = self._blob_json(manifest.config, "config", _Config)
        diff_ids = self._diff_ids(config, len(manifest.layers), manifest.config.digest)
        for i, (layer, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True), 1):
            blob = f"blobs/sha256/{layer.digest[7:]}"
            how = _LAYER_TYPES[layer.media_type]
            self._layer(f"layer {i}", blob, digest=layer.digest, size=layer.size, how=how, diff_id=diff_id)
        return ImageRecord(
            manifest.config.digest,
            tuple(diff_ids),
            tuple(sorted(set(names))),
            size=sum(layer.size for layer in manifest.layers),
            blobs=(desc.digest, manifest.config.digest, *(layer.digest for layer in manifest.layers)),
        )

    def _manifests(self, index: _Index, names: list[str], where: str) -> Iterator[tuple[_Descriptor, list[str]]]:
        """The image manifests of an index for this node's platform, with their names; follows nested indexes."""
        for desc in index.manifests:
            if desc.platform is not None and (desc.platform.os_, desc.platform.architecture) != PLATFORM:
                continue
            ref = desc.annotations.get("io.containerd.image.name") or desc.annotations.get(
                "org.opencontainers.image.ref.name"
            )
            named = [*names, _checked_name(ref, where)] if ref else names
            if desc.media_type in _MANIFEST_TYPES:
                yield desc, named
            elif desc.media_type in _INDEX_TYPES and where == "index.json":  # one level: a multi-platform image
                yield from self._manifests(self._blob_json(desc, "index", _Index), named, desc.digest)
            else:
                raise InvalidImage(f"{where}: unsupported media type {desc.media_type!r} for {desc.digest}")

    def _docker_save(self) -> ImageRecord:
        entries = _decode(self._read("manifest.json"), list[_SaveEntry], "manifest.json")
        if len(entries) != 1:
            raise InvalidImage(f"manifest.json lists {len(entries)} images; import exactly one at a time")
        entry = entries[0]
        # Config "<hex>.json" (classic) or "blobs/sha256/<hex>" (Docker 25+) names the config's digest.
        named = re.fullmatch(r"(?:blobs/sha256/)?([a-f0-9]{64})(?:\.json)?", _archive_name(entry.config))
        config_digest = f"sha256:{named.group(1)}" if named else None
        data, config_digest = self._blob(entry.config, config_digest, None, "config", _JSON_MAX_BYTES)
        config = _decode(data, _Config, entry.config)
        diff_ids = self._diff_ids(config, len(entry.layers), config_digest)
        layers = []
        for i, (name, diff_id) in enumerate(zip(entry.layers, diff_ids, strict=True), 1):
            # Classic "<v1 id>/layer.tar" names no digest: the diff id from the config is what it must match.
            named = re.fullmatch(r"blobs/sha256/([a-f0-9]{64})", _archive_name(name))
            digest = f"sha256:{named.group(1)}" if named else None
            layers.append(self._layer(f"layer {i}", name, digest=digest, size=None, how=None, diff_id=diff_id))
        names = sorted({_checked_name(tag, "manifest.json") for tag in entry.repo_tags or ()})
        size = sum(n for _, n in layers)
        return ImageRecord(config_digest, tuple(diff_ids), tuple(names), size, (config_digest, *(d for d, _ in layers)))

    @staticmethod
    def _diff_ids(config: _Config, n_layers: int, digest: str) -> list[str]:
        if config.rootfs.type != "layers":
            raise InvalidImage(f"config {digest}: rootfs type {config.rootfs.type!r} is not 'layers'")
        if len(config.rootfs.diff_ids) != n_layers:
            raise InvalidImage(f"config {digest}: {len(config.rootfs.diff_ids)} diff ids for {n_layers} layers")
        if not n_layers:
            raise InvalidImage(f"config {digest}: the image has no layers")
        return config.rootfs.diff_ids

    def _read(self, name: str) -> bytes:
        """A small document that is not a blob (oci-layout, index.json, manifest.json)."""
        f, size = self.archive.open(name)
        if size > _JSON_MAX_BYTES:
            raise InvalidImage(f"{name} is {size} bytes, over the limit of {_JSON_MAX_BYTES}")
        return f.read()

    def _blob_json(self, desc: _Descriptor, what: str, type_: type[_T]) -> _T:
        name = f"blobs/sha256/{desc.digest[7:]}"
        data, _ = self._blob(name, desc.digest, desc.size, what, _JSON_MAX_BYTES)
        return _decode(data, type_, f"{what} {desc.digest}")

    def _blob(self, name: str, digest: str | None, size: int | None, what: str, limit: int) -> tuple[bytes, str]:
        path, digest = self._stage(name, digest, size, what, limit)
        return path.read_bytes(), digest

    def _stage(self, name: str, digest: str | None, size: int | None, what: str, limit: int) -> tuple[Path, str]:
        """Copy a blob into staging, checking its size and digest; returns its staged path and digest."""
        f, actual = self.archive.open(name)
        if size is not None and actual != size:
            raise InvalidImage(f"{what} blob {name!r} is {actual} bytes; its descriptor says {size}")
        if actual > limit:
            raise InvalidImage(f"{what} blob {name!r} is {actual} bytes, over the size limit of {limit}")
        h = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=self.staging / "partial", delete=False) as out:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        got = f"sha256:{h.hexdigest()}"
        if digest is not None and got != digest:
            raise InvalidImage(f"digest mismatch: {what} blob {name!r} should be {digest} but its content is {got}")
        return Path(out.name).rename(self.staging / "blobs" / got[7:]), got

    def _layer(
        self, what: str, name: str, *, digest: str | None, size: int | None, how: str | None, diff_id: str
    ) -> tuple[str, int]:
        """Stage a layer's blob and unpack it unless the store or this import already has its diff id; its
        blob's digest and size. ``how``: its compression ("", gzip, zstd; None: sniffed)."""
        key = diff_id[7:]
        unpacked = (self.store.root / "layers" / key).is_dir() or key in self.layers
        stored = self.store.root / "blobs" / "sha256" / (digest or "")[7:]
        if unpacked and digest is not None and stored.is_file():
            return digest, stored.stat().st_size  # nothing new: the blob and its unpacked layer are both stored
        blob, digest = self._stage(name, digest, size, what, self.store.max_bytes)
        with open(blob, "rb") as raw:
            if how is None:  # docker save does not say: sniff the magic
                head = raw.read(4)
                how = _MAGIC.get(head[:2], "") or _MAGIC.get(head, "")
                raw.seek(0)
            try:
                with _decompressed(raw, how) as stream:
                    reader = _HashingReader(stream, self.stream_budget)
                    if not unpacked:
                        dest = self.staging / "layers" / key
                        dest.mkdir(mode=0o755)
                        try:
                            _unpack_layer(reader, dest, self.file_budget)
                        except InvalidImage as e:
                            raise InvalidImage(f"{what} ({name}): {e}") from None
                    got = reader.drain()
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:
                raise InvalidImage(f"{what} ({name}) is corrupt: {e}") from None
        if got != diff_id:
            raise InvalidImage(f"digest mismatch: {what} ({name}) uncompressed is {got}; the config says {diff_id}")
        self.layers.add(key)
        return digest, blob.stat().st_size


def _decompressed(raw: IO[bytes], how: str) -> contextlib.AbstractContextManager[_Readable]:
    if how == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if how == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return contextlib.nullcontext(raw)


def _checked_name(ref: str, where: str) -> str:
    name = normalize(ref)
    if not _NAME.fullmatch(name):
        raise InvalidImage(f"{where}: invalid image name {ref!r}")
    return name


def _unpack_layer(stream: _HashingReader, dest: Path, budget: _Budget) -> None:
    """Unpack one layer's tar stream into the empty directory ``dest``."""
    _Unpacker(dest, budget).run(stream)


def _parts(name: str, what: str) -> tuple[str, ...]:
    if name.startswith("/"):
        raise InvalidImage(f"{what} {name!r}: absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise InvalidImage(f"{what} {name!r}: '..' in path")
    return parts


class _Unpacker:
    """Writes a layer's entries under ``dest``: owners and modes as in the tar, whiteouts in overlayfs form.

    Never follows a symlink: an entry whose path runs through one is rejected, files are created with
    O_NOFOLLOW|O_EXCL, and attributes are set on the entry itself.
    """

    def __init__(self, dest: Path, budget: _Budget) -> None:
        self.dest = dest
        self.budget = budget
        self.dirs: list[tuple[Path, tarfile.TarInfo]] = []

    def run(self, stream: _HashingReader) -> None:
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]  # stream mode only reads
            for member in tar:
                self._entry(tar, member)
        # Directory modes and times last, deepest first: adding entries changed the times.
        for path, member in reversed(self.dirs):
            os.chmod(path, member.mode & 0o7777)
            os.utime(path, (member.mtime, member.mtime))

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        parts = _parts(name, "entry")
        if not parts:
            return  # the layer's root: its attributes come from the container's upper directory
        base = parts[-1]
        if base == _OPAQUE:
            self._dir(parts[:-1], name, opaque=True)
            return
        if any(p.startswith(_WHITEOUT + _WHITEOUT) for p in parts):
            return  # AUFS metadata (.wh..wh.plnk, .wh..wh.aufs), not content
        if base.startswith(_WHITEOUT):
            if base[len(_WHITEOUT) :] in ("", ".", ".."):
                raise InvalidImage(f"entry {name!r}: whiteout of no name")
            self._whiteout((*parts[:-1], base[len(_WHITEOUT) :]), name)
            return
        if member.ischr() and member.devmajor == 0 and member.devminor == 0:
            self._whiteout(parts, name)  # already in overlayfs form
            return
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise InvalidImage(f"entry {name!r}: special files (devices, fifos) are not allowed in a layer")
        path = self._dir(parts[:-1], name) / base
        existing = _lstat(path)
        merge = existing is not None and stat.S_ISDIR(existing.st_mode) and member.isdir()
        if existing is not None and not _is_whiteout(existing) and not merge:
            raise InvalidImage(f"entry {name!r}: duplicate entry in the layer")
        if member.issym():
            self._check_symlink(member, parts)
        link_target = self._link_target(member) if member.islnk() else None
        self._vet(member, parts)
        if member.isdir():
            self._dir(parts, name)  # over a whiteout: the layer deletes the lower directory and brings its own
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
            self._xattrs(path, member)
            self.dirs.append((path, member))
            return
        if existing is not None:
            path.unlink()  # a whiteout: the layer deletes the lower entry and brings its own
        if member.issym():
            os.symlink(member.linkname, path)
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        elif link_target is not None:
            os.link(link_target, path, follow_symlinks=False)  # shares the target's attributes
        else:
            self.budget.spend(member.size)  # the unpacked size: a sparse file may be far larger than its bytes
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                src = tar.extractfile(member)
                assert src is not None
                shutil.copyfileobj(src, out, 1 << 20)
                os.fchown(fd, member.uid, member.gid)  # before chmod: chown clears set-id bits
                os.fchmod(fd, member.mode & 0o7777)
            self._xattrs(path, member)
            os.utime(path, (member.mtime, member.mtime))

    def _dir(self, parts: tuple[str, ...], name: str, *, opaque: bool = False) -> Path:
        """``dest/parts`` as a directory of this layer, made if missing; never through a symlink."""
        path = self.dest
        for i, part in enumerate(parts):
            path = path / part
            st = _lstat(path)
            if st is not None and _is_whiteout(st):
                path.unlink()  # deleted below, made again here: only this layer's contents show
                os.mkdir(path)
                os.chmod(path, 0o755)
                os.setxattr(path, OPAQUE_XATTR, b"y")
            elif st is None:
                os.mkdir(path)
                os.chmod(path, 0o755)  # a directory the tar implies but does not list: 0755, whatever the umask
            elif stat.S_ISLNK(st.st_mode):
                raise InvalidImage(f"entry {name!r} goes through the symlink {'/'.join(parts[: i + 1])!r}")
            elif not stat.S_ISDIR(st.st_mode):
                raise InvalidImage(f"entry {name!r} goes through the non-directory {'/'.join(parts[: i + 1])!r}")
        if opaque:
            os.setxattr(path, OPAQUE_XATTR, b"y")
        return path

    def _whiteout(self, parts: tuple[str, ...], name: str) -> None:
        path = self._dir(parts[:-1], name) / parts[-1]
        self._vet(tarfile.TarInfo("/".join(parts)), parts)
        st = _lstat(path)
        if st is None:
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        elif stat.S_ISDIR(st.st_mode):
            os.setxattr(path, OPAQUE_XATTR, b"y")  # this layer's own entries stay; the lower ones go
        # Otherwise this layer's own entry already hides the lower one (a whiteout never hides its own layer).

    def _check_symlink(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        """An absolute target is inside the image by definition; a relative one may not climb above the root."""
        target = member.linkname
        if not target:
            raise InvalidImage(f"symlink {member.name!r} has an empty target")
        if not target.startswith("/"):
            resolved = posixpath.normpath(posixpath.join("/".join(parts[:-1]), target))
            if resolved == ".." or resolved.startswith("../"):
                raise InvalidImage(f"symlink {member.name!r} -> {target!r} escapes the layer root")

    def _link_target(self, member: tarfile.TarInfo) -> Path:
        """A hardlink's target: a regular file unpacked earlier in this layer."""
        if member.linkname.startswith("/") or ".." in member.linkname.split("/"):
            raise InvalidImage(f"hardlink {member.name!r} -> {member.linkname!r} points outside the layer")
        path = self.dest
        for i, part in enumerate(parts := _parts(member.linkname, "hardlink target")):
            path = path / part
            st = _lstat(path)
            last = i == len(parts) - 1
            if st is None or not (stat.S_ISREG(st.st_mode) if last else stat.S_ISDIR(st.st_mode)):
                break  # missing, or reached through a symlink
        else:
            if parts:
                return path
        raise InvalidImage(f"hardlink {member.name!r} -> {member.linkname!r}: no such file earlier in the layer")

    def _vet(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        """A second opinion from tarfile's 'data' filter on the path and link target (its attribute changes,
        made for plain data, are not applied: an image keeps its owners, modes and absolute symlinks)."""
        probe = member.replace(name="/".join(parts), deep=False)
        if member.issym() and member.linkname.startswith("/"):  # the filter wants it relative to the link
            target = posixpath.relpath(posixpath.normpath(member.linkname), "/" + posixpath.dirname(probe.name))
            probe = probe.replace(linkname=target, deep=False)
        try:
            tarfile.data_filter(probe, str(self.dest))
        except tarfile.FilterError as e:
            raise InvalidImage(f"entry {member.name!r}: rejected by tarfile's data filter: {e}") from None

    @staticmethod
    def _xattrs(path: Path, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            name = key.removeprefix("SCHILY.xattr.")
            if name != key and _XATTR_ALLOWED.fullmatch(name):
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)


def mount_overlay(
    lower: Path | Sequence[Path],
    container_dir: Path,
    scratch_bytes: int | None = None,
    owner: tuple[int, int] | None = None,
) -> Path:
    """Mount the container's root at ``container_dir/rootfs``: ``lower`` read-only below (one directory, or an
    image's layers topmost first as ``ImageStore.lowerdirs`` gives them), ``container_dir/upper`` above. With
    ``scratch_bytes``, the upper layer lives on a tmpfs of that size (``container_dir/scratch``): what the
    container writes is bounded, and a full layer is ENOSPC in the container, not a full node. The root always
    has a ``/tmp`` (in the upper layer when the image lacks one), there being no tmpfs of its own. ``owner``
    (uid, gid) owns the writable layer: a container in a user namespace, whose root is that uid outside, can then
    write its root (set before the overlay is mounted: it reads the owner then)."""
    lowers = [Path(lower)] if isinstance(lower, str | os.PathLike) else list(lower)
    if not lowers:
        raise ValueError("an overlay needs at least one lower directory")
    for d in lowers:
        if ":" in str(d) or "," in str(d):
            raise ValueError(f"overlay lower directory {d} has ':' or ',' in its path")
    layer = container_dir
    if scratch_bytes is not None:
        layer = container_dir / "scratch"
        layer.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.path.ismount(layer):
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={scratch_bytes},mode=0700,nosuid,nodev", "tmpfs", str(layer)],
                check=True,
                capture_output=True,
            )
    upper, work = layer / "upper", layer / "work"
    merged = container_dir / "rootfs"
    options = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    if len(options) >= os.sysconf("SC_PAGE_SIZE"):
        raise ValueError(f"overlay options for {len(lowers)} layers are {len(options)} bytes, over one page")
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(merged):
        return merged
    if owner is not None:
        for d in (layer, upper, work):
            os.chown(d, *owner)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True, capture_output=True)
    tmp = merged / "tmp"
    if not tmp.is_dir() and not tmp.is_symlink():
        tmp.mkdir()
        tmp.chmod(0o1777)
    return merged


def unmount_overlay(container_dir: Path, busy_timeout_s: float = 2.0) -> None:
    """Unmount the container's root, then its writable layer's tmpfs if it has one. Right after a container dies
    its mount can be busy for a moment (the kernel still tearing the process down): retry for ``busy_timeout_s``,
    then detach it lazily (it goes away when the last user does) rather than leave it. Raises ``OSError`` if even
    that fails."""
    merged = container_dir / "rootfs"
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.005
    while os.path.ismount(merged):
        done = subprocess.run(["umount", str(merged)], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            break
        if time.monotonic() >= deadline:
            lazy = subprocess.run(["umount", "-l", str(merged)], capture_output=True, text=True, check=False)
            if lazy.returncode != 0:
                raise OSError(f"cannot unmount {merged}: {done.stderr.strip()} / {lazy.stderr.strip()}")
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    scratch = container_dir / "scratch"  # the writable layer's tmpfs, once the root above it is gone
    if os.path.ismount(scratch):
        gone = subprocess.run(["umount", str(scratch)], capture_output=True, text=True, check=False)
        if gone.returncode != 0:
            subprocess.run(["umount", "-l", str(scratch)], capture_output=True, check=False)
