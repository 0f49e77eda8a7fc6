"""The node service with real runc, conmon and cgroups: start, exit codes, stop, burst, bad commands that
leave nothing behind, idempotent commands, and re-adoption by a restarted service."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nodelet.cgroups import Cgroups, detect_layout, format_cpulist
from nodelet.images import ImageStore
from nodelet.pull import Puller
from nodelet.runtime import RuncRuntime, RuntimePaths
from nodelet.service import NodeConfig, NodeService
from tests.builders import spec
from tests.unit.test_image_import import Image, file, layer, symlink, write_tar
from wire import events as ev
from wire.codec import encode
from wire.commands import (
    AuditContainer,
    AuditReply,
    CommandAccepted,
    CommandRejected,
    GetLogs,
    LogsReply,
    Reject,
    RemoveContainer,
    StartContainer,
    StopContainer,
    UpdateResources,
)
from wire.ids import new_command_id, new_container_id
from wire.pss import Enforce, judge
from wire.spec import Capabilities, ContainerSpec, Mount

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("conmon") or not Path("/sys/fs/cgroup").is_dir(),
    reason="needs root, runc, conmon and cgroups (make test installs them)",
)


class Node:
    """A node service over real parts, and the events it emitted."""

    def __init__(self, root: Path, cgroup_root: str) -> None:
        self.root = root
        self.cgroup_root = cgroup_root
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.service = self.make_service()

    def make_service(self, parallel_starts: int = 8, **config: Any) -> NodeService:
        async def emit(e: ev.Event) -> None:
            await self.events.put(e)

        config = NodeConfig(
            node="n1",
            data_dir=str(self.root / "data"),
            cgroup_root=self.cgroup_root,
            cpus=tuple(range(os.cpu_count() or 1)),
            parallel_starts=parallel_starts,
            **{"allowed_host_mounts": ("/srv",), **config},
        )
        service = NodeService(
            config,
            runtime=RuncRuntime(RuntimePaths(self.root / "rt")),
            images=ImageStore(self.root / "images"),
            cgroups=Cgroups(detect_layout()),
            emit=emit,
        )
        service.epoch = 1
        return service

    async def next_event(self, timeout_s: float = 15) -> ev.Event:
        async with asyncio.timeout(timeout_s):
            return await self.events.get()

    async def output(self, container_id: str) -> list[str]:
        """The text of each record of the container's log."""
        reply = await self.service.handle(GetLogs(command_id=new_command_id(), container_id=container_id))
        assert isinstance(reply, LogsReply)
        return [line.split(" ", 3)[3] for line in reply.lines]

    async def run_to_exit(self, s: ContainerSpec) -> list[str]:
        """Start ``s``, wait until it has exited, and return its output."""
        cmd = self.start(s)
        assert await self.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
        while not isinstance(await self.next_event(), ev.ContainerExited):
            pass
        return await self.output(cmd.container_id)

    def start(self, s: ContainerSpec, cpuset: tuple[int, ...] = (), **kw: object) -> StartContainer:
        return StartContainer(
            command_id=new_command_id(), epoch=1, container_id=new_container_id(), spec=s, cpuset=cpuset, **kw
        )  # type: ignore[arg-type]

    def cgroup_dirs(self) -> list[Path]:
        name = self.cgroup_root.strip("/")
        return [d for d in Path("/sys/fs/cgroup").glob(f"*/{name}/n1/*") if d.is_dir()]

    def leftovers(self, container_id: str) -> list[str]:
        out = [str(d) for d in self.cgroup_dirs() if d.name == container_id]
        if (self.root / "data" / "containers" / container_id).exists():
            out.append("bundle")
        if (self.root / "rt" / "runc" / container_id).exists():
            out.append("runc state")
        return out


@pytest.fixture
def node_root() -> Iterator[tuple[Path, str]]:
    tag = uuid.uuid4().hex[:8]
    root = Path(f"/run/corral-svc-{tag}")
    root.mkdir()
    yield root, f"/corral-svc-{tag}"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def node(node_root: tuple[Path, str]) -> AsyncIterator[Node]:
    n = Node(*node_root)
    yield n
    # Stop what a test left running and let the service see the exits (it unmounts and removes cgroups).
    service = n.service
    left = set(service.running())
    for cid in left:
        await service.runtime.stop(cid, 0)
    async with asyncio.timeout(15):
        while left:  # the exit event comes after the service has unmounted and removed the cgroup
            e = await n.next_event()
            if isinstance(e, ev.ContainerExited):
                left.discard(e.container_id)
    await service.close()
    mounts = Path("/proc/self/mounts").read_text()
    try:
        assert str(n.root) not in mounts, "a container root is still mounted"
    finally:
        for line in mounts.splitlines():
            if line.split()[1].startswith(str(n.root)):
                subprocess.run(["umount", "-l", line.split()[1]], check=False)
        for d in sorted(Path("/sys/fs/cgroup").glob(f"*/{n.cgroup_root.strip('/')}/**/"), reverse=True):
            d.rmdir()


