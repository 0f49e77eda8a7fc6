"""Images against real registries on loopback (Debian's docker-registry, the CNCF distribution registry), pulled
with skopeo: by tag and digest, an unknown tag, a tampered blob, five pulls at once, a multi-platform index, zstd,
Always against IfNotPresent, basic and Bearer-token auth, a mirror; and through local clusters: pulls on start
(with back-off), import, ls, rm and image GC, judged from the registries' access logs, runc and the stores."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodelet.images import PLATFORM, ImageStore
from nodelet.pull import Puller, PullFailed
from tests.natsserver import free_port
from tests.unit.test_image_import import (
    OCI_INDEX,
    OCI_LAYER,
    REF_NAME,
    Image,
    blob_name,
    file,
    layer,
    sha,
    symlink,
    write_tar,
)
from wire.files import write_private

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("skopeo") or not shutil.which("docker-registry"),
    reason="needs root, skopeo and docker-registry (make test installs them)",
)


@contextlib.contextmanager
def serve_registry(tmp: Path, name: str, **config: object) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, its storage, config and log (its access log: what
    was fetched, seen from outside Corral) under ``tmp`` named ``name``; ``config`` adds to its settings."""
    port = free_port()
    (tmp / f"{name}.yml").write_text(json.dumps({  # YAML takes JSON
        "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": False}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "storage": {"filesystem": {"rootdirectory": str(tmp / name)}, "delete": {"enabled": True}},
        **config,
    }))  # fmt: skip
    with (tmp / f"{name}.log").open("wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(tmp / f"{name}.yml")], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the registry did not listen"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A registry on a free loopback port, its storage in ``tmp_path``: (host:port, storage)."""
    with serve_registry(tmp_path, "registry") as host:
        yield host, tmp_path / "registry"


def fetched(tmp: Path) -> Counter[str]:
    """How many times the registry served each blob (by digest), from its access log."""
    log = (tmp / "registry.log").read_text()
    return Counter(re.findall(r'"GET /v2/[^ ]+/blobs/(sha256:[a-f0-9]{64}) HTTP/1.1" 200', log))


def push(tmp: Path, registry: str, name: str, image: Image) -> str:
    """Push ``image`` as ``registry/name`` with skopeo; its manifest digest."""
    archive = write_tar(tmp / f"{name.replace('/', '_').replace(':', '_')}.tar", image.oci())
    digest_file = tmp / "digest"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file),
         f"oci-archive:{archive}", f"docker://{registry}/{name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return digest_file.read_text().strip()


def demo(text: str = "demo") -> Image:
    binary = file("bin/busybox", Path("/bin/busybox").read_bytes(), mode=0o755)
    links = tuple(symlink(f"bin/{applet}", "/bin/busybox") for applet in ("sh", "cat", "sleep"))
    return Image((layer(binary, *links, file("etc/os-release", f"{text}\n".encode())),))


async def test_pull_by_tag_and_by_digest(tmp_path: Path, registry: tuple[str, Path]) -> None:
    host, _ = registry
    digest = push(tmp_path, host, "demo:1", demo())
    store = ImageStore(tmp_path / "store")
    puller = Puller(store, tmp_path / "pulls")
    record = await puller.pull(f"{host}/demo:1")
    assert store.names() >= {f"{host}/demo:1", record.id}
    (layer_dir,) = store.lowerdirs(f"{host}/demo:1")
    assert (layer_dir / "etc" / "os-release").read_text() == "demo\n"
    again = await puller.pull(f"{host}/demo@{digest}")
    assert again.id == record.id
    assert f"{host}/demo@{digest}" in store.names()
    assert not list((tmp_path / "pulls").iterdir())  # nothing left of the pulls' archives


async def test_an_unknown_tag_fails_clearly_and_leaves_nothing(tmp_path: Path, registry: tuple[str, Path]) -> None:
    host, _ = registry
    push(tmp_path, host, "demo:1", demo())
    store = ImageStore(tmp_path / "store")
    with pytest.raises(PullFailed, match="manifest unknown"):
        await Puller(store, tmp_path / "pulls").pull(f"{host}/demo:2")
    assert not (tmp_path / "store" / "layers").exists() or not list((tmp_path / "store" / "layers").iterdir())


async def test_a_tampered_blob_is_refused_and_leaves_nothing(tmp_path: Path, registry: tuple[str, Path]) -> None:
    host, storage = registry
    image = demo("tamper me")
    push(tmp_path, host, "demo:1", image)
    # the largest blob is the layer (skopeo compressed it on the way in, so its digest is the registry's)
    blob = max(storage.rglob("blobs/sha256/*/*/data"), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[-600] ^= 0xFF  # one flipped byte in the layer, served as if nothing happened
    blob.write_bytes(bytes(data))
    store = ImageStore(tmp_path / "store")
    with pytest.raises(PullFailed, match="digest"):
        await Puller(store, tmp_path / "pulls").pull(f"{host}/demo:1")
    assert store.names() == {"busybox:latest"}  # only the built-in
    assert not list((tmp_path / "pulls").iterdir())


async def test_five_pulls_of_one_image_at_once_run_skopeo_once(tmp_path: Path, registry: tuple[str, Path]) -> None:
    host, _ = registry
    push(tmp_path, host, "demo:1", demo())
    runs = tmp_path / "runs"
    wrapper = tmp_path / "skopeo"
    wrapper.write_text(f'#!/bin/sh\necho run >> {runs}\nexec {shutil.which("skopeo")} "$@"\n')
    wrapper.chmod(0o755)
    puller = Puller(ImageStore(tmp_path / "store"), tmp_path / "pulls", skopeo=str(wrapper))
    records = await asyncio.gather(*(puller.pull(f"{host}/demo:1") for _ in range(5)))
    assert len({r.id for r in records}) == 1
    assert runs.read_text().splitlines() == ["run"]


def test_corral_pulls_onto_its_nodes_and_runs_the_image(
    tmp_path: Path, registry: tuple[str, Path], home: dict[str, str]
) -> None:
    """The product end to end: corral image pull onto every node, image ls, run the pulled image; an unknown tag
    is a clear failure."""
    from tests.integration.conftest import corral

    host, _ = registry
    push(tmp_path, host, "demo:1", demo("ID=corral-demo"))
    up = corral(home, "up", "--nodes", "2", "--port", str(free_port()), "--nats-port", str(free_port()))
    assert up.returncode == 0, up.stderr
    pulled = corral(home, "image", "pull", f"{host}/demo:1", "--all")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert sorted(pulled.stdout.split("\n")[:2]) == [f"node-1: pulled {host}/demo:1", f"node-2: pulled {host}/demo:1"]
    listed = json.loads(corral(home, "image", "ls", "-o", "json").stdout)
    assert {(r["node"], r["image"]) for r in listed} >= {("node-1", f"{host}/demo:1"), ("node-2", f"{host}/demo:1")}
    ran = corral(home, "run", "--rm", f"{host}/demo:1", "--", "cat", "/etc/os-release")
    assert (ran.returncode, ran.stdout) == (0, "ID=corral-demo\n"), ran.stdout + ran.stderr
    missing = corral(home, "image", "pull", f"{host}/demo:2", "--node", "node-1")
    assert missing.returncode == 1 and "manifest unknown" in missing.stderr, missing.stderr
    assert corral(home, "down").returncode == 0


def _api(home: dict[str, str]) -> httpx.Client:
    env = json.loads((Path(home["CORRAL_HOME"]) / "env.json").read_text())
    return httpx.Client(base_url=env["addr"], headers={"Authorization": f"Bearer {env['token']}"}, timeout=10)


def _until(
    client: httpx.Client, cid: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        c: dict[str, Any] = client.get(f"/v1/containers/{cid}").json()
        if done(c):
            return c
        assert time.monotonic() < deadline, c
        time.sleep(0.1)


def _in_runc(home: dict[str, str], node: str = "node-1") -> set[str]:
    """Ground truth: every container runc holds on the node, in any state."""
    root = Path(home["CORRAL_HOME"]) / node / "rt" / "runc"
    if not root.exists():
        return set()
    out = subprocess.run(["runc", "--root", str(root), "list", "-f", "json"], capture_output=True, check=True)
    return {c["id"] for c in json.loads(out.stdout or b"null") or []}


def test_starts_pull_what_their_node_lacks_once_and_run_the_images_config(
    tmp_path: Path, registry: tuple[str, Path], home: dict[str, str]
) -> None:
    """Five containers of an image their node lacks, submitted at once: one fetch of its layer (the registry's
    own log says so), then each runs with the image's Entrypoint, Cmd, Env and WorkingDir."""
    from tests.integration.conftest import corral

    host, _ = registry
    run = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["cat /etc/os-release; echo $GREETING; pwd"],
           "Env": ["GREETING=from-the-image"], "WorkingDir": "/etc"}  # fmt: skip
    image = dataclasses.replace(demo("ID=pulled-on-start"), run=run)
    push(tmp_path, host, "demo:1", image)
    up = corral(home, "up", "--nodes", "1", "--port", str(free_port()), "--nats-port", str(free_port()))
    assert up.returncode == 0, up.stderr
    with _api(home) as api:
        spec = {"image": f"{host}/demo:1", "restart_policy": "Never"}
        ids = [api.post("/v1/containers", json={**spec, "name": f"c{i}"}).json()["id"] for i in range(5)]
        override = {**spec, "name": "own", "command": ["echo $GREETING"], "env": {"GREETING": "from-the-spec"}}
        ids.append(api.post("/v1/containers", json=override).json()["id"])
        ended = [_until(api, cid, lambda c: c["state"] in ("exited", "stopped", "lost")) for cid in ids]
        assert [c["exit_code"] for c in ended] == [0] * 6, ended
        history = api.get(f"/v1/containers/{ids[0]}/history").json()
    assert sorted(fetched(tmp_path).values()) == [1, 1]  # its config and its layer, each once
    assert any(h["event"]["type"] == "ContainerWaiting" and h["event"]["reason"] == "Pulling" for h in history), history
    outputs = {corral(home, "logs", cid).stdout for cid in ids}
    assert outputs == {"ID=pulled-on-start\nfrom-the-image\n/etc\n", "from-the-spec\n"}, outputs
    listed = json.loads(corral(home, "image", "ls", "-o", "json").stdout)
    assert ("node-1", f"{host}/demo:1") in {(r["node"], r["image"]) for r in listed}


