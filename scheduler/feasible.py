"""Feasibility: checkers that only filter. Each answers None (fits) or a short, stable reason key; the keys
are what unschedulable results count ("0/5000 nodes fit: 4000 insufficient CPU, 1000 SingleNUMANode")."""

from __future__ import annotations

import msgspec

from scheduler.cpuset import numa_fit
from scheduler.snapshot import NodeSnap
from wire.pss import Enforce, admission
from wire.spec import (
    SECCOMP_RUNTIME_DEFAULT,
    ContainerSpec,
    CpuBindPolicy,
    CpuExclusivePolicy,
    NumaPolicy,
    QoS,
    host_mount_allowed,
    image_name,
)


class Request(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What one container asks of a node, precomputed once per decision."""

    container_id: str
    qos: QoS
    cpu_millis: int
    exclusive_cpus: int
    memory: int
    node_selector: dict[str, str]
    numa_policy: NumaPolicy
    bind: CpuBindPolicy
    exclusive: CpuExclusivePolicy = CpuExclusivePolicy.NONE
    service_id: str | None = None
    image: str = ""  # as wire.spec.image_name spells it; "" asks for no particular image
    pullable: bool = False  # a node that lacks the image may pull it (a reference, not an id; policy not Never)
    host_paths: tuple[str, ...] = ()  # the host paths it bind-mounts
    seccomp: str = SECCOMP_RUNTIME_DEFAULT
    fails_baseline: bool = False  # what a node enforcing the Pod Security Standards would refuse
    fails_restricted: bool = False


def can_run_image(node_images: frozenset[str] | None, node_pulls: bool, image: str, pullable: bool) -> bool:
    """The node can run the image: it holds it (or did not say what it holds), or it pulls and may pull it."""
    return node_images is None or image in node_images or (pullable and node_pulls)


def request_of(container_id: str, spec: ContainerSpec, service_id: str | None = None) -> Request:
    qos = spec.qos or QoS.LS
    return Request(
        container_id=container_id,
        qos=qos,
        cpu_millis=spec.cpu_request_millis,
        exclusive_cpus=spec.exclusive_cpus,
        memory=spec.memory_limit_bytes or 0,
        node_selector=spec.node_selector,
        numa_policy=spec.numa_policy,
        bind=spec.cpu_bind_policy,
        exclusive=spec.cpu_exclusive_policy,
        service_id=service_id,
        image=image_name(spec.image),
        pullable=spec.pullable,
        host_paths=tuple(m.source for m in spec.mounts),
        seccomp=spec.seccomp_profile,
        fails_baseline=bool(admission(spec, Enforce.BASELINE)),
        fails_restricted=bool(admission(spec, Enforce.RESTRICTED)),
    )


def schedulable(node: NodeSnap, req: Request) -> str | None:
    return None if node.schedulable else node.unschedulable_reason or "node unschedulable"


def selector(node: NodeSnap, req: Request) -> str | None:
    labels = node.labels
    for k, v in req.node_selector.items():
        if labels.get(k) != v:
            return "node selector"
    return None


def runnable(node: NodeSnap, req: Request) -> str | None:
    """The node holds the image (when it said what it holds), allows every host mount asked for and offers the
    seccomp profile."""
    if req.image and not can_run_image(node.images, node.pulls, req.image, req.pullable):
        return "image not on node"
    if any(not host_mount_allowed(p, node.host_mounts) for p in req.host_paths):
        return "host mount not allowed"
    if req.seccomp != SECCOMP_RUNTIME_DEFAULT and req.seccomp not in node.seccomp_profiles:
        return "seccomp profile not on node"
    level = node.pod_security
    if (level is Enforce.BASELINE and req.fails_baseline) or (level is Enforce.RESTRICTED and req.fails_restricted):
        return f"below the node's pod security ({node.pod_security})"
    return None


def memory(node: NodeSnap, req: Request) -> str | None:
    return None if node.memory + req.memory <= node.capacity.memory_bytes else "insufficient memory"


def cpu(node: NodeSnap, req: Request) -> str | None:
    """Exclusive containers need whole free CPUs, and may not shrink the LS pool below what LS containers
    already use (nor, for LSE, the BE pool); LS and BE containers fit within their pool."""
    n = req.exclusive_cpus
    if req.qos.exclusive:
        held = len(node.lse) + len(node.lsr)
        if len(node.cpus) - held < n:
            return "insufficient CPU"
        if (len(node.cpus) - held - n) * 1000 < node.ls_millis:
            return "insufficient CPU"
        if req.qos is QoS.LSE and (len(node.cpus) - len(node.lse) - n) * 1000 < node.be_millis:
            return "insufficient CPU"
        return None
    if req.qos is QoS.BE:
        return None if node.be_millis + req.cpu_millis <= node.be_pool_millis else "insufficient CPU"
    return None if node.ls_millis + req.cpu_millis <= node.ls_pool_millis else "insufficient CPU"


def numa(node: NodeSnap, req: Request) -> str | None:
    """SingleNUMANode and Restricted decide feasibility for exclusive CPUs; None and BestEffort never refuse."""
    if not req.qos.exclusive or req.numa_policy in (NumaPolicy.NONE, NumaPolicy.BEST_EFFORT):
        return None
    if numa_fit(node.index, node.free_exclusive, req.exclusive_cpus, req.numa_policy):
        return None
    return str(req.numa_policy)


# Cheapest first: most nodes are rejected by the early checks.
CHECKS = (schedulable, selector, runnable, memory, cpu, numa)


def feasible(node: NodeSnap, req: Request) -> str | None:
    for check in CHECKS:
        reason = check(node, req)
        if reason is not None:
            return reason
    return None