async def test_run_to_exit_with_its_code(node: Node) -> None:
    cmd = node.start(spec("t", command=("sh", "-c", "echo hi; exit 7")))
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
    started = await node.next_event()
    assert isinstance(started, ev.ContainerStarted)
    assert started.pid > 0
    exited = await node.next_event()
    assert isinstance(exited, ev.ContainerExited)
    assert (exited.container_id, exited.exit_code, exited.signal) == (cmd.container_id, 7, None)
    assert node.cgroup_dirs() == []
    for mount in detect_layout().mounts:  # the node's own cgroup stays: the next start makes its cgroup in it
        assert Path(mount, node.cgroup_root.strip("/"), "n1").is_dir(), mount
    logs = await node.service.handle(GetLogs(command_id=new_command_id(), container_id=cmd.container_id, tail=10))
    assert isinstance(logs, LogsReply)
    assert [line.split(" ", 3)[3] for line in logs.lines] == ["hi"]


async def test_files_that_hold_the_environment_are_the_owners_alone(node: Node) -> None:
    old = os.umask(0o022)  # the usual umask: files would be 0644 unless made private
    try:
        cmd = node.start(spec("t", command=("sleep", "60"), env={"TOKEN": "hunter2"}))
        assert isinstance(await node.service.handle(cmd), CommandAccepted)
    finally:
        os.umask(old)
    bundle = node.root / "data" / "containers" / cmd.container_id
    for f in ("command.json", "config.json"):
        assert b"hunter2" in (bundle / f).read_bytes()
        assert oct((bundle / f).stat().st_mode & 0o777) == "0o600", f
    for d in (node.root / "data", node.root / "data" / "containers", bundle, *node.service.runtime.paths.all()):
        assert oct(d.stat().st_mode & 0o777) == "0o700", d


