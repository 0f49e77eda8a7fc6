"""The scheduler over a real in-memory store: a harness that records plans and published commands."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.cpuset import NumaStrategy, TopologyIndex
from scheduler.dispatch import Dispatcher
from scheduler.feasible import feasible, request_of
from scheduler.plan import Plan, check_plan
from scheduler.rank import IMAGE_LOCALITY, SPREAD_PENALTY, Scoring, score
from scheduler.replay import NotReplayable, replay
from scheduler.service import Scheduler
from scheduler.snapshot import take_snapshot
from scheduler.stack import Placement, StackConfig, Unschedulable, node_cpu_policies, place, walk
from store.log import EventLog
from store.memory import MemoryRecorder
from store.projections import ClusterState, ContainerState, apply_all
from tests.builders import cid, spec
from wire import events as ev
from wire.commands import StartContainer, StopContainer, UpdateResources
from wire.ids import container_stream, node_stream, service_stream
from wire.pss import Enforce
from wire.resources import Resources
from wire.spec import (
    NODE_CPU_BIND_POLICY,
    NODE_NUMA_STRATEGY,
    Capabilities,
    ContainerSpec,
    CpuBindPolicy,
    CpuExclusivePolicy,
    Mount,
    NumaPolicy,
    PullPolicy,
    QoS,
    ServiceSpec,
)
from wire.topology import Topology

GI = 1 << 30
BIG = Topology.uniform(2, 2, 8, 2, memory_per_numa=64 * GI)  # 64 CPUs
BIG_INDEX = TopologyIndex.of(BIG)


def node(
    name: str, topology: Topology = BIG, labels: dict[str, str] | None = None, epoch: int = 1
) -> ev.NodeRegistered:
    return ev.NodeRegistered(
        node=name,
        topology=topology,
        capacity=Resources(topology.cpu_count * 1000, topology.memory_bytes),
        epoch=epoch,
        labels=labels or {},
    )


def ls(name: str = "web", cpu: int = 500, memory: int = GI, **kw: object) -> ContainerSpec:
    return spec(name, cpu_request_millis=cpu, cpu_limit_millis=cpu * 2, memory_limit_bytes=memory, **kw)


def lsr(name: str = "db", cpus: int = 2, **kw: object) -> ContainerSpec:
    return spec(name, cpu_request_millis=cpus * 1000, cpu_limit_millis=cpus * 1000, memory_limit_bytes=GI, **kw)


def state_of(*events: ev.Event) -> ClusterState:
    return apply_all(ClusterState(), enumerate(events, start=1))


class Recorded:
    """The harness publisher: records every start command."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, StartContainer]] = []
        self.stops: list[tuple[str, StopContainer]] = []
        self.updates: list[tuple[str, UpdateResources]] = []

    async def start(self, node_name: str, command: StartContainer) -> None:
        self.starts.append((node_name, command))

    async def stop(self, node_name: str, command: StopContainer) -> None:
        self.stops.append((node_name, command))

    async def update(self, node_name: str, command: UpdateResources) -> None:
        self.updates.append((node_name, command))


class Harness:
    def __init__(self) -> None:
        self.log = EventLog(MemoryRecorder())
        self.publisher = Recorded()
        ids = itertools.count(1000)
        self.scheduler = Scheduler(self.log, new_id=lambda: cid(next(ids)))
        self.dispatcher = Dispatcher(self.scheduler.projection, self.publisher)
        self.plans: list[Plan] = []
        submit = self.scheduler.applier.submit

        async def recording(plan: Plan):  # type: ignore[no-untyped-def]
            self.plans.append(plan)
            return await submit(plan)

        self.scheduler.applier.submit = recording  # type: ignore[method-assign]

    async def add(self, stream: str, *events: ev.Event) -> None:
        await self.log.append(stream, list(events))

    async def nodes(self, *regs: ev.NodeRegistered) -> None:
        for r in regs:
            await self.add(node_stream(r.node), r)

    async def submit(self, n: int, s: ContainerSpec, service: str | None = None) -> str:
        await self.add(container_stream(cid(n)), ev.ContainerSubmitted(container_id=cid(n), spec=s, service_id=service))
        return cid(n)

    def container(self, container_id: str):  # type: ignore[no-untyped-def]
        return self.scheduler.state.containers[container_id]


