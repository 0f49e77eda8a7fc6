"""Scheduler benchmark: ``python -m scheduler.bench [--nodes N ...] [--quick]``.

A hollow cluster (nodes that exist only as events: 2 sockets x 2 NUMA x 8 cores x 2 threads, 64 CPUs, 256 GiB)
in a real SQLite event log (synchronous=FULL). Containers of mixed QoS are submitted — 20 % LSR/LSE with 1-8
exclusive CPUs, 60 % LS, 20 % BE — and the scheduler places them all: decisions, the plan check against the
latest state, and the append of every ``ContainerScheduled`` to SQLite are inside the timed part. Decision
latency is the time of one ``place()`` call. The last line reads
``scheduler: nodes=N placements_per_s=N decision_p50_ms=N decision_p99_ms=N`` (for the first --nodes value).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from scheduler.dispatch import Dispatcher
from scheduler.service import Scheduler
from store.log import EventLog
from store.recorder import NO_STREAM
from store.sqlite import SqliteRecorder
from wire import events as ev
from wire.commands import StartContainer, StopContainer, UpdateResources
from wire.ids import container_stream, node_stream
from wire.resources import Resources
from wire.spec import ContainerSpec, CpuBindPolicy, NumaPolicy, QoS
from wire.topology import Topology

GI = 1 << 30
TOPOLOGY = Topology.uniform(2, 2, 8, 2, memory_per_numa=64 * GI)


class Discard:
    """The publisher of a hollow cluster: commands go nowhere."""

    async def start(self, node: str, command: StartContainer) -> None:
        return None

    async def stop(self, node: str, command: StopContainer) -> None:
        return None

    async def update(self, node: str, command: UpdateResources) -> None:
        return None


def workload(count: int, seed: int = 42) -> list[ContainerSpec]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        r = rng.random()
        if r < 0.2:
            cpus = rng.randint(1, 8)
            out.append(
                ContainerSpec(
                    name=f"x{i % 1000}",
                    image="busybox",
                    qos=QoS.LSE if rng.random() < 0.3 else QoS.LSR,
                    cpu_request_millis=cpus * 1000,
                    cpu_limit_millis=cpus * 1000,
                    memory_limit_bytes=2 * GI,
                    cpu_bind_policy=rng.choice([CpuBindPolicy.FULL_PCPUS, CpuBindPolicy.SPREAD_BY_PCPUS]),
                    numa_policy=rng.choice([NumaPolicy.NONE, NumaPolicy.BEST_EFFORT, NumaPolicy.SINGLE_NUMA_NODE]),
                )
            )
        elif r < 0.8:
            cpu = rng.choice([100, 250, 500, 1000, 2000])
            out.append(
                ContainerSpec(
                    name=f"s{i % 1000}",
                    image="busybox",
                    cpu_request_millis=cpu,
                    cpu_limit_millis=cpu * 2,
                    memory_limit_bytes=rng.choice([256, 512, 1024]) << 20,
                )
            )
        else:
            out.append(ContainerSpec(name=f"b{i % 1000}", image="busybox"))
    return out


async def run(nodes: int, containers: int, directory: Path) -> dict[str, float]:
    recorder = await SqliteRecorder.open(directory / f"sched-{nodes}.db", synchronous="FULL")
    log = EventLog(recorder)
    capacity = Resources(TOPOLOGY.cpu_count * 1000, TOPOLOGY.memory_bytes)
    await asyncio.gather(
        *(
            log.append(
                node_stream(f"node-{i:05d}"),
                [ev.NodeRegistered(node=f"node-{i:05d}", topology=TOPOLOGY, capacity=capacity, epoch=1)],
                NO_STREAM,
            )
            for i in range(nodes)
        )
    )
    specs = workload(containers)
    ids = [f"{i:016x}" for i in range(1, containers + 1)]
    for start in range(0, containers, 2000):
        await asyncio.gather(
            *(
                log.append(container_stream(cid), [ev.ContainerSubmitted(container_id=cid, spec=s)], NO_STREAM)
                for cid, s in zip(ids[start : start + 2000], specs[start : start + 2000], strict=True)
            )
        )
    scheduler = Scheduler(log, batch=1024)
    dispatcher = Dispatcher(scheduler.projection, Discard())
    await scheduler.projection.catch_up()  # setup: the scheduler starts from a caught-up state

    decisions: list[float] = []
    scheduler.decision_ms = decisions
    started = time.perf_counter()
    placed = 0
    while n := await scheduler.round():
        placed += n
        await dispatcher.dispatch()  # the starts, derived from the placements (sent nowhere)
    elapsed = time.perf_counter() - started
    pending = sum(1 for c in scheduler.state.containers.values() if c.node is None)
    await recorder.close()
    decisions.sort()
    return {
        "nodes": nodes,
        "placed": placed,
        "unplaced": pending,
        "placements_per_s": placed / elapsed,
        "p50": statistics.median(decisions),
        "p99": decisions[int(len(decisions) * 0.99)],
        "elapsed": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="*", default=None, help="cluster sizes (default 5000 1000 10000)")
    parser.add_argument("--containers", type=int, default=None, help="containers per run (default 100000)")
    parser.add_argument("--quick", action="store_true", help="5000 nodes, 20000 containers; within 60 s")
    args = parser.parse_args()
    sizes = args.nodes or ([5000] if args.quick else [5000, 1000, 10000])
    containers = args.containers or (20_000 if args.quick else 100_000)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            count = min(containers, 20 * n)  # at most 20 a node: a full cluster would measure only refusals
            print(
                f"{n} hollow nodes (64 CPUs each), {count:,} containers (20% LSE/LSR, 60% LS, 20% BE) ...", flush=True
            )
            r = uvloop.run(run(n, count, Path(tmp)))
            results.append(r)
            print(
                f"  placed {r['placed']:,} ({r['unplaced']:,} left unschedulable) in {r['elapsed']:.1f} s: "
                f"{r['placements_per_s']:,.0f} placements/s including plan check and SQLite append; "
                f"decision p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms",
                flush=True,
            )
    first = results[0]
    print(
        f"scheduler: nodes={first['nodes']} placements_per_s={first['placements_per_s']:.0f} "
        f"decision_p50_ms={first['p50']:.3f} decision_p99_ms={first['p99']:.3f}"
    )


if __name__ == "__main__":
    main()