async def test_stop_and_cgroup_values(node: Node) -> None:
    cmd = node.start(
        spec("t", command=("sleep", "60"), cpu_request_millis=250, cpu_limit_millis=500, memory_limit_bytes=64 << 20)
    )
    assert isinstance(await node.service.handle(cmd), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    path = f"{node.cgroup_root}/n1/{cmd.container_id}"
    settings = node.service.cgroups.read(path)  # type: ignore[union-attr]
    assert (settings.shares, settings.quota_us, settings.burst_us, settings.memory_bytes) == (256, 50_000, 0, 64 << 20)

    update = UpdateResources(command_id=new_command_id(), epoch=1, container_id=cmd.container_id, burst_us=50_000)
    assert isinstance(await node.service.handle(update), CommandAccepted)
    assert await node.next_event() == ev.CpuBurstSet(
        container_id=cmd.container_id, node="n1", burst_us=50_000, reason="update"
    )
    assert node.service.cgroups.read(path).burst_us == 50_000  # type: ignore[union-attr]
    too_big = UpdateResources(command_id=new_command_id(), epoch=1, container_id=cmd.container_id, burst_us=90_000)
    rejected = await node.service.handle(too_big)
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "invalid_update"

    stop = StopContainer(command_id=new_command_id(), epoch=1, container_id=cmd.container_id, grace_s=0.2)
    assert isinstance(await node.service.handle(stop), CommandAccepted)
    exited = await node.next_event()
    assert isinstance(exited, ev.ContainerExited)
    assert (exited.exit_code, exited.signal) == (137, 9)
    assert node.leftovers(cmd.container_id) == ["bundle"]  # kept: the command and logs


@pytest.mark.parametrize(
    ("make", "code"),
    [
        pytest.param(lambda n: n.start(spec("t", image="nginx:1.25")), "unknown_image", id="unknown-image"),
        pytest.param(
            lambda n: n.start(
                spec("t", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=1 << 26), cpuset=(99,)
            ),
            "impossible_cpuset",
            id="no-such-cpu",
        ),
        pytest.param(
            lambda n: n.start(
                spec("t", cpu_request_millis=2000, cpu_limit_millis=2000, memory_limit_bytes=1 << 26), cpuset=(0,)
            ),
            "invalid_spec",
            id="cpuset-size-mismatch",
        ),
        pytest.param(
            lambda n: n.start(spec("t", mounts=(Mount(source="/etc", destination="/x"),))),
            "mount_not_allowed",
            id="host-mount",
        ),
        pytest.param(
            lambda n: n.start(spec("t", seccomp_profile="Unconfined")), "seccomp_not_allowed", id="unconfined"
        ),
        pytest.param(
            lambda n: n.start(spec("t", seccomp_profile="localhost/none")), "seccomp_not_allowed", id="no-profile"
        ),
        pytest.param(
            lambda n: n.start(spec("t", ephemeral_storage_bytes=64 << 30)), "invalid_spec", id="ephemeral-above-max"
        ),
        pytest.param(lambda n: n.start(spec("t", command=("/no/such/binary",))), "start_failed", id="bad-binary"),
        pytest.param(
            lambda n: StartContainer(
                command_id=new_command_id(), epoch=7, container_id=new_container_id(), spec=spec()
            ),
            "stale_epoch",
            id="stale-epoch",
        ),
    ],
)
async def test_bad_commands_leave_nothing_behind(node: Node, make: object, code: str) -> None:
    cmd = make(node)  # type: ignore[operator]
    reply = await node.service.handle(cmd)
    assert isinstance(reply, CommandRejected), reply
    assert reply.code == code
    assert node.leftovers(cmd.container_id) == []
    assert node.events.empty()


async def test_seccomp_profiles_the_node_offers(node: Node) -> None:
    """Unconfined where allowed runs with no filter; a profile installed on the node is the container's filter
    (here one that logs and allows all, so Seccomp is 2 but unshare works)."""
    await node.service.close()
    node.service = node.make_service(
        allow_unconfined_seccomp=True,
        seccomp_profiles={"localhost/log-all": {"defaultAction": "SCMP_ACT_LOG", "syscalls": []}},
    )
    assert node.service.config.seccomp_profiles_offered == ("Unconfined", "localhost/log-all")
    script = "grep '^Seccomp:' /proc/self/status | tr -d '\\t'; unshare -U true 2>/dev/null && echo ok || echo no"
    seen = {}
    for profile in ("RuntimeDefault", "Unconfined", "localhost/log-all"):
        seen[profile] = await node.run_to_exit(spec("t", command=("sh", "-c", script), seccomp_profile=profile))
    assert seen == {
        "RuntimeDefault": ["Seccomp:2", "no"],
        "Unconfined": ["Seccomp:0", "ok"],
        "localhost/log-all": ["Seccomp:2", "ok"],
    }


async def test_host_mounts_are_checked_on_the_node_and_pinned(node: Node) -> None:
    """A path reached through a symbolic link is refused (the allowed root is a directory of the test's own); a
    real one is mounted from where it was staged, which goes with the container, the host's files untouched."""
    allowed = node.root / "shared"
    (allowed / "real").mkdir(parents=True)
    (allowed / "real" / "note").write_text("from the host\n")
    (allowed / "link-to-root").symlink_to("/")
    await node.service.close()
    node.service = node.make_service(allowed_host_mounts=(str(allowed),))
    cmd = node.start(spec("t", mounts=(Mount(source=str(allowed / "link-to-root" / "etc"), destination="/x"),)))
    reply = await node.service.handle(cmd)
    assert isinstance(reply, CommandRejected)
    assert (reply.code, "symbolic link" in reply.message) == ("mount_not_allowed", True), reply
    assert node.leftovers(cmd.container_id) == []
    script = "cat /x/note; sleep 1; cat /x/note; ls /x | wc -l"
    cmd = node.start(
        spec("t", command=("sh", "-c", script), mounts=(Mount(source=str(allowed / "real"), destination="/x"),))
    )
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
    (allowed / "real").rename(allowed / "moved")
    (allowed / "real").symlink_to("/etc")  # the swap: too late, the checked directory is what is mounted
    while not isinstance(e := await node.next_event(), ev.ContainerExited):
        pass
    assert e.exit_code == 0
    assert await node.output(cmd.container_id) == ["from the host", "from the host", "1"]
    assert not list((node.root / "data" / "hostmounts").iterdir())  # unstaged with the container
    assert (allowed / "moved" / "note").read_text() == "from the host\n"  # and the host's files untouched


async def test_a_log_past_a_nats_message_comes_in_pages(node: Node) -> None:
    """5 MB of output: each reply stays far below NATS's 1 MiB message limit, and paging gives every line."""
    script = 'BEGIN { for (i = 0; i < 100000; i++) print i, "0123456789abcdef0123456789" }'
    cmd = node.start(spec("t", command=("awk", script)))
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
    while not isinstance(await node.next_event(), ev.ContainerExited):
        pass
    lines: list[str] = []
    since = None
    pages = 0
    while True:
        reply = await node.service.handle(
            GetLogs(command_id=new_command_id(), container_id=cmd.container_id, since_line=since)
        )
        assert isinstance(reply, LogsReply)
        assert len(encode(reply)) < 300 << 10
        lines += reply.lines
        pages += 1
        since = reply.next_line
        if not reply.more:
            break
    assert pages > 10, pages
    # k8s-file records: "<time> <stream> <P|F> <text>"; a P(artial) record is continued by the next one
    output = "".join(r[3] + ("\n" if r[2] == "F" else "") for r in (line.split(" ", 3) for line in lines))
    assert output.splitlines() == [f"{i} 0123456789abcdef0123456789" for i in range(100_000)]
    tail = await node.service.handle(GetLogs(command_id=new_command_id(), container_id=cmd.container_id, tail=3))
    assert isinstance(tail, LogsReply)
    assert [line.split(" ", 3)[3].split()[0] for line in tail.lines] == ["99997", "99998", "99999"]


async def test_the_writable_layer_and_tmp_share_a_bound(node: Node) -> None:
    """16 MiB of ephemeral storage: 10 MiB to /tmp fit, 10 more to / do not (ENOSPC in the container alone), and
    the layer's tmpfs goes with the container."""
    script = (
        "dd if=/dev/zero of=/tmp/a bs=1M count=10 2>/dev/null && echo tmp-ok; "
        "dd if=/dev/zero of=/b bs=1M count=10 2>&1 | grep -o 'No space left' | head -1; "
        "rm /tmp/a && dd if=/dev/zero of=/c bs=1M count=10 2>/dev/null && echo freed-ok"
    )
    output = await node.run_to_exit(spec("t", command=("sh", "-c", script), ephemeral_storage_bytes=16 << 20))
    assert output == ["tmp-ok", "No space left", "freed-ok"]
    assert str(node.root) not in Path("/proc/self/mounts").read_text()


async def test_the_node_caps_the_processes_of_all_its_containers(node: Node) -> None:
    """Each container may have 1,024 processes, the node's all together 24: one that tries for 40 gets no more
    than 24 (in the node's cgroup, measured; the subshell that forked them ends when a fork fails)."""
    await node.service.close()
    node.service = node.make_service(node_pids_max=24)
    await node.service.recover()  # what a starting nodelet does first: the cap is set there
    # the forks in a subshell (a failed fork ends the shell that made it), then no fork at all
    script = "(i=0; while [ $i -lt 40 ]; do sleep 60 & i=$((i+1)); done) 2>/dev/null; echo spawned; exec sleep 60"
    cmd = node.start(spec("t", command=("sh", "-c", script)))
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    name = node.cgroup_root.strip("/")
    pids = [Path(f"/sys/fs/cgroup/pids/{name}/n1"), Path(f"/sys/fs/cgroup/{name}/n1")]
    node_cgroup = next(p for p in pids if (p / "pids.current").exists())
    for _ in range(200):  # the loop ends once its forks have failed
        reply = await node.service.handle(GetLogs(command_id=new_command_id(), container_id=cmd.container_id))
        if isinstance(reply, LogsReply) and any(line.endswith(" spawned") for line in reply.lines):
            break
        await asyncio.sleep(0.05)
    assert 22 <= int((node_cgroup / "pids.current").read_text()) <= 24
    assert (node_cgroup / "pids.max").read_text().strip() == "24"
    assert (node_cgroup / cmd.container_id / "pids.max").read_text().strip() == "1024"


async def test_who_a_container_runs_as(node: Node) -> None:
    """user from the spec (a name from the image's /etc/passwd, or numbers), run_as_non_root refused for root,
    and a cgroup namespace: the container sees its cgroup as /, not the node's paths."""
    script = "id -u; id -g; cat /proc/self/cgroup | grep -c corral-svc; touch /tmp/x && echo tmp-writable"
    seen = {}
    for user in ("nobody", "1234:5678", None):
        seen[user] = await node.run_to_exit(spec("t", command=("sh", "-c", script), user=user))
    assert seen == {
        "nobody": ["65534", "65534", "0", "tmp-writable"],
        "1234:5678": ["1234", "5678", "0", "tmp-writable"],
        None: ["0", "0", "0", "tmp-writable"],
    }
    refused = node.start(spec("t", run_as_non_root=True))  # busybox runs as root
    reply = await node.service.handle(refused)
    assert isinstance(reply, CommandRejected) and reply.code == "invalid_spec", reply
    assert "run_as_non_root" in reply.message
    assert node.leftovers(refused.container_id) == []
    unknown = node.start(spec("t", user="ghost"))
    reply = await node.service.handle(unknown)
    assert isinstance(reply, CommandRejected) and "no user 'ghost'" in reply.message, reply


async def test_an_images_user_is_honoured(node: Node) -> None:
    """An imported image whose config says User 4321:4321 runs as that user unless the spec says otherwise; with
    run_as_non_root it starts, since it is not root."""
    binary = file("bin/busybox", Path("/bin/busybox").read_bytes(), mode=0o755)
    busybox = layer(binary, symlink("bin/sh", "/bin/busybox"))
    image = Image((busybox,), names=("app:1",), user="4321:4321")
    node.service.images.import_tar(write_tar(node.root / "app.tar", image.oci()))
    seen = {}
    for user in (None, "7:7"):
        s = spec("t", image="app:1", command=("sh", "-c", "echo $(busybox id -u)"), user=user, run_as_non_root=True)
        seen[user] = await node.run_to_exit(s)
    assert seen == {None: ["4321"], "7:7": ["7"]}


async def test_audit_reads_the_process_itself(node: Node) -> None:
    """What the node reads in /proc for a running container, judged against the Pod Security Standards: the
    defaults meet the baseline; non-root without a host path and with a filter is closer to restricted;
    Unconfined fails the baseline's seccomp control."""
    allowed = node.root / "shared"
    allowed.mkdir()
    await node.service.close()
    node.service = node.make_service(allowed_host_mounts=(str(allowed),), allow_unconfined_seccomp=True)
    cases = {
        "default": spec("t", command=("sleep", "60")),
        "nobody": spec("t", command=("sleep", "60"), user="nobody"),
        "unconfined": spec("t", command=("sleep", "60"), seccomp_profile="Unconfined"),
        "host-path": spec("t", command=("sleep", "60"), mounts=(Mount(source=str(allowed), destination="/data"),)),
    }
    failing = {}
    for name, s in cases.items():
        cmd = node.start(s)
        assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
        assert isinstance(await node.next_event(), ev.ContainerStarted)
        reply = await node.service.handle(AuditContainer(command_id=new_command_id(), container_id=cmd.container_id))
        assert isinstance(reply, AuditReply), reply
        facts = reply.facts
        assert (facts.no_new_privs, set(facts.host_namespaces) & {"pid", "net", "ipc", "mnt", "uts"}) == (True, set())
        failing[name] = sorted(v.control for v in judge(facts) if not v.ok)
    restricted_only = ["Capabilities (restricted)", "Running as Non-root", "Running as Non-root user"]
    assert failing == {
        "default": restricted_only,
        "nobody": ["Capabilities (restricted)"],  # its bounding set still holds Docker's defaults
        "unconfined": sorted([*restricted_only, "Seccomp", "Seccomp (restricted)"]),
        "host-path": sorted([*restricted_only, "HostPath Volumes", "Volume Types"]),
    }
    gone = await node.service.handle(AuditContainer(command_id=new_command_id(), container_id=new_container_id()))
    assert isinstance(gone, CommandRejected) and gone.code == "unknown_container"


async def test_a_restricted_node_admits_only_restricted_containers(node: Node) -> None:
    """--pod-security restricted: a default container is refused (pod_security, saying why, nothing left); one
    that runs as non-root with every capability dropped runs, and its audit meets the restricted standard."""
    await node.service.close()
    node.service = node.make_service(pod_security=Enforce.RESTRICTED)
    refused = node.start(spec("t", command=("sleep", "60")))
    reply = await node.service.handle(refused)
    assert isinstance(reply, CommandRejected) and reply.code == "pod_security", reply
    assert "Running as Non-root" in reply.message and "drop ALL" in reply.message
    assert node.leftovers(refused.container_id) == []
    ok = node.start(spec("t", command=("sleep", "60"), user="nobody", run_as_non_root=True,
                         capabilities=Capabilities(drop=("ALL",), add=("NET_BIND_SERVICE",))))  # fmt: skip
    assert await node.service.handle(ok) == CommandAccepted(command_id=ok.command_id)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    audit = await node.service.handle(AuditContainer(command_id=new_command_id(), container_id=ok.container_id))
    assert isinstance(audit, AuditReply)
    assert [v.control for v in judge(audit.facts) if not v.ok] == []


async def test_a_user_namespace_makes_root_inside_unprivileged_outside(node: Node) -> None:
    """user_namespace: uid 0 inside is the node's userns base outside (read from /proc from outside), it can still
    write its root and /tmp, and the directories above its root are searchable by its group alone."""
    script = "id -u; cat /proc/self/uid_map | tr -s ' '; touch /x /tmp/y && echo writes; sleep 60"
    cmd = node.start(spec("t", command=("sh", "-c", script), user_namespace=True))
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    audit = await node.service.handle(AuditContainer(command_id=new_command_id(), container_id=cmd.container_id))
    assert isinstance(audit, AuditReply)
    base = node.service.config.userns_base
    assert (audit.facts.uid, "user" in audit.facts.host_namespaces) == (base, False)
    for _ in range(100):
        reply = await node.service.handle(GetLogs(command_id=new_command_id(), container_id=cmd.container_id))
        assert isinstance(reply, LogsReply)
        if len(reply.lines) >= 3:
            break
        await asyncio.sleep(0.05)
    assert [line.split(" ", 3)[3] for line in reply.lines][:3] == ["0", f" 0 {base} 65536", "writes"]
    assert Path(f"/proc/{audit.facts.pid}/status").read_text().split("Uid:")[1].split()[:2] == [str(base)] * 2
    containers = node.root / "data" / "containers"
    for d in (containers.parent, containers, containers / cmd.container_id):
        assert (d.stat().st_mode & 0o777, d.stat().st_gid) == (0o710, base), d


async def test_commands_are_idempotent_by_id(node: Node) -> None:
    cmd = node.start(spec("t", command=("sleep", "60")))
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id, duplicate=True)
    other = StartContainer(command_id=new_command_id(), epoch=1, container_id=cmd.container_id, spec=cmd.spec)
    reply = await node.service.handle(other)
    assert isinstance(reply, CommandRejected)
    assert reply.code == "duplicate_id"
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    assert node.events.empty()


