"""The chaos runner's judge: what ground truth (runc, cgroups) and the API's view say together."""

from __future__ import annotations

from typing import Any

import pytest

from api.chaos import Observation, Verdict, judge, percentile

SVC = "00000000000000aa"


def c(cid: str, state: str, node: str | None = "n1", service: str | None = None) -> dict[str, Any]:
    return {"id": cid, "state": state, "node": node, "service_id": service}


def obs(
    containers: list[dict[str, Any]],
    running: dict[str, set[str]] | None = None,
    replicas: int = 0,
    cpusets: dict[str, dict[str, set[int]]] | None = None,
    accepted: set[str] | None = None,
    removed: set[str] | None = None,
    lost_nodes: set[str] | None = None,
) -> Observation:
    return Observation(
        containers={x["id"]: x for x in containers},
        replicas={SVC: replicas} if replicas else {},
        running={n: frozenset(ids) for n, ids in (running or {"n1": set(), "n2": set()}).items()},
        cpusets={n: {k: frozenset(v) for k, v in sets.items()} for n, sets in (cpusets or {}).items()},
        accepted=frozenset(accepted or set()),
        removed=frozenset(removed or set()),
        lost_nodes=frozenset(lost_nodes or set()),
    )


CASES = [
    pytest.param(obs([]), Verdict(), id="empty"),
    pytest.param(
        obs([c("a", "running"), c("b", "exited")], {"n1": {"a"}, "n2": set()}, accepted={"a", "b"}),
        Verdict(),
        id="agrees",
    ),
    pytest.param(obs([c("a", "running")], accepted={"a", "z"}), None, id="an-accepted-submission-missing"),
    pytest.param(obs([c("a", "exited")], accepted={"a", "z"}, removed={"z"}), Verdict(), id="removed-is-not-lost"),
    pytest.param(obs([c("a", "running")], {"n1": {"a"}, "n2": {"a"}}), None, id="one-container-on-two-nodes"),
    pytest.param(
        obs(
            [c("a", "running", "n1", SVC), c("b", "lost", "n2", SVC), c("d", "running", "n1", SVC)],
            {"n1": {"a", "d"}, "n2": {"b"}},
            replicas=2,
        ),
        None,
        id="three-replicas-run-for-two",
    ),
    pytest.param(obs([c("a", "running", "n1", SVC)], {"n1": {"a"}}, replicas=2), None, id="a-replica-short"),
    pytest.param(obs([c("a", "running")], {"n1": set()}), None, id="running-for-the-api-not-for-runc"),
    pytest.param(obs([c("a", "lost")], {"n1": {"a"}}), None, id="ended-for-the-api-running-for-runc"),
    pytest.param(obs([c("a", "scheduled")]), None, id="still-scheduled"),
    pytest.param(obs([c("a", "pending", None)]), None, id="still-pending"),
    pytest.param(obs([c("a", "unschedulable", None)]), Verdict(), id="unschedulable-may-stay"),
    pytest.param(obs([], {"n1": {"x"}}), None, id="an-orphan-unknown-to-the-api"),
    pytest.param(obs([], lost_nodes={"n2"}), None, id="a-node-that-stays-lost"),
    pytest.param(
        obs([c("a", "running"), c("b", "running")], {"n1": {"a", "b"}}, cpusets={"n1": {"a": {1}, "b": {1, 2}}}),
        None,
        id="exclusive-cpusets-overlap",
    ),
    pytest.param(
        obs([c("a", "running"), c("b", "running")], {"n1": {"a", "b"}}, cpusets={"n1": {"a": {1}, "b": {2}}}),
        Verdict(),
        id="exclusive-cpusets-apart",
    ),
]


@pytest.mark.parametrize(("observation", "expected"), CASES)
def test_judge(observation: Observation, expected: Verdict | None) -> None:
    verdict = judge(observation)
    if expected is None:
        assert not verdict.converged, verdict
    else:
        assert verdict == expected


def test_each_kind_is_counted_where_it_belongs() -> None:
    assert judge(obs([], accepted={"z"})).lost == ["z"]
    assert len(judge(obs([c("a", "running")], {"n1": {"a"}, "n2": {"a"}})).doubled) == 1
    assert len(judge(obs([c("a", "scheduled")])).stuck) == 1
    assert judge(obs([], lost_nodes={"n2"})).stuck == ["node n2 is still lost"]
    overlap = obs([c("a", "running"), c("b", "running")], {"n1": {"a", "b"}}, cpusets={"n1": {"a": {3}, "b": {3}}})
    assert judge(overlap).overlaps == ["n1: a and b share CPUs [3]"]


def test_percentile() -> None:
    assert percentile([], 0.99) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(100)], 0.99) == 99.0
