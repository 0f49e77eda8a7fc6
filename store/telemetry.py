"""The telemetry table: resource samples beside the event log, bounded, never in it.

Nodelets publish a sample of every running container each second (``corral.stats.<node>``); keeping them all
would be gigabytes a day, so the table keeps, per container and per node, the recent samples at full rate and
older ones downsampled (one per ``coarse_every`` samples), each ring bounded. What matters to state (throttling
transitions, exits) is in the event log as events; this is for graphs and ``corral stats``.
"""

from __future__ import annotations

from collections import deque

import msgspec

from wire.commands import ContainerSample, StatsSample


class Point(msgspec.Struct, frozen=True, gc=False):
    at_ns: int
    usage_ns: int
    nr_periods: int
    nr_throttled: int
    throttled_ns: int
    memory_bytes: int


class NodePoint(msgspec.Struct, frozen=True, gc=False):
    at_ns: int
    busy_ns: int
    total_ns: int


class _Ring:
    __slots__ = ("coarse", "fine", "seen")

    def __init__(self, fine: int, coarse: int) -> None:
        self.fine: deque[object] = deque(maxlen=fine)
        self.coarse: deque[object] = deque(maxlen=coarse)
        self.seen = 0


class TelemetryTable:
    def __init__(self, fine: int = 300, coarse: int = 720, coarse_every: int = 10, max_containers: int = 100_000):
        self.fine = fine
        self.coarse = coarse
        self.coarse_every = coarse_every
        self.max_containers = max_containers
        self._containers: dict[str, _Ring] = {}
        self._nodes: dict[str, _Ring] = {}

    def record(self, sample: StatsSample) -> None:
        self._put(self._nodes, sample.node, NodePoint(sample.at_ns, sample.node_cpu_busy_ns, sample.node_cpu_total_ns))
        for c in sample.containers:
            self._put(self._containers, c.container_id, _point(sample.at_ns, c))

    def _put(self, index: dict[str, _Ring], key: str, point: object) -> None:
        ring = index.get(key)
        if ring is None:
            if len(index) >= self.max_containers:
                index.pop(next(iter(index)))  # the oldest-seen key goes first
            ring = index[key] = _Ring(self.fine, self.coarse)
        ring.fine.append(point)
        if ring.seen % self.coarse_every == 0:
            ring.coarse.append(point)
        ring.seen += 1

    def container(self, container_id: str) -> tuple[list[Point], list[Point]]:
        """(recent samples at full rate, older ones downsampled), oldest first."""
        ring = self._containers.get(container_id)
        return ([], []) if ring is None else (list(ring.fine), list(ring.coarse))  # type: ignore[arg-type]

    def node(self, node: str) -> tuple[list[NodePoint], list[NodePoint]]:
        ring = self._nodes.get(node)
        return ([], []) if ring is None else (list(ring.fine), list(ring.coarse))  # type: ignore[arg-type]

    def forget(self, container_id: str) -> None:
        self._containers.pop(container_id, None)


def _point(at_ns: int, c: ContainerSample) -> Point:
    return Point(at_ns, c.usage_ns, c.nr_periods, c.nr_throttled, c.throttled_ns, c.memory_bytes)