async def test_a_restarted_service_readopts_and_reports_exits_it_missed(node: Node) -> None:
    long = node.start(spec("long", command=("sleep", "60")))
    short = node.start(spec("short", command=("sh", "-c", "sleep 0.3; exit 5")))
    for cmd in (long, short):
        assert isinstance(await node.service.handle(cmd), CommandAccepted)
    started = {e.container_id: e for e in [await node.next_event(), await node.next_event()]}
    await node.service.close()  # the service goes away; monitors keep the containers
    await asyncio.sleep(0.6)  # the short one exits while nobody watches

    node.service = node.make_service()
    await node.service.recover()
    exited = await node.next_event()
    assert isinstance(exited, ev.ContainerExited)
    assert (exited.container_id, exited.exit_code) == (short.container_id, 5)
    assert node.service.running() == (long.container_id,)
    assert node.service.containers[long.container_id].pid == started[long.container_id].pid  # not restarted
    # The retried start of the adopted container is answered as before, not run twice.
    assert await node.service.handle(long) == CommandAccepted(command_id=long.command_id, duplicate=True)

    stop = StopContainer(command_id=new_command_id(), epoch=1, container_id=long.container_id, grace_s=0.1)
    assert isinstance(await node.service.handle(stop), CommandAccepted)
    exited = await node.next_event()
    assert isinstance(exited, ev.ContainerExited)
    assert (exited.container_id, exited.exit_code) == (long.container_id, 137)
    assert node.events.empty()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
