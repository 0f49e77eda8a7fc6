"""Imported images for real: the kernel's overlayfs over imported layers, and runc running an imported image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodelet.images import ImageStore, mount_overlay
from nodelet.ocispec import oci_config
from nodelet.runtime import ExitStatus, RuncRuntime
from tests.builders import spec
from tests.runcenv import needs_runc
from tests.unit.test_image_import import TWO_LAYERS, Image, file, layer, opaque, symlink, whiteout, write_tar
from wire.ids import new_container_id

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay mounts, image import)")


def merged_files(merged: Path) -> dict[str, bytes]:
    return {
        str(Path(d, f).relative_to(merged)): Path(d, f).read_bytes() for d, _, files in os.walk(merged) for f in files
    }


@needs_root
def test_overlayfs_stacks_imported_layers_with_their_whiteouts(root: Path) -> None:
    store = ImageStore(root / "images")
    store.import_tar(write_tar(root / "two.tar", TWO_LAYERS.oci()))
    merged = mount_overlay(store.lowerdirs("myapp"), root / "c" / "one")
    # Layer 2 deleted etc/gone and made opt/old opaque (hiding a and b) and brought opt/old/new.
    assert merged_files(merged) == {"etc/keep": b"kept\n", "opt/old/new": b"new\n", "hello.txt": b"hello\n"}
    # The container writes to its upper directory; the shared layer stays as imported.
    (merged / "etc" / "keep").write_text("changed\n")
    (merged / "opt" / "old" / "new").unlink()
    base = store.lowerdirs("myapp")[1]
    assert (base / "etc" / "keep").read_text() == "kept\n"
    assert (store.lowerdirs("myapp")[0] / "opt" / "old" / "new").read_text() == "new\n"
    # A second container over the same layers sees them untouched.
    other = mount_overlay(store.lowerdirs("myapp"), root / "c" / "two")
    assert merged_files(other) == {"etc/keep": b"kept\n", "opt/old/new": b"new\n", "hello.txt": b"hello\n"}


def tiny_image() -> Image:
    """Host busybox and an ``sh`` link below; a file, a deletion and an opaque directory above."""
    bottom = layer(
        file("bin/busybox", Path("/bin/busybox").read_bytes(), mode=0o755),
        symlink("bin/sh", "/bin/busybox"),
        file("gone.txt", b"deleted above\n"),
        file("opt/old/a", b"a\n"),
    )
    top = layer(
        file("hello.txt", b"hello from an imported image\n"),
        whiteout("gone.txt"),
        opaque("opt/old"),
        file("opt/old/new"),
    )
    return Image((bottom, top), names=("tiny:1",), gzip=True)


async def run(
    root: Path, runtime: RuncRuntime, lowerdirs: list[Path], script: str
) -> tuple[ExitStatus | None, list[list[str]]]:
    cid = new_container_id()
    rootfs = mount_overlay(lowerdirs, root / "c" / cid)
    config = oci_config(
        spec("t", command=("sh", "-c", script)), container_id=cid, rootfs=str(rootfs),
        cgroups_path=f"/corral-test/{cid}", cpus=None, mems=None, cpu_shares=1024, cpu_quota_us=None,
    )  # fmt: skip
    await runtime.create(cid, root / "c" / cid, config)
    await runtime.start(cid)
    status = await runtime.wait(cid, 10)
    return status, [line.split(" ", 3)[1:] for line in runtime.logs(cid).read_text().splitlines()]


@needs_runc
@pytest.mark.parametrize("fmt", ["oci", "docker"])
async def test_runc_runs_an_imported_image(root: Path, runtime: RuncRuntime, fmt: str) -> None:
    store = ImageStore(root / "images")
    image = tiny_image()
    store.import_tar(write_tar(root / "tiny.tar", image.oci() if fmt == "oci" else image.docker()))
    status, lines = await run(root, runtime, store.lowerdirs("tiny:1"), "cat /hello.txt")
    assert (status, lines) == (ExitStatus(code=0), [["stdout", "F", "hello from an imported image"]])


@needs_runc
async def test_whiteouts_hold_inside_the_container(root: Path, runtime: RuncRuntime) -> None:
    store = ImageStore(root / "images")
    store.import_tar(write_tar(root / "tiny.tar", tiny_image().oci()))
    script = "ls /opt/old; test -e /gone.txt && echo gone.txt is there || echo gone.txt is gone"
    status, lines = await run(root, runtime, store.lowerdirs("tiny:1"), script)
    assert (status, lines) == (ExitStatus(code=0), [["stdout", "F", "new"], ["stdout", "F", "gone.txt is gone"]])
