"""Faults that heal, with real parts (nats-server with per-node users, the control plane, real nodelets running
runc): a nodelet paused past its lease comes back and kills what it no longer owns; a NATS outage longer than
the lease loses no node; a report about another node's container changes nothing. Ground truth is `runc list`
on each node, never Corral's own state."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from api.controlplane import ControlPlane
from store.projections import ContainerState, ContainerView
from tests.builders import spec
from tests.integration.test_control_plane import Nodelets, until
from tests.natsserver import NatsServer, authorization
from tests.runcenv import needs_runc
from wire import events as ev
from wire import subjects
from wire.ids import node_stream, service_stream
from wire.spec import ServiceSpec

pytestmark = [needs_runc, pytest.mark.slow]
NODES = ("n1", "n2")
LEASE_S = 1.5


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, {"authorization": authorization(NODES)})
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def control(nats: NatsServer, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(tmp_path / "cp", nats.url, user="control", password="cp", lease_s=LEASE_S)
    await cp.start()
    yield cp
    await cp.stop()


@pytest.fixture
def nodelets(nats: NatsServer, tmp_path: Path) -> Iterator[Nodelets]:
    import uuid

    n = Nodelets(nats.url, uuid.uuid4().hex[:8], tmp_path)
    yield n
    n.cleanup()


async def service(cp: ControlPlane, replicas: int) -> str:
    sid = "00000000000000aa"
    template = spec("web", command=("sleep", "600"))
    created = ev.ServiceCreated(service_id=sid, spec=ServiceSpec(name="web", replicas=replicas, template=template))
    await cp.log.append(service_stream(sid), [created])
    return sid


async def a_service_on_every_node(control: ControlPlane, nodelets: Nodelets, *nodelet_args: str) -> str:
    """Start the nodelets, then a service with a replica on each; return its id."""
    for n in NODES:
        nodelets.start(n, *nodelet_args)
    await until(control, lambda: set(NODES) <= set(control.projection.state.nodes))
    sid = await service(control, len(NODES))
    await until(control, lambda: len(replicas(control, sid)) == len(NODES))
    return sid


def replicas(cp: ControlPlane, sid: str, state: ContainerState = ContainerState.RUNNING) -> list[ContainerView]:
    return [c for c in cp.projection.state.containers.values() if c.service_id == sid and c.state is state]


def running_everywhere(nodelets: Nodelets) -> dict[str, set[str]]:
    return {n: nodelets.running(n) for n in NODES}


async def converge(nodelets: Nodelets, want: dict[str, set[str]], timeout_s: float) -> float:
    """Wait until `runc list` on every node shows exactly ``want``; return how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(timeout_s):
        while await asyncio.to_thread(running_everywhere, nodelets) != want:  # noqa: ASYNC110 -- runc is polled
            await asyncio.sleep(0.1)
    return loop.time() - start


async def test_a_node_paused_past_its_lease_comes_back_and_kills_what_it_no_longer_owns(
    control: ControlPlane, nodelets: Nodelets
) -> None:
    sid = await a_service_on_every_node(control, nodelets, "--sync", "2")
    [old] = [c for c in replicas(control, sid) if c.node == "n1"]
    epoch = control.projection.state.nodes["n1"].epoch

    nodelets.signal("n1", signal.SIGSTOP)
    try:
        await until(control, lambda: control.projection.state.nodes["n1"].lost, timeout_s=10)
        await until(control, lambda: len([c for c in replicas(control, sid) if c.node == "n2"]) == 2, timeout_s=20)
    finally:
        nodelets.signal("n1", signal.SIGCONT)

    # Told it was lost, n1 registers again (a new epoch), is recovered and kills the replica it no longer owns.
    await until(control, lambda: not control.projection.state.nodes["n1"].lost, timeout_s=10)
    assert control.projection.state.nodes["n1"].epoch > epoch
    want = {"n1": set(), "n2": {c.id for c in replicas(control, sid)}}
    took = await converge(nodelets, want, timeout_s=15)
    print(f"the paused node's old replica killed {took:.2f} s after its recovery")
    history = [type(r.event).__name__ for r in await control.log.read_stream(node_stream("n1"))]
    assert history[-2:] == ["NodeRegistered", "NodeRecovered"], history
    await control.projection.catch_up()
    assert control.projection.state.containers[old.id].state is ContainerState.LOST  # never rewritten to exited

    # Deleting the service stops every replica, counted by runc.
    await control.log.append(service_stream(sid), [ev.ServiceDeleted(service_id=sid)])
    await converge(nodelets, {"n1": set(), "n2": set()}, timeout_s=30)


