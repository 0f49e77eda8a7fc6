"""Partitions, made by the test itself: a nodelet in a network namespace of its own, NATS reachable over a veth
pair, cut with nftables drop rules (both directions, or one), then healed. A service that asks for at most one
copy never has more replicas running than it asked for (counted with `runc list` every 0.1 s), and after the heal
the cut-off node comes back and the cluster converges. Traffic goes only to the test's own namespace and
addresses; everything is removed afterwards."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from api.controlplane import ControlPlane
from store.projections import ContainerState
from tests.builders import spec
from tests.integration.test_control_plane import Nodelets, until
from tests.integration.test_faults import replicas
from tests.natsserver import NatsServer, authorization
from tests.runcenv import needs_runc
from wire import events as ev
from wire.ids import service_stream
from wire.spec import ServiceSpec

pytestmark = [
    needs_runc,
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("nft") and shutil.which("nsenter")), reason="needs nftables and nsenter"),
]
NODES = ("n1", "n2")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


class Namespace:
    """A network namespace joined to the host by a veth pair on a /30 of its own."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name, self.host_if, self.ns_if = f"corral-{tag}", f"crh{tag}", f"crn{tag}"
        net = random.Random(tag).randrange(0, 1 << 14) * 4  # 10.231.0.0/16, a /30 at random
        self.host_ip = f"10.231.{net >> 8}.{(net & 255) + 1}"
        self.ns_ip = f"10.231.{net >> 8}.{(net & 255) + 2}"

    def create(self) -> None:
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.name)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        self.run("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self.run("ip", "link", "set", self.ns_if, "up")
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *args: str) -> None:
        sh("ip", "netns", "exec", self.name, *args)

    def enter(self) -> tuple[str, ...]:
        """A prefix that runs a command in the namespace's network only (its mounts stay the host's, so the
        nodelet sees the real cgroup and runc paths)."""
        return ("nsenter", f"--net=/run/netns/{self.name}")

    def cut(self, direction: str) -> None:
        """Drop what leaves the namespace ('out'), what enters it ('in'), or both."""
        self.run("nft", "add", "table", "inet", "cut")
        hooks = {"out": ["output"], "in": ["input"], "both": ["input", "output"]}[direction]
        for hook in hooks:
            chain = f"{{ type filter hook {hook} priority 0; policy drop; }}"
            self.run("nft", "add", "chain", "inet", "cut", hook, chain)

    def heal(self) -> None:
        self.run("nft", "delete", "table", "inet", "cut")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


@pytest.fixture
def netns() -> Iterator[Namespace]:
    ns = Namespace()
    try:
        ns.create()
        yield ns
    finally:
        ns.remove()


@pytest.fixture
def nats(tmp_path: Path, netns: Namespace) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, {"authorization": authorization(NODES)}, host=netns.host_ip)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def control(nats: NatsServer, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(tmp_path / "cp", nats.url, user="control", password="cp", lease_s=2.5)
    await cp.start()
    yield cp
    await cp.stop()


@pytest.fixture
def nodelets(nats: NatsServer, tmp_path: Path) -> Iterator[Nodelets]:
    n = Nodelets(nats.url, uuid.uuid4().hex[:8], tmp_path)
    yield n
    n.cleanup()


@pytest.mark.parametrize("direction", ["both", "out", "in"])
async def test_a_partitioned_node_never_leaves_two_copies_and_comes_back(
    direction: str, control: ControlPlane, nodelets: Nodelets, netns: Namespace
) -> None:
    nodelets.start("n1", "--heartbeat", "0.5", "--sync", "2", wrap=netns.enter())
    nodelets.start("n2", "--heartbeat", "0.5", "--sync", "2")
    await until(control, lambda: set(NODES) <= set(control.projection.state.nodes))
    sid = "00000000000000ab"
    template = spec("db", command=("sleep", "600"), at_most_one=True)
    created = ev.ServiceCreated(service_id=sid, spec=ServiceSpec(name="db", replicas=2, template=template))
    await control.log.append(service_stream(sid), [created])
    await until(control, lambda: sorted(c.node or "" for c in replicas(control, sid)) == ["n1", "n2"], timeout_s=30)
    [cut_off] = [c.id for c in replicas(control, sid) if c.node == "n1"]

    def count(ids: set[str]) -> int:  # on a worker thread: it only reads runc
        return sum(len(nodelets.running(n) & ids) for n in NODES)

    async def running() -> int:
        return await asyncio.to_thread(count, _ids(control, sid))  # the ids read on the loop

    most = 0
    netns.cut(direction)
    try:
        # Cut off: n1 stops its copy itself, before it is lost and its replica replaced on n2.
        async with asyncio.timeout(20):
            while not (
                control.projection.state.nodes["n1"].lost and len(nodelets.running("n2") & _ids(control, sid)) == 2
            ):
                most = max(most, await running())
                await asyncio.sleep(0.1)
        assert cut_off not in nodelets.running("n1")
    finally:
        netns.heal()
    assert most <= 2, f"{most} copies ran at once for 2 replicas"

    # Healed: n1 registers again and is recovered; two replicas run, counted by runc, as the API says.
    await until(control, lambda: not control.projection.state.nodes["n1"].lost, timeout_s=20)
    async with asyncio.timeout(20):
        while await running() != 2:  # noqa: ASYNC110 -- runc is polled from outside
            await asyncio.sleep(0.1)
    await control.projection.catch_up()
    assert control.projection.state.containers[cut_off].state is ContainerState.LOST
    assert {c.id for c in replicas(control, sid)} == {
        cid for n in NODES for cid in nodelets.running(n) if cid in _ids(control, sid)
    }


def _ids(control: ControlPlane, sid: str) -> set[str]:
    return {c.id for c in control.projection.state.containers.values() if c.service_id == sid}
