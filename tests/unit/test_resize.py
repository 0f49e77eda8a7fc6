"""In-place resize, the pure decision: table-driven over a node of 4 CPUs whose LS pool other containers share."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.plan import ResizeRefused, resize
from store.projections import ClusterState, apply_all
from tests.builders import cid, lsr, registered, scheduled, spec, submitted
from wire import events as ev
from wire.resources import Resources
from wire.spec import QoS


def cluster(*extra: ev.Event, web: dict[str, Any] | None = None) -> ClusterState:
    """n1 (4 CPUs) runs c1 (LS, 500m request, 1 CPU limit) and c2 (LS, 2 CPUs requested)."""
    c1 = spec("c1", **({"cpu_request_millis": 500, "cpu_limit_millis": 1000} | (web or {})))
    events: list[ev.Event] = [
        registered("n1", cpus=4),
        submitted(1, c1),
        scheduled(1, cpu=c1.cpu_request_millis),
        ev.ContainerStarted(container_id=cid(1), node="n1", pid=1, started_ns=1),
        submitted(2, spec("c2", cpu_request_millis=2000)),
        scheduled(2, cpu=2000),
        *extra,
    ]
    return apply_all(ClusterState(), enumerate(events, start=1))


def test_a_resize_within_the_pool_is_the_event() -> None:
    event = resize(cluster(), cid(1), 1500, 3000)
    assert event == ev.ContainerResized(
        container_id=cid(1),
        node="n1",
        cpu_request_millis=1500,
        cpu_limit_millis=3000,
        resources=Resources(1500, cluster().containers[cid(1)].resources.memory_bytes),
    )


def test_the_containers_own_request_does_not_count_against_it() -> None:
    """4 CPUs, 2 held by c2: c1 may grow from 0.5 to exactly the 2 left."""
    assert isinstance(resize(cluster(), cid(1), 2000, 2000), ev.ContainerResized)


@pytest.mark.parametrize(
    ("state", "container", "asked", "limit", "field", "conflict"),
    [
        pytest.param(cluster(), cid(1), 2001, 3000, "cpu_request_millis", True, id="does-not-fit"),
        pytest.param(cluster(), cid(9), 100, 1000, "container_id", False, id="unknown"),
        pytest.param(
            cluster(ev.ContainerStopped(container_id=cid(1), node="n1")), cid(1), 600, 1000, "state", True, id="ended"
        ),
        pytest.param(cluster(), cid(1), 600, None, "cpu_limit_millis", True, id="limit-removed"),
        pytest.param(cluster(), cid(2), 600, 1000, "cpu_limit_millis", True, id="limit-added"),
        pytest.param(cluster(), cid(1), 1500, 1000, "cpu_request_millis", False, id="request-above-limit"),
        pytest.param(cluster(), cid(2), 0, None, "cpu_request_millis", True, id="would-become-best-effort"),
        pytest.param(cluster(web={"qos": QoS.BE, "cpu_request_millis": 0}), cid(1), 100, 1000, "qos", True, id="BE"),
        pytest.param(
            cluster(ev.NodeLost(node="n1", epoch=1, last_seen_ns=0)), cid(1), 600, 1000, "node", True, id="lost"
        ),
    ],
)
def test_refused(
    state: ClusterState, container: str, asked: int, limit: int | None, field: str, conflict: bool
) -> None:
    refused = resize(state, container, asked, limit)
    assert isinstance(refused, ResizeRefused), refused
    assert (refused.field, refused.conflict) == (field, conflict), refused.reason


def test_exclusive_cpus_are_not_resized() -> None:
    events: list[ev.Event] = [
        registered("n1", cpus=4),
        submitted(3, lsr("db", cpus=2)),
        scheduled(3, cpuset=(0, 1), cpu=2000),
        ev.ContainerStarted(container_id=cid(3), node="n1", pid=1, started_ns=1),
    ]
    state = apply_all(ClusterState(), enumerate(events, start=1))
    refused = resize(state, cid(3), 3000, 3000)
    assert isinstance(refused, ResizeRefused) and refused.field == "qos"


def test_after_a_resize_the_pool_holds_the_new_request() -> None:
    state = cluster()
    event = resize(state, cid(1), 2000, 2000)
    assert isinstance(event, ev.ContainerResized)
    state = apply_all(state, [(state.position + 1, event)])
    assert state.nodes["n1"].allocated.cpu_millis == 4000
    assert isinstance(resize(state, cid(2), 2001, None), ResizeRefused)  # nothing left for c2 to grow into


def test_the_same_values_are_nothing_to_do() -> None:
    assert resize(cluster(), cid(1), 500, 1000) is None