async def test_a_restarted_nodelet_kills_a_replaced_replica_at_once_not_after_its_grace(
    control: ControlPlane, nodelets: Nodelets
) -> None:
    sid = await a_service_on_every_node(control, nodelets)
    nodelets.kill9("n1")  # its container runs on under its monitor
    await until(control, lambda: len([c for c in replicas(control, sid) if c.node == "n2"]) == 2, timeout_s=20)
    nodelets.start("n1")
    # A graceful stop would take its 10 s grace (sleep ignores TERM as PID 1): at once means well inside that.
    took = await converge(nodelets, {"n1": set(), "n2": {c.id for c in replicas(control, sid)}}, timeout_s=8)
    print(f"the replaced replica killed {took:.2f} s after the nodelet restarted")


async def test_a_nats_outage_longer_than_the_lease_loses_no_node(
    control: ControlPlane, nodelets: Nodelets, nats: NatsServer
) -> None:
    sid = await a_service_on_every_node(control, nodelets, "--sync", "2")
    before = {c.id for c in replicas(control, sid)}
    position = control.projection.state.position

    nats.stop()
    await asyncio.sleep(LEASE_S * 3)  # an outage of three leases
    nats.start()

    # The nodes come back to a control plane that never judged them while it could not hear them.
    await asyncio.sleep(LEASE_S * 2)
    await control.projection.catch_up()
    since = [type(r.event).__name__ for r in await control.log.read_all(position + 1)]
    assert not {"NodeLost", "ContainerLost"} & set(since), since
    assert not any(v.lost for v in control.projection.state.nodes.values())
    assert {c.id for c in replicas(control, sid)} == before
    want = {n: {c.id for c in replicas(control, sid) if c.node == n} for n in NODES}
    await converge(nodelets, want, timeout_s=10)


