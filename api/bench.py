"""``corral bench submit``: HTTP submit → container running, on a real local cluster.

Brings up its own 3-node local cluster (unless ``CORRAL_ADDR`` is set), submits containers one at a time over
HTTP and times each from the POST to the moment the API reports it running (polled every 2 ms), while a second
process keeps a steady load of ``GET /v1/containers`` and reports that call's latency. The last line reads
``submit: p50_ms=N p99_ms=N get_p99_ms=N``.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from api.local import free_port

GET_LOAD = r"""
import json, sys, time, httpx
addr, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
lat = []
with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            t = time.perf_counter()
            c.get("/v1/containers").raise_for_status()
            lat.append((time.perf_counter() - t) * 1e3)
            time.sleep(0.02)
    except KeyboardInterrupt:  # the benchmark is done: report
        pass
lat.sort()
print(json.dumps({"n": len(lat), "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}))
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def bench_submit(count: int) -> dict[str, float]:
    own = "CORRAL_ADDR" not in os.environ
    env = dict(os.environ)
    home = Path(f"/run/corral-b{uuid.uuid4().hex[:6]}")
    cli = [sys.executable, "-m", "api.cli"]
    if own:
        env["CORRAL_HOME"] = str(home)
        up = subprocess.run(
            [*cli, "up", "--nodes", "3", "--port", str(free_port()), "--nats-port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if up.returncode != 0:
            raise SystemExit(f"could not bring up a local cluster:\n{up.stdout}{up.stderr}")
        saved = json.loads((home / "env.json").read_text())
        addr, token = saved["addr"], saved["token"]
    else:
        addr, token = env["CORRAL_ADDR"], env.get("CORRAL_TOKEN", "")
    results: dict[str, float] = {}
    try:
        with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            loader = subprocess.Popen(
                [sys.executable, "-c", GET_LOAD, addr, token, "3600"], stdout=subprocess.PIPE, text=True
            )
            latencies: list[float] = []
            ids: list[str] = []
            spec: dict[str, Any] = {
                "name": "bench",
                "image": "busybox",
                "command": ["sleep", "3600"],
                "cpu_request_millis": 10,
                "memory_limit_bytes": 16 << 20,
            }
            for _ in range(count):
                t = time.perf_counter()
                r = c.post("/v1/containers", json=spec)
                r.raise_for_status()
                cid = r.json()["id"]
                ids.append(cid)
                while True:
                    state = c.get(f"/v1/containers/{cid}").json()["state"]
                    if state == "running":
                        break
                    if state in ("exited", "stopped", "lost", "unschedulable"):
                        raise SystemExit(f"container {cid} ended up {state}")
                    time.sleep(0.002)
                latencies.append((time.perf_counter() - t) * 1e3)
            loader.send_signal(signal.SIGINT)
            out, _ = loader.communicate(timeout=30)
            for cid in ids:
                c.delete(f"/v1/containers/{cid}", params={"grace": 0})
        results = {"p50": statistics.median(latencies), "p99": _percentile(latencies, 0.99), "max": max(latencies)}
        get = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"p99": float("nan"), "p50": 0, "n": 0}
        results |= {"get_p50": get["p50"], "get_p99": get["p99"], "get_n": get["n"]}
    finally:
        if own:
            subprocess.run([*cli, "down"], env=env, capture_output=True, check=False)
            subprocess.run(["rm", "-rf", str(home)], check=False)
    return results


def main(quick: bool) -> None:
    count = 30 if quick else 100
    print(
        f"submit → running over {count} containers (busybox sleep), one at a time, on an idle 3-node cluster; "
        f"a second process reads GET /v1/containers every 20 ms meanwhile",
        flush=True,
    )
    r = bench_submit(count)
    print(f"  submit → running: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms")
    print(
        f"  GET /v1/containers under that load: p50 {r['get_p50']:.1f} ms, p99 {r['get_p99']:.1f} ms "
        f"over {r['get_n']:.0f} calls"
    )
    print(f"submit: p50_ms={r['p50']:.1f} p99_ms={r['p99']:.1f} get_p99_ms={r['get_p99']:.1f}")