# --- the stack, table-driven -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scoring", "expected"),
    [(Scoring.MOST_ALLOCATED, "busy"), (Scoring.LEAST_ALLOCATED, "idle")],
)
def test_scoring_packs_or_spreads(scoring: Scoring, expected: str) -> None:
    state = state_of(
        node("busy"),
        node("idle"),
        ev.ContainerSubmitted(container_id=cid(1), spec=ls(cpu=8000)),
        ev.ContainerScheduled(container_id=cid(1), node="busy", epoch=1, qos=QoS.LS, resources=Resources(8000, GI)),
    )
    result = place(take_snapshot(state), request_of(cid(2), ls()), seed=7, config=StackConfig(scoring=scoring))
    assert isinstance(result, Placement)
    assert result.node == expected


def test_unschedulable_counts_every_reason() -> None:
    small = Topology.uniform(1, 1, 1, 1, memory_per_numa=GI)
    state = state_of(
        node("a", small),
        node("b", small),
        node("c", labels={"zone": "x"}),
        node("d"),
        ev.NodeCordoned(node="d"),
    )
    req = request_of(cid(1), ls(cpu=2000, memory=2 * GI, node_selector={"zone": "y"}))
    result = place(take_snapshot(state), req, seed=1)
    assert result == Unschedulable(
        container_id=cid(1),
        nodes_total=4,
        reasons={"node selector": 3, "node cordoned": 1},
        message="0/4 nodes fit: 3 node selector, 1 node cordoned",
    )
    req = request_of(cid(1), ls(cpu=2000, memory=2 * GI))
    result = place(take_snapshot(state), req, seed=1)
    assert isinstance(result, Placement)
    assert result.node == "c"


@pytest.mark.parametrize(
    ("image", "mounts", "expected"),
    [
        ("busybox", (), {"old", "a", "b"}),  # busybox:latest: a and b hold it, old did not say
        ("docker.io/library/busybox:latest", (), {"old", "a", "b"}),
        ("app:1", (), {"old", "b"}),
        ("nosuch", (), {"old"}),
        ("busybox", ("/srv/data/x",), {"b"}),  # only b allows /srv/data
        ("busybox", ("/srv/data/x", "/etc"), set()),
        ("app:1", ("/srv",), set()),  # /srv itself is above the allowed root
    ],
)
def test_only_nodes_that_hold_the_image_and_allow_the_mounts_fit(
    image: str, mounts: tuple[str, ...], expected: set[str]
) -> None:
    state = state_of(
        node("old"),  # registered without saying what it holds: any image may be there
        msgspec.structs.replace(node("a"), images=("busybox:latest",)),
        msgspec.structs.replace(node("b"), images=("app:1", "busybox:latest"), host_mounts=("/srv/data",)),
    )
    snap = take_snapshot(state)
    req = request_of(cid(1), ls(image=image, mounts=tuple(Mount(source=m, destination="/m") for m in mounts)))
    fits = {n.name for n in snap.nodes.values() if feasible(n, req) is None}
    assert fits == expected


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("RuntimeDefault", {"old", "a", "b"}),  # every node runs it
        ("Unconfined", {"a"}),
        ("localhost/audit", {"a", "b"}),
        ("localhost/other", set()),
    ],
)
def test_only_nodes_that_offer_the_seccomp_profile_fit(profile: str, expected: set[str]) -> None:
    state = state_of(
        node("old"),  # registered before nodes said: RuntimeDefault only
        msgspec.structs.replace(node("a"), seccomp_profiles=("Unconfined", "localhost/audit")),
        msgspec.structs.replace(node("b"), seccomp_profiles=("localhost/audit",)),
    )
    snap = take_snapshot(state)
    req = request_of(cid(1), ls(seccomp_profile=profile))
    fits = {n.name: feasible(n, req) for n in snap.nodes.values()}
    assert {n for n, why in fits.items() if why is None} == expected
    assert {why for why in fits.values() if why is not None} <= {"seccomp profile not on node"}


