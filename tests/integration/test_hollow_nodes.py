"""Many hollow nodelets in one process, for scale tests: the node service over the hollow runtime, no
cgroups, no mounts. Nothing here runs a real container."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nodelet.hollow import HollowRuntime
from nodelet.images import ImageStore
from nodelet.service import NodeConfig, NodeService
from tests.builders import spec
from wire import events as ev
from wire.commands import CommandAccepted, StartContainer
from wire.ids import new_command_id, new_container_id


async def test_a_hundred_hollow_nodes_in_one_process(tmp_path: Path) -> None:
    events: asyncio.Queue[ev.Event] = asyncio.Queue()

    async def emit(e: ev.Event) -> None:
        await events.put(e)

    images = ImageStore(tmp_path / "images")  # shared: the built-in busybox is made once
    nodes = []
    for i in range(100):
        config = NodeConfig(node=f"hollow-{i}", data_dir=str(tmp_path / f"n{i}"), mount_roots=False)
        service = NodeService(
            config, runtime=HollowRuntime(tmp_path / f"n{i}" / "logs"), images=images, cgroups=None, emit=emit
        )
        service.epoch = 1
        nodes.append(service)
    commands = [
        (
            n,
            StartContainer(
                command_id=new_command_id(),
                epoch=1,
                container_id=new_container_id(),
                spec=spec("c", command=("sh", "-c", f"exit {k}")),
            ),
        )
        for n in nodes
        for k in range(3)
    ]
    replies = await asyncio.gather(*(n.handle(c) for n, c in commands))
    assert all(isinstance(r, CommandAccepted) for r in replies)
    exits: dict[str, int | None] = {}
    async with asyncio.timeout(30):
        while len(exits) < len(commands):
            e = await events.get()
            if isinstance(e, ev.ContainerExited):
                exits[e.container_id] = e.exit_code
    assert exits == {c.container_id: int(c.spec.command[2].split()[1]) for _, c in commands}
    assert all(n.running() == () for n in nodes)
    for n in nodes:
        await n.close()
