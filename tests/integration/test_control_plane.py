"""The control plane end to end, with real parts: nats-server with per-node users, the control plane (store,
scheduler, NATS wiring), and a real ``python -m nodelet`` running real runc containers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from api.controlplane import ControlPlane
from nodelet.cgroups import detect_layout
from nodelet.purge import purge_node
from store.projections import ContainerState, ContainerView
from tests.builders import spec
from tests.natsserver import authorization, nats_server
from tests.runcenv import needs_runc
from wire import events as ev
from wire.burst import BurstConfig, BurstStrategy
from wire.ids import BURST_POLICY_STREAM, container_stream, new_container_id
from wire.spec import BurstPolicy, ContainerSpec

ROOT = Path(__file__).resolve().parents[2]
pytestmark = needs_runc


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with nats_server(tmp_path, {"authorization": authorization(("n1", "n2", "n3"))}) as url:
        yield url


@pytest.fixture
async def control(nats_url: str, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(tmp_path / "cp", nats_url, user="control", password="cp", lease_s=1.5)
    await cp.start()
    yield cp
    await cp.stop()


class Nodelets:
    def __init__(self, nats_url: str, tag: str, logs: Path) -> None:
        self.nats_url, self.tag, self.logs = nats_url, tag, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str, *extra: str, wrap: tuple[str, ...] = ()) -> None:
        """Start ``node``'s nodelet (``wrap``: a command it runs under, e.g. nsenter into a network namespace)."""
        with (self.logs / f"{node}.log").open("ab") as out:
            self.procs[node] = subprocess.Popen(
                [
                    *wrap,
                    sys.executable,
                    "-m",
                    "nodelet",
                    "--node",
                    node,
                    "--nats",
                    self.nats_url,
                    "--user",
                    node,
                    "--data-dir",
                    f"/run/corral-cp-{self.tag}-{node}",
                    "--cgroup-root",
                    f"/corral-cp-{self.tag}",
                    "--heartbeat",
                    "0.2",
                    *extra,
                ],
                cwd=ROOT,
                env={**os.environ, "CORRAL_NATS_PASSWORD": f"p-{node}"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def running(self, node: str) -> set[str]:
        """Ground truth: the ids of the containers runc says run on ``node`` (never Corral's own state)."""
        root = Path(f"/run/corral-cp-{self.tag}-{node}/rt/runc")
        if not root.exists():
            return set()
        out = subprocess.run(["runc", "--root", str(root), "list", "-f", "json"], capture_output=True, check=True)
        return {c["id"] for c in json.loads(out.stdout or b"null") or [] if c["status"] == "running"}

    def signal(self, node: str, sig: signal.Signals) -> None:
        self.procs[node].send_signal(sig)

    def kill9(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGKILL)
        self.procs[node].wait(timeout=10)

    def cleanup(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a paused one could not take its TERM
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        nodes = list(self.procs)
        for i, node in enumerate(nodes):
            last = i == len(nodes) - 1  # the cgroup root is shared: remove it after the last node
            purge_node(Path(f"/run/corral-cp-{self.tag}-{node}"), f"/corral-cp-{self.tag}" if last else None)


@pytest.fixture
def nodelets(nats_url: str, tag: str, tmp_path: Path) -> Iterator[Nodelets]:
    n = Nodelets(nats_url, tag, tmp_path)
    yield n
    n.cleanup()


async def until(cp: ControlPlane, check: object, timeout_s: float = 20) -> None:
    """Wait for the control plane's state to satisfy ``check``, waking on each new event (no sleeps)."""
    async with asyncio.timeout(timeout_s):
        while True:
            await cp.projection.catch_up()
            if check():  # type: ignore[operator]
                return
            await cp.recorder.wait_beyond(cp.projection.state.position)


def view(cp: ControlPlane, cid: str) -> ContainerView | None:
    return cp.projection.state.containers.get(cid)


async def submit(cp: ControlPlane, s: ContainerSpec) -> str:
    cid = new_container_id()
    await cp.log.append(container_stream(cid), [ev.ContainerSubmitted(container_id=cid, spec=s)])
    return cid


@pytest.mark.slow
async def test_submit_runs_exits_with_its_code(control: ControlPlane, nodelets: Nodelets) -> None:
    nodelets.start("n1")
    await until(control, lambda: "n1" in control.projection.state.nodes)
    cid = await submit(control, spec("hello", command=("sh", "-c", "echo hi; sleep 0.3; exit 42")))
    await until(control, lambda: (v := view(control, cid)) is not None and v.state is ContainerState.EXITED)
    v = view(control, cid)
    assert v is not None
    assert (v.node, v.exit_code, v.pid is not None) == ("n1", 42, True)
    history = [type(r.event).__name__ for r in await control.log.read_stream(container_stream(cid))]
    assert history == ["ContainerSubmitted", "ContainerScheduled", "ContainerStarted", "ContainerExited"]


@pytest.mark.slow
async def test_a_dead_node_is_lost_and_its_service_replicas_run_elsewhere(
    control: ControlPlane, nodelets: Nodelets
) -> None:
    from wire.ids import service_stream
    from wire.spec import ServiceSpec

    nodelets.start("n1")
    nodelets.start("n2")
    await until(control, lambda: {"n1", "n2"} <= set(control.projection.state.nodes))
    svc = "00000000000000aa"
    await control.log.append(
        service_stream(svc),
        [
            ev.ServiceCreated(
                service_id=svc, spec=ServiceSpec(name="web", replicas=2, template=spec("web", command=("sleep", "600")))
            )
        ],
    )

    def running() -> list[ContainerView]:
        return [
            c
            for c in control.projection.state.containers.values()
            if c.service_id == svc and c.state is ContainerState.RUNNING
        ]

    await until(control, lambda: len(running()) == 2)
    assert sorted(c.node for c in running()) == ["n1", "n2"]  # type: ignore[type-var]
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    nodelets.kill9("n1")
    await until(control, lambda: control.projection.state.nodes["n1"].lost)
    detected = loop.time() - killed_at
    await until(control, lambda: len(running()) == 2 and all(c.node == "n2" for c in running()))
    recovered = loop.time() - killed_at
    lost = [c for c in control.projection.state.containers.values() if c.state is ContainerState.LOST]
    assert len(lost) == 1
    print(f"node lost detected after {detected:.2f} s; replicas running elsewhere after {recovered:.2f} s")


@pytest.mark.slow
async def test_restarting_the_control_plane_rebuilds_state_and_leaves_containers_alone(
    nats_url: str, tmp_path: Path, nodelets: Nodelets
) -> None:
    data = tmp_path / "restart"
    cp = ControlPlane(data, nats_url, user="control", password="cp", lease_s=1.5)
    await cp.start()
    nodelets.start("n1")
    await until(cp, lambda: "n1" in cp.projection.state.nodes)
    cid = await submit(cp, spec("long", command=("sleep", "600")))
    await until(cp, lambda: (v := view(cp, cid)) is not None and v.state is ContainerState.RUNNING)
    before = view(cp, cid)
    assert before is not None
    await cp.stop()

    again = ControlPlane(data, nats_url, user="control", password="cp", lease_s=1.5)
    await again.start()
    try:
        after = view(again, cid)
        assert after == before, "the state is the log's replay"
        assert Path(f"/proc/{before.pid}").exists(), "the container kept running"
        # Heartbeats keep the node: after two lease periods it is still there, the container still running.
        await asyncio.sleep(3.2)
        await again.projection.catch_up()
        assert not again.projection.state.nodes["n1"].lost
        assert view(again, cid) == before
        recent, _ = again.telemetry.container(cid)  # samples flow to the bounded table, not the log
        assert recent and recent[-1].nr_periods >= 0 and recent[-1].memory_bytes > 0
        assert again.telemetry.node("n1")[0]
        await again.log.append(container_stream(cid), [ev.ContainerStopRequested(container_id=cid, grace_s=0.2)])
        await until(again, lambda: (v := view(again, cid)) is not None and v.state is ContainerState.STOPPED)
        assert view(again, cid).exit_code == 137  # type: ignore[union-attr]
    finally:
        await again.stop()


@pytest.mark.slow
async def test_over_http_a_service_spreads_and_stop_and_remove_release_cpus(
    control: ControlPlane, nodelets: Nodelets
) -> None:
    import httpx
    import uvicorn

    from api.app import create_app
    from api.tokens import Tokens
    from tests.natsserver import free_port

    for n in ("n1", "n2", "n3"):
        nodelets.start(n)
    await until(control, lambda: {"n1", "n2", "n3"} <= set(control.projection.state.nodes))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(control, Tokens.plain(["t"])),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer t"}) as c:
            async with asyncio.timeout(10):
                while not server.started:  # noqa: ASYNC110 -- uvicorn exposes a flag, not an event
                    await asyncio.sleep(0.01)
            template = {"name": "web", "image": "busybox", "command": ["sleep", "600"], "cpu_request_millis": 100}
            r = await c.post("/v1/services", json={"name": "web", "replicas": 3, "template": template})
            assert r.status_code == 201
            sid = r.json()["id"]

            def replicas() -> list[ContainerView]:
                return [
                    v
                    for v in control.projection.state.containers.values()
                    if v.service_id == sid and v.state is ContainerState.RUNNING
                ]

            await until(control, lambda: len(replicas()) == 3)
            assert sorted(v.node for v in replicas()) == ["n1", "n2", "n3"]  # type: ignore[type-var]

            # An exclusive container holds a CPU; stopping and removing it gives the CPU back.
            db = {
                "name": "db",
                "image": "busybox",
                "command": ["sleep", "600"],
                "qos": "LSR",
                "cpu_request_millis": 1000,
                "cpu_limit_millis": 1000,
                "memory_limit_bytes": 64 << 20,
            }
            cid = (await c.post("/v1/containers", json=db)).json()["id"]
            await until(control, lambda: (v := view(control, cid)) is not None and v.state is ContainerState.RUNNING)
            placed = view(control, cid)
            assert placed is not None and placed.node is not None and len(placed.cpuset) == 1
            node = control.projection.state.nodes[placed.node]
            assert node.exclusive_cpus == {placed.cpuset[0]: cid}
            assert (await c.delete(f"/v1/containers/{cid}", params={"grace": 0})).status_code == 202
            await until(control, lambda: (v := view(control, cid)) is not None and v.state is ContainerState.STOPPED)
            assert control.projection.state.nodes[placed.node].exclusive_cpus == {}
            assert (await c.post(f"/v1/containers/{cid}/remove")).status_code == 202
            assert (await c.get(f"/v1/containers/{cid}")).status_code == 404
            history = [type(r.event).__name__ for r in await control.log.read_stream(container_stream(cid))]
            assert history[-1] == "ContainerRemoved"
            assert (await c.delete(f"/v1/services/{sid}")).status_code == 202
            await until(control, lambda: not replicas())
    finally:
        server.should_exit = True
        await serving


# --- CPU Burst through the platform: the policy reaches a running container, read back from its cgroup files ---


def bandwidth(tag: str, cid: str) -> tuple[int, int]:
    """(quota, burst) in µs, read from the container's cgroup files: the ground truth."""
    layout = detect_layout()
    path = f"/corral-cp-{tag}/n1/{cid}"
    if layout.version == 1:
        quota = int(Path(layout.file("cpu.cfs_quota_us", path)).read_text())
        burst = int(Path(layout.file("cpu.cfs_burst_us", path)).read_text())
    else:
        quota = int(Path(layout.file("cpu.max", path)).read_text().split()[0])
        burst = int(Path(layout.file("cpu.max.burst", path)).read_text())
    return quota, burst


async def set_policy(cp: ControlPlane, policy: BurstPolicy) -> None:
    config = BurstConfig(cluster=BurstStrategy(policy=policy))
    await cp.log.append(BURST_POLICY_STREAM, [ev.BurstPolicyChanged(config=config)])


async def files_until(tag: str, cid: str, check: object, timeout_s: float = 30) -> tuple[int, int]:
    async with asyncio.timeout(timeout_s):
        while True:
            seen = await asyncio.to_thread(bandwidth, tag, cid)
            if check(*seen):  # type: ignore[operator]
                return seen
            await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_burst_us") and not os.path.exists("/sys/fs/cgroup/cpu.max.burst"),
    reason="the kernel has no CPU burst",
)
async def test_burst_policies_reach_a_running_container_without_a_restart(
    control: ControlPlane, nodelets: Nodelets, tag: str
) -> None:
    nodelets.start("n1")
    await until(control, lambda: "n1" in control.projection.state.nodes)
    busy = spec("busy", command=("sh", "-c", "while :; do :; done"), cpu_request_millis=100, cpu_limit_millis=500)
    cid = await submit(control, busy)
    await until(control, lambda: (v := view(control, cid)) is not None and v.state is ContainerState.RUNNING)
    assert await asyncio.to_thread(bandwidth, tag, cid) == (50_000, 0)  # no policy yet: the limit's quota

    # cpuBurstOnly: 1000 % of the limit is 10x the quota, which the kernel refuses: clamped to the quota.
    await set_policy(control, BurstPolicy.CPU_BURST_ONLY)
    assert await files_until(tag, cid, lambda q, b: b > 0) == (50_000, 50_000)
    await until(control, lambda: (v := view(control, cid)) is not None and v.burst_us == 50_000)
    v = view(control, cid)
    assert v is not None and "clamped to the quota" in v.burst_reason

    # auto: throttled every second under half a CPU, on a node with CPU to spare, the quota grows.
    await set_policy(control, BurstPolicy.AUTO)
    quota, burst = await files_until(tag, cid, lambda q, b: q >= 60_000)
    assert 60_000 <= quota <= 150_000 and burst == quota  # within [base, 300 % of it]; the burst follows it
    await until(control, lambda: (v := view(control, cid)) is not None and (v.cfs_quota_us or 0) >= 60_000)

    # none: both back to what the limit gives.
    await set_policy(control, BurstPolicy.NONE)
    assert await files_until(tag, cid, lambda q, b: q == 50_000 and b == 0) == (50_000, 0)
    await until(control, lambda: (v := view(control, cid)) is not None and v.cfs_quota_us == 50_000 and v.burst_us == 0)
    history = [r.event for r in await control.log.read_stream(container_stream(cid))]
    reasons = [e.reason for e in history if isinstance(e, ev.CfsQuotaScaled)]
    assert reasons[0] == "scale up" and reasons[-1] == "reset"


def cpu_files(tag: str, cid: str) -> tuple[int, int]:
    """(shares or weight, quota) as the container's cgroup files hold them."""
    layout = detect_layout()
    path = f"/corral-cp-{tag}/n1/{cid}"
    if layout.version == 1:
        shares = int(Path(layout.file("cpu.shares", path)).read_text())
        return shares, int(Path(layout.file("cpu.cfs_quota_us", path)).read_text())
    weight = int(Path(layout.file("cpu.weight", path)).read_text())
    return weight, int(Path(layout.file("cpu.max", path)).read_text().split()[0])


@pytest.mark.slow
async def test_a_running_container_is_resized_in_place(control: ControlPlane, nodelets: Nodelets, tag: str) -> None:
    nodelets.start("n1")
    await until(control, lambda: "n1" in control.projection.state.nodes)
    cid = await submit(control, spec("web", command=("sleep", "600"), cpu_request_millis=500, cpu_limit_millis=1000))
    await until(control, lambda: (v := view(control, cid)) is not None and v.state is ContainerState.RUNNING)
    pid = view(control, cid).pid  # type: ignore[union-attr]
    before = await asyncio.to_thread(cpu_files, tag, cid)
    assert before[1] == 100_000

    resized = await control.scheduler.applier.resize(cid, 1500, 2000)
    assert isinstance(resized, ev.ContainerResized)
    async with asyncio.timeout(20):
        while (now := await asyncio.to_thread(cpu_files, tag, cid))[1] != 200_000:  # noqa: ASYNC110 -- files
            await asyncio.sleep(0.1)
    assert now[0] > before[0]  # the shares (or weight) follow the request
    v = view(control, cid)
    assert v is not None and v.pid == pid and v.state is ContainerState.RUNNING  # in place: the same process
    assert control.projection.state.nodes["n1"].allocations[cid].resources.cpu_millis == 1500
    await until(control, lambda: (x := view(control, cid)) is not None and x.cfs_quota_us == 200_000)