def test_a_failed_pull_backs_off_leaves_nothing_and_starts_once_the_image_is_there(
    tmp_path: Path, registry: tuple[str, Path], home: dict[str, str]
) -> None:
    from tests.integration.conftest import corral

    host, _ = registry
    up = corral(
        home, "up", "--nodes", "1", "--port", str(free_port()), "--nats-port", str(free_port()),
        "--nodelet-arg=--image-pull-backoff=1,2",
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    attached = corral(home, "run", "--rm", f"{host}/demo:none", "--", "true")  # docker run's 125, and why
    assert attached.returncode == 125 and "image pull failed" in attached.stderr, attached.stderr
    assert "manifest unknown" in attached.stderr, attached.stderr
    node = Path(home["CORRAL_HOME"]) / "node-1"
    with _api(home) as api:
        spec = {"image": f"{host}/demo:late", "command": ["cat", "/etc/os-release"]}
        late = api.post("/v1/containers", json={**spec, "name": "late"}).json()["id"]
        gone = api.post("/v1/containers", json={**spec, "name": "gone"}).json()["id"]
        c = _until(api, late, lambda c: c["wait_reason"] == "ErrImagePull")
        assert "manifest unknown" in c["wait_message"] and c["state"] == "scheduled", c
        c = _until(api, late, lambda c: c["wait_reason"] == "ImagePullBackOff")
        assert "back-off 2 s" in c["wait_message"] and "manifest unknown" in c["waiting"], c
        # Nothing of the failed pulls on the node: no container in runc, no partial archive, no image.
        assert _in_runc(home) == set()
        assert list((node / "pulls").iterdir()) == []
        tags = node / "images" / "tags.json"
        assert not tags.exists() or "demo" not in tags.read_text()
        # A waiting container stopped is stopped: it never runs, even once its image appears.
        assert api.delete(f"/v1/containers/{gone}", params={"grace": 0}).status_code == 202
        _until(api, gone, lambda c: c["state"] == "stopped")
        push(tmp_path, host, "demo:late", demo("ID=late"))
        c = _until(api, late, lambda c: c["state"] == "exited", timeout_s=30)
        assert c["exit_code"] == 0 and c["wait_reason"] == "", c
        assert _until(api, gone, lambda c: True)["state"] == "stopped"
    assert corral(home, "logs", late).stdout == "ID=late\n"
    assert gone not in _in_runc(home) and not (node / "containers" / gone).exists()


def _tarball(tmp: Path, image: Image, name: str) -> Path:
    return write_tar(tmp / f"{name}.tar", image.oci())


def test_image_import_ls_and_rm_keep_what_a_container_uses(
    tmp_path: Path, registry: tuple[str, Path], home: dict[str, str]
) -> None:
    """corral image import streams a tarball to a node; ls shows it with its size and use; rm of a name drops
    the name, of an image in use is refused (409), and removes the image once no container holds it."""
    from tests.integration.conftest import corral

    up = corral(home, "up", "--nodes", "1", "--port", str(free_port()), "--nats-port", str(free_port()))
    assert up.returncode == 0, up.stderr
    app = dataclasses.replace(demo("ID=imported"), names=("app:1", "app:stable"))
    imported = corral(home, "image", "import", str(_tarball(tmp_path, app, "app")), "--node", "node-1")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "imported sha256:" in imported.stdout and "app:1 app:stable" in imported.stdout
    store = Path(home["CORRAL_HOME"]) / "node-1" / "images"
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tarball" * 100)
    refused = corral(home, "image", "import", str(bad), "--node", "node-1")
    assert refused.returncode == 1 and "422" in refused.stderr, refused.stderr
    assert list((Path(home["CORRAL_HOME"]) / "node-1" / "imports").iterdir()) == []  # nothing of it kept
    ran = corral(home, "run", "-d", "--pull", "never", "app:1", "--", "sleep", "600")
    assert ran.returncode == 0, ran.stderr
    cid = ran.stdout.strip()
    with _api(home) as api:
        _until(api, cid, lambda c: c["state"] == "running")
    listed = {r["image"]: r for r in json.loads(corral(home, "image", "ls", "-o", "json").stdout)}
    assert listed["app:1"]["in_use"] and listed["app:1"]["size_bytes"] == len(app.blob(app.layers[0]))
    assert listed["app:1"]["id"] == listed["app:stable"]["id"]
    assert corral(home, "image", "rm", "app:stable", "--node", "node-1").returncode == 0  # only the name goes
    in_use = corral(home, "image", "rm", "app:1", "--node", "node-1")
    assert in_use.returncode == 1 and "409" in in_use.stderr and "used by a container" in in_use.stderr
    assert (store / "images" / f"{listed['app:1']['id'][7:]}.json").exists()
    assert corral(home, "stop", cid, "--grace", "0").returncode == 0
    assert corral(home, "rm", cid).returncode == 0
    assert corral(home, "image", "rm", "app:1", "--node", "node-1").returncode == 0
    assert list((store / "images").iterdir()) == [] and list((store / "layers").iterdir()) == []
    missing = corral(home, "image", "rm", "app:1", "--node", "node-1")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_image_gc_removes_unused_images_and_never_one_in_use(
    tmp_path: Path, registry: tuple[str, Path], home: dict[str, str]
) -> None:
    """With both thresholds at 0 every unused image goes at once: an import that nothing runs is collected;
    the image of a running container stays, and goes once the container is removed. Judged from the store's
    directories on the node."""
    from tests.integration.conftest import corral

    host, _ = registry
    push(tmp_path, host, "demo:gc", demo("ID=kept"))
    up = corral(
        home, "up", "--nodes", "1", "--port", str(free_port()), "--nats-port", str(free_port()),
        "--nodelet-arg=--image-gc-high-threshold=0", "--nodelet-arg=--image-gc-low-threshold=0",
        "--nodelet-arg=--image-gc-min-age=0",
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    store = Path(home["CORRAL_HOME"]) / "node-1" / "images"
    ran = corral(home, "run", "-d", f"{host}/demo:gc", "--", "sleep", "600")  # pulled for it, then in use
    assert ran.returncode == 0, ran.stderr
    cid = ran.stdout.strip()
    with _api(home) as api:
        _until(api, cid, lambda c: c["state"] == "running")
    [kept] = [p.stem for p in (store / "images").iterdir()]
    other = dataclasses.replace(demo("ID=unused"), names=("unused:1",))
    assert corral(home, "image", "import", str(_tarball(tmp_path, other, "u")), "--node", "node-1").returncode == 0
    deadline = time.monotonic() + 30
    while [p.stem for p in (store / "images").iterdir()] != [kept]:
        assert time.monotonic() < deadline, list((store / "images").iterdir())
        time.sleep(0.2)
    assert cid in _in_runc(home)  # untouched, and its image with it
    assert len(list((store / "layers").iterdir())) == 1
    assert corral(home, "stop", cid, "--grace", "0").returncode == 0
    assert corral(home, "rm", cid).returncode == 0
    while list((store / "images").iterdir()):
        assert time.monotonic() < deadline + 30, list((store / "images").iterdir())
        time.sleep(0.2)
    assert list((store / "layers").iterdir()) == [] and list((store / "blobs" / "sha256").iterdir()) == []


def multi_platform(tmp: Path, mine: Image, other: Image) -> Path:
    """An OCI archive whose image ``multi`` is an index: ``mine`` for this node's platform, ``other`` for
    another architecture."""
    other_arch = "arm64" if PLATFORM[1] != "arm64" else "amd64"

    def desc(image: Image, arch: str) -> dict[str, object]:
        return {**image.descriptors()[0], "annotations": {}, "platform": {"os": "linux", "architecture": arch}}

    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [desc(other, other_arch), desc(mine, PLATFORM[1])]}).encode()  # fmt: skip
    top = {"mediaType": OCI_INDEX, "digest": sha(index), "size": len(index), "annotations": {REF_NAME: "multi"}}
    members = dict(mine.oci() + other.oci()[2:])
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    members[blob_name(index)] = index
    return write_tar(tmp / "multi.tar", list(members.items()))


