"""``corral bench burst``: what CPU Burst does for a bursty workload, measured through the platform.

The reference workload of ../shared/reference/cpu-burst.md runs in a container submitted over HTTP with a 0.5 CPU
limit (the host's Python, mounted read-only into a busybox root): one burst per 200 ms slot, arriving at a random
offset in the slot's first 100 ms, each spinning until it has used 30-60 ms of its own CPU time (a fixed seed).
Each burst's wall time is its service time. It runs under the container policies none, cpuBurstOnly and auto,
and once without a limit (the baseline, in the same run), with one worker and with two bursting together. The
throttling figures are the container's cgroup counters as the platform's telemetry reports them.

It brings up its own one-node local cluster unless ``CORRAL_ADDR`` is set (whose nodes must allow mounting
``/usr``). The last line reads ``burst: throttled_reduction_pct=N p99_over_noquota_pct=N
auto_vs_burst_p99_2w_pct=N``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.local import LocalCluster, free_port

# Run by the host's /usr/bin/python3 in the container; prints one JSON line of results.
WORKLOAD = r"""
import json, random, sys, time
seconds, seed, delay = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
time.sleep(delay)  # the node's CPU Burst loop sets the container's burst within a second of its start
rng = random.Random(seed)
start_ns = time.time_ns()
start = time.monotonic()
times = []
for i in range(int(seconds / 0.2)):
    arrive = start + i * 0.2 + rng.uniform(0, 0.1)
    wait = arrive - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    need = rng.uniform(0.030, 0.060)
    t0, c0 = time.perf_counter(), time.thread_time()
    while time.thread_time() - c0 < need:
        pass
    times.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({"seed": seed, "start_ns": start_ns, "end_ns": time.time_ns(), "times_ms": times}), flush=True)
"""

MOUNTS = [
    {"source": "/usr", "destination": "/usr", "read_only": True},
    {"source": "/usr/lib", "destination": "/lib", "read_only": True},
    {"source": "/usr/lib64", "destination": "/lib64", "read_only": True},
]
SETTINGS = ("noquota", "none", "cpuBurstOnly", "auto")
LIMIT_MILLIS = 500


@dataclass
class Run:
    setting: str
    workers: int
    times_ms: list[float]
    nr_periods: int
    nr_throttled: int
    throttled_ms: float

    def pct(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def spec(setting: str, workers: int, seconds: float, delay: float, tag: str) -> dict[str, Any]:
    runs = " ".join(f'/usr/bin/python3 -c "$W" {seconds} {seed} {delay} &' for seed in range(1, workers + 1))
    s: dict[str, Any] = {
        "name": f"burst-{setting.lower()}-{workers}w-{tag}",
        "image": "busybox",
        "command": ["/bin/sh", "-c", f"{runs} wait; sleep 2"],  # 2 s more: the last counters reach telemetry
        "env": {"W": WORKLOAD},
        "mounts": MOUNTS,
        "cpu_request_millis": LIMIT_MILLIS,
    }
    if setting != "noquota":
        s["cpu_limit_millis"] = LIMIT_MILLIS
        s["burst"] = {"policy": setting}
    return s


def measure(c: httpx.Client, setting: str, workers: int, seconds: float, delay: float) -> Run:
    r = c.post("/v1/containers", json=spec(setting, workers, seconds, delay, uuid.uuid4().hex[:6]))
    if r.status_code >= 400:
        raise SystemExit(f"submit refused: {r.status_code} {r.text}")
    cid = r.json()["id"]
    try:
        deadline = time.monotonic() + delay + seconds + 60
        results: list[dict[str, Any]] = []
        while len(results) < workers:
            if time.monotonic() > deadline:
                raise SystemExit(f"container {cid} ({setting}) gave no results in time")
            state = c.get(f"/v1/containers/{cid}").json()["state"]
            if state in ("exited", "stopped", "lost", "unschedulable"):
                raise SystemExit(f"container {cid} ({setting}) ended {state} before it reported")
            if state == "running":
                lines = c.get(f"/v1/containers/{cid}/logs").text.splitlines()
                results = [json.loads(x.split(" ", 3)[3]) for x in lines if x.split(" ", 3)[-1].startswith("{")]
            time.sleep(0.25)
        start = min(x["start_ns"] for x in results)
        end = max(x["end_ns"] for x in results)
        points = _points_until(c, cid, end)
        before = [p for p in points if p["at_ns"] <= start] or points[:1]
        first, last = before[-1], points[-1]
        return Run(
            setting=setting,
            workers=workers,
            times_ms=[t for x in results for t in x["times_ms"]],
            nr_periods=last["nr_periods"] - first["nr_periods"],
            nr_throttled=last["nr_throttled"] - first["nr_throttled"],
            throttled_ms=(last["throttled_ns"] - first["throttled_ns"]) / 1e6,
        )
    finally:
        c.delete(f"/v1/containers/{cid}", params={"grace": 0})


def _points_until(c: httpx.Client, cid: str, end_ns: int) -> list[dict[str, Any]]:
    """The container's telemetry, once a point after ``end_ns`` is in (so the whole run is counted)."""
    for _ in range(40):
        stats = c.get(f"/v1/containers/{cid}/stats").json()
        points = sorted(stats["older"] + stats["recent"], key=lambda p: p["at_ns"])
        if points and points[-1]["at_ns"] > end_ns:
            return points
        time.sleep(0.25)
    raise SystemExit(f"no telemetry for {cid} after its run")


