"""The placement stack: feasibility → limit → rank → cpuset pick, over a deterministic walk of the nodes.

Nodes are visited in a pseudo-random order derived from the evaluation's seed (a start and a stride coprime to
the node count: every node once, no shuffle of the whole list per decision); checkers filter; once ``limit``
feasible nodes are found (Nomad: max(2, ⌈log₂ N⌉)) they are ranked and the best one whose cpuset can be picked
wins. With no feasible node every node has been checked, so the unschedulable result counts every reason.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterator, Mapping

import msgspec

from scheduler.cpuset import FULL_PCPUS_ONLY, NoFit, NumaStrategy, pick_cpus_explained
from scheduler.feasible import Request, feasible
from scheduler.rank import IMAGE_LOCALITY, Scoring, holds_image, score
from scheduler.snapshot import NodeSnap, Snapshot
from wire.resources import Resources
from wire.spec import NODE_CPU_BIND_POLICY, NODE_NUMA_STRATEGY, CpuBindPolicy, CpuExclusivePolicy, QoS


class StackConfig(msgspec.Struct, frozen=True, kw_only=True):
    scoring: Scoring = Scoring.MOST_ALLOCATED
    numa_strategy: NumaStrategy = NumaStrategy.MOST_ALLOCATED
    limit: int | None = None  # feasible nodes to rank; None: max(2, ⌈log₂ N⌉)


class Placement(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    container_id: str
    node: str
    epoch: int
    qos: QoS
    cpuset: tuple[int, ...]
    numa_nodes: tuple[int, ...]
    resources: Resources
    score: float
    reason: str
    cpus_reason: str = ""
    runners_up: tuple[tuple[str, float], ...] = ()
    snapshot_position: int = 0  # set by the scheduler: what to replay the decision from
    seed: int = 0
    batch_index: int = 0


class Unschedulable(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    container_id: str
    nodes_total: int
    reasons: dict[str, int]
    message: str


def limit_for(nodes: int, config: StackConfig) -> int:
    return config.limit if config.limit is not None else max(2, math.ceil(math.log2(max(nodes, 2))))


def walk(order: tuple[str, ...], seed: int) -> Iterator[str]:
    """Every node once, in an order fixed by ``seed``: start at ``seed mod n`` and step by a stride coprime to n."""
    n = len(order)
    if n == 0:
        return
    start = seed % n
    stride = (seed // n) % n or 1
    while math.gcd(stride, n) != 1:
        stride = stride % n + 1
    for i in range(n):
        yield order[(start + i * stride) % n]


def message_for(reasons: Counter[str], total: int) -> str:
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"0/{total} nodes fit: {parts}" if parts else f"0/{total} nodes fit: no nodes"


DEFAULT = StackConfig()


def place(snapshot: Snapshot, req: Request, seed: int, config: StackConfig = DEFAULT) -> Placement | Unschedulable:
    """One decision. A service replica first looks only at nodes without a replica of its service (spread,
    as a filter, so sampling cannot defeat it); if none fits, at every node, where fewer replicas still score
    higher."""
    if req.service_id is not None:
        spread = _place(snapshot, req, seed, config, avoid_service=True)
        if isinstance(spread, Placement):
            return spread
    return _place(snapshot, req, seed, config, avoid_service=False)


def _place(
    snapshot: Snapshot, req: Request, seed: int, config: StackConfig, *, avoid_service: bool
) -> Placement | Unschedulable:
    nodes = snapshot.nodes
    total = len(snapshot.order)
    limit = limit_for(total, config)
    reasons: Counter[str] = Counter()
    names = walk(snapshot.order, seed)
    while True:
        batch: list[NodeSnap] = []
        for name in names:
            node = nodes[name]
            reason = feasible(node, req)
            if reason is None and avoid_service and node.services.get(req.service_id or "", 0):
                reason = "service replica already on node"
            if reason is None:
                batch.append(node)
                if len(batch) >= limit:
                    break
            else:
                reasons[reason] += 1
        if not batch:
            return Unschedulable(
                container_id=req.container_id,
                nodes_total=total,
                reasons=dict(reasons),
                message=message_for(reasons, total),
            )
        ranked = sorted(((score(n, req, config.scoring), n.name, n) for n in batch), key=lambda t: (-t[0], t[1]))
        for i, (s, _, node) in enumerate(ranked):
            placement = _placement(node, req, s, config, ranked=len(batch), total=total)
            if isinstance(placement, NoFit):
                reasons[placement.reason] += 1
                continue
            others = tuple((name, round(o, 4)) for o, name, _ in ranked[i + 1 : i + 4])
            return msgspec.structs.replace(placement, runners_up=others)


def node_cpu_policies(
    labels: Mapping[str, str], bind: CpuBindPolicy, strategy: NumaStrategy
) -> tuple[CpuBindPolicy | None, NumaStrategy]:
    """The bind policy and NUMA strategy a container gets on a node, by the node's labels (Koordinator's): the
    node's bind policy for a container that asks for none, and FullPCPUsOnly for every container on a node that
    requires it (None: the container asks to spread, which such a node refuses); the node's strategy if it
    names a valid one. Unknown label values are ignored."""
    with contextlib.suppress(ValueError):
        strategy = NumaStrategy(labels.get(NODE_NUMA_STRATEGY, strategy))
    try:
        node_bind = CpuBindPolicy(labels.get(NODE_CPU_BIND_POLICY, CpuBindPolicy.DEFAULT))
    except ValueError:
        node_bind = CpuBindPolicy.DEFAULT
    if node_bind is CpuBindPolicy.FULL_PCPUS_ONLY:
        return (None if bind is CpuBindPolicy.SPREAD_BY_PCPUS else CpuBindPolicy.FULL_PCPUS_ONLY), strategy
    return (node_bind if bind is CpuBindPolicy.DEFAULT else bind), strategy


def _placement(
    node: NodeSnap, req: Request, s: float, config: StackConfig, *, ranked: int, total: int
) -> Placement | NoFit:
    cpuset: tuple[int, ...] = ()
    numa: tuple[int, ...] = ()
    why = ""
    if req.qos.exclusive:
        bind, strategy = node_cpu_policies(node.labels, req.bind, config.numa_strategy)
        if bind is None:
            return NoFit(FULL_PCPUS_ONLY)
        free = node.free_for(req.exclusive)
        if len(free) < req.exclusive_cpus <= len(node.free_exclusive):
            return NoFit(str(req.exclusive))  # room, but not apart from the containers of its exclusive policy
        pick, step = pick_cpus_explained(
            node.index,
            free,
            req.exclusive_cpus,
            bind=bind,
            numa_policy=req.numa_policy,
            strategy=strategy,
        )
        if isinstance(pick, NoFit):
            return pick
        cpuset, numa = pick.cpus, pick.numa_nodes
        why = f"{cpus_reason(node, req, bind, strategy, cpuset)}; chosen by {step}"
    cpu = req.exclusive_cpus * 1000 if req.qos.exclusive else req.cpu_millis
    return Placement(
        container_id=req.container_id,
        node=node.name,
        epoch=node.epoch,
        qos=req.qos,
        cpuset=cpuset,
        numa_nodes=numa,
        resources=Resources(cpu, req.memory),
        score=round(s, 4),
        reason=f"{config.scoring} score {s:.3f}{image_note(node, req)}, best of {ranked} feasible nodes ranked of "
        f"{total}",
        cpus_reason=why,
    )


def image_note(node: NodeSnap, req: Request) -> str:
    """What ImageLocality made of the node, for the placement's reason."""
    if not req.image:
        return ""
    if holds_image(node, req):
        return f" (+{IMAGE_LOCALITY} ImageLocality: holds {req.image})"
    return f" (pulls {req.image})" if node.images is not None and req.image not in node.images else ""


