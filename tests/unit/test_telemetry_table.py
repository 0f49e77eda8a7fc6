from __future__ import annotations

from store.telemetry import NodePoint, Point, TelemetryTable
from wire.commands import ContainerSample, StatsSample


def sample(at: int, *cids: str) -> StatsSample:
    return StatsSample(
        node="n1",
        at_ns=at,
        node_cpu_busy_ns=at * 2,
        node_cpu_total_ns=at * 4,
        containers=tuple(ContainerSample(cid, at, at, 0, 0, 0, 0, 1 << 20) for cid in cids),
    )


def test_recent_at_full_rate_older_downsampled_and_bounded() -> None:
    table = TelemetryTable(fine=3, coarse=2, coarse_every=2)
    for at in range(1, 8):
        table.record(sample(at, "a"))
    fine, coarse = table.container("a")
    assert [p.at_ns for p in fine] == [5, 6, 7]
    assert [p.at_ns for p in coarse] == [5, 7]  # every 2nd of 1..7, the last 2 kept
    assert fine[-1] == Point(7, 7, 7, 0, 0, 1 << 20)
    assert table.node("n1")[0][-1] == NodePoint(7, 14, 28)
    assert table.container("nope") == ([], [])


def test_the_number_of_containers_is_bounded() -> None:
    table = TelemetryTable(max_containers=2)
    table.record(sample(1, "a", "b"))
    table.record(sample(2, "c"))
    assert table.container("a") == ([], [])  # the oldest-seen went first
    assert table.container("c")[0]
    table.forget("c")
    assert table.container("c") == ([], [])
