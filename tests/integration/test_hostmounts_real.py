"""Host mounts checked where they are: opened one component at a time without following links, pinned by a
bind mount of the very directory checked, and unstaged without reaching into the host's files."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodelet.hostmounts import _mounted, open_beneath, stage, unstage
from nodelet.ocispec import MountNotAllowed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")


@pytest.fixture
def tree() -> Iterator[Path]:
    """/run/corral-hm-*/ with an allowed root ``data``: data/real/{note,sub/}, data/link-to-root -> /,
    data/real/inner -> /etc, data/file-link -> real/note, data/dangling -> nowhere."""
    top = Path(f"/run/corral-hm-{uuid.uuid4().hex[:8]}")
    data = top / "data"
    (data / "real" / "sub").mkdir(parents=True)
    (data / "real" / "note").write_text("host\n")
    (data / "link-to-root").symlink_to("/")
    (data / "real" / "inner").symlink_to("/etc")
    (data / "file-link").symlink_to("real/note")
    (data / "dangling").symlink_to("/nowhere")
    yield top
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        if line.split()[4].startswith(str(top)):
            subprocess.run(["umount", "-l", line.split()[4]], check=False)  # only a failed test leaves one
    shutil.rmtree(top)


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("link-to-root", "'{data}/link-to-root' is a symbolic link"),
        ("link-to-root/etc", "'{data}/link-to-root' is a symbolic link"),
        ("real/inner", "'{data}/real/inner' is a symbolic link"),
        ("real/inner/passwd", "'{data}/real/inner' is a symbolic link"),
        ("file-link", "is a symbolic link"),
        ("dangling", "is a symbolic link"),
        ("real/missing", "does not exist"),
    ],
)
def test_refused(tree: Path, rel: str, why: str) -> None:
    data = tree / "data"
    with pytest.raises(MountNotAllowed, match=why.format(data=data)):
        open_beneath(str(data / rel), [str(data)])


@pytest.mark.parametrize("source", ["/etc", "/run", "{data}x"])
def test_outside_the_allow_list(tree: Path, source: str) -> None:
    with pytest.raises(MountNotAllowed, match="not allowed on this node"):
        open_beneath(source.format(data=tree / "data"), [str(tree / "data")])


@pytest.mark.parametrize("rel", ["", "real", "real/sub", "real/note"])
def test_real_paths_open(tree: Path, rel: str) -> None:
    data = tree / "data"
    source = str(data / rel) if rel else str(data)
    fd = open_beneath(source, [str(data)])
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == source
    finally:
        os.close(fd)


def test_the_deepest_allowed_root_is_walked_from(tree: Path) -> None:
    """An allowed root may itself be a link (the admin's choice); what lies below it may not."""
    data = tree / "data"
    (tree / "alias").symlink_to(data / "real")
    fd = open_beneath(str(tree / "alias" / "sub"), [str(tree), str(tree / "alias")])
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(data / "real" / "sub")
    finally:
        os.close(fd)


def test_stage_pins_and_unstage_leaves_the_host_alone(tree: Path) -> None:
    data, staged = tree / "data", tree / "staged" / "c1"
    rw = stage(str(data / "real"), [str(data)], staged / "0", read_only=False)
    ro = stage(str(data / "real" / "note"), [str(data)], staged / "1", read_only=True)
    assert _mounted(rw) and _mounted(ro)
    (data / "real").rename(data / "moved")
    (data / "real").symlink_to("/etc")  # swapped after staging: the staged point still holds the checked one
    assert (rw / "note").read_text() == "host\n"
    assert ro.read_text() == "host\n"
    with pytest.raises(OSError, match="Read-only"):
        ro.write_text("x")
    (rw / "written").write_text("through the rw mount\n")
    unstage(staged)
    assert not staged.exists()
    assert sorted(p.name for p in (data / "moved").iterdir()) == ["inner", "note", "sub", "written"]