def cpus_reason(
    node: NodeSnap, req: Request, bind: CpuBindPolicy, strategy: NumaStrategy, cpuset: tuple[int, ...]
) -> str:
    """Why these CPUs, in words: the policies that applied (and whose they were) and what the pick spans."""
    index = node.index
    whose = "its own" if req.bind is not CpuBindPolicy.DEFAULT else "the node's label"
    if req.bind is CpuBindPolicy.DEFAULT and NODE_CPU_BIND_POLICY not in node.labels:
        whose = "the default"
    picked = set(cpuset)
    cores = {index.core_of[c] for c in cpuset}
    whole = sum(1 for core in cores if picked.issuperset(index.cpus_of_core[core]))
    numas = sorted({index.numa_of[c] for c in cpuset})
    sockets = sorted({index.socket_of[c] for c in cpuset})
    parts = [
        f"bind {bind} ({whose})",
        f"NUMA strategy {strategy}",
        f"NUMA policy {req.numa_policy}",
    ]
    if req.exclusive is not CpuExclusivePolicy.NONE:
        parts.append(f"exclusive {req.exclusive}")
    span = f"NUMA node{'s' if len(numas) > 1 else ''} {','.join(map(str, numas))}"
    span += f" of socket{'s' if len(sockets) > 1 else ''} {','.join(map(str, sockets))}"
    return f"{'; '.join(parts)}: {len(cpuset)} CPUs on {len(cores)} cores ({whole} whole), {span}"
