"""A stand-in for the control plane's node-facing subjects, for the nodelet's benchmark and tests.

It answers registration (with a new epoch each time) and sync (with ``desired``), acks events and keeps them
deduplicated by event id. It is a peer on a real nats-server, not a mock; the real control plane replaces it.
"""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.client import Client
from nats.aio.msg import Msg

from wire import events as ev
from wire import subjects
from wire.codec import encode, node_message_decoder, reply_decoder
from wire.commands import (
    Command,
    EventAck,
    NodeEvent,
    Register,
    Registered,
    Reply,
    StartContainer,
    SyncReply,
    SyncRequest,
)


class StandInControlPlane:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.epoch = 0
        self.events: dict[uuid.UUID, ev.Event] = {}
        self.arrived: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.registered = asyncio.Event()
        self.syncs: list[SyncRequest] = []
        self.synced = asyncio.Condition()
        self.desired: dict[str, StartContainer] = {}
        self.throttled: set[str] = set()  # as the node's reports say, and told back in sync answers

    async def serve(self) -> None:
        await self.nc.subscribe("corral.register.*", cb=self._register)
        await self.nc.subscribe("corral.evt.*", cb=self._event)
        await self.nc.subscribe("corral.sync.*", cb=self._sync)
        await self.nc.flush()

    async def _register(self, msg: Msg) -> None:
        reg = node_message_decoder.decode(msg.data)
        assert isinstance(reg, Register)
        self.epoch += 1
        await msg.respond(encode(Registered(node=reg.node, epoch=self.epoch, lease_s=3.0)))
        self.registered.set()

    async def _event(self, msg: Msg) -> None:
        m = node_message_decoder.decode(msg.data)
        assert isinstance(m, NodeEvent)
        if m.event_id not in self.events:
            self.events[m.event_id] = m.event
            if isinstance(m.event, ev.ContainerThrottled):
                self.throttled.add(m.event.container_id)
            elif isinstance(m.event, ev.ContainerUnthrottled):
                self.throttled.discard(m.event.container_id)
            await self.arrived.put(m.event)
        await msg.respond(encode(EventAck(event_id=m.event_id)))

    async def _sync(self, msg: Msg) -> None:
        req = node_message_decoder.decode(msg.data)
        assert isinstance(req, SyncRequest)
        async with self.synced:
            self.syncs.append(req)
            self.synced.notify_all()
        desired = tuple(self.desired.values())
        throttled = tuple(d.container_id for d in desired if d.container_id in self.throttled)
        await msg.respond(encode(SyncReply(node=req.node, epoch=self.epoch, desired=desired, throttled=throttled)))

    async def next_event(self, timeout_s: float = 20) -> ev.Event:
        async with asyncio.timeout(timeout_s):
            return await self.arrived.get()

    async def command(self, node: str, cmd: Command, timeout_s: float = 30) -> Reply:
        return reply_decoder.decode((await self.nc.request(subjects.cmd(node), encode(cmd), timeout=timeout_s)).data)
