"""Image import: OCI layouts and docker save tarballs, built here with tarfile, into a real store in a temp dir.

Imports run as root (layers keep owners; whiteouts are device nodes and trusted xattrs), so these tests do too.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import zstandard

from nodelet import images
from nodelet.images import (
    OPAQUE_XATTR,
    PLATFORM,
    ImageConfig,
    ImageStore,
    InUse,
    InvalidImage,
    LayeredImage,
    UnknownImage,
    mount_overlay,
    normalize,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="image import needs root (owners, whiteout devices)")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"

Entry = tuple[tarfile.TarInfo, bytes]
Members = list[tuple[str, bytes]]


# Builders: layer entries, layers, images, tarballs.


def _info(name: str, type_: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = type_, mode, uid, gid, 1_700_000_000
    return info


def file(
    name: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0, pax: dict[str, str] | None = None
) -> Entry:
    info = _info(name, tarfile.REGTYPE, mode, uid, gid)
    info.size, info.pax_headers = len(data), pax or {}
    return info, data


def directory(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0, pax: dict[str, str] | None = None) -> Entry:
    info = _info(name, tarfile.DIRTYPE, mode, uid, gid)
    info.pax_headers = pax or {}
    return info, b""


def symlink(name: str, target: str) -> Entry:
    info = _info(name, tarfile.SYMTYPE, 0o777)
    info.linkname = target
    return info, b""


def hardlink(name: str, target: str) -> Entry:
    info = _info(name, tarfile.LNKTYPE, 0o644)
    info.linkname = target
    return info, b""


def device(name: str, type_: bytes = tarfile.CHRTYPE, major: int = 1, minor: int = 3) -> Entry:
    info = _info(name, type_, 0o666)
    info.devmajor, info.devminor = major, minor
    return info, b""


def whiteout(path: str) -> Entry:
    parent, _, base = path.rpartition("/")
    return file(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opaque(path: str) -> Entry:
    return file(f"{path}/.wh..wh..opq")


def layer(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclasses.dataclass(frozen=True)
class Image:
    layers: tuple[bytes, ...]  # uncompressed tars, bottom first
    names: tuple[str, ...] = ("myapp",)
    gzip: bool = False
    zstd: bool = False
    layer_media_type: str | None = None
    diff_ids: tuple[str, ...] | None = None  # what the config claims; the layers' own digests by default
    user: str = ""  # the config's User
    run: Mapping[str, object] = dataclasses.field(default_factory=dict)  # more of the config's config

    def blob(self, tar: bytes) -> bytes:
        if self.zstd:
            return zstandard.ZstdCompressor().compress(tar)
        return gzip.compress(tar, mtime=0) if self.gzip else tar

    def config(self) -> bytes:
        rootfs = {"type": "layers", "diff_ids": list(self.diff_ids or (sha(t) for t in self.layers))}
        run: dict[str, object] = {"User": self.user} if self.user else {}
        run.update(self.run)
        return json.dumps({"architecture": PLATFORM[1], "os": "linux", "rootfs": rootfs, "config": run}).encode()

    def manifest(self) -> bytes:
        media = self.layer_media_type or OCI_LAYER + ("+zstd" if self.zstd else "+gzip" if self.gzip else "")
        layers = [{"mediaType": media, "digest": sha(self.blob(t)), "size": len(self.blob(t))} for t in self.layers]
        config = {"mediaType": OCI_CONFIG, "digest": sha(self.config()), "size": len(self.config())}
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}).encode()

    def descriptors(self) -> list[dict[str, object]]:
        desc = {"mediaType": OCI_MANIFEST, "digest": sha(self.manifest()), "size": len(self.manifest())}
        return [{**desc, "annotations": {REF_NAME: name}} for name in self.names] or [desc]

    def oci(self) -> Members:
        """An OCI image layout: oci-layout, index.json, blobs/sha256/<hex>."""
        blobs = [self.manifest(), self.config(), *(self.blob(t) for t in self.layers)]
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.descriptors()}
        return [
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
            *{blob_name(b): b for b in blobs}.items(),
        ]

    def docker(self) -> Members:
        """A classic docker save: <config hex>.json, <v1 id>/layer.tar, manifest.json."""
        config_name = f"{sha(self.config())[7:]}.json"
        layers = [(f"{hashlib.sha256(b'v1%d' % i).hexdigest()}/layer.tar", t) for i, t in enumerate(self.layers)]
        entry = {"Config": config_name, "RepoTags": list(self.names), "Layers": [n for n, _ in layers]}
        return [
            (config_name, self.config()),
            *((name, self.blob(t)) for name, t in layers),
            ("manifest.json", json.dumps([entry]).encode()),
        ]


def blob_name(data: bytes) -> str:
    return f"blobs/sha256/{sha(data)[7:]}"


def write_tar(path: Path, members: Members) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def listing(d: Path) -> dict[str, tuple[object, ...]]:
    """What a layer directory holds, entry by entry, without following symlinks."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                what: tuple[object, ...] = (
                    "dir",
                    os.getxattr(path, OPAQUE_XATTR) if OPAQUE_XATTR in os.listxattr(path) else None,
                )
            elif stat.S_ISLNK(st.st_mode):
                what = ("symlink", os.readlink(path))
            elif stat.S_ISCHR(st.st_mode):
                what = ("whiteout" if st.st_rdev == 0 else "chardev",)
            else:
                what = ("file", path.read_bytes())
            out[str(path.relative_to(d))] = (*what, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture
def tarball(tmp_path: Path) -> Callable[[Members], Path]:
    counter = iter(range(1_000_000))
    return lambda members: write_tar(tmp_path / f"image{next(counter)}.tar", members)


@pytest.fixture
def unpacked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The diff ids (hex) of every layer unpacked, in order."""
    seen: list[str] = []
    real = images._unpack_layer

    def spy(stream: images._HashingReader, dest: Path, budget: images._Budget) -> None:
        seen.append(dest.name)
        real(stream, dest, budget)

    monkeypatch.setattr(images, "_unpack_layer", spy)
    yield seen


# Layers shared by the tests.
BASE = layer(
    directory("etc"),
    file("etc/keep", b"kept\n"),
    file("etc/gone", b"deleted by layer 2\n"),
    directory("opt/old"),
    file("opt/old/a", b"a\n"),
    file("opt/old/b", b"b\n"),
)
TOP = layer(whiteout("etc/gone"), opaque("opt/old"), file("opt/old/new", b"new\n"), file("hello.txt", b"hello\n"))
EXTRA = layer(file("extra", b"extra\n"))
TWO_LAYERS = Image((BASE, TOP))


def hexid(tar: bytes) -> str:
    return sha(tar)[7:]


# Importing.


def test_two_layers_oci_whiteout_and_opaque_in_overlayfs_form(store: ImageStore, tarball: Callable[..., Path]) -> None:
    record = store.import_tar(tarball(TWO_LAYERS.oci()))
    assert (record.id, record.layers, record.tags) == (
        sha(TWO_LAYERS.config()),
        (sha(BASE), sha(TOP)),
        ("myapp:latest",),
    )
    blobs = [TWO_LAYERS.manifest(), TWO_LAYERS.config(), BASE, TOP]
    assert (record.size, record.blobs) == (len(BASE) + len(TOP), tuple(sha(b) for b in blobs))
    top, base = store.lowerdirs("myapp")
    assert (top, base) == (store.root / "layers" / hexid(TOP), store.root / "layers" / hexid(BASE))
    assert listing(top) == {
        "etc": ("dir", None, 0o755, 0, 0),
        "etc/gone": ("whiteout", 0, 0, 0),
        "opt": ("dir", None, 0o755, 0, 0),
        "opt/old": ("dir", b"y", 0o755, 0, 0),
        "opt/old/new": ("file", b"new\n", 0o644, 0, 0),
        "hello.txt": ("file", b"hello\n", 0o644, 0, 0),
    }
    assert listing(base)["etc/gone"] == ("file", b"deleted by layer 2\n", 0o644, 0, 0)
    assert sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir()) == sorted(
        sha(b)[7:] for b in (TWO_LAYERS.manifest(), TWO_LAYERS.config(), BASE, TOP)
    )
    assert list((store.root / "tmp").iterdir()) == []


def test_the_same_image_from_docker_save_and_oci_is_the_same_image(
    tmp_path: Path, tarball: Callable[..., Path], unpacked: list[str]
) -> None:
    oci, docker = ImageStore(tmp_path / "a"), ImageStore(tmp_path / "b")
    from_oci = oci.import_tar(tarball(TWO_LAYERS.oci()))
    from_docker = docker.import_tar(tarball(TWO_LAYERS.docker()))
    assert (from_oci.id, from_oci.layers, from_oci.tags, from_oci.size) == (
        from_docker.id, from_docker.layers, from_docker.tags, from_docker.size
    )  # fmt: skip
    for a, b in zip(oci.lowerdirs("myapp"), docker.lowerdirs("myapp"), strict=True):
        assert listing(a) == listing(b)
    # Into a store that has it already: nothing is unpacked again.
    assert oci.import_tar(tarball(TWO_LAYERS.docker())).layers == from_oci.layers
    assert unpacked == [hexid(BASE), hexid(TOP)] * 2


def test_gzip_layers_are_stored_as_blobs_and_unpacked_under_their_diff_ids(
    store: ImageStore, tarball: Callable[..., Path], unpacked: list[str]
) -> None:
    image = dataclasses.replace(TWO_LAYERS, gzip=True)
    record = store.import_tar(tarball(image.oci()))
    assert record.layers == (sha(BASE), sha(TOP))
    for tar in (BASE, TOP):
        assert (store.root / blob_name(image.blob(tar))).read_bytes() == image.blob(tar)
        assert not (store.root / blob_name(tar)).exists()
    assert store.lowerdirs("myapp") == [store.root / "layers" / hexid(TOP), store.root / "layers" / hexid(BASE)]
    # docker save does not say whether a layer is compressed: the gzip magic does.
    assert store.import_tar(tarball(image.docker())).id == record.id
    assert unpacked == [hexid(BASE), hexid(TOP)]


def test_zstd_layers_by_media_type_and_in_docker_save_by_their_magic(
    tmp_path: Path, tarball: Callable[..., Path]
) -> None:
    image = dataclasses.replace(TWO_LAYERS, zstd=True)
    assert image.blob(BASE)[:4] == b"\x28\xb5\x2f\xfd"
    for i, members in enumerate((image.oci(), image.docker())):
        store = ImageStore(tmp_path / str(i))
        record = store.import_tar(tarball(members))
        assert record.layers == (sha(BASE), sha(TOP))
        assert record.size == len(image.blob(BASE)) + len(image.blob(TOP))
        assert (store.lowerdirs("myapp")[1] / "etc").is_dir()


def test_a_layer_shared_by_two_images_is_unpacked_once(
    store: ImageStore, tarball: Callable[..., Path], unpacked: list[str]
) -> None:
    first = store.import_tar(tarball(Image((BASE, TOP), names=("first",)).oci()))
    second = store.import_tar(tarball(Image((BASE, EXTRA), names=("second",)).oci()))
    assert unpacked == [hexid(BASE), hexid(TOP), hexid(EXTRA)]
    assert store.lowerdirs("first")[1] == store.lowerdirs("second")[1] == store.root / "layers" / hexid(BASE)
    assert first.id != second.id
    assert sorted(p.name for p in (store.root / "layers").iterdir()) == sorted(map(hexid, (BASE, TOP, EXTRA)))


def test_a_layer_listed_twice_in_one_image_is_unpacked_once_and_stacked_once(
    store: ImageStore, tarball: Callable[..., Path], unpacked: list[str]
) -> None:
    store.import_tar(tarball(Image((BASE, EXTRA, BASE)).oci()))
    assert unpacked == [hexid(BASE), hexid(EXTRA)]
    # overlayfs refuses a repeated lowerdir; the topmost copy shows all the lower one would.
    assert store.lowerdirs("myapp") == [store.root / "layers" / hexid(BASE), store.root / "layers" / hexid(EXTRA)]


def test_owners_modes_links_and_allowed_xattrs_are_kept(store: ImageStore, tarball: Callable[..., Path]) -> None:
    tar = layer(
        directory("tmp", mode=0o1777),
        directory("home/app", mode=0o700, uid=1000, gid=1000),
        file("usr/bin/su", b"\x7fELF", mode=0o4755),
        file("home/app/data", b"mine", mode=0o600, uid=1000, gid=1000, pax={"SCHILY.xattr.user.origin": "test"}),
        # A layer may not steer overlayfs: its trusted.overlay.* attributes are dropped.
        directory("smuggled", pax={f"SCHILY.xattr.{OPAQUE_XATTR}": "y"}),
        hardlink("usr/bin/su2", "usr/bin/su"),
        symlink("bin/sh", "/bin/busybox"),
        symlink("lib", "usr/lib"),
    )
    store.import_tar(tarball(Image((tar,)).oci()))
    root = store.resolve("myapp")
    assert listing(root) == {
        "tmp": ("dir", None, 0o1777, 0, 0),
        "home": ("dir", None, 0o755, 0, 0),
        "home/app": ("dir", None, 0o700, 1000, 1000),
        "home/app/data": ("file", b"mine", 0o600, 1000, 1000),
        "usr": ("dir", None, 0o755, 0, 0),
        "usr/bin": ("dir", None, 0o755, 0, 0),
        "usr/bin/su": ("file", b"\x7fELF", 0o4755, 0, 0),
        "usr/bin/su2": ("file", b"\x7fELF", 0o4755, 0, 0),
        "smuggled": ("dir", None, 0o755, 0, 0),
        "bin": ("dir", None, 0o755, 0, 0),
        "bin/sh": ("symlink", "/bin/busybox", 0o777, 0, 0),
        "lib": ("symlink", "usr/lib", 0o777, 0, 0),
    }
    assert os.getxattr(root / "home/app/data", "user.origin") == b"test"
    assert os.stat(root / "usr/bin/su").st_ino == os.stat(root / "usr/bin/su2").st_ino
    assert os.stat(root / "home/app/data").st_mtime == 1_700_000_000


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # A whiteout hides only lower layers, never its own layer's entry, in either order.
        ((whiteout("x"), file("x", b"mine")), {"x": ("file", b"mine", 0o644, 0, 0)}),
        ((file("x", b"mine"), whiteout("x")), {"x": ("file", b"mine", 0o644, 0, 0)}),
        # Deleting a lower directory and bringing one's own: an opaque directory.
        ((whiteout("d"), file("d/f")), {"d": ("dir", b"y", 0o755, 0, 0), "d/f": ("file", b"", 0o644, 0, 0)}),
        ((file("d/f"), whiteout("d")), {"d": ("dir", b"y", 0o755, 0, 0), "d/f": ("file", b"", 0o644, 0, 0)}),
        ((whiteout("d"), directory("d", mode=0o750)), {"d": ("dir", b"y", 0o750, 0, 0)}),
        # A 0:0 character device is a whiteout already; AUFS metadata is not content.
        ((device("x", major=0, minor=0),), {"x": ("whiteout", 0, 0, 0)}),
        ((file(".wh..wh.plnk/123.456"), file(".wh..wh.aufs")), {}),
    ],
    ids=["whiteout-then-file", "file-then-whiteout", "whiteout-then-dir-entry", "dir-entry-then-whiteout",
         "whiteout-then-dir", "overlay-whiteout", "aufs-metadata"],
)  # fmt: skip
def test_whiteouts_within_one_layer(
    store: ImageStore, tarball: Callable[..., Path], entries: Sequence[Entry], expected: dict[str, object]
) -> None:
    store.import_tar(tarball(Image((BASE, layer(*entries))).oci()))
    assert listing(store.lowerdirs("myapp")[0]) == expected


def test_a_layer_that_makes_the_root_opaque_hides_every_layer_below(
    store: ImageStore, tarball: Callable[..., Path]
) -> None:
    top = layer(file(".wh..wh..opq"), file("only"))
    store.import_tar(tarball(Image((BASE, EXTRA, top)).oci()))
    assert store.lowerdirs("myapp") == [store.root / "layers" / hexid(top)]


def test_a_piped_and_a_gzipped_tarball(store: ImageStore, tarball: Callable[..., Path], tmp_path: Path) -> None:
    path = tarball(TWO_LAYERS.docker())
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None
        piped = store.import_tar(cat.stdout)
    gzipped = tmp_path / "image.tar.gz"
    gzipped.write_bytes(gzip.compress(path.read_bytes()))
    assert ImageStore(tmp_path / "other").import_tar(gzipped) == piped
    assert store.import_tar(io.BytesIO(path.read_bytes())) == piped


def test_docker_save_links_a_repeated_layer_to_its_first_copy(store: ImageStore, tmp_path: Path) -> None:
    members = Image((BASE, EXTRA, BASE)).docker()
    first, _, third = (name for name, _ in members if name.endswith("layer.tar"))
    path = write_tar(tmp_path / "linked.tar", [(n, d) for n, d in members if n != third])
    with tarfile.open(path, "a") as tar:
        link = tarfile.TarInfo(third)
        link.type, link.linkname = tarfile.SYMTYPE, f"../{first}"
        tar.addfile(link)
    assert store.import_tar(path).layers == (sha(BASE), sha(EXTRA), sha(BASE))


def test_an_import_clears_what_a_crashed_import_left(store: ImageStore, tarball: Callable[..., Path]) -> None:
    (store.root / "tmp" / "crashed" / "layers" / "x").mkdir(parents=True)
    store.import_tar(tarball(TWO_LAYERS.oci()))
    assert list((store.root / "tmp").iterdir()) == []


def test_a_multi_platform_index_yields_this_nodes_image(store: ImageStore, tarball: Callable[..., Path]) -> None:
    mine, other = TWO_LAYERS, Image((EXTRA,))
    other_arch = "arm64" if PLATFORM[1] != "arm64" else "amd64"

    def desc(image: Image, os_: str, arch: str) -> dict[str, object]:
        return {**image.descriptors()[0], "annotations": {}, "platform": {"os": os_, "architecture": arch}}

    nested = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        desc(other, "linux", other_arch), desc(mine, *PLATFORM), desc(other, "unknown", "unknown"),
    ]}).encode()  # fmt: skip
    top = {"mediaType": OCI_INDEX, "digest": sha(nested), "size": len(nested),
           "annotations": {"io.containerd.image.name": "docker.io/library/multi:1.0", REF_NAME: "1.0"}}  # fmt: skip
    members = dict(mine.oci() + other.oci()[2:])
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    members[blob_name(nested)] = nested
    record = store.import_tar(tarball(list(members.items())))
    assert (record.id, record.layers, record.tags) == (sha(mine.config()), (sha(BASE), sha(TOP)), ("multi:1.0",))


# Names.


def test_names_resolve_to_image_ids(store: ImageStore, tarball: Callable[..., Path]) -> None:
    tagged = Image((BASE, TOP), names=("alpine:3.19", "docker.io/library/myapp", "localhost:5000/team/app:v2"))
    record = store.import_tar(tarball(tagged.oci()))
    assert record.tags == ("alpine:3.19", "localhost:5000/team/app:v2", "myapp:latest")
    for ref in ("alpine:3.19", "myapp", "myapp:latest", "docker.io/library/myapp", "localhost:5000/team/app:v2"):
        assert store.lowerdirs(ref) == store.lowerdirs(record.id)
    for ref in ("alpine", "alpine:3.20", "sha256:" + "0" * 64, "Not A Name"):
        with pytest.raises(UnknownImage, match=repr(ref)):
            store.lowerdirs(ref)
    # A later import moves a name; the earlier image stays reachable by id.
    moved = store.import_tar(tarball(Image((EXTRA,), names=("myapp",)).oci()))
    assert store.resolve("myapp") == store.root / "layers" / hexid(EXTRA)
    assert store.lowerdirs("alpine:3.19") == store.lowerdirs(record.id) != store.lowerdirs(moved.id)


def test_resolve_gives_one_directory_and_refuses_a_stack(store: ImageStore, tarball: Callable[..., Path]) -> None:
    store.import_tar(tarball(TWO_LAYERS.oci()))
    with pytest.raises(LayeredImage, match="'myapp' has 2 layers"):
        store.resolve("myapp")
    assert store.lowerdirs("busybox") == [store.resolve("busybox")]
    assert (store.resolve("busybox:latest") / "bin" / "busybox").is_file()


def test_normalize() -> None:
    assert [normalize(r) for r in ("a", "a:1", "docker.io/library/a", "docker.io/x/a:2", "host:5000/a")] == [
        "a:latest", "a:1", "a:latest", "x/a:2", "host:5000/a:latest",
    ]  # fmt: skip


def test_mount_overlay_refuses_lower_paths_it_cannot_express(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="':' or ','"):
        mount_overlay([tmp_path / "a:b"], tmp_path / "c")
    with pytest.raises(ValueError, match="at least one"):
        mount_overlay([], tmp_path / "c")


# Rejections: each leaves the store exactly as it was.

NEW = layer(file("new", b"a layer this store does not have yet\n"))


@pytest.fixture
def seeded(store: ImageStore, tarball: Callable[..., Path]) -> ImageStore:
    store.import_tar(tarball(Image((BASE,), names=("base",)).oci()))
    return store


def rejects(store: ImageStore, path: Path, match: str) -> None:
    before = tree(store.root)
    with pytest.raises(InvalidImage, match=match):
        store.import_tar(path)
    assert tree(store.root) == before


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ((file("/etc/passwd", b"x"),), r"entry '/etc/passwd': absolute path"),
        ((file("../evil"),), r"entry '../evil': '\.\.' in path"),
        ((file("a/../../evil"),), r"entry 'a/\.\./\.\./evil': '\.\.' in path"),
        ((symlink("a", "../../etc"),), r"symlink 'a' -> '../../etc' escapes the layer root"),
        ((symlink("x/y", "../../.."),), r"symlink 'x/y' -> '../../..' escapes the layer root"),
        ((hardlink("h", "../outside"),), r"hardlink 'h' -> '../outside' points outside the layer"),
        ((hardlink("h", "/etc/passwd"),), r"hardlink 'h' -> '/etc/passwd' points outside the layer"),
        ((hardlink("h", "etc/keep"),), r"hardlink 'h' -> 'etc/keep': no such file earlier in the layer"),
        ((file("d/f"), symlink("s", "d"), hardlink("h", "s/f")), r"hardlink 'h' -> 's/f': no such file earlier"),
        ((device("null"),), r"entry 'null': special files"),
        ((device("sda", tarfile.BLKTYPE, 8, 0),), r"entry 'sda': special files"),
        ((device("fifo", tarfile.FIFOTYPE, 0, 0),), r"entry 'fifo': special files"),
        ((symlink("a", "/etc"), file("a/passwd", b"root::0:0\n")), r"entry 'a/passwd' goes through the symlink 'a'"),
        ((symlink("a", "/etc"), whiteout("a/passwd")), r"entry 'a/.wh.passwd' goes through the symlink 'a'"),
        ((symlink("a", "/etc"), opaque("a")), r"entry 'a/.wh..wh..opq' goes through the symlink 'a'"),
        ((file("f"), file("f/x")), r"entry 'f/x' goes through the non-directory 'f'"),
        # Each link stays inside on its own; together they climb out. tarfile's data filter sees it on disk.
        ((symlink("d/up", ".."), symlink("x", "d/up/..")), r"entry 'x': rejected by tarfile's data filter"),
        ((file(".wh..."),), r"entry '\.wh\.\.\.': whiteout of no name"),
        ((file("f", b"1"), file("f", b"2")), r"entry 'f': duplicate entry in the layer"),
    ],
    ids=["absolute", "dotdot", "dotdot-inside", "symlink-escape", "symlink-escape-nested", "hardlink-escape",
         "hardlink-absolute", "hardlink-other-layer", "hardlink-via-symlink", "chardev", "blockdev", "fifo",
         "file-via-symlink", "whiteout-via-symlink", "opaque-via-symlink", "via-file", "symlink-chain",
         "whiteout-dotdot", "duplicate"],
)  # fmt: skip
def test_a_malicious_layer_is_rejected_and_leaves_nothing(
    seeded: ImageStore, tarball: Callable[..., Path], entries: Sequence[Entry], match: str
) -> None:
    # The new layer before the bad one unpacks completely in staging, and must not survive either.
    bad = Image((BASE, NEW, layer(*entries)))
    for members in (bad.oci(), bad.docker()):
        rejects(seeded, tarball(members), rf"layer 3 \(.+\): {match}")
    assert not (seeded.root / "layers" / hexid(NEW)).exists()


def test_a_tar_bomb_is_stopped_at_the_size_limit(tmp_path: Path, tarball: Callable[..., Path]) -> None:
    store = ImageStore(tmp_path / "store", max_bytes=1 << 20)
    store.import_tar(tarball(Image((BASE,), names=("base",)).oci()))
    bomb = dataclasses.replace(Image((NEW, layer(file("zeros", bytes(8 << 20))))), gzip=True)
    assert len(bomb.blob(bomb.layers[1])) < 64 << 10  # small on the wire
    rejects(store, tarball(bomb.oci()), r"layer 2 \(.+\): the files in the image's layers exceed the size limit")
    rejects(store, tarball(bomb.docker()), r"exceed the size limit of 1048576 bytes")
    # The limit is for the whole image: two layers under it each, over it together.
    half = Image((NEW, layer(file("a", bytes(600 << 10))), layer(file("b", bytes(600 << 10)))))
    rejects(store, tarball(dataclasses.replace(half, gzip=True).oci()), r"layer 3 \(.+\): .* exceed the size limit")
    # Entries without data count too: their headers are uncompressed bytes.
    headers = dataclasses.replace(Image((NEW, layer(*(file(f"f{i}") for i in range(2500))))), gzip=True)
    rejects(store, tarball(headers.oci()), r"layer 2 \(.+\): the image's uncompressed layers exceed the size limit")
    # A blob over the limit is refused before it is copied.
    big = Image((NEW, layer(file("c", bytes(1100 << 10)))))
    rejects(store, tarball(big.oci()), r"layer 2 blob '.+' is \d+ bytes, over the size limit of 1048576")


def test_a_corrupt_layer_is_rejected(seeded: ImageStore, tarball: Callable[..., Path]) -> None:
    truncated = Image((BASE, NEW, layer(file("big", bytes(100_000)))[:50_000]))
    rejects(seeded, tarball(truncated.oci()), r"layer 3 \(blobs/sha256/\w+\) is corrupt: unexpected end of data")
    not_gzip = Image((BASE, NEW, b"\x1f\x8b" + b"garbage" * 100))
    rejects(seeded, tarball(not_gzip.docker()), r"layer 3 \(.+/layer.tar\) is corrupt")


def digest_cases() -> Iterator[tuple[str, Callable[[Members], Members], str]]:
    image = Image((BASE, NEW))

    def replace(name: str, data: bytes) -> Callable[[Members], Members]:
        return lambda members: [(n, data if n == name else d) for n, d in members]

    config, manifest, new_blob = blob_name(image.config()), blob_name(image.manifest()), blob_name(NEW)
    yield "config", replace(config, image.config()[:-1] + b" "), rf"digest mismatch: config blob '{config}' should be"
    yield "manifest", replace(manifest, image.manifest()[:-1] + b" "), rf"digest mismatch: manifest blob '{manifest}'"
    yield "layer", replace(new_blob, NEW[:-1] + b"\1"), rf"digest mismatch: layer 2 blob '{new_blob}' should be"
    yield "size", replace(new_blob, NEW + bytes(512)), rf"layer 2 blob '{new_blob}' is \d+ bytes; its descriptor says"


@pytest.mark.parametrize(("tamper", "match"), [c[1:] for c in digest_cases()], ids=[c[0] for c in digest_cases()])
def test_a_blob_that_does_not_match_its_digest_is_rejected(
    seeded: ImageStore, tarball: Callable[..., Path], tamper: Callable[[Members], Members], match: str
) -> None:
    rejects(seeded, tarball(tamper(Image((BASE, NEW)).oci())), match)


def test_a_layer_that_does_not_match_its_diff_id_is_rejected(seeded: ImageStore, tarball: Callable[..., Path]) -> None:
    lying = Image((BASE, NEW), diff_ids=(sha(BASE), sha(EXTRA)))
    says = rf"uncompressed is {sha(NEW)}; the config says {sha(EXTRA)}"
    rejects(seeded, tarball(lying.oci()), rf"digest mismatch: layer 2 \({blob_name(NEW)}\) {says}")
    # docker save: the layer's name carries no digest; the config's diff id is what it must match.
    rejects(seeded, tarball(lying.docker()), rf"digest mismatch: layer 2 \(\w+/layer.tar\) {says}")


def with_config_name(members: Members, name: str) -> Members:
    old = next(n for n, _ in members if n.endswith(".json") and n != "manifest.json")
    return [(name if n == old else n, d.replace(old.encode(), name.encode()) if n == "manifest.json" else d)
            for n, d in members]  # fmt: skip


def test_a_docker_save_config_is_checked_against_its_name(seeded: ImageStore, tarball: Callable[..., Path]) -> None:
    image = Image((BASE, NEW))
    wrong = with_config_name(image.docker(), f"{'0' * 64}.json")
    rejects(seeded, tarball(wrong), rf"digest mismatch: config blob '{'0' * 64}.json' should be sha256:0+ but")
    # A name that is no digest: the content's digest is the image id.
    assert seeded.import_tar(tarball(with_config_name(image.docker(), "config.json"))).id == sha(image.config())


def outer_cases() -> Iterator[tuple[str, Members, str]]:
    image = Image((BASE, NEW))
    oci, docker = image.oci(), image.docker()
    index = json.loads(dict(oci)["index.json"])

    def with_index(**changes: object) -> Members:
        return [(n, json.dumps({**index, **changes}).encode() if n == "index.json" else d) for n, d in oci]

    def with_manifest(media: str) -> Members:
        zstd = dataclasses.replace(image, layer_media_type=media)
        return zstd.oci()

    yield "duplicate-index", [*oci, ("./index.json", b'{"manifests": []}')], r"duplicate entry 'index.json'"
    yield "duplicate-blob", [*oci, (blob_name(NEW), b"other")], rf"duplicate entry '{blob_name(NEW)}'"
    yield "missing-blob", [m for m in oci if m[0] != blob_name(NEW)], rf"missing entry '{blob_name(NEW)}'"
    yield "missing-index", [m for m in oci if m[0] != "index.json"], r"missing entry 'index.json'"
    yield "missing-layer", [m for m in docker if "layer.tar" not in m[0]], r"missing entry '\w+/layer.tar'"
    yield "neither", [("hello", b"")], r"not an image tarball"
    yield "no-image", with_index(manifests=[]), r"index.json lists no image for linux/"
    two = [*index["manifests"], {**index["manifests"][0], "digest": sha(b"x"), "annotations": {}}]
    yield "two-images", with_index(manifests=two), r"index.json lists 2 images .* import exactly one"
    twice = json.dumps(json.loads(docker[-1][1]) * 2).encode()
    yield "docker-two-images", [*docker[:-1], ("manifest.json", twice)], r"manifest.json lists 2 images"
    yield "bzip2", with_manifest(OCI_LAYER + "+bzip2"), r"layer 1 has unsupported media type '.*\+bzip2'"
    odd = [{**index["manifests"][0], "mediaType": "application/vnd.example+json"}]
    yield "index-media-type", with_index(manifests=odd), r"unsupported media type 'application/vnd.example\+json'"
    yield "bad-json", with_index(manifests="nope"), r"index.json: Expected `array`, got `str` - at `\$.manifests`"
    bad_digest = [{**index["manifests"][0], "digest": "sha512:" + "0" * 128}]
    yield "bad-digest", with_index(manifests=bad_digest), r"Expected `str` matching regex '\^sha256:.*digest`"
    yield "bad-name", Image((BASE,), names=("Bad Name",)).oci(), r"invalid image name 'Bad Name'"


@pytest.mark.parametrize(("members", "match"), [c[1:] for c in outer_cases()], ids=[c[0] for c in outer_cases()])
def test_a_malformed_tarball_is_rejected(
    seeded: ImageStore, tarball: Callable[..., Path], members: Members, match: str
) -> None:
    rejects(seeded, tarball(members), match)


def test_not_a_tarball(seeded: ImageStore, tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\0junk" * 100)
    rejects(seeded, tmp_path / "junk", r"not a readable tar archive|not an image tarball")


# The image's config, the store's listing, removal and image GC.


def test_the_config_says_how_to_run_it(store: ImageStore, tarball: Callable[..., Path]) -> None:
    run = {"Entrypoint": ["/bin/app"], "Cmd": ["--port", "80"], "Env": ["A=1"], "WorkingDir": "/srv", "User": "7"}
    store.import_tar(tarball(Image((BASE,), run=run).oci()))
    assert store.config("myapp") == ImageConfig(("/bin/app",), ("--port", "80"), ("A=1",), "/srv", "7")
    store.import_tar(tarball(Image((BASE,), names=("bare",), run={"Cmd": None, "User": 0}).oci()))
    assert store.config("bare") == ImageConfig(user="0")  # null Cmd, a numeric User
    assert store.config("busybox") == ImageConfig(cmd=("sh",))
    with pytest.raises(UnknownImage):
        store.config("nope")


def two_images(store: ImageStore, tarball: Callable[..., Path]) -> tuple[str, str]:
    """``old`` (BASE, TOP) and ``new`` (BASE, NEW): BASE is shared."""
    old = store.import_tar(tarball(Image((BASE, TOP), names=("old", "old-alias")).oci())).id
    new = store.import_tar(tarball(Image((BASE, NEW), names=("new",)).oci())).id
    return old, new


def test_rmi_untags_then_removes_and_keeps_what_others_share(store: ImageStore, tarball: Callable[..., Path]) -> None:
    old, new = two_images(store, tarball)
    assert [i.tags for i in store.held()] == [("new:latest",), ("old-alias:latest", "old:latest")]
    assert store.remove("old-alias", frozenset()) == []  # one of two names: only the name goes
    assert store.image_id("old") == old and store.image_id("old-alias") is None
    with pytest.raises(InUse):
        store.remove("old", frozenset({old}))
    assert store.remove("old", frozenset({new})) == [old]
    assert store.image_id("old") is None and store.image_id(old) is None
    layers = {p.name for p in (store.root / "layers").iterdir()}
    assert layers == {hexid(BASE), hexid(NEW)}  # TOP went; BASE stays with new
    assert store.lowerdirs("new")  # still runs
    kept = {p.name for p in (store.root / "blobs" / "sha256").iterdir()}
    assert hexid(TOP) not in kept and hexid(BASE) in kept
    with pytest.raises(UnknownImage):
        store.remove("old", frozenset())


def test_image_gc_takes_the_least_recently_used_and_never_one_in_use(
    store: ImageStore, tarball: Callable[..., Path]
) -> None:
    old, new = two_images(store, tarball)
    assert store.collect(frozenset(), high_percent=100, low_percent=0, min_age_s=0) == []  # below the high mark
    os.utime(store.root / "images" / f"{old[7:]}.json", ns=(1, 1))  # used long ago
    store.touch(new)
    # Over the high mark, down to an unreachable low one: every image not in use goes, oldest first; one used
    # (or pulled) within the minimum age stays.
    assert store.collect(frozenset(), high_percent=0, low_percent=0) == [old]
    assert [i.id for i in store.held()] == [new]
    assert store.collect(frozenset({new}), high_percent=0, low_percent=0, min_age_s=0) == []
    assert store.collect(frozenset(), high_percent=0, low_percent=0, min_age_s=0, names_in_use=frozenset({"new"})) == []
    assert store.collect(frozenset(), high_percent=0, low_percent=0, min_age_s=0) == [new]
    assert store.held() == [] and list((store.root / "layers").iterdir()) == []
    assert store.lowerdirs("busybox")  # the built-in is never collected


def test_a_name_never_points_at_a_removed_image(store: ImageStore, tarball: Callable[..., Path]) -> None:
    """A record gone with its name left (a crash between the two, by an older version) is no image at all."""
    old, _ = two_images(store, tarball)
    (store.root / "images" / f"{old[7:]}.json").unlink()
    assert store.image_id("old") is None and store.image_id(old) is None
    with pytest.raises(UnknownImage):
        store.lowerdirs("old")
    with pytest.raises(UnknownImage):
        store.remove("old", frozenset())


def test_an_import_names_the_image_as_it_lands(store: ImageStore, tarball: Callable[..., Path]) -> None:
    record = store.import_tar(tarball(Image((BASE,), names=()).oci()), names=("127.0.0.1:5000/app:1",))
    assert record.tags == ("127.0.0.1:5000/app:1",) and store.image_id("127.0.0.1:5000/app:1") == record.id