async def test_a_node_cannot_end_another_nodes_container(
    control: ControlPlane, nodelets: Nodelets, nats: NatsServer
) -> None:
    import time

    import msgspec
    import nats as nats_py

    from tests.unit.test_report_refusal import CONTAINER_KINDS, report
    from wire.codec import control_reply_decoder, encode
    from wire.commands import CommandRejected, NodeEvent, Reject
    from wire.ids import new_event_id

    sid = await a_service_on_every_node(control, nodelets)
    [victim] = [c for c in replicas(control, sid) if c.node == "n2"]
    head = await control.recorder.head()
    n1_epoch = control.projection.state.nodes["n1"].epoch

    # n1's own credentials, on n1's own subject, about n2's container: every reportable kind, both ways of naming.
    nc = await nats_py.connect(nats.url, user="n1", password="p-n1", inbox_prefix=subjects.inbox_prefix("n1").encode())
    try:
        for kind in CONTAINER_KINDS:
            for named in ("n1", "n2"):
                event = msgspec.structs.replace(report(kind, 0, named), container_id=victim.id)
                forged = NodeEvent(
                    node="n1", event_id=new_event_id(), occurred_ns=time.time_ns(), event=event, epoch=n1_epoch
                )
                reply = control_reply_decoder.decode((await nc.request(subjects.evt("n1"), encode(forged), 5)).data)
                assert isinstance(reply, CommandRejected) and reply.code is Reject.NOT_OWNER, (kind, named, reply)
    finally:
        await nc.drain()
    assert await control.recorder.head() == head  # nothing appended
    refused = control.refused_reports[("n1", "other_node")] + control.refused_reports[("n1", "not_placed_here")]
    assert refused == 2 * len(CONTAINER_KINDS)
    assert victim.id in nodelets.running("n2")

    import httpx

    from api.app import create_app
    from api.tokens import Tokens

    app = create_app(control, Tokens.plain(["t"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cp") as c:
        text = (await c.get("/metrics", headers={"Authorization": "Bearer t"})).text
    assert f'corral_node_reports_refused_total{{node="n1",reason="other_node"}} {len(CONTAINER_KINDS)}.0' in text, text


async def test_a_mass_stop_never_starves_the_nodes_heartbeats(control: ControlPlane, nodelets: Nodelets) -> None:
    from tests.integration.test_control_plane import submit
    from wire.ids import container_stream

    nodelets.start("n1")
    await until(control, lambda: "n1" in control.projection.state.nodes)
    ids = [await submit(control, spec(f"s{i}", command=("sleep", "600"))) for i in range(60)]

    def states() -> set[ContainerState]:
        return {control.projection.state.containers[c].state for c in ids}

    await until(control, lambda: states() == {ContainerState.RUNNING}, timeout_s=120)
    position = control.projection.state.position
    await asyncio.gather(
        *(control.log.append(container_stream(c), [ev.ContainerStopRequested(container_id=c, grace_s=5)]) for c in ids)
    )
    await until(control, lambda: states() == {ContainerState.STOPPED}, timeout_s=60)
    since = [type(r.event).__name__ for r in await control.log.read_all(position + 1, limit=10_000)]
    assert "NodeLost" not in since
    assert nodelets.running("n1") == set()


async def test_a_start_and_a_stop_appended_but_never_sent_before_a_crash_are_sent_after_the_restart(
    nats: NatsServer, nodelets: Nodelets, tmp_path: Path
) -> None:
    from store.log import EventLog
    from store.sqlite import SqliteRecorder
    from tests.builders import cid, scheduled, submitted
    from tests.integration.test_control_plane import submit
    from wire.ids import container_stream

    data = tmp_path / "cp"
    first = ControlPlane(data, nats.url, user="control", password="cp", lease_s=LEASE_S)
    await first.start()
    nodelets.start("n1", "--sync", "600")  # no periodic sync to fall back on: only a resend can do it
    try:
        await until(first, lambda: "n1" in first.projection.state.nodes)
        old = await submit(first, spec("old", command=("sleep", "600")))
        await until(first, lambda: first.projection.state.containers[old].state is ContainerState.RUNNING)
        assert first.projection.state.nodes["n1"].epoch == 1
    finally:
        await first.stop()
    # What a crash between an append and its send leaves: a placement and a stop in the log, neither sent.
    recorder = await SqliteRecorder.open(data / "corral.db")
    log = EventLog(recorder)
    new = cid(0xABC)
    await log.append(container_stream(new), [submitted(0xABC, spec("new", command=("sleep", "600"))), scheduled(0xABC)])
    await log.append(container_stream(old), [ev.ContainerStopRequested(container_id=old, grace_s=0)])
    await recorder.close()

    again = ControlPlane(data, nats.url, user="control", password="cp", lease_s=LEASE_S)
    await again.start()
    try:
        state = again.projection.state
        await until(
            again,
            lambda: (
                state.containers[new].state is ContainerState.RUNNING
                and state.containers[old].state is ContainerState.STOPPED
            ),
            timeout_s=10,
        )
        assert nodelets.running("n1") == {new}
    finally:
        await again.stop()


async def test_a_report_a_killed_nodelet_left_unacked_is_sent_when_it_starts_again(
    control: ControlPlane, nodelets: Nodelets
) -> None:
    from nodelet.outbox import Outbox
    from tests.integration.test_control_plane import submit
    from wire.ids import container_stream, new_event_id

    nodelets.start("n1")
    await until(control, lambda: "n1" in control.projection.state.nodes)
    cid = await submit(control, spec("a", command=("sleep", "600")))
    await until(control, lambda: control.projection.state.containers[cid].state is ContainerState.RUNNING)
    nodelets.kill9("n1")  # its container runs on under its monitor
    # What the killed process had kept in its outbox and never got acked: a report only it could make.
    event_id = new_event_id()
    box = Outbox(Path(f"/run/corral-cp-{nodelets.tag}-n1/outbox"))
    await box.put(event_id, 1, ev.ContainerThrottled(container_id=cid, node="n1", throttled_ratio=0.5))
    nodelets.start("n1")
    await until(control, lambda: control.projection.state.containers[cid].throttled, timeout_s=20)
    reports = [r for r in await control.log.read_stream(container_stream(cid)) if r.event_id == event_id]
    assert len(reports) == 1 and isinstance(reports[0].event, ev.ContainerThrottled)
    async with asyncio.timeout(10):  # and the nodelet forgets it once the ack is back
        while any(e.event_id == event_id for e in await box.pending()):  # noqa: ASYNC110 -- files are polled
            await asyncio.sleep(0.05)
