"""``python -m api.composetest`` (``make compose-test``): the compose demo end to end, judged from outside.

From the image build to ``down -v``, under a project and an image tag of its own (a demo the user runs is left
alone): three nodes register; containers and a 3-replica service submitted over HTTP run, and their cgroup
values read inside the nodelet containers (cpuset, shares, quota) match what the API reports; a nodelet
container killed → its replicas run on the others within 10 s → started again, it rejoins and runs only what
the API says; a nodelet container paused past its lease → replaced → unpaused, it stops its stale copies;
the control plane restarted → same containers, same processes; ``down -v`` → no container, network, volume or
image left. Ground truth is ``runc list`` and cgroup files inside every nodelet container. The last line reads
``compose: ok total_s=N`` when every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from api.local import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "compose.sh"
NODES = ("node-1", "node-2", "node-3")
REPLACE_WITHIN_S = 10.0
T = TypeVar("T")


class StepFailed(Exception):
    pass


def docker() -> str:
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def cpulist(text: str) -> frozenset[int]:
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    return frozenset(cpus)


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, every_s: float = 0.25) -> T:
    """``check()`` until it gives something other than None; StepFailed after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            got = check()
            if got is not None:
                return got
        except (httpx.HTTPError, subprocess.SubprocessError, ValueError, KeyError) as e:
            last = e
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: not within {timeout_s:.0f} s" + (f" (last error: {last})" if last else ""))
        time.sleep(every_s)


