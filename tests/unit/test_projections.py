"""store.projections: the pure folds (evolve_node, evolve_container, evolve_service), apply/apply_all and
snapshots.

Every fold case is (starting view or None, event) → the whole expected view, built from the start with
``msgspec.structs.replace`` so that each case names exactly what the event changes.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from store.projections import (
    SNAPSHOT_SCHEMA,
    Allocation,
    ClusterState,
    ContainerState,
    ContainerView,
    NodeView,
    ServiceView,
    apply,
    apply_all,
    decode_snapshot,
    encode_snapshot,
    evolve_container,
    evolve_node,
    evolve_service,
)
from tests.builders import cid, lsr, registered, scheduled, spec, submitted
from wire import events as ev
from wire.burst import BurstConfig, BurstStrategy, NodeBurstStrategy
from wire.resources import Resources
from wire.spec import BurstPolicy, QoS, ServiceSpec

GI = 1 << 30
SUBMITTED_AT = 7  # the log position the submission folds at

# --- builders ------------------------------------------------------------------------------------------------


def node(name: str = "n1", epoch: int = 1, **kw: Any) -> NodeView:
    """The view ``registered(name, epoch=epoch)`` folds into, with ``kw`` on top."""
    e = registered(name, epoch=epoch)
    return NodeView(name=name, topology=e.topology, capacity=e.capacity, epoch=epoch, **kw)


def container(n: int = 1, **kw: Any) -> ContainerView:
    """The view ``submitted(n)`` folds into at SUBMITTED_AT, with ``kw`` on top."""
    kw.setdefault("submitted_position", SUBMITTED_AT)
    return ContainerView(id=cid(n), spec=spec(f"c{n}"), **kw)


def started(n: int = 1, pid: int = 42, at: int = 100) -> ev.ContainerStarted:
    return ev.ContainerStarted(container_id=cid(n), node="n1", pid=pid, started_ns=at)


def exited(n: int = 1, code: int | None = 1, at: int = 200, **kw: Any) -> ev.ContainerExited:
    return ev.ContainerExited(container_id=cid(n), node="n1", exit_code=code, exited_ns=at, **kw)


def stopped(n: int = 1, code: int | None = None, at: int = 0, node_name: str = "n1") -> ev.ContainerStopped:
    return ev.ContainerStopped(container_id=cid(n), node=node_name, exit_code=code, stopped_ns=at)


def stop(n: int = 1) -> ev.ContainerStopRequested:
    return ev.ContainerStopRequested(container_id=cid(n))


def lost(n: int = 1, node_name: str = "n1") -> ev.ContainerLost:
    return ev.ContainerLost(container_id=cid(n), node=node_name)


def unschedulable(n: int = 1, message: str = "0/3 nodes fit") -> ev.ContainerUnschedulable:
    return ev.ContainerUnschedulable(container_id=cid(n), nodes_total=3, reasons={"cpu": 3}, message=message)


def service_spec(name: str = "api", replicas: int = 3) -> ServiceSpec:
    return ServiceSpec(name=name, replicas=replicas, template=spec(name))


SVC = cid(100)


def created(replicas: int = 3, name: str = "api") -> ev.ServiceCreated:
    return ev.ServiceCreated(service_id=SVC, spec=service_spec(name, replicas))


# A container at each stage of its life, as the folds leave it.
PENDING = container()
SCHEDULED = replace(PENDING, state=ContainerState.SCHEDULED, node="n1", epoch=1, resources=Resources(500, 1 << 28))
RUNNING = replace(SCHEDULED, state=ContainerState.RUNNING, pid=42, started_ns=100)
STOPPING = replace(RUNNING, state=ContainerState.STOPPING, stop_requested=True)
EXITED = replace(RUNNING, state=ContainerState.EXITED, exit_code=1, finished_ns=200)
STOPPED = replace(RUNNING, state=ContainerState.STOPPED, exit_code=0, finished_ns=300)
LOST = replace(RUNNING, state=ContainerState.LOST)
UNSCHEDULABLE = replace(PENDING, state=ContainerState.UNSCHEDULABLE, unschedulable="0/3 nodes fit")
THROTTLED = replace(RUNNING, throttled=True, throttled_ratio=0.4)

LS_ALLOC = Allocation(QoS.LS, Resources(500, 1 << 28))  # what scheduled(1) holds
LSR_ALLOC = Allocation(QoS.LSR, Resources(2000, 1 << 28), (2, 3))  # what scheduled(2, cpuset=(2, 3)) holds


# --- containers ------------------------------------------------------------------------------------------------

CONTAINER_CASES = [
    # submission
    pytest.param(None, submitted(1), PENDING, id="submitted"),
    pytest.param(None, submitted(1, service=SVC), replace(PENDING, service_id=SVC), id="submitted-for-a-service"),
    pytest.param(RUNNING, submitted(1, s=lsr("other")), RUNNING, id="duplicate-submitted-keeps-the-first"),
    # placement
    pytest.param(PENDING, scheduled(1), SCHEDULED, id="pending-scheduled"),
    pytest.param(
        PENDING,
        ev.ContainerScheduled(
            container_id=cid(1),
            node="n2",
            epoch=4,
            qos=QoS.LSE,
            cpuset=(4, 5),
            numa_nodes=(1,),
            resources=Resources(2000, GI),
            score=0.5,
            reason="least allocated",
        ),
        replace(
            PENDING,
            state=ContainerState.SCHEDULED,
            node="n2",
            epoch=4,
            cpuset=(4, 5),
            numa_nodes=(1,),
            resources=Resources(2000, GI),
        ),
        id="scheduled-with-a-cpuset",
    ),
    pytest.param(PENDING, unschedulable(1), UNSCHEDULABLE, id="pending-unschedulable"),
    pytest.param(
        UNSCHEDULABLE,
        unschedulable(1, "0/4 nodes fit"),
        replace(UNSCHEDULABLE, unschedulable="0/4 nodes fit"),
        id="unschedulable-again-updates-the-message",
    ),
    pytest.param(UNSCHEDULABLE, scheduled(1), SCHEDULED, id="unschedulable-then-scheduled-clears-the-message"),
    # running and ending
    pytest.param(SCHEDULED, started(1), RUNNING, id="scheduled-started"),
    pytest.param(RUNNING, exited(1, code=1, at=200), EXITED, id="running-exited"),
    pytest.param(
        RUNNING,
        exited(1, code=137, at=250, signal=9, oom_killed=True),
        replace(RUNNING, state=ContainerState.EXITED, exit_code=137, signal=9, oom_killed=True, finished_ns=250),
        id="running-oom-killed",
    ),
    pytest.param(
        RUNNING,
        exited(1, code=None, at=250),
        replace(RUNNING, state=ContainerState.EXITED, finished_ns=250),
        id="running-exited-with-an-unknown-code",
    ),
    pytest.param(
        THROTTLED,
        exited(1, code=0, at=200),
        replace(THROTTLED, state=ContainerState.EXITED, exit_code=0, finished_ns=200, throttled=False),
        id="exited-clears-throttled",
    ),
    # stopping
    pytest.param(RUNNING, stop(1), STOPPING, id="running-stop-requested"),
    pytest.param(
        PENDING,
        stop(1),
        replace(PENDING, state=ContainerState.STOPPING, stop_requested=True),
        id="pending-stop-requested",
    ),
    pytest.param(STOPPING, stop(1), STOPPING, id="stop-requested-twice"),
    pytest.param(
        replace(PENDING, state=ContainerState.STOPPING, stop_requested=True),
        unschedulable(1),
        replace(PENDING, state=ContainerState.STOPPING, stop_requested=True, unschedulable="0/3 nodes fit"),
        id="unschedulable-after-a-stop-stays-stopping",
    ),
    pytest.param(
        replace(SCHEDULED, state=ContainerState.STOPPING, stop_requested=True),
        started(1),
        STOPPING,
        id="stop-requested-then-started-stays-stopping",
    ),
    pytest.param(
        STOPPING,
        exited(1, code=143, at=300, signal=15),
        replace(STOPPING, state=ContainerState.STOPPED, exit_code=143, signal=15, finished_ns=300),
        id="stop-requested-then-exited-is-stopped",
    ),
    pytest.param(RUNNING, stopped(1, code=0, at=300), STOPPED, id="running-stopped"),
    pytest.param(
        replace(STOPPING, exit_code=143, finished_ns=300),
        stopped(1, code=None, at=0),
        replace(STOPPING, state=ContainerState.STOPPED, exit_code=143, finished_ns=300),
        id="stopped-without-a-code-keeps-the-earlier-code-and-time",
    ),
    pytest.param(
        replace(STOPPING, exit_code=143, finished_ns=300),
        stopped(1, code=0, at=400),
        replace(STOPPING, state=ContainerState.STOPPED, exit_code=0, finished_ns=400),
        id="stopped-with-a-code-replaces-it",
    ),
    pytest.param(
        replace(THROTTLED, state=ContainerState.STOPPING),
        stopped(1, code=0, at=300),
        replace(THROTTLED, state=ContainerState.STOPPED, exit_code=0, finished_ns=300, throttled=False),
        id="stopped-clears-throttled",
    ),
    # lost
    pytest.param(RUNNING, lost(1), LOST, id="running-lost"),
    pytest.param(
        THROTTLED, lost(1), replace(THROTTLED, state=ContainerState.LOST, throttled=False), id="lost-clears-throttled"
    ),
    # terminal states ignore a late start and a stop request
    pytest.param(EXITED, started(1, pid=7, at=999), EXITED, id="exited-then-started-is-ignored"),
    pytest.param(STOPPED, started(1, pid=7, at=999), STOPPED, id="stopped-then-started-is-ignored"),
    pytest.param(LOST, started(1, pid=7, at=999), LOST, id="lost-then-started-is-ignored"),
    pytest.param(EXITED, stop(1), EXITED, id="exited-then-stop-requested-is-ignored"),
    pytest.param(
        replace(EXITED, backoff_until_ns=900),
        stop(1),
        replace(EXITED, stop_requested=True),
        id="stop-requested-in-restart-backoff-ends-the-backoff",
    ),
    pytest.param(LOST, stop(1), LOST, id="lost-then-stop-requested-is-ignored"),
    pytest.param(LOST, exited(1, code=137, at=400, signal=9), LOST, id="lost-then-exited-stays-lost"),
    pytest.param(LOST, stopped(1, code=137, at=400), LOST, id="lost-then-stopped-stays-lost"),
    pytest.param(EXITED, exited(1, code=0, at=500), EXITED, id="an-end-is-final"),
    pytest.param(STOPPED, ev.ContainerLost(container_id=cid(1), node="n1"), STOPPED, id="stopped-then-lost-stays"),
    # CPU
    pytest.param(
        RUNNING,
        ev.ContainerThrottled(container_id=cid(1), node="n1", throttled_ratio=0.4),
        THROTTLED,
        id="throttled",
    ),
    pytest.param(
        THROTTLED,
        ev.ContainerUnthrottled(container_id=cid(1), node="n1", throttled_ratio=0.01),
        replace(RUNNING, throttled_ratio=0.01),
        id="unthrottled",
    ),
    pytest.param(
        RUNNING,
        ev.CpuBurstSet(container_id=cid(1), node="n1", burst_us=50_000, reason="cpuBurstPercent 50"),
        replace(RUNNING, burst_us=50_000, burst_reason="cpuBurstPercent 50"),
        id="cpu-burst-set",
    ),
    pytest.param(
        RUNNING,
        ev.CfsQuotaScaled(container_id=cid(1), node="n1", from_us=100_000, to_us=150_000, reason="scale up"),
        replace(RUNNING, cfs_quota_us=150_000, quota_reason="scale up"),
        id="cfs-quota-scaled",
    ),
    # events that are not about containers leave a view as it is
    pytest.param(RUNNING, ev.NodeCordoned(node="n1"), RUNNING, id="node-event-changes-nothing"),
    pytest.param(RUNNING, created(), RUNNING, id="service-event-changes-nothing"),
]

# Every event about a container other than its submission changes nothing when the container is unknown.
UNKNOWN_CONTAINER_EVENTS = [
    scheduled(1),
    unschedulable(1),
    started(1),
    exited(1),
    stop(1),
    stopped(1, code=0),
    lost(1),
    ev.ContainerThrottled(container_id=cid(1), node="n1", throttled_ratio=0.4),
    ev.ContainerUnthrottled(container_id=cid(1), node="n1", throttled_ratio=0.0),
    ev.CpuBurstSet(container_id=cid(1), node="n1", burst_us=1),
    ev.CfsQuotaScaled(container_id=cid(1), node="n1", from_us=1, to_us=2),
]


@pytest.mark.parametrize(("start", "event", "expected"), CONTAINER_CASES)
def test_evolve_container(start: ContainerView | None, event: ev.Event, expected: ContainerView) -> None:
    assert evolve_container(start, event, SUBMITTED_AT) == expected


@pytest.mark.parametrize("event", UNKNOWN_CONTAINER_EVENTS, ids=lambda e: type(e).__name__)
def test_events_about_an_unknown_container_change_nothing(event: ev.Event) -> None:
    assert evolve_container(None, event, 3) is None


def fold(evolve: Any, events: list[ev.Event], start: Any = None) -> Any:
    return functools.reduce(lambda view, pe: evolve(view, pe[1], pe[0]), enumerate(events, start=1), start)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [submitted(1), scheduled(1), started(1), exited(1, code=1, at=200)],
            replace(EXITED, submitted_position=1),
            id="submitted-scheduled-started-exited",
        ),
        pytest.param(
            [submitted(1), scheduled(1), stop(1), started(1), exited(1, code=143, at=300, signal=15)],
            replace(
                RUNNING,
                state=ContainerState.STOPPED,
                exit_code=143,
                signal=15,
                finished_ns=300,
                submitted_position=1,
                stop_requested=True,
            ),
            id="stop-requested-before-it-started",
        ),
        pytest.param(
            [submitted(1), unschedulable(1), scheduled(1), started(1), lost(1), started(1, pid=9)],
            replace(LOST, submitted_position=1),
            id="unschedulable-scheduled-started-lost-late-start",
        ),
    ],
)
def test_container_lifecycles(events: list[ev.Event], expected: ContainerView) -> None:
    assert fold(evolve_container, events) == expected


# --- nodes -----------------------------------------------------------------------------------------------------

N1 = node()
N1_BUSY = node(allocations={cid(1): LS_ALLOC, cid(2): LSR_ALLOC})
RE_REGISTERED = ev.NodeRegistered(
    node="n1",
    topology=registered("n1", cpus=16).topology,
    capacity=Resources(16_000, 64 * GI),
    epoch=2,
    labels={"zone": "b"},
    cpu_map={0: 0, 1: 0},
)

NODE_CASES = [
    pytest.param(None, registered("n1"), N1, id="registered"),
    pytest.param(
        None,
        RE_REGISTERED,
        NodeView(
            name="n1",
            topology=RE_REGISTERED.topology,
            capacity=Resources(16_000, 64 * GI),
            epoch=2,
            labels={"zone": "b"},
            cpu_map={0: 0, 1: 0},
        ),
        id="registered-with-labels-and-cpu-map",
    ),
    pytest.param(
        node(labels={"zone": "a"}, cordoned=True, drained=True, allocations={cid(1): LS_ALLOC}),
        RE_REGISTERED,
        NodeView(
            name="n1",
            topology=RE_REGISTERED.topology,
            capacity=Resources(16_000, 64 * GI),
            epoch=2,
            labels={"zone": "b"},
            cpu_map={0: 0, 1: 0},
            cordoned=True,
            drained=True,
            allocations={cid(1): LS_ALLOC},
        ),
        id="re-registered-keeps-allocations-and-cordon",
    ),
    pytest.param(node(lost=True), registered("n1", epoch=2), node(epoch=2), id="re-registered-after-lost"),
    pytest.param(N1, ev.NodeLost(node="n1", epoch=1), node(lost=True), id="lost"),
    pytest.param(N1, ev.NodeLost(node="n1", epoch=0), N1, id="lost-at-an-older-epoch-changes-nothing"),
    pytest.param(node(lost=True), ev.NodeRecovered(node="n1", epoch=3), node(epoch=3), id="recovered"),
    pytest.param(N1, ev.NodeCordoned(node="n1", reason="upgrade"), node(cordoned=True), id="cordoned"),
    pytest.param(node(cordoned=True), ev.NodeUncordoned(node="n1"), N1, id="uncordoned"),
    pytest.param(N1, ev.NodeDrained(node="n1"), node(cordoned=True, drained=True), id="drained"),
    pytest.param(node(cordoned=True, drained=True), ev.NodeUncordoned(node="n1"), N1, id="uncordoned-after-drain"),
    pytest.param(N1, scheduled(1), node(allocations={cid(1): LS_ALLOC}), id="scheduled-adds-an-allocation"),
    pytest.param(
        node(allocations={cid(1): LS_ALLOC}),
        scheduled(2, cpuset=(2, 3)),
        N1_BUSY,
        id="scheduled-keeps-the-other-allocations",
    ),
    pytest.param(
        N1,
        ev.ContainerScheduled(
            container_id=cid(3),
            node="n1",
            epoch=1,
            qos=QoS.LSE,
            cpuset=(4,),
            numa_nodes=(0,),
            resources=Resources(1000, GI),
        ),
        node(allocations={cid(3): Allocation(QoS.LSE, Resources(1000, GI), (4,), (0,))}),
        id="scheduled-records-numa-nodes",
    ),
    pytest.param(N1_BUSY, exited(1), node(allocations={cid(2): LSR_ALLOC}), id="exited-releases"),
    pytest.param(N1_BUSY, stopped(2), node(allocations={cid(1): LS_ALLOC}), id="stopped-releases"),
    pytest.param(N1_BUSY, lost(1), node(allocations={cid(2): LSR_ALLOC}), id="lost-releases"),
    pytest.param(N1_BUSY, exited(9), N1_BUSY, id="exited-of-a-container-it-does-not-hold"),
    pytest.param(N1_BUSY, started(1), N1_BUSY, id="started-changes-nothing"),
    pytest.param(N1_BUSY, submitted(5), N1_BUSY, id="submitted-changes-nothing"),
]

UNKNOWN_NODE_EVENTS = [
    ev.NodeLost(node="n1", epoch=1),
    ev.NodeRecovered(node="n1", epoch=2),
    ev.NodeCordoned(node="n1"),
    ev.NodeUncordoned(node="n1"),
    ev.NodeDrained(node="n1"),
    scheduled(1),
    exited(1),
    stopped(1),
    lost(1),
]


@pytest.mark.parametrize(("start", "event", "expected"), NODE_CASES)
def test_evolve_node(start: NodeView | None, event: ev.Event, expected: NodeView) -> None:
    assert evolve_node(start, event) == expected


@pytest.mark.parametrize("event", UNKNOWN_NODE_EVENTS, ids=lambda e: type(e).__name__)
def test_events_about_an_unknown_node_change_nothing(event: ev.Event) -> None:
    assert evolve_node(None, event) is None


def test_releasing_a_container_the_node_does_not_hold_returns_the_same_view() -> None:
    assert evolve_node(N1_BUSY, exited(9)) is N1_BUSY


@pytest.mark.parametrize(
    ("allocations", "allocated", "exclusive"),
    [
        pytest.param({}, Resources(), {}, id="empty"),
        pytest.param({cid(1): LS_ALLOC}, Resources(500, 1 << 28), {}, id="shared-pool-only"),
        pytest.param(
            {cid(1): LS_ALLOC, cid(2): LSR_ALLOC},
            Resources(2500, 2 << 28),
            {2: cid(2), 3: cid(2)},
            id="shared-and-exclusive",
        ),
        pytest.param(
            {cid(2): LSR_ALLOC, cid(3): Allocation(QoS.LSE, Resources(1000, GI), (0,), (0,))},
            Resources(3000, GI + (1 << 28)),
            {2: cid(2), 3: cid(2), 0: cid(3)},
            id="two-exclusive",
        ),
    ],
)
def test_node_allocated_and_exclusive_cpus(
    allocations: dict[str, Allocation], allocated: Resources, exclusive: dict[int, str]
) -> None:
    view = node(allocations=allocations)
    assert view.allocated == allocated
    assert view.exclusive_cpus == exclusive


# --- services --------------------------------------------------------------------------------------------------

API = ServiceView(SVC, service_spec("api", 3), 3)

SERVICE_CASES = [
    pytest.param(None, created(3), API, id="created"),
    pytest.param(None, created(0), ServiceView(SVC, service_spec("api", 0), 0), id="created-with-no-replicas"),
    pytest.param(API, created(5, name="other"), API, id="duplicate-created-keeps-the-first"),
    pytest.param(
        API, ev.ServiceScaled(service_id=SVC, replicas_from=3, replicas_to=5), replace(API, replicas=5), id="scaled"
    ),
    pytest.param(
        replace(API, replicas=5),
        ev.ServiceScaled(service_id=SVC, replicas_from=5, replicas_to=0),
        replace(API, replicas=0),
        id="scaled-to-zero",
    ),
    pytest.param(None, ev.ServiceScaled(service_id=SVC, replicas_from=0, replicas_to=5), None, id="scaled-unknown"),
    pytest.param(API, ev.ServiceDeleted(service_id=SVC), None, id="deleted"),
    pytest.param(None, ev.ServiceDeleted(service_id=SVC), None, id="deleted-unknown"),
    pytest.param(API, submitted(1, service=SVC), API, id="container-event-changes-nothing"),
]


@pytest.mark.parametrize(("start", "event", "expected"), SERVICE_CASES)
def test_evolve_service(start: ServiceView | None, event: ev.Event, expected: ServiceView | None) -> None:
    assert evolve_service(start, event) == expected


# --- apply and apply_all ---------------------------------------------------------------------------------------


def cluster(position: int = 0, **kw: Any) -> ClusterState:
    """A fresh ClusterState (fresh dicts each call, so expected and actual never share one)."""
    return ClusterState(
        position=position,
        nodes=dict(kw.get("nodes", {})),
        containers=dict(kw.get("containers", {})),
        services=dict(kw.get("services", {})),
        versions=dict(kw.get("versions", {})),
    )


def at_checkpoint_5() -> ClusterState:
    return cluster(5, nodes={"n1": N1}, containers={cid(1): PENDING})


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        pytest.param(4, at_checkpoint_5(), id="before-the-checkpoint"),
        pytest.param(5, at_checkpoint_5(), id="at-the-checkpoint"),
        pytest.param(
            6,
            cluster(6, nodes={"n1": node(cordoned=True)}, containers={cid(1): PENDING}, versions={"node/n1": 0}),
            id="after-the-checkpoint",
        ),
        pytest.param(
            60,
            cluster(60, nodes={"n1": node(cordoned=True)}, containers={cid(1): PENDING}, versions={"node/n1": 0}),
            id="with-a-gap",
        ),
    ],
)
def test_apply_skips_positions_at_or_before_the_checkpoint(position: int, expected: ClusterState) -> None:
    state = at_checkpoint_5()
    apply(state, position, ev.NodeCordoned(node="n1"))
    assert state == expected


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([(3, ev.NodeCordoned(node="n1"))], at_checkpoint_5(), id="all-before"),
        pytest.param(
            [(5, ev.NodeCordoned(node="n1")), (6, ev.NodeDrained(node="n1")), (6, ev.NodeUncordoned(node="n1"))],
            cluster(
                6,
                nodes={"n1": node(cordoned=True, drained=True)},
                containers={cid(1): PENDING},
                versions={"node/n1": 0},
            ),
            id="skips-the-checkpoint-and-a-repeat",
        ),
        pytest.param(
            [(6, scheduled(1)), (7, started(1))],
            cluster(
                7,
                nodes={"n1": node(allocations={cid(1): LS_ALLOC})},
                containers={cid(1): RUNNING},
                versions={f"container/{cid(1)}": 1},
            ),
            id="scheduled-reaches-node-and-container",
        ),
    ],
)
def test_apply_all_folds_after_the_checkpoint(events: list[tuple[int, ev.Event]], expected: ClusterState) -> None:
    state = at_checkpoint_5()
    assert apply_all(state, events) is state
    assert state == expected


SCENARIO: list[ev.Event] = [
    registered("n1"),  # 1
    registered("n2"),  # 2
    created(2),  # 3
    submitted(1, service=SVC),  # 4
    submitted(2, s=lsr("db")),  # 5
    scheduled(1, node="n1"),  # 6
    scheduled(2, node="n2", cpuset=(2, 3)),  # 7
    started(1),  # 8
    ev.NodeCordoned(node="n2"),  # 9
    lost(2, node_name="n2"),  # 10
    ev.ServiceScaled(service_id=SVC, replicas_from=2, replicas_to=4),  # 11
    stopped(9),  # 12: an unknown container on a known node
    ev.NodeLost(node="n9", epoch=1),  # 13: an unknown node
    submitted(3),  # 14
    ev.ServiceDeleted(service_id=cid(101)),  # 15: an unknown service
]

SCENARIO_STATE = ClusterState(
    position=15,
    nodes={
        "n1": node("n1", allocations={cid(1): LS_ALLOC}),
        "n2": node("n2", cordoned=True),
    },
    containers={
        cid(1): replace(RUNNING, service_id=SVC, submitted_position=4),
        cid(2): ContainerView(
            id=cid(2),
            spec=lsr("db"),
            state=ContainerState.LOST,
            submitted_position=5,
            node="n2",
            epoch=1,
            cpuset=(2, 3),
            resources=Resources(2000, 1 << 28),
        ),
        cid(3): container(3, submitted_position=14),
    },
    services={SVC: replace(ServiceView(SVC, service_spec("api", 2), 2), replicas=4)},
    # Each stream's version, as the log numbers it: events about unknown entities are in their streams too.
    versions={
        "node/n1": 0,
        "node/n2": 1,
        f"service/{SVC}": 1,
        f"container/{cid(1)}": 2,
        f"container/{cid(2)}": 2,
        f"container/{cid(9)}": 0,
        "node/n9": 0,
        f"container/{cid(3)}": 0,
        f"service/{cid(101)}": 0,
    },
)


def test_apply_all_folds_a_scenario_into_the_whole_expected_state() -> None:
    assert apply_all(ClusterState(), enumerate(SCENARIO, start=1)) == SCENARIO_STATE


def test_apply_one_by_one_equals_apply_all() -> None:
    state = ClusterState()
    for position, event in enumerate(SCENARIO, start=1):
        apply(state, position, event)
    assert state == SCENARIO_STATE


def test_deleting_a_service_removes_its_key() -> None:
    state = cluster(1, services={SVC: API})
    apply(state, 2, ev.ServiceDeleted(service_id=SVC))
    assert state == cluster(2, versions={f"service/{SVC}": 0})


# --- snapshots -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(ClusterState(), id="empty"),
        pytest.param(SCENARIO_STATE, id="scenario"),
        pytest.param(
            cluster(
                3,
                nodes={
                    "n1": NodeView(
                        name="n1",
                        topology=RE_REGISTERED.topology,
                        capacity=RE_REGISTERED.capacity,
                        epoch=2,
                        labels={"zone": "b"},
                        cpu_map={0: 0, 1: 0},
                        lost=True,
                    )
                },
                containers={cid(1): replace(THROTTLED, burst_us=1, cfs_quota_us=2, quota_reason="scale up")},
                burst=BurstConfig(
                    cluster=BurstStrategy(policy=BurstPolicy.AUTO),
                    nodes=(NodeBurstStrategy(selector={"zone": "b"}, strategy=BurstStrategy(cpu_burst_percent=80)),),
                ),
            ),
            id="every-field-set",
        ),
    ],
)
def test_snapshot_round_trips(state: ClusterState) -> None:
    assert decode_snapshot(encode_snapshot(state)) == state


def test_snapshot_is_the_schema_and_the_state() -> None:
    assert decode_snapshot(msgspec.msgpack.encode((SNAPSHOT_SCHEMA, SCENARIO_STATE))) == SCENARIO_STATE


def test_a_snapshot_of_another_schema_decodes_to_none() -> None:
    assert decode_snapshot(msgspec.msgpack.encode((999, SCENARIO_STATE))) is None
    assert decode_snapshot(msgspec.msgpack.encode((SNAPSHOT_SCHEMA + 1, "a state we cannot read"))) is None


# --- in-place resize -----------------------------------------------------------------------------------------------


def resized(n: int = 1, request: int = 800, limit: int | None = 1600, node_name: str = "n1") -> ev.ContainerResized:
    return ev.ContainerResized(
        container_id=cid(n),
        node=node_name,
        cpu_request_millis=request,
        cpu_limit_millis=limit,
        resources=Resources(request, 1 << 28),
    )


def placed_state(c: ContainerView) -> ClusterState:
    alloc = Allocation(QoS.LS, c.resources)
    held = {cid(1): alloc} if not c.state.terminal else {}
    return ClusterState(position=10, nodes={"n1": node(allocations=held)}, containers={cid(1): c})


@pytest.mark.parametrize("start", [SCHEDULED, RUNNING, STOPPING], ids=["scheduled", "running", "stopping"])
def test_a_resize_changes_the_spec_and_what_the_node_holds(start: ContainerView) -> None:
    state = placed_state(start)
    apply(state, 11, resized())
    c = state.containers[cid(1)]
    assert (c.spec.cpu_request_millis, c.spec.cpu_limit_millis, c.resources) == (800, 1600, Resources(800, 1 << 28))
    assert state.nodes["n1"].allocations[cid(1)].resources == Resources(800, 1 << 28)
    assert state.nodes["n1"].allocated == Resources(800, 1 << 28)


@pytest.mark.parametrize(
    ("start", "event"),
    [
        pytest.param(EXITED, resized(), id="ended"),
        pytest.param(RUNNING, resized(node_name="n2"), id="another-node"),
        pytest.param(PENDING, resized(), id="not-placed"),
    ],
)
def test_a_resize_that_no_longer_applies_changes_nothing(start: ContainerView, event: ev.ContainerResized) -> None:
    state = placed_state(start)
    before = (state.containers[cid(1)], state.nodes["n1"])
    apply(state, 11, event)
    assert (state.containers[cid(1)], state.nodes["n1"]) == before
    assert state.versions == {f"container/{cid(1)}": 0}  # still an event of the container's stream


def _fold(*events: ev.Event) -> ContainerView | None:
    view = None
    for i, e in enumerate(events, 1):
        view = evolve_container(view, e, i)
    return view


def test_a_waiting_reason_shows_while_placed_and_clears_when_it_moves_on() -> None:
    pull = ev.WaitReason.ERR_IMAGE_PULL
    waiting = ev.ContainerWaiting(container_id=cid(1), node="n1", reason=pull, message="image pull failed: x")
    view = _fold(submitted(1), scheduled(1), waiting)
    assert view is not None and (view.wait_reason, view.wait_message) == ("ErrImagePull", "image pull failed: x")
    started = ev.ContainerStarted(container_id=cid(1), node="n1", pid=9, started_ns=1)
    assert _fold(submitted(1), scheduled(1), waiting, started).wait_reason == ""  # type: ignore[union-attr]
    exited = ev.ContainerExited(container_id=cid(1), node="n1", exit_code=None, exited_ns=1, message="m")
    assert _fold(submitted(1), scheduled(1), waiting, exited).wait_reason == ""  # type: ignore[union-attr]
    # From another node, or once it runs, a waiting report changes nothing.
    other = msgspec.structs.replace(waiting, node="n2")
    assert _fold(submitted(1), scheduled(1), other).wait_reason == ""  # type: ignore[union-attr]
    assert _fold(submitted(1), scheduled(1), started, waiting).wait_reason == ""  # type: ignore[union-attr]
    assert _fold(submitted(1), waiting).wait_reason == ""  # type: ignore[union-attr]  # not placed yet
