"""Image benchmark: ``python -m nodelet.bench images [--quick]`` (needs root, runc, conmon, skopeo and Debian's
docker-registry).

A registry on loopback holds a ~50 MB image (busybox and 48 MB that does not compress). Measured in the same
run, alternating:

- ``skopeo copy`` of the image from the registry into an OCI archive, alone: the baseline;
- a pull by the nodelet's ``Puller`` into an empty store (skopeo's copy, then the import that checks every
  digest and unpacks the layers), and the ratio of the two medians;
- through a real nodelet process: the first start of a container of the image, which pulls it (command sent →
  ``ContainerStarted``), and the start of a second container of the same image, against the start of a
  container of the built-in busybox (reply to the start; the reply comes once ``runc start`` has returned).

The last line reads ``images: skopeo_copy_s=N pull_s=N pull_ratio=N first_start_s=N second_start_ms=N
busybox_start_ms=N``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import nats

from nodelet.images import ImageStore
from nodelet.pull import Puller
from nodelet.purge import purge_node
from nodelet.standin import StandInControlPlane
from wire import events as ev
from wire.commands import CommandAccepted, StartContainer, StopContainer
from wire.ids import new_command_id, new_container_id
from wire.spec import ContainerSpec

PAYLOAD_MB = 48


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def _sha(data: bytes) -> str:
    import hashlib  # noqa: PLC0415

    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _layer(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _image_archive(path: Path) -> None:
    """An OCI archive: a busybox layer (sh, sleep) and a layer of incompressible files."""
    busybox = Path("/bin/busybox").read_bytes()
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name in ("bin",):
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        entries.append((info, None))
    info = tarfile.TarInfo("bin/busybox")
    info.size, info.mode = len(busybox), 0o755
    entries.append((info, busybox))
    for applet in ("sh", "sleep"):
        link = tarfile.TarInfo(f"bin/{applet}")
        link.type, link.linkname = tarfile.SYMTYPE, "/bin/busybox"
        entries.append((link, None))
    base = _layer(entries)
    payload_entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for i in range(4):
        data = os.urandom(PAYLOAD_MB // 4 << 20)
        info = tarfile.TarInfo(f"data/{i}.bin")
        info.size, info.mode = len(data), 0o644
        payload_entries.append((info, data))
    payload = _layer(payload_entries)
    layers = [base, payload]
    config = json.dumps({
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer) for layer in layers]},
        "config": {"Cmd": ["sh"]},
    }).encode()  # fmt: skip
    layer_type = "application/vnd.oci.image.layer.v1.tar"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config),
                   "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": _sha(layer), "size": len(layer)} for layer in layers],
    }).encode()  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest), "size": len(manifest),
    }]}).encode()  # fmt: skip
    with tarfile.open(path, "w") as tar:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index)] + [
            (f"blobs/sha256/{_sha(b)[7:]}", b) for b in (manifest, config, *layers)
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _skopeo_copy(ref: str, dest: Path) -> float:
    t = time.perf_counter()
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci-archive:{dest}"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t


async def _pull(ref: str, work: Path, i: int) -> tuple[float, int]:
    store = ImageStore(work / f"store-{i}")
    t = time.perf_counter()
    record = await Puller(store, work / f"pulls-{i}").pull(ref)
    elapsed = time.perf_counter() - t
    await asyncio.to_thread(shutil.rmtree, store.root, ignore_errors=True)
    return elapsed, record.size


async def _starts(ref: str, runs: int, work: Path) -> dict[str, float]:
    """Through a real nodelet: the first start (it pulls), then second starts of the image and busybox ones."""
    tag = uuid.uuid4().hex[:8]
    port = _free_port()
    conf = work / "nats.conf"
    conf.write_text(json.dumps({"host": "127.0.0.1", "port": port}))
    nats_bin = Path(sys.executable).parent / "nats-server"
    server = subprocess.Popen(  # noqa: ASYNC220  (runs for the whole measurement)
        [str(nats_bin) if nats_bin.exists() else "nats-server", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    data = Path(f"/run/corral-ibench-{tag}")
    cgroup_root = f"/corral-ibench-{tag}"
    log = (work / "nodelet.log").open("wb")
    nodelet: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(_wait_port, port)
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        cp = StandInControlPlane(nc)
        await cp.serve()
        nodelet = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "nodelet", "--node", "ibench", "--nats", f"nats://127.0.0.1:{port}",
             "--data-dir", str(data), "--cgroup-root", cgroup_root, "--log-level", "INFO"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(30):
            await cp.registered.wait()

        async def start(image: str) -> tuple[float, str]:
            spec = ContainerSpec(name="ibench", image=image, command=("sleep", "3600"), cpu_request_millis=10)
            cmd = StartContainer(
                command_id=new_command_id(), epoch=cp.epoch, container_id=new_container_id(), spec=spec
            )
            cp.desired[cmd.container_id] = cmd  # the node's sync keeps what the control plane wants
            t = time.perf_counter()
            reply = await cp.command("ibench", cmd, timeout_s=600)
            if not isinstance(reply, CommandAccepted):
                raise SystemExit(f"start failed: {reply}")
            return time.perf_counter() - t, cmd.container_id

        async def started(cid: str) -> None:
            async with asyncio.timeout(600):
                while True:
                    e = await cp.next_event(600)
                    if isinstance(e, ev.ContainerStarted) and e.container_id == cid:
                        return
                    if isinstance(e, ev.ContainerExited) and e.container_id == cid:
                        raise SystemExit(f"the first container ended: {e}")

        t = time.perf_counter()
        _, first = await start(ref)
        await started(first)
        first_s = time.perf_counter() - t
        ids = [first]
        second: list[float] = []
        busybox: list[float] = []
        for _ in range(runs):  # alternating, so that drift of a noisy machine falls on both alike
            for image, into in ((ref, second), ("busybox", busybox)):
                took, cid = await start(image)
                into.append(took * 1e3)
                ids.append(cid)
        for cid in ids:
            stop = StopContainer(command_id=new_command_id(), epoch=cp.epoch, container_id=cid, grace_s=0)
            cp.desired.pop(cid, None)
            await cp.command("ibench", stop)
        await nc.drain()
    finally:
        try:
            if nodelet is not None:
                nodelet.terminate()
                try:
                    await asyncio.to_thread(nodelet.wait, 30)
                except subprocess.TimeoutExpired:
                    nodelet.send_signal(signal.SIGUSR1)  # its tasks' stacks to its log, then it is killed
                    await asyncio.sleep(1)
                    nodelet.kill()
                    print("  the nodelet did not stop on TERM within 30 s; its log ends:", file=sys.stderr)
                    print((work / "nodelet.log").read_text()[-3000:], file=sys.stderr)
        finally:  # whatever happened above: no server, container, mount or cgroup of the benchmark left
            server.terminate()
            await asyncio.to_thread(server.wait, 10)
            log.close()
            await asyncio.to_thread(purge_node, data, cgroup_root)
    return {
        "first_start_s": first_s,
        "second_start_ms": statistics.median(second),
        "busybox_start_ms": statistics.median(busybox),
    }


async def bench(runs: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="corral-ibench-"))
    port = _free_port()
    registry_conf = work / "registry.yml"
    registry_conf.write_text(json.dumps({
        "version": 0.1, "log": {"level": "error"}, "http": {"addr": f"127.0.0.1:{port}"},
        "storage": {"filesystem": {"rootdirectory": str(work / "registry")}},
    }))  # fmt: skip
    registry = subprocess.Popen(  # noqa: ASYNC220  (runs for the whole measurement)
        ["docker-registry", "serve", str(registry_conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await asyncio.to_thread(_wait_port, port)
        archive = work / "image.tar"
        await asyncio.to_thread(_image_archive, archive)
        ref = f"127.0.0.1:{port}/bench:1"
        push = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{archive}", f"docker://{ref}"]
        await asyncio.to_thread(subprocess.run, push, check=True, capture_output=True)
        archive.unlink()
        copies, pulls, size = [], [], 0
        for i in range(runs):
            copy_to = work / "copy.tar"
            copies.append(await asyncio.to_thread(_skopeo_copy, ref, copy_to))
            copy_to.unlink()
            took, size = await _pull(ref, work, i)
            pulls.append(took)
        print(f"  image: {size / 1e6:.1f} MB of layers as the registry serves them (gzip; {PAYLOAD_MB} MB random)")
        print(f"  skopeo copy alone: median {statistics.median(copies):.2f} s of {runs} ({_spread(copies)})")
        print(f"  Corral pull (copy + verified import): median {statistics.median(pulls):.2f} s ({_spread(pulls)})")
        starts = await _starts(ref, runs * 2, work)
        print(f"  first start of the image (pull included): {starts['first_start_s']:.2f} s")
        print(
            f"  start of a second container of it: median {starts['second_start_ms']:.1f} ms; "
            f"of a busybox container, same run: {starts['busybox_start_ms']:.1f} ms"
        )
    finally:
        registry.terminate()
        await asyncio.to_thread(registry.wait, 10)
        await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)
    copy_s, pull_s = statistics.median(copies), statistics.median(pulls)
    return {"skopeo_copy_s": copy_s, "pull_s": pull_s, "pull_ratio": pull_s / copy_s, **starts}


def _spread(values: list[float]) -> str:
    return f"min {min(values):.2f}, max {max(values):.2f}"


def main(argv: list[str]) -> None:
    import argparse  # noqa: PLC0415

    import uvloop  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m nodelet.bench images", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 runs of each instead of 7")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the image benchmark needs root (layers keep owners; real runc containers)")
    for tool in ("skopeo", "docker-registry", "runc", "conmon"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (make setup installs it)")
    runs = 3 if args.quick else 7
    print(f"images: {runs} pulls of a ~{PAYLOAD_MB + 1} MB image from a loopback registry, each against skopeo alone")
    r = uvloop.run(bench(runs))
    print(
        f"images: skopeo_copy_s={r['skopeo_copy_s']:.2f} pull_s={r['pull_s']:.2f} pull_ratio={r['pull_ratio']:.2f} "
        f"first_start_s={r['first_start_s']:.2f} second_start_ms={r['second_start_ms']:.1f} "
        f"busybox_start_ms={r['busybox_start_ms']:.1f}"
    )
