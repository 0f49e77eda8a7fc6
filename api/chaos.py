"""``corral chaos``: a chaos runner against a real local cluster, judged from ground truth.

It brings up its own local cluster (nats-server, the control plane, N nodelets running runc) under a private
``CORRAL_HOME``, keeps a service running and keeps submitting containers over HTTP while it injects faults —
SIGKILL and SIGSTOP/SIGCONT of nodelets (shorter and longer than the lease), partitions of a nodelet from NATS
(nftables drops, both directions or one, matched by the nodelet's own cgroup), SIGKILL of the control plane, an
outage of nats-server, mass stops — and after each heal checks, from ``runc list`` and cgroup files on every
node rather than from Corral's own state:

- lost: an accepted (2xx) submission missing from the cluster;
- doubled: more containers of a service running than it has replicas, or one container running twice;
- stuck: a container whose state disagrees with what runs (or that stays scheduled/stopping), or a node that
  stays lost, past the bound;
- gaps: log positions that are not contiguous, or a live projection that differs from a fresh replay;
- overlaps: exclusive cpusets, read from the cgroup files, that overlap on a node.

It prints, per fault type, time to detect, time until replacements run, time to converge, and ends with
``chaos: cycles=N faults=N lost=N doubled=N stuck=N gaps=N overlaps=N detect_p99_s=N replace_p99_s=N
converge_p99_s=N``. Everything it started is stopped and removed at the end, also after an error.

The judging is pure (``judge``); the shell observes and injects.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from api.local import LocalCluster, cgroup2_root, free_port

ENDED = frozenset({"exited", "stopped", "lost"})
IN_FLIGHT = frozenset({"pending", "scheduled", "stopping"})  # each must settle (unschedulable may stay)
FAULTS = (
    "kill-nodelet",
    "pause-short",
    "pause-long",
    "partition",  # nothing from the nodelet gets through (both directions, or its sends only)
    "partition-in",  # nothing reaches the nodelet; its heartbeats still arrive until TCP stalls for want of acks
    "kill-control",
    "nats-outage",
    "mass-stop",
)
# The only faults after which a node may be lost.
NODE_FAULTS = frozenset({"kill-nodelet", "pause-long", "partition", "partition-in"})


# --- the pure core: judging one observation ---------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    containers: dict[str, dict[str, Any]]  # the API's view: id → container
    replicas: dict[str, int]  # service id → replicas it asks for
    running: dict[str, frozenset[str]]  # ground truth: node → ids runc runs there
    cpusets: dict[str, dict[str, frozenset[int]]]  # ground truth: node → exclusive container → its cgroup CPUs
    accepted: frozenset[str] = frozenset()  # ids of 2xx submissions
    removed: frozenset[str] = frozenset()  # ids the runner removed itself
    lost_nodes: frozenset[str] = frozenset()  # nodes the API calls lost (each must come back after a heal)


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    short: list[str] = field(default_factory=list)  # services with fewer replicas running than asked

    @property
    def converged(self) -> bool:
        return not (self.lost or self.doubled or self.stuck or self.overlaps or self.short)


def judge(o: Observation) -> Verdict:
    v = Verdict()
    v.lost = sorted(o.accepted - o.removed - o.containers.keys())
    where: dict[str, list[str]] = {}
    for node, ids in o.running.items():
        for cid in ids:
            where.setdefault(cid, []).append(node)
    v.doubled = sorted(f"{cid} runs on {sorted(nodes)}" for cid, nodes in where.items() if len(nodes) > 1)
    per_service: dict[str, int] = {}
    for cid in where:
        c = o.containers.get(cid)
        if c is not None and c.get("service_id") is not None:
            per_service[c["service_id"]] = per_service.get(c["service_id"], 0) + 1
    for sid, n in sorted(per_service.items()):
        want = o.replicas.get(sid, 0)
        if n > want:
            v.doubled.append(f"service {sid}: {n} running for {want} replicas")
    for sid, want in sorted(o.replicas.items()):
        if per_service.get(sid, 0) < want:
            v.short.append(f"service {sid}: {per_service.get(sid, 0)} running for {want} replicas")
    for cid, c in sorted(o.containers.items()):
        state: str = c["state"]
        placed = c.get("node")
        runs = where.get(cid, [])
        if state == "running" and runs != [placed]:
            v.stuck.append(f"{cid} is running on {placed} for the API, runc runs it on {runs}")
        elif state in ENDED and runs:
            v.stuck.append(f"{cid} is {state} for the API, runc runs it on {runs}")
        elif state in IN_FLIGHT:
            v.stuck.append(f"{cid} is still {state}")
    v.stuck += sorted(
        f"{cid} runs on {nodes} unknown to the API" for cid, nodes in where.items() if cid not in o.containers
    )
    v.stuck += [f"node {n} is still lost" for n in sorted(o.lost_nodes)]
    for node, sets in sorted(o.cpusets.items()):
        items = sorted(sets.items())
        for i, (a, cpus_a) in enumerate(items):
            for b, cpus_b in items[i + 1 :]:
                if cpus_a & cpus_b:
                    v.overlaps.append(f"{node}: {a} and {b} share CPUs {sorted(cpus_a & cpus_b)}")
    return v


def _trio(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5):.2f}/{percentile(values, 0.99):.2f}/{max(values):.2f}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# --- the shell: a cluster, a workload, faults ----------------------------------------------------------------


def _cpus(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out.update(range(int(lo), int(hi) + 1))
        elif part:
            out.add(int(part))
    return frozenset(out)


class Chaos:
    def __init__(self, home: Path, nodes: int, seed: int, say: Callable[[str], None] = print) -> None:
        self.home = home
        self.cluster = LocalCluster(home, process_cgroups=True)
        self.table = f"corral_chaos_{home.name.replace('-', '_')}"  # the nftables table of a partition
        # A partition needs cgroup v2 (hybrid or pure) to tell a nodelet's sockets apart.
        can_cut = cgroup2_root() is not None and shutil.which("nft") is not None
        self.faults = FAULTS if can_cut else tuple(f for f in FAULTS if "partition" not in f)
        self.names = [f"node-{i + 1}" for i in range(nodes)]
        self.rng = random.Random(seed)  # the faults: a seed gives the same sequence
        self.load_rng = random.Random(seed + 1)  # the workload's own (it runs on another thread)
        self.say = say
        self.accepted: set[str] = set()
        self.removed: set[str] = set()
        self.service = ""
        self.replicas = nodes
        self.api: httpx.Client | None = None
        self.stats: dict[str, dict[str, list[float]]] = {
            f: {"detect": [], "replace": [], "converge": []} for f in self.faults
        }
        self.counts = {"faults": 0, "lost": 0, "doubled": 0, "stuck": 0, "gaps": 0, "overlaps": 0, "flaps": 0}
        self._lock = threading.Lock()
        self._round: list[str] = []

    # --- ground truth --------------------------------------------------------------------------------------

    def runc_running(self, node: str) -> frozenset[str]:
        root = self.home / node / "rt" / "runc"
        if not root.exists():
            return frozenset()
        out = subprocess.run(
            ["runc", "--root", str(root), "list", "-f", "json"], capture_output=True, check=False, timeout=20
        )
        if out.returncode != 0:
            raise RuntimeError(f"runc list on {node}: {out.stderr.decode(errors='replace').strip()}")
        rows = json.loads(out.stdout or b"null") or []
        return frozenset(r["id"] for r in rows if r["status"] == "running")

    def cgroup_cpus(self, node: str, cid: str) -> frozenset[int] | None:
        for base in (Path("/sys/fs/cgroup/cpuset"), Path("/sys/fs/cgroup")):
            f = base / self.home.name / node / cid / "cpuset.cpus"
            with contextlib.suppress(OSError):
                return _cpus(f.read_text())
        return None

    def observe(self) -> Observation:
        assert self.api is not None
        containers = {c["id"]: c for c in self._get("/v1/containers")}
        services = {s["id"]: s["replicas"] for s in self._get("/v1/services")}
        running = {n: self.runc_running(n) for n in self.names}
        cpusets: dict[str, dict[str, frozenset[int]]] = {}
        for node, ids in running.items():
            for cid in ids:
                c = containers.get(cid)
                if c is not None and c.get("cpuset"):
                    cpus = self.cgroup_cpus(node, cid)
                    if cpus is not None:
                        cpusets.setdefault(node, {})[cid] = cpus
        lost_nodes = frozenset(n["name"] for n in self._get("/v1/nodes") if n["lost"])
        with self._lock:
            accepted, removed = frozenset(self.accepted), frozenset(self.removed)
        return Observation(containers, services, running, cpusets, accepted, removed, lost_nodes)

    def _get(self, path: str) -> list[dict[str, Any]]:
        assert self.api is not None
        for attempt in range(100):  # the control plane may be restarting
            with contextlib.suppress(httpx.HTTPError):
                r = self.api.get(path)
                if r.status_code == 200:
                    return list(r.json())
            time.sleep(0.1 * min(attempt + 1, 5))
        raise RuntimeError(f"GET {path}: the API did not answer")

    def log_gaps(self) -> list[str]:
        """Positions contiguous in the SQLite log, and the live projection equal to a fresh replay."""
        problems = []
        db = sqlite3.connect(f"file:{self.home / 'control' / 'corral.db'}?mode=ro", uri=True)
        try:
            count, low, high = db.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM events").fetchone()
        finally:
            db.close()
        if count and count != high - low + 1:
            problems.append(f"log positions {low}..{high} hold {count} events")
        assert self.api is not None
        with contextlib.suppress(httpx.HTTPError):
            live = self.api.get("/v1/state").json()
            replayed = self.api.get("/v1/state", params={"at": live["position"]}).json()
            if live != replayed:
                problems.append(f"the projection at {live['position']} differs from a fresh replay")
        return problems

    # --- the workload ------------------------------------------------------------------------------------------

    def submit(self, exclusive: bool) -> None:
        """One container over HTTP with an Idempotency-Key, retried with the same key until answered."""
        assert self.api is not None
        body: dict[str, Any] = {"name": f"c{self.load_rng.randrange(10**6)}", "image": "busybox"}
        body["command"] = ["sleep", "3600"]
        if exclusive:
            body |= {"qos": "LSR", "cpu_request_millis": 1000, "cpu_limit_millis": 1000, "memory_limit_bytes": 32 << 20}
        else:
            body |= {"cpu_request_millis": 50}
        key = str(uuid.uuid4())
        for _ in range(60):
            try:
                r = self.api.post("/v1/containers", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                time.sleep(0.25)
                continue
            if r.status_code in (200, 201):
                with self._lock:
                    self.accepted.add(r.json()["id"])
                return
            if r.status_code < 500:
                raise RuntimeError(f"submission refused: {r.status_code} {r.text}")
            time.sleep(0.25)

    def workload(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(RuntimeError):
                self.submit(exclusive=self.load_rng.random() < 0.15)
            stop.wait(0.4)

    def trim(self, keep: int = 8) -> None:
        """Stop standalone containers beyond ``keep`` (the machine is small), and remove ended ones."""
        assert self.api is not None
        standalone = [c for c in self._get("/v1/containers") if c.get("service_id") is None]
        live = sorted((c for c in standalone if c["state"] not in ENDED), key=lambda c: c["submitted_position"])
        for c in live[: max(0, len(live) - keep)]:
            with contextlib.suppress(httpx.HTTPError):
                self.api.delete(f"/v1/containers/{c['id']}", params={"grace": 0})

    # --- faults ------------------------------------------------------------------------------------------------

    def _wait(self, check: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                if check():
                    return time.monotonic() - start
            time.sleep(step_s)
        return None

    def _node_lost(self, node: str) -> bool:
        return any(n["name"] == node and n["lost"] for n in self._get("/v1/nodes"))

    def _replicas_elsewhere(self, node: str) -> bool:
        """The service's replicas all run (per runc) on nodes other than ``node``."""
        ids = {c["id"] for c in self._get("/v1/containers") if c.get("service_id") == self.service}
        elsewhere = sum(len(self.runc_running(n) & ids) for n in self.names if n != node)
        return elsewhere >= self.replicas

    def inject(self, fault: str) -> dict[str, float]:
        """Inject ``fault`` and heal it; return the times measured (seconds from the fault)."""
        times: dict[str, float] = {}
        node = self.rng.choice(self.names)
        t0 = time.monotonic()
        if fault == "kill-nodelet":
            self.cluster.signal(node, signal.SIGKILL)
            self._measure_loss(node, t0, times, heal_after_s=12)
            self.cluster.start(node)
        elif fault in ("pause-short", "pause-long"):
            self.cluster.signal(node, signal.SIGSTOP)
            if fault == "pause-short":
                time.sleep(1.0)
            else:
                self._measure_loss(node, t0, times, heal_after_s=self.rng.uniform(5, 8))
            self.cluster.signal(node, signal.SIGCONT)
        elif fault in ("partition", "partition-in"):
            try:
                self.cut(node, "in" if fault == "partition-in" else self.rng.choice(("both", "out")))
                self._measure_loss(node, t0, times, heal_after_s=self.rng.uniform(5, 8))
            finally:
                self.heal()
        elif fault == "kill-control":
            self.cluster.signal("control", signal.SIGKILL)
            time.sleep(self.rng.uniform(0.5, 2))
            self.cluster.start("control")
        elif fault == "nats-outage":
            self.cluster.signal("nats", signal.SIGKILL)
            time.sleep(self.rng.uniform(5, 10))
            self.cluster.start("nats")
        elif fault == "mass-stop":
            assert self.api is not None
            live = [c for c in self._get("/v1/containers") if c.get("service_id") is None and c["state"] == "running"]
            api = self.api
            with ThreadPoolExecutor(10) as pool:
                list(pool.map(lambda c: api.delete(f"/v1/containers/{c['id']}", params={"grace": 1}), live))
        return times

    def cut(self, node: str, direction: str) -> None:
        """Drop the traffic of ``node``'s nodelet (its sockets, matched by its cgroup) in ``direction``: ``in``,
        ``out`` or ``both``. Only that process's traffic is touched (it talks to NATS on loopback and to nothing
        else); ``heal`` undoes it."""
        group = self.cluster.process_cgroup(node)
        root = cgroup2_root()
        assert group is not None and root is not None
        path, level = group.relative_to("/sys/fs/cgroup"), len(group.relative_to(root).parts)
        hooks = {"both": ("input", "output"), "in": ("input",), "out": ("output",)}[direction]
        rule = f'socket cgroupv2 level {level} "{path}" drop'
        chains = "".join(f"chain {h} {{ type filter hook {h} priority 0; {rule}; }}\n" for h in hooks)
        subprocess.run(
            ["nft", "-f", "-"], input=f"table inet {self.table} {{\n{chains}}}\n".encode(), check=True, timeout=10
        )

    def heal(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True, timeout=10, check=False)

    def _measure_loss(self, node: str, t0: float, times: dict[str, float], heal_after_s: float) -> None:
        detect = self._wait(lambda: self._node_lost(node), timeout_s=heal_after_s)
        if detect is not None:
            times["detect"] = time.monotonic() - t0
            replaced = self._wait(lambda: self._replicas_elsewhere(node), timeout_s=max(0.5, heal_after_s - detect))
            if replaced is not None:
                times["replace"] = time.monotonic() - t0
        time.sleep(max(0.0, heal_after_s - (time.monotonic() - t0)))

    # --- the run -----------------------------------------------------------------------------------------------

    def up(self) -> None:
        env = self.cluster.up(len(self.names), free_port(), free_port())
        self.api = httpx.Client(base_url=env["addr"], headers={"Authorization": f"Bearer {env['token']}"}, timeout=10)
        template = {"name": "web", "image": "busybox", "command": ["sleep", "3600"], "cpu_request_millis": 50}
        r = self.api.post("/v1/services", json={"name": "web", "replicas": self.replicas, "template": template})
        r.raise_for_status()
        self.service = r.json()["id"]
        took, verdict = self.settle(60)
        if took is None:
            raise RuntimeError(f"the cluster did not settle after coming up: {verdict}")

    def settle(self, timeout_s: float) -> tuple[float | None, Verdict]:
        """Judge until converged (return how long it took, and that verdict) or ``timeout_s`` passed (None, and
        the last verdict)."""
        start = time.monotonic()
        verdict = Verdict(stuck=["never observed"])
        while True:
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                verdict = judge(self.observe())
                if verdict.converged:
                    return time.monotonic() - start, verdict
            if time.monotonic() - start > timeout_s:
                return None, verdict
            time.sleep(0.25)

    def next_fault(self) -> str:
        """Every fault type once a round, in a random order: each is measured as often as the others."""
        if not self._round:
            self._round = self.rng.sample(self.faults, len(self.faults))
        return self._round.pop()

    def cycle(self, n: int, converge_s: float) -> None:
        fault = self.next_fault()
        nodes_lost_before = self._lost_events()
        stop = threading.Event()
        submitter = threading.Thread(target=self.workload, args=(stop,), daemon=True)
        submitter.start()
        try:
            times = self.inject(fault)
        finally:
            stop.set()
            submitter.join(timeout=60)
        healed = time.monotonic()
        took, verdict = self.settle(converge_s)
        gaps = self.log_gaps()
        self.counts["faults"] += 1
        for key in ("lost", "doubled", "stuck", "overlaps"):
            self.counts[key] += len(getattr(verdict, key))
        self.counts["stuck"] += len(verdict.short)  # a replica that never came back is stuck too
        self.counts["gaps"] += len(gaps)
        if fault not in NODE_FAULTS:
            self.counts["flaps"] += self._lost_events() - nodes_lost_before
        for key, value in times.items():
            self.stats[fault][key].append(value)
        if took is not None:
            self.stats[fault]["converge"].append(time.monotonic() - healed)
        status = f"converged in {took:.1f} s" if took is not None else f"NOT converged in {converge_s:.0f} s"
        measured = " ".join(f"{k}={v:.2f}s" for k, v in times.items())
        self.say(f"cycle {n}: {fault}: {status} {measured}".rstrip())
        for problem in [*verdict.lost, *verdict.doubled, *verdict.stuck, *verdict.overlaps, *verdict.short, *gaps]:
            self.say(f"  {problem}")
        if not verdict.converged or gaps:
            self.keep_logs(f"cycle-{n}-{fault}")
        self.trim()

    def keep_logs(self, name: str) -> None:
        """Copy the processes' logs as they are now beside the cluster's home (which goes at the end)."""
        kept = Path(f"{self.home}-logs") / name
        kept.mkdir(parents=True, exist_ok=True)
        for log in self.home.glob("*.log"):
            with contextlib.suppress(OSError):
                shutil.copy(log, kept / log.name)
        self.say(f"  logs kept in {kept}")

    def _lost_events(self) -> int:
        db = sqlite3.connect(f"file:{self.home / 'control' / 'corral.db'}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT COUNT(*) FROM events WHERE type = 'NodeLost'").fetchone()[0])
        except sqlite3.Error:
            return 0
        finally:
            db.close()

    def down(self) -> None:
        self.heal()
        if self.api is not None:
            self.api.close()
        self.cluster.down()
        self._remove_process_cgroups()
        shutil.rmtree(self.home, ignore_errors=True)

    def _remove_process_cgroups(self) -> None:
        """The nodelets' own cgroups go once their last process (a monitor may outlive its nodelet briefly) has."""
        root = cgroup2_root()
        if root is None:
            return
        top = root / f"{self.home.name}-procs"
        deadline = time.monotonic() + 10
        while top.exists() and time.monotonic() < deadline:
            for d in [*(p for p in top.iterdir() if p.is_dir()), top]:
                with contextlib.suppress(OSError):
                    d.rmdir()
            time.sleep(0.2)

    def report(self, cycles: int) -> str:
        head = ("detect", "replace", "converge")
        lines = [f"{'fault':<14}{'n':>4}" + "".join(f"{h + ' p50/p99/max s':>26}" for h in head)]
        for fault, s in self.stats.items():
            lines.append(f"{fault:<14}{len(s['converge']):>4}" + "".join(f"{_trio(s[h]):>26}" for h in head))
        every = {k: [v for s in self.stats.values() for v in s[k]] for k in ("detect", "replace", "converge")}
        c = self.counts
        lines.append(f"node lost without a node fault (flaps): {c['flaps']}")
        lines.append(
            f"chaos: cycles={cycles} faults={c['faults']} lost={c['lost']} doubled={c['doubled']} "
            f"stuck={c['stuck']} gaps={c['gaps']} overlaps={c['overlaps']} "
            f"detect_p99_s={percentile(every['detect'], 0.99):.2f} "
            f"replace_p99_s={percentile(every['replace'], 0.99):.2f} "
            f"converge_p99_s={percentile(every['converge'], 0.99):.2f}"
        )
        return "\n".join(lines)


def run(
    cycles: int,
    seed: int,
    nodes: int = 3,
    converge_s: float = 30.0,
    *,
    say: Callable[[str], None] = print,
    faults: tuple[str, ...] = (),
) -> Chaos:
    """Bring up a cluster, run ``cycles`` faults (of every type, or of ``faults`` only), print the report, take
    everything down."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault {', '.join(sorted(unknown))}; the faults are {', '.join(FAULTS)}")
    home = Path(f"/run/corral-chaos-{uuid.uuid4().hex[:6]}")
    chaos = Chaos(home, nodes, seed, say)
    if faults:
        chaos.faults = tuple(f for f in chaos.faults if f in faults)
        if not chaos.faults:
            raise ValueError("none of those faults can be injected on this host (a partition needs cgroup v2)")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a TERM still takes everything down
    try:
        chaos.up()
        say(f"chaos: {cycles} cycles, seed {seed}, {nodes} nodes, cluster in {home}")
        for n in range(1, cycles + 1):
            chaos.cycle(n, converge_s)
    finally:
        chaos.down()
    say(chaos.report(cycles))
    return chaos