def _skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True)


async def test_a_multi_platform_image_yields_this_nodes_and_zstd_layers_unpack(
    tmp_path: Path, registry: tuple[str, Path]
) -> None:
    host, _ = registry
    mine, other = demo("ID=this-platform"), demo("ID=other-platform")
    archive = multi_platform(tmp_path, mine, other)
    _skopeo("copy", "--quiet", "--all", "--dest-tls-verify=false", f"oci-archive:{archive}:multi",
            f"docker://{host}/multi:1")  # fmt: skip
    listed = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/multi:1").stdout)
    assert len(listed["manifests"]) == 2  # the registry holds an index
    store = ImageStore(tmp_path / "store")
    record = await Puller(store, tmp_path / "pulls").pull(f"{host}/multi:1")
    assert record.id == sha(mine.config())
    assert (store.lowerdirs(f"{host}/multi:1")[0] / "etc/os-release").read_text() == "ID=this-platform\n"
    # zstd: pushed recompressed, pulled as the registry holds it, unpacked by the store.
    zstd = write_tar(tmp_path / "z.tar", demo("ID=zstd").oci())
    _skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-compress-format", "zstd",
            f"oci-archive:{zstd}", f"docker://{host}/zstd:1")  # fmt: skip
    manifest = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/zstd:1").stdout)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [f"{OCI_LAYER}+zstd"]
    await Puller(store, tmp_path / "pulls").pull(f"{host}/zstd:1")
    assert (store.lowerdirs(f"{host}/zstd:1")[0] / "etc/os-release").read_text() == "ID=zstd\n"