def bench(seconds: float, delay: float) -> list[Run]:
    if not Path("/usr/bin/python3").exists():
        raise SystemExit("needs /usr/bin/python3 on the host (apt-get install -y python3)")
    own = "CORRAL_ADDR" not in os.environ
    home = Path(f"/run/corral-bb{uuid.uuid4().hex[:6]}")
    cluster = LocalCluster(home)
    if own:
        env = cluster.up(1, free_port(), free_port(), allow_host_mounts=("/usr",))
        addr, token = env["addr"], env["token"]
    else:
        addr, token = os.environ["CORRAL_ADDR"], os.environ.get("CORRAL_TOKEN", "")
    runs: list[Run] = []
    try:
        with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            for workers in (1, 2):
                for setting in SETTINGS:
                    run = measure(c, setting, workers, seconds, delay)
                    runs.append(run)
                    print(_line(run), flush=True)
    finally:
        if own:
            cluster.down()
            shutil.rmtree(home, ignore_errors=True)
    return runs


def _line(r: Run) -> str:
    return (
        f"  {r.workers} worker{'s' if r.workers > 1 else ' '} {r.setting:<13} throttled {r.nr_throttled:>4} of "
        f"{r.nr_periods:>4} periods, {r.throttled_ms:8.1f} ms throttled; service time p50 {r.pct(0.5):6.1f} ms, "
        f"p99 {r.pct(0.99):6.1f} ms over {len(r.times_ms)} bursts"
    )


def summary(runs: list[Run]) -> dict[str, float]:
    by = {(r.workers, r.setting): r for r in runs}
    none, only, base = by[(1, "none")], by[(1, "cpuBurstOnly")], by[(1, "noquota")]
    reduction = (none.nr_throttled - only.nr_throttled) / none.nr_throttled * 100 if none.nr_throttled else 0.0
    over = (only.pct(0.99) - base.pct(0.99)) / base.pct(0.99) * 100
    only2, auto2 = by[(2, "cpuBurstOnly")], by[(2, "auto")]
    auto_vs = (auto2.pct(0.99) - only2.pct(0.99)) / only2.pct(0.99) * 100
    return {"reduction": reduction, "over": over, "auto_vs": auto_vs}


def main(quick: bool) -> None:
    seconds = 6.0 if quick else 20.0
    print(
        f"CPU Burst through the platform: the reference bursty workload ({seconds:.0f} s, one 30-60 ms burst per "
        f"200 ms slot) in a container with a {LIMIT_MILLIS}m CPU limit, under each policy, and without a limit",
        flush=True,
    )
    started = time.monotonic()
    runs = bench(seconds, delay=2.0)
    s = summary(runs)
    median = statistics.median(x for r in runs if r.setting == "noquota" for x in r.times_ms)
    print(f"  baseline (no limit) median service time {median:.1f} ms; {time.monotonic() - started:.0f} s in all")
    print(
        f"burst: throttled_reduction_pct={s['reduction']:.0f} p99_over_noquota_pct={s['over']:.0f} "
        f"auto_vs_burst_p99_2w_pct={s['auto_vs']:.0f}"
    )


if __name__ == "__main__":
    main("--quick" in sys.argv)