def test_only_nodes_whose_pod_security_admits_it_fit() -> None:
    state = state_of(
        node("open"),
        msgspec.structs.replace(node("base"), pod_security=Enforce.BASELINE),
        msgspec.structs.replace(node("strict"), pod_security=Enforce.RESTRICTED),
    )
    snap = take_snapshot(state)

    def fits(s: ContainerSpec) -> set[str]:
        return {n.name for n in snap.nodes.values() if feasible(n, request_of(cid(1), s)) is None}

    assert fits(ls()) == {"open", "base"}
    assert fits(ls(seccomp_profile="Unconfined")) == set()  # no node here offers Unconfined at all
    assert fits(ls(user="1000", run_as_non_root=True, capabilities=Capabilities(drop=("ALL",)))) == {
        "open",
        "base",
        "strict",
    }


async def test_an_image_import_makes_a_waiting_container_schedulable() -> None:
    h = Harness()
    await h.nodes(msgspec.structs.replace(node("n1"), images=("busybox:latest",)))
    await h.submit(1, ls(image="app:2"))
    await h.scheduler.round()
    assert h.container(cid(1)).state is ContainerState.UNSCHEDULABLE
    assert "image not on node" in h.container(cid(1)).unschedulable
    await h.add(node_stream("n1"), ev.NodeImagesChanged(node="n1", images=("app:2", "busybox:latest")))
    await h.scheduler.round()
    assert h.container(cid(1)).state is ContainerState.SCHEDULED


def test_exclusive_placement_gets_whole_cores_and_single_numa() -> None:
    state = state_of(node("n1"))
    result = place(take_snapshot(state), request_of(cid(1), lsr(cpus=4, numa_policy=NumaPolicy.SINGLE_NUMA_NODE)), 3)
    assert isinstance(result, Placement)
    assert len(result.cpuset) == 4
    assert len(result.numa_nodes) == 1
    assert {c % 32 for c in result.cpuset} == {c % 32 for c in result.cpuset if c < 32}  # siblings together
    assert result.resources == Resources(4000, GI)


def test_same_seed_same_decision_and_walk_visits_every_node_once() -> None:
    state = state_of(*(node(f"n{i}") for i in range(50)))
    snap = take_snapshot(state)
    a = place(snap, request_of(cid(1), lsr()), seed=12345)
    b = place(snap, request_of(cid(1), lsr()), seed=12345)
    assert a == b
    for seed in (0, 1, 49, 50, 12345, 2**40):
        assert sorted(walk(snap.order, seed)) == sorted(snap.order)


# --- plan check ------------------------------------------------------------------------------------------------


def test_plan_check_rejects_double_booked_cpus_and_stale_nodes() -> None:
    state = state_of(node("n1"), *(ev.ContainerSubmitted(container_id=cid(i), spec=lsr()) for i in (1, 2, 3)))
    snap = take_snapshot(state)
    reqs = {cid(i): request_of(cid(i), lsr()) for i in (1, 2, 3)}
    p1 = place(snap, reqs[cid(1)], seed=1)
    assert isinstance(p1, Placement)
    p2 = Placement(**{**{f: getattr(p1, f) for f in p1.__struct_fields__}, "container_id": cid(2)})  # same CPUs
    p3 = Placement(**{**{f: getattr(p1, f) for f in p1.__struct_fields__}, "container_id": cid(3), "epoch": 9})
    result = check_plan(
        state, Plan(eval_id=uuid.uuid4(), snapshot_position=snap.position, placements=(p1, p2, p3), requests=reqs)
    )
    assert result.accepted == (p1,)
    assert [(r.placement.container_id, r.reason) for r in result.rejected] == [
        (cid(2), f"CPUs {sorted(p1.cpuset)} are already held exclusively"),
        (cid(3), "node epoch changed (9 → 1)"),
    ]
    assert result.refresh_position == state.position


# --- the service loop over a real store ------------------------------------------------------------------------


async def test_round_schedules_and_publishes() -> None:
    h = Harness()
    await h.nodes(node("n1"), node("n2"))
    a = await h.submit(1, ls())
    b = await h.submit(2, lsr(cpus=2))
    assert await h.scheduler.round() == 2
    assert h.container(a).state is ContainerState.SCHEDULED
    assert h.container(b).state is ContainerState.SCHEDULED
    assert len(h.container(b).cpuset) == 2
    assert h.publisher.starts == []  # the scheduler sends nothing: the dispatcher derives the starts
    assert await h.dispatcher.dispatch() == 2
    assert sorted(c.container_id for _, c in h.publisher.starts) == sorted([a, b])
    assert await h.scheduler.round() == 0  # nothing pending
    assert await h.dispatcher.dispatch() == 0  # nothing new to tell