class Demo:
    def __init__(self, project: str, image: str, port: int) -> None:
        self.project, self.image, self.port = project, image, port
        self.env = os.environ | {"COMPOSE_PROJECT_NAME": project, "CORRAL_IMAGE": image, "CORRAL_PORT": str(port)}
        self.api: httpx.Client | None = None
        self.ids: dict[str, str] = {}  # compose service → docker container id

    # --- the shell ---------------------------------------------------------------------------------------------

    def script(self, *args: str, timeout_s: float = 600) -> str:
        out = subprocess.run(
            ["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if out.returncode != 0:
            raise StepFailed(f"deploy/compose.sh {' '.join(args)}: exit {out.returncode}\n{out.stderr[-3000:]}")
        return out.stdout

    def docker(self, *args: str, timeout_s: float = 60, check: bool = True) -> str:
        out = subprocess.run([docker(), *args], capture_output=True, text=True, timeout=timeout_s, check=False)
        if check and out.returncode != 0:
            raise StepFailed(f"docker {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def container(self, service: str) -> str:
        if service not in self.ids:
            self.ids[service] = self.script("compose", "ps", "-q", service).strip()
            if not self.ids[service]:
                raise StepFailed(f"no container for the service {service}")
        return self.ids[service]

    def in_node(self, node: str, *cmd: str) -> str:
        return self.docker("exec", self.container(f"nodelet{node[-1]}"), *cmd, timeout_s=30)

    # --- ground truth, from inside the nodelet containers ------------------------------------------------------

    def runc(self, node: str) -> dict[str, int]:
        """The containers runc runs on ``node``: id → pid."""
        rows = json.loads(self.in_node(node, "runc", "--root", f"/run/corral/{node}/rt/runc", "list", "-f", "json"))
        return {r["id"]: r["pid"] for r in rows or [] if r["status"] == "running"}

    def cgroup(self, node: str, controller: str, cid: str, name: str) -> str:
        return self.in_node(node, "cat", f"/sys/fs/cgroup/{controller}/corral/{node}/{cid}/{name}").strip()

    # --- the API -----------------------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        assert self.api is not None
        r = self.api.get(path)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        assert self.api is not None
        r = self.api.post(path, json=body)
        if r.status_code >= 300:
            raise StepFailed(f"POST {path}: {r.status_code} {r.text}")
        return r.json()

    def containers(self) -> dict[str, dict[str, Any]]:
        return {c["id"]: c for c in self.get("/v1/containers")}

    def running(self) -> dict[str, dict[str, Any]]:
        return {i: c for i, c in self.containers().items() if c["state"] == "running"}

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.get("/v1/nodes")}


def expected_cgroup(
    c: dict[str, Any], node_cpus: frozenset[int], lse: frozenset[int], lsr: frozenset[int]
) -> dict[str, str]:
    """What the nodelet should have written for container ``c`` as the API reports it. Kubernetes' CPU mapping:
    shares from the request (BE the minimum), a quota from the limit, none for exclusive containers. Koordinator's
    pools: LSE and LSR containers get their own CPUs; BE shares every CPU but the LSE ones; LS shares what neither
    LSE nor LSR holds (a pool left empty falls back to the wider one)."""
    spec = c["spec"]
    qos = spec["qos"]
    shares = 2 if qos == "BE" else min(max(spec["cpu_request_millis"] * 1024 // 1000, 2), 262144)
    limit = spec["cpu_limit_millis"]
    if qos in ("LSE", "LSR") or limit is None:
        quota = -1
    else:
        quota = c["cfs_quota_us"] if c["cfs_quota_us"] is not None else max(limit * 100, 1000)
    be = (node_cpus - lse) or node_cpus
    cpus = frozenset(c["cpuset"]) if qos in ("LSE", "LSR") else be if qos == "BE" else (be - lsr) or be
    return {"cpu.shares": str(shares), "cpu.cfs_quota_us": str(quota), "cpuset.cpus": ",".join(map(str, sorted(cpus)))}


class Run:
    def __init__(self, demo: Demo, say: Callable[[str], None]) -> None:
        self.demo, self.say = demo, say
        self.service = ""
        self.figures: dict[str, float] = {}

    def step(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        fn()
        took = time.monotonic() - t0
        self.figures[f"{name}_s"] = round(took, 2)
        self.say(f"compose: {name} ok in {took:.1f} s")

    # --- the steps ---------------------------------------------------------------------------------------------

    def build(self) -> None:
        self.demo.script("build")

    def up(self) -> None:
        d = self.demo
        d.script("compose", "up", "-d")
        token = d.script("token").strip()
        d.api = httpx.Client(
            base_url=f"http://127.0.0.1:{d.port}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        wait_for("three nodes registered", lambda: True if len(self.ready_nodes()) == 3 else None, 90)

    def ready_nodes(self) -> set[str]:
        return {n for n, v in self.demo.nodes().items() if not v["lost"]}

    def submit(self) -> None:
        d = self.demo
        mi = 1 << 20
        base = {"image": "busybox", "command": ["sleep", "3600"]}
        d.post("/v1/containers", base | {"name": "db", "qos": "LSR", "cpu_request_millis": 1000,
                                         "cpu_limit_millis": 1000, "memory_limit_bytes": 64 * mi})  # fmt: skip
        d.post("/v1/containers", base | {"name": "web", "cpu_request_millis": 250, "cpu_limit_millis": 500,
                                         "memory_limit_bytes": 64 * mi})  # fmt: skip
        d.post("/v1/containers", base | {"name": "batch"})
        template = base | {"name": "echo", "cpu_request_millis": 100, "memory_limit_bytes": 32 * mi}
        self.service = d.post("/v1/services", {"name": "echo", "replicas": 3, "template": template})["id"]
        wait_for("6 containers running", lambda: True if len(d.running()) == 6 else None, 60)

    def replicas(self, running: dict[str, dict[str, Any]]) -> dict[str, str]:
        """The service's running replicas: id → node."""
        return {i: c["node"] for i, c in running.items() if c["service_id"] == self.service}

    def cgroups(self) -> None:
        """Every running container's cpuset, shares and quota, read inside its nodelet, as the API reports them."""
        d = self.demo
        running, nodes = d.running(), d.nodes()
        problems = []
        for node in NODES:
            node_cpus = frozenset(cpu for s in nodes[node]["topology"]["sockets"] for n in s["numa_nodes"]
                                  for core in n["cores"] for cpu in core["cpus"])  # fmt: skip
            node_cpus -= frozenset(nodes[node]["reserved_cpus"])
            here = {i: c for i, c in running.items() if c["node"] == node}
            pids = d.runc(node)
            held = {q: frozenset(cpu for c in here.values() if c["spec"]["qos"] == q for cpu in c["cpuset"])
                    for q in ("LSE", "LSR")}  # fmt: skip
            for cid, c in here.items():
                want = expected_cgroup(c, node_cpus, held["LSE"], held["LSR"])
                have = {
                    "cpu.shares": d.cgroup(node, "cpu", cid, "cpu.shares"),
                    "cpu.cfs_quota_us": d.cgroup(node, "cpu", cid, "cpu.cfs_quota_us"),
                    "cpuset.cpus": ",".join(map(str, sorted(cpulist(d.cgroup(node, "cpuset", cid, "cpuset.cpus"))))),
                }
                what = f"{c['spec']['name']} {cid} on {node}"
                if pids.get(cid) != c["pid"]:
                    problems.append(f"{what}: pid {pids.get(cid)} in runc, {c['pid']} in the API")
                if have != want:
                    problems.append(f"{what}: cgroups {have}, the API says {want}")
        if problems:
            raise StepFailed("; ".join(problems))
        self.say(f"compose: cgroups of {len(running)} containers match the API")

    def converged(self) -> bool | None:
        """runc on every node runs exactly what the API says runs there, and the service has its 3 replicas,
        each once (None while not so)."""
        d = self.demo
        running = d.running()
        truth = {node: set(d.runc(node)) for node in NODES}
        for node in NODES:
            if truth[node] != {i for i, c in running.items() if c["node"] == node}:
                return None
        copies = [cid for ids in truth.values() for cid in ids]
        replicas = self.replicas(running)
        if len(replicas) != 3 or len(copies) != len(set(copies)):
            return None
        return True

    def no_duplicates(self) -> None:
        """Never two copies of a replica: a replica id runs on one node at most; the service runs at most 3."""
        d = self.demo
        truth = {node: set(d.runc(node)) for node in NODES}
        copies = [cid for ids in truth.values() for cid in ids]
        if len(copies) != len(set(copies)):
            raise StepFailed(f"a container runs on two nodes: {truth}")

    def kill_nodelet(self) -> None:
        d = self.demo
        victim = self.victim()
        epoch = d.nodes()[victim]["epoch"]
        d.docker("kill", d.container(f"nodelet{victim[-1]}"))
        t0 = time.monotonic()

        def replaced() -> bool | None:
            running = d.running()
            replicas = self.replicas(running)
            if len(replicas) != 3 or victim in replicas.values():
                return None
            truth = {n: set(d.runc(n)) for n in NODES if n != victim}
            return True if all(cid in truth[n] for cid, n in replicas.items()) else None

        wait_for(f"the replicas of {victim} running elsewhere", replaced, REPLACE_WITHIN_S, every_s=0.1)
        self.figures["kill_replace_s"] = round(time.monotonic() - t0, 2)
        self.say(f"compose: {victim} killed; its replicas run on the others after {self.figures['kill_replace_s']} s")
        d.docker("start", d.container(f"nodelet{victim[-1]}"))
        t1 = time.monotonic()
        wait_for(
            f"{victim} back",
            lambda: True if (n := d.nodes()[victim])["epoch"] > epoch and not n["lost"] else None,
            30,
        )
        self.figures["rejoin_s"] = round(time.monotonic() - t1, 2)
        wait_for("convergence after the rejoin", self.converged, 30)
        self.no_duplicates()

    def pause_nodelet(self) -> None:
        """A node that pauses past its lease comes back to find its replicas replaced: it stops its copies."""
        d = self.demo
        victim = self.victim()
        stale = {cid for cid, n in self.replicas(d.running()).items() if n == victim}
        if not stale & set(d.runc(victim)):
            raise StepFailed(f"{victim} runs no replica to pause (runc: {d.runc(victim)})")
        d.docker("pause", d.container(f"nodelet{victim[-1]}"))
        try:
            wait_for(
                f"the replicas of paused {victim} replaced",
                lambda: True if len(r := self.replicas(d.running())) == 3 and victim not in r.values() else None,
                REPLACE_WITHIN_S,
                every_s=0.1,
            )
        finally:
            d.docker("unpause", d.container(f"nodelet{victim[-1]}"))
        t0 = time.monotonic()
        wait_for(f"{victim} stops its stale copies", lambda: True if not stale & set(d.runc(victim)) else None, 30)
        self.figures["stale_stopped_s"] = round(time.monotonic() - t0, 2)
        wait_for("convergence after the pause", self.converged, 30)
        self.no_duplicates()

    def victim(self) -> str:
        """The node holding the most replicas (ties: the first by name)."""
        on = list(self.replicas(self.demo.running()).values())
        return max(sorted(set(on)), key=on.count)

    def restart_control_plane(self) -> None:
        d = self.demo
        before_api = {i: (c["node"], c["state"], c["pid"]) for i, c in d.containers().items()}
        before_runc = {n: d.runc(n) for n in NODES}
        d.docker("restart", "-t", "10", d.container("controlplane"))
        wait_for("the API after the restart", lambda: True if len(self.ready_nodes()) == 3 else None, 60)
        time.sleep(3)  # a few heartbeats and a sync: what would go wrong has had the time to
        after_api = {i: (c["node"], c["state"], c["pid"]) for i, c in d.containers().items()}
        after_runc = {n: d.runc(n) for n in NODES}
        if after_api != before_api:
            changed = {i: (before_api.get(i), after_api.get(i)) for i in before_api.keys() | after_api.keys()
                       if before_api.get(i) != after_api.get(i)}  # fmt: skip
            raise StepFailed(f"the control plane's state changed across its restart: {changed}")
        if after_runc != before_runc:
            raise StepFailed(f"containers restarted with the control plane: {before_runc} → {after_runc}")
        self.say(f"compose: control plane restarted; the same {sum(map(len, after_runc.values()))} processes run")

    def down_up(self) -> None:
        """``down`` without ``-v`` keeps the log and the identities: after ``up`` the same token works, the log
        goes on from where it was, and the service is back to its 3 replicas on the new nodelets."""
        d = self.demo
        head = d.get("/v1/state")["position"]
        d.script("compose", "down", "--timeout", "20")
        d.ids.clear()  # new containers
        d.script("compose", "up", "-d")
        wait_for("three nodes back after down and up", lambda: True if len(self.ready_nodes()) == 3 else None, 90)
        if d.get("/v1/state")["position"] < head:
            raise StepFailed(f"the log lost events across down/up: position {head} before")
        wait_for("the service converged after down and up", self.converged, 60)
        self.no_duplicates()

    def down(self) -> None:
        d = self.demo
        if d.api is not None:
            d.api.close()
        d.script("down")
        label = f"label=com.docker.compose.project={d.project}"
        left = {
            "containers": d.docker("ps", "-aq", "--filter", label).split(),
            "networks": d.docker("network", "ls", "-q", "--filter", label).split(),
            "volumes": d.docker("volume", "ls", "-q", "--filter", label).split(),
            "images": d.docker("images", "-q", d.image).split(),
            "cgroups": [  # the nodelets' nested cgroups go with their containers (v1 or v2, either cgroup driver)
                str(p)
                for cid in d.ids.values()
                for pattern in ("*/docker/", "docker/", "system.slice/docker-", "*/system.slice/docker-")
                for p in Path("/sys/fs/cgroup").glob(f"{pattern}{cid}*")
            ],
        }
        if any(left.values()):
            raise StepFailed(f"left after down -v: {left}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m api.composetest", description=__doc__)
    p.add_argument("--keep", action="store_true", help="leave the demo up when a step fails (to look at it)")
    args = p.parse_args(argv)
    tag = f"{os.getpid()}"
    demo = Demo(f"corral-test-{tag}", f"corral:test-{tag}", free_port())
    run = Run(demo, lambda line: print(line, flush=True))
    t0 = time.monotonic()
    ok = False
    try:
        run.step("build", run.build)
        run.step("up", run.up)
        run.step("submit", run.submit)
        run.step("cgroups", run.cgroups)
        run.step("kill", run.kill_nodelet)
        run.step("pause", run.pause_nodelet)
        run.step("cgroups_after", run.cgroups)
        run.step("restart_control_plane", run.restart_control_plane)
        run.step("down_up", run.down_up)
        ok = True
    except (StepFailed, httpx.HTTPError, subprocess.SubprocessError) as e:
        print(f"compose: FAILED: {e}", flush=True)
        with_logs = subprocess.run(
            ["bash", str(SCRIPT), "compose", "logs", "--no-color", "--tail", "30"],
            env=demo.env, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        print(with_logs.stdout[-12000:], flush=True)
    finally:
        if ok or not args.keep:
            try:
                run.step("down", run.down)
            except StepFailed as e:
                print(f"compose: FAILED: {e}", flush=True)
                ok = False
    if not ok:
        return 1
    figures = " ".join(f"{k}={v}" for k, v in run.figures.items())
    print(f"compose: figures {figures}")
    print(f"compose: ok total_s={time.monotonic() - t0:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