async def test_shared_pool_moves_around_exclusive_cpus(node: Node) -> None:
    ls = node.start(spec("ls", command=("sleep", "60"), cpu_request_millis=100))
    assert isinstance(await node.service.handle(ls), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    all_cpus = node.service.cgroups.read(f"{node.cgroup_root}/n1/{ls.container_id}").cpus  # type: ignore[union-attr]
    assert all_cpus == format_cpulist(range(os.cpu_count() or 1))

    lsr = node.start(
        spec(
            "lsr", command=("sleep", "60"), cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=1 << 26
        ),
        cpuset=(1,),
    )
    assert isinstance(await node.service.handle(lsr), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    read = node.service.cgroups.read  # type: ignore[union-attr]
    assert read(f"{node.cgroup_root}/n1/{lsr.container_id}").cpus == "1"
    assert "1" not in read(f"{node.cgroup_root}/n1/{ls.container_id}").cpus.split(",")  # type: ignore[union-attr]

    taken = node.start(
        spec(
            "lsr2", command=("sleep", "60"), cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=1 << 26
        ),
        cpuset=(1,),
    )
    reply = await node.service.handle(taken)
    assert isinstance(reply, CommandRejected)
    assert (reply.code, "held exclusively" in reply.message) == ("impossible_cpuset", True)

    stop = StopContainer(command_id=new_command_id(), epoch=1, container_id=lsr.container_id, grace_s=0)
    assert isinstance(await node.service.handle(stop), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerExited)
    assert read(f"{node.cgroup_root}/n1/{ls.container_id}").cpus == all_cpus  # the CPU came back to the pool


async def test_log_rotation_loses_nothing(node: Node) -> None:
    cmd = node.start(spec("t", command=("sh", "-c", "echo one; sleep 0.5; echo two; sleep 60")))
    assert isinstance(await node.service.handle(cmd), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    log = node.service.runtime.logs(cmd.container_id)
    async with asyncio.timeout(5):
        while not log.exists() or "one" not in log.read_text():  # noqa: ASYNC110 -- a file has no event to await
            await asyncio.sleep(0.02)
    await node.service.rotate_logs(max_bytes=1)
    assert "one" in log.with_name(log.name + ".1").read_text()
    get = GetLogs(command_id=new_command_id(), container_id=cmd.container_id)
    async with asyncio.timeout(5):
        while True:
            reply = await node.service.handle(get)
            assert isinstance(reply, LogsReply)
            texts = [line.split(" ", 3)[3] for line in reply.lines]
            if "two" in texts:
                break
            await asyncio.sleep(0.05)
    assert texts == ["one", "two"]
    assert "two" in log.read_text()  # written to the new file after the reopen


async def test_remove_drops_what_was_kept(node: Node) -> None:
    running = node.start(spec("r", command=("sleep", "60")))
    assert isinstance(await node.service.handle(running), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    cmd = node.start(spec("t", command=("sh", "-c", "echo bye; exit 0")))
    assert isinstance(await node.service.handle(cmd), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    assert isinstance(await node.next_event(), ev.ContainerExited)
    refused = await node.service.handle(
        RemoveContainer(command_id=new_command_id(), epoch=1, container_id=running.container_id)
    )
    assert isinstance(refused, CommandRejected)
    assert refused.message == "cannot remove container in state running; stop it first"

    remove = RemoveContainer(command_id=new_command_id(), epoch=1, container_id=cmd.container_id)
    assert await node.service.handle(remove) == CommandAccepted(command_id=remove.command_id)
    assert node.leftovers(cmd.container_id) == []
    assert not node.service.runtime.logs(cmd.container_id).exists()
    again = RemoveContainer(command_id=new_command_id(), epoch=1, container_id=cmd.container_id)
    assert await node.service.handle(again) == CommandAccepted(command_id=again.command_id)


async def test_a_remove_during_an_exit_waits_until_the_root_is_unmounted(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, go = asyncio.Event(), asyncio.Event()
    real_delete = node.service.runtime.delete

    async def held_delete(container_id: str) -> None:  # the real runc delete, held at the gate
        entered.set()
        await go.wait()
        await real_delete(container_id)

    monkeypatch.setattr(node.service.runtime, "delete", held_delete)
    cmd = node.start(spec("t", command=("true",)))
    assert isinstance(await node.service.handle(cmd), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerStarted)
    async with asyncio.timeout(15):
        await entered.wait()  # the exit is being handled: the root is still mounted
    remove = RemoveContainer(command_id=new_command_id(), epoch=1, container_id=cmd.container_id)
    removing = asyncio.ensure_future(node.service.handle(remove))
    await asyncio.sleep(0.3)
    assert not removing.done()
    assert (node.root / "data" / "containers" / cmd.container_id / "scratch" / "upper").exists()
    go.set()
    assert await removing == CommandAccepted(command_id=remove.command_id)
    assert isinstance(await node.next_event(), ev.ContainerExited)
    assert node.leftovers(cmd.container_id) == []
    assert str(node.root) not in Path("/proc/self/mounts").read_text()


async def test_follow_logs_with_a_line_cursor_across_rotations(node: Node) -> None:
    cmd = node.start(spec("t", command=("sh", "-c", "echo 1; echo 2; sleep 0.4; echo 3; sleep 0.4; echo 4; sleep 60")))
    assert isinstance(await node.service.handle(cmd), CommandAccepted)
    assert isinstance(await node.next_event(), ev.ContainerStarted)

    async def read(since: int | None, tail: int | None = None, want: int = 0) -> LogsReply:
        get = GetLogs(command_id=new_command_id(), container_id=cmd.container_id, since_line=since, tail=tail)
        async with asyncio.timeout(5):
            while True:
                reply = await node.service.handle(get)
                assert isinstance(reply, LogsReply)
                if len(reply.lines) >= want:
                    return reply
                await asyncio.sleep(0.05)

    def texts(reply: LogsReply) -> list[str]:
        return [line.split(" ", 3)[3] for line in reply.lines]

    first = await read(0, want=2)
    assert (texts(first), first.next_line, first.truncated) == (["1", "2"], 2, False)
    await node.service.rotate_logs(max_bytes=1)  # "1", "2" move to the rotated file
    second = await read(first.next_line, want=1)
    assert (texts(second), second.next_line) == (["3"], 3)
    await node.service.rotate_logs(max_bytes=1)  # "1", "2" are dropped; "3" is rotated
    third = await read(second.next_line, want=1)
    assert (texts(third), third.next_line) == (["4"], 4)
    everything = await read(0)
    assert (texts(everything), everything.truncated) == (["3", "4"], True)
    assert texts(await read(None, tail=1)) == ["4"]


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_200_concurrent_starts_and_exits_all_succeed(node: Node) -> None:
    """Containers that end at once remove their cgroups while others are being created beside them: no start
    may lose its parent cgroup to a removal (it did: mkdir .../blkio/<root>/n1/<id>: no such file)."""
    cmds = [node.start(spec("t", command=("true",), cpu_request_millis=1)) for _ in range(200)]
    window = asyncio.Semaphore(4)  # few at a time, so that the node's cgroup empties again and again

    async def start(c: StartContainer) -> object:
        async with window:
            return await node.service.handle(c)

    replies = await asyncio.gather(*(start(c) for c in cmds))
    refused = [r for r in replies if not isinstance(r, CommandAccepted)]
    assert refused == [], refused[:3]
    exited: dict[str, int | None] = {}
    async with asyncio.timeout(300):
        while len(exited) < len(cmds):
            e = await node.next_event(timeout_s=300)
            if isinstance(e, ev.ContainerExited):
                exited[e.container_id] = e.exit_code
    assert set(exited.values()) == {0}
    removes = [RemoveContainer(command_id=new_command_id(), epoch=1, container_id=c.container_id) for c in cmds]
    removed = await asyncio.gather(*(node.service.handle(r) for r in removes))
    assert all(isinstance(r, CommandAccepted) for r in removed)
    assert node.cgroup_dirs() == []
    assert list((node.root / "data" / "containers").iterdir()) == []


def runc_inits(cgroup_root: str) -> set[int]:
    """Processes in the node's cgroups that are runc inits: containers created and not yet started."""
    found: set[int] = set()
    for procs in Path("/sys/fs/cgroup").glob(f"*/{cgroup_root.strip('/')}/**/cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith("runc:[2:INIT]"):
                    found.add(int(pid))
            except OSError:
                continue
    return found


async def test_a_burst_of_starts_holds_only_a_few_created_containers_at_a_time(node: Node) -> None:
    node.service = node.make_service(parallel_starts=2)
    cmds = [node.start(spec(f"b{i}", command=("sleep", "60"))) for i in range(12)]
    most = 0
    burst = asyncio.gather(*(node.service.handle(c) for c in cmds))
    while not burst.done():
        most = max(most, len(await asyncio.to_thread(runc_inits, node.cgroup_root)))
        await asyncio.sleep(0.01)
    assert all(isinstance(r, CommandAccepted) for r in await burst)
    assert sorted(node.service.running()) == sorted(c.container_id for c in cmds)
    assert 1 <= most <= 2, most  # each created container holds a runc init until its start


async def test_a_start_cut_short_by_the_nodelet_stopping_leaves_no_container_waiting_for_a_start(
    node: Node,
) -> None:
    service = node.service
    real_start = service.runtime.start
    created, release = asyncio.Event(), asyncio.Event()

    async def held(cid: str) -> None:  # the real start, held at a gate: the container is created, not started
        created.set()
        await release.wait()
        await real_start(cid)

    service.runtime.start = held  # type: ignore[method-assign]
    cmd = node.start(spec("cut", command=("sleep", "60")))
    starting = asyncio.ensure_future(service.handle(cmd))
    async with asyncio.timeout(30):
        await created.wait()
    assert runc_inits(node.cgroup_root)  # created: its runc init waits for a start
    starting.cancel()  # the nodelet stops
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert runc_inits(node.cgroup_root) == set()
    assert node.leftovers(cmd.container_id) == []


async def test_a_start_waits_for_its_image_in_order_and_a_stop_ends_the_wait(node: Node) -> None:
    """An image no registry serves (nothing listens on 127.0.0.1:1): the start is accepted and waits, its
    reasons come in order (Pulling, ErrImagePull, ImagePullBackOff), nothing is made on the host; a stop ends
    the wait, and the same start sent again (the sync's, after a new placement) is taken afresh."""
    node.service = node.make_service(pull_backoff_s=(0.2, 0.4))
    node.service.puller = Puller(node.service.images, node.root / "pulls")
    cmd = node.start(spec("w", image="127.0.0.1:1/nothing:1", command=("true",)))
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)
    waits: list[ev.ContainerWaiting] = []
    while len(waits) < 3:
        e = await node.next_event()
        if isinstance(e, ev.ContainerWaiting):
            waits.append(e)
    assert [w.reason for w in waits] == ["Pulling", "ErrImagePull", "ImagePullBackOff"], waits
    assert all("connection refused" in w.message for w in waits[1:]) and "back-off 0.4 s" in waits[2].message
    assert node.service.waiting() == (cmd.container_id,) and node.service.running() == ()
    assert node.leftovers(cmd.container_id) == [] and list((node.root / "pulls").glob("pull-*")) == []
    stop = StopContainer(command_id=new_command_id(), epoch=1, container_id=cmd.container_id, grace_s=0)
    reply = await node.service.handle(stop)
    assert isinstance(reply, CommandRejected) and reply.code is Reject.UNKNOWN_CONTAINER  # it never ran
    assert node.service.waiting() == ()
    assert await node.service.handle(cmd) == CommandAccepted(command_id=cmd.command_id)  # not the old answer
    assert node.service.waiting() == (cmd.container_id,)
    node.service.cancel_waiting(cmd.container_id)