async def test_service_replicas_spread_over_nodes() -> None:
    h = Harness()
    await h.nodes(node("n1"), node("n2"), node("n3"))
    svc = cid(500)
    await h.add(
        service_stream(svc),
        ev.ServiceCreated(service_id=svc, spec=ServiceSpec(name="api", replicas=3, template=ls("api"))),
    )
    assert await h.scheduler.round() == 3
    nodes = sorted(c.node for c in h.scheduler.state.containers.values() if c.service_id == svc)  # type: ignore[type-var]
    assert nodes == ["n1", "n2", "n3"]


async def test_unschedulable_is_recorded_once_and_retried_when_capacity_appears() -> None:
    h = Harness()
    await h.nodes(node("n1", Topology.uniform(1, 1, 1, 2, memory_per_numa=4 * GI)))
    big = await h.submit(1, lsr(cpus=4))
    assert await h.scheduler.round() == 0
    assert h.container(big).state is ContainerState.UNSCHEDULABLE
    assert h.container(big).unschedulable == "0/1 nodes fit: 1 insufficient CPU"
    assert await h.scheduler.round() == 0
    events = await h.log.read_stream(container_stream(big))
    assert sum(isinstance(r.event, ev.ContainerUnschedulable) for r in events) == 1  # not re-recorded
    await h.nodes(node("n2"))
    assert await h.scheduler.round() == 1
    assert h.container(big).node == "n2"