async def test_always_asks_the_registry_and_pulls_only_a_moved_tag(tmp_path: Path, registry: tuple[str, Path]) -> None:
    """IfNotPresent trusts what the node holds (no request at all); Always asks for the config and pulls again
    only when the tag now names another image."""
    host, _ = registry
    store = ImageStore(tmp_path / "store")
    puller = Puller(store, tmp_path / "pulls")
    push(tmp_path, host, "app:1", demo("ID=one"))
    first = await puller.pull(f"{host}/app:1")
    log = tmp_path / "registry.log"
    seen = len(log.read_text())
    assert (await puller.pull(f"{host}/app:1")).id == first.id
    assert log.read_text()[seen:] == ""  # held: not asked
    assert (await puller.pull(f"{host}/app:1", always=True)).id == first.id
    asked = log.read_text()[seen:]
    assert "/manifests/1" in asked and sorted(fetched(tmp_path).values()) == [1, 2]  # the config again; no layer
    push(tmp_path, host, "app:1", demo("ID=two"))  # the tag moves
    assert (await puller.pull(f"{host}/app:1")).id == first.id  # IfNotPresent: the one held
    moved = await puller.pull(f"{host}/app:1", always=True)
    assert moved.id != first.id and store.image_id(f"{host}/app:1") == moved.id
    assert (store.lowerdirs(f"{host}/app:1")[0] / "etc/os-release").read_text() == "ID=two\n"


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[str]:
    """A second registry that wants basic auth (htpasswd, bcrypt): alice / s3cret."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt: what the registry's htpasswd reads

        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH))
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    auth = {"htpasswd": {"realm": "corral", "path": str(tmp_path / "htpasswd")}}
    with serve_registry(tmp_path, "private", auth=auth) as host:
        yield host


async def test_basic_auth_from_a_credentials_file_and_a_mirror(
    tmp_path: Path, registry: tuple[str, Path], private_registry: str
) -> None:
    host, _ = registry
    archive = write_tar(tmp_path / "secret.tar", demo("ID=secret").oci())
    _skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret",
            f"oci-archive:{archive}", f"docker://{private_registry}/secret:1")  # fmt: skip
    store = ImageStore(tmp_path / "store")
    with pytest.raises(PullFailed, match="unauthorized"):
        await Puller(store, tmp_path / "pulls").pull(f"{private_registry}/secret:1")
    auth = tmp_path / "auth.json"
    token = base64.b64encode(b"alice:s3cret").decode()
    write_private(auth, json.dumps({"auths": {private_registry: {"auth": token}}}).encode())
    await Puller(store, tmp_path / "pulls", authfile=str(auth)).pull(f"{private_registry}/secret:1")
    assert (store.lowerdirs(f"{private_registry}/secret:1")[0] / "etc/os-release").read_text() == "ID=secret\n"
    # A mirror: pulls of a registry that does not exist (registry.invalid) are served by the loopback one.
    push(tmp_path, host, "mirrored:1", demo("ID=mirrored"))
    mirrored = Puller(store, tmp_path / "mirror-pulls", mirrors={"registry.invalid:5000": host})
    await mirrored.pull("registry.invalid:5000/mirrored:1")
    assert (store.lowerdirs("registry.invalid:5000/mirrored:1")[0] / "etc/os-release").read_text() == "ID=mirrored\n"


class _TokenServer(http.server.BaseHTTPRequestHandler):
    """The registry's token service (distribution's token auth): a JWT signed with the test's key, its
    certificate in ``x5c``, for alice / s3cret only."""

    sign: Callable[[bytes], bytes]
    cert_der: bytes

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"alice:s3cret").decode():
            self.send_response(401)
            self.end_headers()
            return
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": "corral-test", "sub": "alice", "aud": query["service"][0], "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}  # fmt: skip
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(self.cert_der).decode()]}
        signing_input = b".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        token = (signing_input + b"." + _b64url(type(self).sign(signing_input))).decode()
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[str]:
    """A registry with Bearer-token auth and its token service, both on loopback."""
    key, cert = tmp_path / "token.key", tmp_path / "token.crt"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=token"]
    subprocess.run([*openssl, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True)

    def sign(data: bytes) -> bytes:
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=data, check=True,
                              capture_output=True).stdout  # fmt: skip

    handler = type("Tokens", (_TokenServer,), {"sign": staticmethod(sign), "cert_der": der.stdout})
    tokens = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=tokens.serve_forever, daemon=True).start()
    realm = f"http://127.0.0.1:{tokens.server_address[1]}/token"
    auth = {
        "token": {"realm": realm, "service": "corral-registry", "issuer": "corral-test", "rootcertbundle": str(cert)}
    }
    try:
        with serve_registry(tmp_path, "token-registry", auth=auth) as host:
            yield host
    finally:
        tokens.shutdown()
        tokens.server_close()


async def test_bearer_token_auth(tmp_path: Path, token_registry: str) -> None:
    """Distribution's token auth: the registry sends the client to a token service; anonymous is refused there,
    the credentials file's user gets a signed token for the repository and the pull goes through."""
    archive = write_tar(tmp_path / "t.tar", demo("ID=token").oci())
    _skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret",
            f"oci-archive:{archive}", f"docker://{token_registry}/secret:1")  # fmt: skip
    store = ImageStore(tmp_path / "store")
    with pytest.raises(PullFailed) as refused:
        await Puller(store, tmp_path / "pulls").pull(f"{token_registry}/secret:1")
    assert str(refused.value).endswith(": unauthorized")  # the token service refused it
    assert store.image_id(f"{token_registry}/secret:1") is None
    auth = tmp_path / "auth.json"
    token = base64.b64encode(b"alice:s3cret").decode()
    write_private(auth, json.dumps({"auths": {token_registry: {"auth": token}}}).encode())
    await Puller(store, tmp_path / "pulls", authfile=str(auth)).pull(f"{token_registry}/secret:1")
    assert (store.lowerdirs(f"{token_registry}/secret:1")[0] / "etc/os-release").read_text() == "ID=token\n"
