"""Readable builders for test data."""

from __future__ import annotations

import itertools
import os
import uuid

from store.recorder import NewEvent
from wire import events as ev
from wire.resources import Resources
from wire.spec import ContainerSpec, QoS, ServiceSpec
from wire.topology import Topology

_counter = itertools.count(1)


def cid(n: int) -> str:
    """A deterministic container id."""
    return f"{n:016x}"


def spec(name: str = "web", **kw: object) -> ContainerSpec:
    return ContainerSpec(**{"name": name, "image": "busybox", **kw})  # type: ignore[arg-type]


def lsr(name: str = "db", cpus: int = 2, memory: int = 1 << 30) -> ContainerSpec:
    return spec(name, cpu_request_millis=cpus * 1000, cpu_limit_millis=cpus * 1000, memory_limit_bytes=memory)


def new_event(type_: str = "Test", payload: bytes = b"x", occurred_ns: int = 1, **kw: object) -> NewEvent:
    return NewEvent(os.urandom(16), type_, payload, occurred_ns, **kw)  # type: ignore[arg-type]


def registered(node: str = "n1", cpus: int = 8, epoch: int = 1) -> ev.NodeRegistered:
    topo = Topology.uniform(1, 1, cpus // 2, 2, memory_per_numa=32 << 30)
    return ev.NodeRegistered(node=node, topology=topo, capacity=Resources(cpus * 1000, 32 << 30), epoch=epoch)


def submitted(n: int, s: ContainerSpec | None = None, service: str | None = None) -> ev.ContainerSubmitted:
    return ev.ContainerSubmitted(container_id=cid(n), spec=s or spec(f"c{n}"), service_id=service)


def scheduled(n: int, node: str = "n1", cpuset: tuple[int, ...] = (), cpu: int = 500) -> ev.ContainerScheduled:
    qos = QoS.LSR if cpuset else QoS.LS
    return ev.ContainerScheduled(
        container_id=cid(n),
        node=node,
        epoch=1,
        qos=qos,
        cpuset=cpuset,
        resources=Resources(cpu if not cpuset else 1000 * len(cpuset), 1 << 28),
    )


def service(name: str = "api", replicas: int = 3) -> ev.ServiceCreated:
    return ev.ServiceCreated(
        service_id=cid(next(_counter) + 10_000), spec=ServiceSpec(name=name, replicas=replicas, template=spec(name))
    )


def uid() -> uuid.UUID:
    return uuid.uuid4()
