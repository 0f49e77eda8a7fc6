"""``python -m nodelet``: run one node agent (real runc containers, real cgroups)."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import shutil
import signal
from pathlib import Path

import uvloop

from nodelet.agent import Agent, AgentConfig
from nodelet.cgroups import Cgroups, detect_layout, parse_cpulist
from nodelet.images import ImageStore
from nodelet.outbox import Outbox
from nodelet.pull import Puller
from nodelet.runtime import RuncRuntime, RuntimePaths
from nodelet.seccomp import load_profiles
from nodelet.service import NodeConfig, NodeService
from nodelet.topology import discover, map_declared
from wire import events as ev
from wire.pss import Enforce
from wire.resources import Resources, parse_memory
from wire.topology import Topology


def default_pids_max() -> int:
    """The kernel's pid_max (or threads-max, if lower) less a tenth, at least 1024 kept for the system."""
    limits = [int(Path(f"/proc/sys/kernel/{f}").read_text()) for f in ("pid_max", "threads-max")]
    top = min(limits)
    return max(top - max(top // 10, 1024), 1024)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nodelet", description=__doc__)
    p.add_argument("--node", required=True, help="node name (a DNS-1123 label)")
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS URL")
    p.add_argument("--nkey-seed", default=None, metavar="FILE", help="this node's NATS nkey seed (a 0600 file)")
    p.add_argument("--user", default=None, help="NATS user (password in $CORRAL_NATS_PASSWORD, never an argument)")
    p.add_argument("--data-dir", default=None, help="state directory (default /run/corral/<node>; keep it short)")
    p.add_argument("--cgroup-root", default="/corral")
    p.add_argument(
        "--declared-topology",
        default=None,
        metavar="SxNxCxT",
        help="declare sockets x NUMA-per-socket x cores-per-NUMA x threads, mapped onto the real CPUs",
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--allow-host-mount", action="append", default=[], metavar="PATH")
    p.add_argument(
        "--seccomp-profile-dir",
        default=None,
        metavar="DIR",
        help="seccomp profiles containers may ask for as localhost/<name> (<name>.json, the OCI format)",
    )
    p.add_argument(
        "--allow-unconfined-seccomp",
        action="store_true",
        help="let containers ask for seccomp_profile Unconfined (no filter); refused by default",
    )
    p.add_argument(
        "--ephemeral-storage",
        default="1Gi",
        metavar="SIZE",
        help="a container's writable layer and /tmp when its spec does not say (e.g. 512Mi): writes past it fail",
    )
    p.add_argument(
        "--pod-security",
        choices=["privileged", "baseline", "restricted"],
        default="privileged",
        help="refuse containers below this Pod Security Standard (Kubernetes' enforce level)",
    )
    p.add_argument(
        "--ephemeral-storage-max",
        default="4Gi",
        metavar="SIZE",
        help="the most a container may ask for (its writable layer is in RAM, counted in its memory limit)",
    )
    p.add_argument(
        "--userns-base",
        type=int,
        default=0x70000000,
        metavar="UID",
        help="containers with a user namespace run as UID.. (65536 ids) outside; keep it off /etc/subuid's ranges",
    )
    p.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a registry reached over plain HTTP (loopback ones always are, as Docker)",
    )
    p.add_argument(
        "--registry-mirror",
        action="append",
        default=[],
        metavar="REGISTRY=MIRROR",
        help="pull REGISTRY's images from MIRROR first, e.g. docker.io=mirror.internal:5000",
    )
    p.add_argument(
        "--registry-auth",
        default=None,
        metavar="FILE",
        help="registry credentials (containers-auth.json, as docker login writes them; a 0600 file)",
    )
    p.add_argument(
        "--image-gc-high-threshold",
        type=int,
        default=85,
        metavar="PERCENT",
        help="past this much of the image store's disk used, unused images go, least recently used first (kubelet's)",
    )
    p.add_argument(
        "--image-gc-low-threshold",
        type=int,
        default=80,
        metavar="PERCENT",
        help="image GC stops once the disk is below this",
    )
    p.add_argument(
        "--image-gc-min-age",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="image GC leaves images used or pulled more recently (kubelet's minimum-image-ttl-duration)",
    )
    p.add_argument(
        "--image-pull-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="a pull not done by then fails (and is tried again after its back-off)",
    )
    p.add_argument(
        "--image-pull-backoff",
        default="10,300",
        metavar="FIRST,MAX",
        help="seconds before a failed pull for a start is tried again, doubling up to MAX (kubelet's 10,300)",
    )
    p.add_argument(
        "--pids-max",
        type=int,
        default=None,
        metavar="N",
        help="processes of all containers together (default: the kernel's pid_max less a tenth, kept for the system)",
    )
    p.add_argument(
        "--reserved-cpus",
        default="",
        metavar="LIST",
        help="CPUs kept for the system, e.g. 0,1 (the kubelet's reservedSystemCPUs): no container gets them",
    )
    p.add_argument("--heartbeat", type=float, default=0.5, help="seconds between heartbeats")
    p.add_argument("--sync", type=float, default=10.0, help="seconds between reconciliations with the control plane")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    real = discover()
    topology, cpu_map = real, {}
    if args.declared_topology:
        s, n, c, t = (int(x) for x in args.declared_topology.lower().split("x"))
        per_numa = real.memory_bytes // max(1, s * n)
        topology = Topology.uniform(s, n, c, t, memory_per_numa=per_numa)
        cpu_map = map_declared(topology, real)
        logging.warning(
            "declared topology %s mapped onto real CPUs %s: %s", args.declared_topology, real.cpus(), cpu_map
        )
    data_dir = Path(args.data_dir)
    first, _, longest = args.image_pull_backoff.partition(",")
    backoff = (float(first), float(longest or first))
    if not 0 <= args.image_gc_low_threshold <= args.image_gc_high_threshold <= 100:
        raise SystemExit("--image-gc-low-threshold must be at most --image-gc-high-threshold, both 0..100")
    reserved = parse_cpulist(args.reserved_cpus) if args.reserved_cpus else ()
    real_reserved = {cpu_map.get(c, c) for c in reserved}
    config = NodeConfig(
        node=args.node,
        data_dir=str(data_dir),
        cgroup_root=args.cgroup_root,
        cpus=tuple(c for c in real.cpus() if c not in real_reserved),
        cpu_map=cpu_map,
        allowed_host_mounts=tuple(args.allow_host_mount),
        allow_unconfined_seccomp=args.allow_unconfined_seccomp,
        ephemeral_storage_bytes=parse_memory(args.ephemeral_storage),
        ephemeral_storage_max=parse_memory(args.ephemeral_storage_max),
        pod_security=Enforce("" if args.pod_security == "privileged" else args.pod_security),
        userns_base=args.userns_base,
        node_pids_max=args.pids_max if args.pids_max is not None else default_pids_max(),
        seccomp_profiles=load_profiles(Path(args.seccomp_profile_dir)) if args.seccomp_profile_dir else {},
        image_gc_high_percent=args.image_gc_high_threshold,
        image_gc_low_percent=args.image_gc_low_threshold,
        image_gc_min_age_s=args.image_gc_min_age,
        pull_backoff_s=backoff,
    )
    agent: Agent

    async def emit(event: ev.Event) -> None:
        await agent.emit(event)

    images = ImageStore(data_dir / "images")
    service = NodeService(
        config,
        runtime=RuncRuntime(RuntimePaths(data_dir / "rt")),
        images=images,
        cgroups=Cgroups(detect_layout()),
        emit=emit,
        puller=(
            Puller(
                images,
                data_dir / "pulls",
                insecure=tuple(args.insecure_registry),
                authfile=args.registry_auth,
                mirrors=dict(m.split("=", 1) for m in args.registry_mirror),
                timeout_s=args.image_pull_timeout,
            )
            if shutil.which("skopeo")
            else None  # said at registration: the scheduler sends it only images it holds
        ),
    )
    if service.puller is None:
        logging.warning("no skopeo on PATH: this node pulls no images")
    labels = dict(label.split("=", 1) for label in args.label)
    agent = Agent(
        AgentConfig(
            nats_url=args.nats,
            node=args.node,
            topology=topology,
            capacity=Resources(topology.cpu_count * 1000, topology.memory_bytes),
            labels=labels,
            cpu_map=cpu_map,
            reserved_cpus=tuple(sorted(reserved)),
            user=args.user,
            password=os.environ.get("CORRAL_NATS_PASSWORD"),
            nkey_seed=args.nkey_seed,
            heartbeat_s=args.heartbeat,
            sync_s=args.sync,
        ),
        service,
        Outbox(data_dir / "outbox"),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    await agent.run()


def _dump_tasks() -> None:
    """SIGUSR1: every task's stack to the log (what a nodelet waits on, when it seems stuck)."""
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        logging.warning("task %s:\n%s", task.get_name(), out.getvalue())


def run(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.data_dir = str(Path(args.data_dir or f"/run/corral/{args.node}").resolve())  # mount tables name real paths
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvloop.run(main(args))


if __name__ == "__main__":
    run()
