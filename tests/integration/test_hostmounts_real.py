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
from nodelet.purge import mounts_under

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
    for point in sorted(mounts_under(top), reverse=True):  # only a failed test leaves one
        subprocess.run(["umount", "-l", point], check=False)
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


def test_an_allowed_root_may_be_a_link_but_nothing_below_the_shallowest(tree: Path) -> None:
    """An allowed root may itself be a link (the admin's choice); below the shallowest allowed root that holds
    the source, nothing may be: with the parent allowed too, the link is walked through and refused."""
    data = tree / "data"
    (tree / "alias").symlink_to(data / "real")
    fd = open_beneath(str(tree / "alias" / "sub"), [str(tree / "alias")])
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(data / "real" / "sub")
    finally:
        os.close(fd)
    with pytest.raises(MountNotAllowed, match="is a symbolic link"):
        open_beneath(str(tree / "alias" / "sub"), [str(tree), str(tree / "alias")])


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


def test_purge_through_a_linked_data_dir_never_empties_a_host_path(tree: Path) -> None:
    """A node's data dir named through a link (/var/run → /run, say) with a read-write host mount still staged:
    purge unmounts it first (the mount table names the real path), and the host's files stay."""
    from nodelet.purge import purge_node

    data, node_dir = tree / "data", tree / "node-real"
    node_dir.mkdir()
    (tree / "node-link").symlink_to(node_dir)
    staged = stage(str(data / "real"), [str(data)], tree / "node-link" / "hostmounts" / "c1" / "0", read_only=False)
    assert _mounted(staged.resolve())
    purge_node(tree / "node-link", None)
    assert not node_dir.exists()
    assert (data / "real" / "note").read_text() == "host\n"


def test_unstage_through_a_link_and_with_spaces(tree: Path) -> None:
    data = tree / "data"
    (data / "real" / "with space").mkdir()
    (tree / "st-real").mkdir()
    (tree / "st-link").symlink_to(tree / "st-real")
    point = stage(str(data / "real" / "with space"), [str(data)], tree / "st-real" / "c 1" / "0", read_only=True)
    assert _mounted(point)  # "\040" in the mount table
    unstage(tree / "st-link" / "c 1")
    assert not (tree / "st-real" / "c 1").exists()
