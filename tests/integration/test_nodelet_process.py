"""kill -9 the nodelet while its containers run: they keep running, a restarted nodelet re-adopts them without
restarting them, and reports the exits that happened while it was down, with their real codes.

Real nats-server (with per-node permissions), real ``python -m nodelet`` processes, real runc/conmon/cgroups.
The control plane arrives with a later issue; ``nodelet.standin.StandInControlPlane`` is the test's peer on
NATS (it answers registration and sync, acks and records events), not a mock of anything.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import pytest

from nodelet.purge import purge_node
from nodelet.standin import StandInControlPlane
from tests.builders import spec
from tests.natsserver import nats_server
from wire import events as ev
from wire import subjects
from wire.codec import node_message_decoder, reply_decoder
from wire.commands import (
    CommandAccepted,
    CommandRejected,
    StartContainer,
    StatsSample,
    StopContainer,
)
from wire.ids import new_command_id, new_container_id

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("conmon"),
    reason="needs root, runc and conmon (make test installs them)",
)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    users = {
        "users": [
            {"user": "control", "password": "cp"},
            {"user": "n1", "password": "p1", "permissions": subjects.node_permissions("n1")},
        ]
    }
    with nats_server(tmp_path, {"authorization": users}) as url:
        yield url


@pytest.fixture
async def control(nats_url: str) -> AsyncIterator[StandInControlPlane]:
    nc = await nats.connect(nats_url, user="control", password="cp")
    cp = StandInControlPlane(nc)
    await cp.serve()
    yield cp
    if not nc.is_closed:
        await nc.drain()


class NodeletProcess:
    def __init__(self, nats_url: str, tag: str, log: Path) -> None:
        self.args = [
            sys.executable,
            "-m",
            "nodelet",
            "--node",
            "n1",
            "--nats",
            nats_url,
            "--user",
            "n1",
            "--data-dir",
            f"/run/corral-e2e-{tag}",
            "--cgroup-root",
            f"/corral-e2e-{tag}",
            "--heartbeat",
            "0.2",
        ]
        self.tag = tag
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            env = {**os.environ, "CORRAL_NATS_PASSWORD": "p1"}
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        """Kill any container left, unmount, and remove state and cgroups."""
        self.stop()
        purge_node(Path(f"/run/corral-e2e-{self.tag}"), f"/corral-e2e-{self.tag}")


@pytest.fixture
def nodelet(nats_url: str, tag: str, tmp_path: Path) -> Iterator[NodeletProcess]:
    n = NodeletProcess(nats_url, tag, tmp_path / "nodelet.log")
    yield n
    n.cleanup()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def start(s: object) -> StartContainer:
    return StartContainer(command_id=new_command_id(), epoch=1, container_id=new_container_id(), spec=s)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_kill9_readopt_and_report_missed_exits(control: StandInControlPlane, nodelet: NodeletProcess) -> None:
    nodelet.start()
    async with asyncio.timeout(30):
        await control.registered.wait()
    long = start(spec("long", command=("sleep", "60")))
    short = start(spec("short", command=("sh", "-c", "sleep 1.5; exit 3")))
    for cmd in (long, short):
        assert await control.command("n1", cmd) == CommandAccepted(command_id=cmd.command_id)
        control.desired[cmd.container_id] = cmd
    started = {}
    for _ in range(2):
        e = await control.next_event()
        assert isinstance(e, ev.ContainerStarted)
        started[e.container_id] = e.pid
    assert all(alive(pid) for pid in started.values())

    nodelet.kill9()
    assert alive(started[long.container_id]), "a nodelet's death must not harm its containers"
    await asyncio.sleep(2.5)  # the short container exits while no nodelet runs
    assert not alive(started[short.container_id])
    assert alive(started[long.container_id])

    control.registered.clear()
    nodelet.start()
    async with asyncio.timeout(30):
        await control.registered.wait()
    exited = await control.next_event()
    assert isinstance(exited, ev.ContainerExited)
    assert (exited.container_id, exited.exit_code) == (short.container_id, 3)
    assert alive(started[long.container_id])
    async with asyncio.timeout(10), control.synced:
        await control.synced.wait_for(lambda: len(control.syncs) >= 2)
    assert control.syncs[-1].running == (long.container_id,)
    assert control.syncs[-1].epoch == 2

    # The re-adopted container obeys the new epoch's commands; the old epoch is fenced off.
    stale = StopContainer(command_id=new_command_id(), epoch=1, container_id=long.container_id, grace_s=0.1)
    assert getattr(await control.command("n1", stale), "code", None) == "stale_epoch"
    stop = StopContainer(command_id=new_command_id(), epoch=2, container_id=long.container_id, grace_s=0.1)
    assert await control.command("n1", stop) == CommandAccepted(command_id=stop.command_id)
    exited = await control.next_event()
    assert isinstance(exited, ev.ContainerExited)
    assert (exited.container_id, exited.exit_code) == (long.container_id, 137)
    assert not any(isinstance(e, ev.ContainerStarted) for e in list(control.events.values())[2:]), "nothing restarted"


@pytest.mark.slow
async def test_a_restarted_nodelet_reports_the_end_of_a_throttling_that_began_before(
    control: StandInControlPlane, nodelet: NodeletProcess
) -> None:
    """Throttled, then the nodelet dies, then the container goes idle: the new nodelet starts its detector from
    what the control plane holds (throttled) and reports the end, instead of leaving it throttled for good."""
    nodelet.start()
    async with asyncio.timeout(30):
        await control.registered.wait()
    spin = "end=$(($(date +%s) + 8)); while [ $(date +%s) -lt $end ]; do :; done; sleep 600"
    busy = start(spec("busy", command=("sh", "-c", spin), cpu_request_millis=100, cpu_limit_millis=100))
    assert await control.command("n1", busy) == CommandAccepted(command_id=busy.command_id)
    control.desired[busy.container_id] = busy
    assert isinstance(await control.next_event(), ev.ContainerStarted)
    throttled = await control.next_event(timeout_s=8)
    assert isinstance(throttled, ev.ContainerThrottled)
    nodelet.kill9()
    await asyncio.sleep(8)  # the spin is over: idle from now on, while no nodelet watches

    control.registered.clear()
    nodelet.start()
    async with asyncio.timeout(30):
        await control.registered.wait()
    unthrottled = await control.next_event(timeout_s=20)
    assert isinstance(unthrottled, ev.ContainerUnthrottled)
    assert unthrottled.container_id == busy.container_id
    assert control.throttled == set()


@pytest.mark.slow
async def test_throttling_becomes_events_and_samples_flow(
    control: StandInControlPlane, nodelet: NodeletProcess, nats_url: str
) -> None:
    samples: list[bytes] = []
    got_sample = asyncio.Event()

    async def on_stats(msg: object) -> None:
        samples.append(msg.data)  # type: ignore[attr-defined]
        got_sample.set()

    await control.nc.subscribe(subjects.stats("n1"), cb=on_stats)
    nodelet.start()
    async with asyncio.timeout(30):
        await control.registered.wait()
    # A spinning shell under a 10 % quota is throttled in nearly every period.
    busy = start(
        spec("busy", command=("sh", "-c", "while :; do :; done"), cpu_request_millis=100, cpu_limit_millis=100)
    )
    assert await control.command("n1", busy) == CommandAccepted(command_id=busy.command_id)
    assert isinstance(await control.next_event(), ev.ContainerStarted)
    throttled = await control.next_event(timeout_s=20)
    assert isinstance(throttled, ev.ContainerThrottled)
    assert throttled.container_id == busy.container_id
    assert throttled.throttled_ratio > 0.5
    async with asyncio.timeout(10):
        await got_sample.wait()
    sample = node_message_decoder.decode(samples[-1])
    assert isinstance(sample, StatsSample)
    assert busy.container_id in [c.container_id for c in sample.containers]
    stop = StopContainer(command_id=new_command_id(), epoch=control.epoch, container_id=busy.container_id, grace_s=0)
    assert await control.command("n1", stop) == CommandAccepted(command_id=stop.command_id)
    exited = await control.next_event()
    assert isinstance(exited, ev.ContainerExited)


@pytest.mark.slow
async def test_malformed_commands_get_error_replies(control: StandInControlPlane, nodelet: NodeletProcess) -> None:
    nodelet.start()
    async with asyncio.timeout(30):
        await control.registered.wait()
    bad = {
        "type": "StartContainer",
        "command_id": new_command_id().bytes,
        "epoch": control.epoch,
        "container_id": new_container_id(),
        "spec": {"name": "Not_A_Label", "image": "busybox"},
    }
    for payload, field in (
        (msgspec.msgpack.encode(bad), "name"),
        (
            msgspec.msgpack.encode(
                {**bad, "container_id": "../../etc/passwd", "spec": {"name": "ok", "image": "busybox"}}
            ),
            "container_id",
        ),
        (
            msgspec.msgpack.encode({**bad, "spec": {"name": "ok", "image": "busybox", "cpu_limit_millis": 0}}),
            "cpu_limit_millis",
        ),
        (b"\xc1 not msgpack", "MessagePack"),
    ):
        reply = reply_decoder.decode((await control.nc.request(subjects.cmd("n1"), payload, timeout=10)).data)
        assert isinstance(reply, CommandRejected), reply
        assert reply.code == "invalid_command"
        assert field in reply.message
        if payload.startswith(b"\x85"):  # a map: the command id could be read, so the reply carries it
            assert reply.command_id is not None
    assert control.arrived.empty()


async def test_term_stops_the_nodelet_while_its_reports_find_no_control_plane(
    control: StandInControlPlane, nodelet: NodeletProcess
) -> None:
    """Reports retried against a control plane that is gone (no responders, answered at once) must not hold
    the nodelet up when it is told to stop: Python 3.11's wait_for can drop that cancellation (gh-86296)."""
    nodelet.start()
    async with asyncio.timeout(30):
        await control.registered.wait()
    cmds = [start(spec(f"c{i}", command=("sleep", "60"))) for i in range(4)]
    for cmd in cmds:
        assert isinstance(await control.command("n1", cmd), CommandAccepted)
        control.desired[cmd.container_id] = cmd
    for _ in cmds:
        assert isinstance(await control.next_event(), ev.ContainerStarted)
    await control.nc.drain()  # the control plane is gone; the nodelet's sync and reports now fail at once
    assert nodelet.proc is not None
    for cmd in cmds:  # their ends are reported, and retried, from now on
        os.kill(
            int((Path(f"/run/corral-e2e-{nodelet.tag}") / "containers" / cmd.container_id / "pidfile").read_text()), 9
        )
    await asyncio.sleep(1.5)
    nodelet.proc.terminate()
    assert await asyncio.to_thread(nodelet.proc.wait, 15) == 0