async def test_the_same_verdict_is_recorded_once_however_often_capacity_changes() -> None:
    """611 ContainerUnschedulable for one container were seen: every exit elsewhere re-recorded the same fact."""
    h = Harness()
    await h.nodes(node("n1", Topology.uniform(1, 1, 1, 2, memory_per_numa=4 * GI)))
    big = await h.submit(1, lsr(cpus=4))
    await h.scheduler.round()
    for n in range(2, 12):  # small containers come and go: capacity changes, the verdict does not
        small = await h.submit(n, ls(cpu=100, memory=GI // 4))
        await h.scheduler.round()
        await h.add(
            container_stream(small), ev.ContainerExited(container_id=small, node="n1", exit_code=0, exited_ns=n)
        )
        await h.scheduler.round()
    events = await h.log.read_stream(container_stream(big))
    assert sum(isinstance(r.event, ev.ContainerUnschedulable) for r in events) == 1
    await h.nodes(node("n2", Topology.uniform(1, 1, 1, 2, memory_per_numa=4 * GI)))  # a new fact: 0/2 nodes
    await h.scheduler.round()
    events = await h.log.read_stream(container_stream(big))
    assert [r.event.message for r in events if isinstance(r.event, ev.ContainerUnschedulable)] == [
        "0/1 nodes fit: 1 insufficient CPU",
        "0/2 nodes fit: 2 insufficient CPU",
    ]


async def test_lost_node_replaces_service_replicas() -> None:
    h = Harness()
    await h.nodes(node("n1"), node("n2"))
    svc = cid(500)
    await h.add(
        service_stream(svc),
        ev.ServiceCreated(service_id=svc, spec=ServiceSpec(name="api", replicas=2, template=ls("api"))),
    )
    await h.scheduler.round()
    await h.add(node_stream("n1"), ev.NodeLost(node="n1", epoch=1))
    await h.scheduler.round()
    live = [c for c in h.scheduler.state.containers.values() if c.service_id == svc and not c.state.terminal]
    assert sorted(c.node for c in live) == ["n2", "n2"]  # type: ignore[type-var]
    lost = [c for c in h.scheduler.state.containers.values() if c.state is ContainerState.LOST]
    assert len(lost) == 1


# --- safety properties -------------------------------------------------------------------------------------------

requests = st.lists(
    st.one_of(
        st.builds(lambda c: lsr("x", c), st.integers(1, 8)),
        st.builds(lambda c: lsr("y", c, numa_policy=NumaPolicy.SINGLE_NUMA_NODE), st.integers(1, 8)),
        st.builds(
            lambda c: spec(
                "z", qos=QoS.LSE, cpu_request_millis=c * 1000, cpu_limit_millis=c * 1000, memory_limit_bytes=GI
            ),
            st.integers(1, 4),
        ),
        st.builds(lambda m: ls("w", m), st.integers(100, 4000)),
        st.just(spec("be")),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(requests, st.integers(0, 2**32))
def test_sequential_placement_never_overcommits(specs: Sequence[ContainerSpec], seed: int) -> None:
    small = Topology.uniform(1, 2, 4, 2, memory_per_numa=8 * GI)  # 16 CPUs, 16 GiB
    state = state_of(node("a", small), node("b", small), node("c", small))
    snap = take_snapshot(state)
    nodes = dict(snap.nodes)
    held: dict[str, set[int]] = {n: set() for n in nodes}
    for i, s in enumerate(specs):
        req = request_of(cid(i), s)
        result = place(type(snap)(snap.position, nodes, snap.order), req, seed + i)
        again = place(type(snap)(snap.position, nodes, snap.order), req, seed + i)
        assert result == again  # same seed, same decision
        if isinstance(result, Unschedulable):
            continue
        n = nodes[result.node]
        assert not held[result.node] & set(result.cpuset), "an exclusive CPU handed out twice"
        assert set(result.cpuset) <= n.cpus
        assert len(result.cpuset) == req.exclusive_cpus
        if s.numa_policy is NumaPolicy.SINGLE_NUMA_NODE:
            assert len({n.numa_of[c] for c in result.cpuset}) == 1
        held[result.node] |= set(result.cpuset)
        nodes[result.node] = n.with_placement(result.qos, result.cpuset, result.resources, None)
    for name, n in nodes.items():
        assert n.memory <= n.capacity.memory_bytes
        assert n.ls_millis <= n.ls_pool_millis, "LS containers overcommit the shared pool"
        assert n.be_millis <= n.be_pool_millis
        assert len(n.lse) + len(n.lsr) <= len(n.cpus)
        assert held[name] == set(n.lse | n.lsr)


async def test_a_rejected_plan_is_refreshed_and_replanned() -> None:
    """The harness forces a rejection: between the snapshot and the plan check, the chosen node is cordoned."""
    h = Harness()
    await h.nodes(node("n1"), node("n2"))
    a = await h.submit(1, lsr(cpus=2))
    real_submit = h.scheduler.applier.submit
    forced = []

    async def cordon_first_choice(plan: Plan):  # type: ignore[no-untyped-def]
        if not forced:
            forced.append(plan.placements[0].node)
            await h.add(node_stream(plan.placements[0].node), ev.NodeCordoned(node=plan.placements[0].node))
        return await real_submit(plan)

    h.scheduler.applier.submit = cordon_first_choice  # type: ignore[method-assign]
    assert await h.scheduler.round() == 0  # the plan was rejected: the node is cordoned now
    assert h.container(a).state is ContainerState.PENDING
    assert await h.scheduler.round() == 1  # refreshed, replanned
    assert h.container(a).node != forced[0]


async def test_dry_run_says_where_and_changes_nothing() -> None:
    h = Harness()
    await h.nodes(node("n1"))
    head = await h.log.recorder.head()
    fits = await h.scheduler.dry_run(lsr(cpus=2))
    assert isinstance(fits.decision, Placement)
    assert (fits.decision.node, len(fits.decision.cpuset), fits.position) == ("n1", 2, head)
    too_big = await h.scheduler.dry_run(lsr(cpus=100))
    assert isinstance(too_big.decision, Unschedulable)
    assert too_big.decision.message == "0/1 nodes fit: 1 insufficient CPU"
    assert await h.log.recorder.head() == head


async def test_stop_requests_are_sent_to_the_node_with_its_epoch() -> None:
    h = Harness()
    await h.nodes(node("n1", epoch=4))
    a = await h.submit(1, ls())
    await h.scheduler.round()
    await h.add(container_stream(a), ev.ContainerStopRequested(container_id=a, grace_s=2.0))
    await h.scheduler.round()
    await h.dispatcher.dispatch()
    [(node_name, command)] = h.publisher.stops
    assert (node_name, command.container_id, command.epoch, command.grace_s) == ("n1", a, 4, 2.0)


ONLY = {NODE_CPU_BIND_POLICY: "FullPCPUsOnly"}


@pytest.mark.parametrize(
    ("labels", "bind", "expected"),
    [
        pytest.param({}, CpuBindPolicy.DEFAULT, (CpuBindPolicy.DEFAULT, NumaStrategy.MOST_ALLOCATED), id="none"),
        pytest.param(
            {NODE_CPU_BIND_POLICY: "SpreadByPCPUs", NODE_NUMA_STRATEGY: "LeastAllocated"},
            CpuBindPolicy.DEFAULT,
            (CpuBindPolicy.SPREAD_BY_PCPUS, NumaStrategy.LEAST_ALLOCATED),
            id="the-nodes-for-a-container-that-asks-none",
        ),
        pytest.param(
            {NODE_CPU_BIND_POLICY: "SpreadByPCPUs"},
            CpuBindPolicy.FULL_PCPUS,
            (CpuBindPolicy.FULL_PCPUS, NumaStrategy.MOST_ALLOCATED),
            id="the-containers-own-wins",
        ),
        pytest.param(
            ONLY, CpuBindPolicy.DEFAULT, (CpuBindPolicy.FULL_PCPUS_ONLY, NumaStrategy.MOST_ALLOCATED), id="only"
        ),
        pytest.param(
            ONLY, CpuBindPolicy.FULL_PCPUS, (CpuBindPolicy.FULL_PCPUS_ONLY, NumaStrategy.MOST_ALLOCATED), id="only-wins"
        ),
        pytest.param(
            ONLY, CpuBindPolicy.SPREAD_BY_PCPUS, (None, NumaStrategy.MOST_ALLOCATED), id="only-refuses-spread"
        ),
        pytest.param(
            {NODE_CPU_BIND_POLICY: "Sometimes", NODE_NUMA_STRATEGY: "Random"},
            CpuBindPolicy.DEFAULT,
            (CpuBindPolicy.DEFAULT, NumaStrategy.MOST_ALLOCATED),
            id="unknown-values-ignored",
        ),
    ],
)
def test_node_cpu_policies(
    labels: dict[str, str], bind: CpuBindPolicy, expected: tuple[CpuBindPolicy | None, NumaStrategy]
) -> None:
    assert node_cpu_policies(labels, bind, NumaStrategy.MOST_ALLOCATED) == expected


def test_a_full_pcpus_only_node_refuses_what_whole_cores_cannot_hold() -> None:
    """An odd count of exclusive CPUs goes to the node that may break a core, never to the one that may not."""
    state = state_of(node("only", labels=ONLY), node("any"))
    odd = place(take_snapshot(state), request_of(cid(1), lsr(cpus=3)), seed=1)
    assert isinstance(odd, Placement) and odd.node == "any"
    alone = state_of(node("only", labels=ONLY))
    refused = place(take_snapshot(alone), request_of(cid(1), lsr(cpus=3)), seed=1)
    assert isinstance(refused, Unschedulable) and refused.reasons == {"FullPCPUsOnly": 1}
    even = place(take_snapshot(alone), request_of(cid(1), lsr(cpus=4)), seed=1)
    assert isinstance(even, Placement) and len({c % 32 for c in even.cpuset}) == 2  # two whole cores


def test_reserved_cpus_are_never_handed_out_and_leave_the_ls_pool() -> None:
    """The kubelet's reservedSystemCPUs: a node keeps 0, 1 and their siblings (32, 33) for itself."""
    reserved = msgspec.structs.replace(node("n1"), reserved_cpus=(0, 1, 32, 33))
    state = state_of(reserved)
    snap = take_snapshot(state)
    assert snap.nodes["n1"].ls_pool_millis == 60_000
    picked: set[int] = set()
    for i in range(15):  # 15 x 4 = the 60 CPUs left
        result = place(snap, request_of(cid(i), lsr(cpus=4)), seed=i)
        assert isinstance(result, Placement), result
        picked.update(result.cpuset)
        n = snap.nodes["n1"].with_placement(result.qos, result.cpuset, result.resources, None)
        snap = msgspec.structs.replace(snap, nodes={"n1": n})
    assert picked.isdisjoint({0, 1, 32, 33}) and len(picked) == 60
    assert isinstance(place(snap, request_of(cid(99), lsr(cpus=1)), seed=1), Unschedulable)
    assert isinstance(place(take_snapshot(state), request_of(cid(1), ls(cpu=60_001)), seed=1), Unschedulable)


@pytest.mark.parametrize(("reserved", "why"), [((64,), "not in the topology"), (tuple(range(64)), "leaves none")])
def test_a_registration_that_reserves_what_the_node_lacks_is_refused(reserved: tuple[int, ...], why: str) -> None:
    from wire.codec import encode, node_message_decoder
    from wire.commands import Register

    good = Register(node="n1", topology=BIG, capacity=Resources(64_000, GI))
    raw = msgspec.msgpack.decode(encode(good))
    raw["reserved_cpus"] = list(reserved)
    with pytest.raises(msgspec.ValidationError, match=why):
        node_message_decoder.decode(msgspec.msgpack.encode(raw))


def _place_all(specs: list[ContainerSpec], topology: Topology = BIG) -> list[Placement | Unschedulable]:
    """Place ``specs`` one after another on one node, as the scheduler's working snapshot does."""
    snap = take_snapshot(state_of(node("n1", topology)))
    out: list[Placement | Unschedulable] = []
    for i, s in enumerate(specs):
        req = request_of(cid(i), s)
        result = place(snap, req, seed=i)
        out.append(result)
        if isinstance(result, Placement):
            n = snap.nodes["n1"].with_placement(result.qos, result.cpuset, result.resources, None, req.exclusive)
            snap = msgspec.structs.replace(snap, nodes={"n1": n})
    return out


def test_pcpu_level_containers_never_share_a_core() -> None:
    one = lsr(cpus=1, cpu_exclusive_policy=CpuExclusivePolicy.PCPU_LEVEL)
    got = _place_all([one] * 40)  # 32 cores: the first 32 get a core each, the rest are refused
    placed = [r for r in got if isinstance(r, Placement)]
    index = take_snapshot(state_of(node("n1"))).nodes["n1"].index
    cores = [index.core_of[r.cpuset[0]] for r in placed]
    assert len(placed) == 32 and len(set(cores)) == 32
    assert all(isinstance(r, Unschedulable) and r.reasons == {"PCPULevel": 1} for r in got[32:])
    # A container without the policy may still take the siblings.
    plain = _place_all([one] * 32 + [lsr(cpus=1)])
    assert isinstance(plain[-1], Placement)


def test_numa_node_level_containers_take_a_numa_node_each() -> None:
    spread = lsr(cpus=2, cpu_exclusive_policy=CpuExclusivePolicy.NUMA_NODE_LEVEL)
    got = _place_all([spread] * 5)  # 4 NUMA nodes
    placed = [r for r in got if isinstance(r, Placement)]
    assert sorted(r.numa_nodes for r in placed) == [(0,), (1,), (2,), (3,)]
    assert isinstance(got[4], Unschedulable) and got[4].reasons == {"NUMANodeLevel": 1}


def test_an_exclusive_policy_is_only_for_exclusive_cpus() -> None:
    with pytest.raises(ValueError, match="cpu_exclusive_policy"):
        ls(cpu_exclusive_policy=CpuExclusivePolicy.PCPU_LEVEL)


def test_the_plan_check_keeps_pcpu_level_containers_apart() -> None:
    """Two plans decided on the same snapshot: the second one's sibling CPU is refused at the check."""
    one = lsr(cpus=1, cpu_exclusive_policy=CpuExclusivePolicy.PCPU_LEVEL)
    state = state_of(node("n1"), ev.ContainerSubmitted(container_id=cid(1), spec=one))
    first = place(take_snapshot(state), request_of(cid(1), one), seed=1)
    assert isinstance(first, Placement)
    state = state_of(
        node("n1"),
        ev.ContainerSubmitted(container_id=cid(1), spec=one),
        ev.ContainerScheduled(
            container_id=cid(1), node="n1", epoch=1, qos=QoS.LSR, cpuset=first.cpuset, resources=first.resources
        ),
        ev.ContainerSubmitted(container_id=cid(2), spec=one),
    )
    sibling = next(c for c in BIG_INDEX.cpus_of_core[BIG_INDEX.core_of[first.cpuset[0]]] if c != first.cpuset[0])
    bad = msgspec.structs.replace(first, container_id=cid(2), cpuset=(sibling,))
    plan = Plan(
        eval_id=uuid.uuid4(), snapshot_position=0, placements=(bad,), requests={cid(2): request_of(cid(2), one)}
    )
    result = check_plan(state, plan)
    assert result.accepted == () and "PCPULevel" in result.rejected[0].reason


async def test_every_recorded_placement_replays_to_the_same_node_and_cpus() -> None:
    """Batches of mixed LS and exclusive containers over several nodes; each ContainerScheduled names what it
    read, its seed and its place in the batch, and deciding again from those gives the same node and CPUs."""
    h = Harness()
    await h.nodes(*(node(f"n{i}", labels={"zone": "a" if i % 2 else "b"}) for i in range(5)))
    n = 0
    for round_ in range(3):
        for i in range(12):
            n += 1
            kind = (n + round_) % 3
            s = (
                lsr(cpus=1 + i % 3)
                if kind == 0
                else ls(cpu=250 * (1 + i % 4))
                if kind == 1
                else lsr(
                    cpus=2,
                    cpu_bind_policy=CpuBindPolicy.SPREAD_BY_PCPUS,
                    cpu_exclusive_policy=CpuExclusivePolicy.PCPU_LEVEL,
                )
            )
            await h.submit(n, s)
        await h.scheduler.round()
    recorded = [r for r in await h.log.read_all(1, 10_000) if isinstance(r.event, ev.ContainerScheduled)]
    assert len(recorded) == n
    assert any(r.event.batch_index > 0 for r in recorded) and any(r.event.runners_up for r in recorded)
    for r in recorded:
        event, again = await replay(h.log, r.position)
        assert isinstance(again, Placement), again
        assert (again.node, again.cpuset, again.score) == (event.node, event.cpuset, event.score), r.position
        assert again.cpus_reason == event.cpus_reason
    exclusive = next(r.event for r in recorded if r.event.cpuset)
    assert "bind " in exclusive.cpus_reason and "NUMA strategy" in exclusive.cpus_reason


async def test_replay_refuses_a_position_that_holds_no_placement() -> None:
    h = Harness()
    await h.nodes(node("n1"))
    with pytest.raises(NotReplayable):
        await replay(h.log, 1)


@pytest.mark.parametrize(
    ("image", "policy", "expected"),
    [
        ("app:1", PullPolicy.IF_NOT_PRESENT, {"old", "holds", "pulls"}),  # pulls fetches what it lacks
        ("app:1", PullPolicy.ALWAYS, {"old", "holds", "pulls"}),
        ("app:1", PullPolicy.NEVER, {"old", "holds"}),  # only where it is
        ("sha256:" + "b" * 64, PullPolicy.IF_NOT_PRESENT, {"old"}),  # an image id names nothing to pull
    ],
)
def test_a_node_that_pulls_fits_a_pullable_image_it_lacks(image: str, policy: PullPolicy, expected: set[str]) -> None:
    state = state_of(
        node("old"),  # said nothing of its images
        msgspec.structs.replace(node("holds"), images=("app:1", "busybox:latest")),
        msgspec.structs.replace(node("pulls"), images=("busybox:latest",), pulls=True),
        msgspec.structs.replace(node("lacks"), images=("busybox:latest",)),  # neither holds nor pulls
    )
    snap = take_snapshot(state)
    req = request_of(cid(1), ls(image=image, image_pull_policy=policy))
    fits = {n.name: feasible(n, req) for n in snap.nodes.values()}
    assert {n for n, why in fits.items() if why is None} == expected
    assert {why for why in fits.values() if why is not None} == {"image not on node"}


def test_image_locality_breaks_near_ties_and_never_outweighs_spread() -> None:
    holds = msgspec.structs.replace(node("holds"), images=("app:1",), pulls=True)
    snap = take_snapshot(state_of(holds, msgspec.structs.replace(node("pulls"), images=(), pulls=True)))
    req = request_of(cid(1), ls(image="app:1"))
    result = place(snap, req, 1)
    assert isinstance(result, Placement) and result.node == "holds"
    assert "ImageLocality" in result.reason
    bonus = score(snap.nodes["holds"], req, Scoring.LEAST_ALLOCATED) - score(
        snap.nodes["pulls"], req, Scoring.LEAST_ALLOCATED
    )
    assert bonus == pytest.approx(IMAGE_LOCALITY)
    # A replica of its service already on the image's node: spread wins, and the other node pulls.
    on_holds = msgspec.structs.replace(snap.nodes["holds"], services={"svc": 1})
    replica = request_of(cid(2), ls(image="app:1"), service_id="svc")
    assert score(on_holds, replica, Scoring.LEAST_ALLOCATED) < score(
        snap.nodes["pulls"], replica, Scoring.LEAST_ALLOCATED
    )
    assert IMAGE_LOCALITY < SPREAD_PENALTY
