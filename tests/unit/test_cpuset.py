"""scheduler.cpuset: the exact CPUs of an exclusive container on one node.

Hand-worked cases use two topologies written as Linux numbers them:

- ``T64`` = ``Topology.uniform(2, 2, 8, 2)``: NUMA node n holds cores 8n..8n+7, socket s holds NUMA nodes 2s and
  2s+1, and the siblings of core c are CPUs c and c+32.
- ``T8`` = ``Topology.uniform(1, 2, 2, 2)``: NUMA 0 holds cores 0 and 1, NUMA 1 cores 2 and 3; siblings c, c+4.

Expected cpusets are written in cpulist notation ("0-3,32-35").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.cpuset import (
    FULL_PCPUS_ONLY,
    INSUFFICIENT_CPU,
    RESTRICTED,
    SINGLE_NUMA_NODE,
    NoFit,
    NumaStrategy,
    Pick,
    TopologyIndex,
    numa_fit,
    pick_cpus,
    pick_cpus_explained,
)
from wire.spec import CpuBindPolicy, NumaPolicy
from wire.topology import Core, NumaNode, Socket, Topology

T64 = Topology.uniform(2, 2, 8, 2)
T8 = Topology.uniform(1, 2, 2, 2)

MOST = NumaStrategy.MOST_ALLOCATED
LEAST = NumaStrategy.LEAST_ALLOCATED
FULL = CpuBindPolicy.FULL_PCPUS
SPREAD = CpuBindPolicy.SPREAD_BY_PCPUS

# --- builders -------------------------------------------------------------------------------------------------


def cpulist(text: str) -> tuple[int, ...]:
    """Linux cpulist notation: "0-3,8" → (0, 1, 2, 3, 8)."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(out))


def pick(cpus: str, *numa_nodes: int) -> Pick:
    return Pick(cpus=cpulist(cpus), numa_nodes=numa_nodes)


def cores(*ids: int, topology: Topology = T64) -> str:
    """The CPUs of whole cores, in cpulist notation."""
    index = TopologyIndex.of(topology)
    return ",".join(str(c) for i in ids for c in index.cpus_of_core[i])


@dataclass(frozen=True)
class Node:
    """A node and the CPUs other containers hold on it."""

    topology: Topology = T64
    held: frozenset[int] = frozenset()

    def holding(self, cpus: str) -> Node:
        return Node(self.topology, self.held | frozenset(cpulist(cpus)))

    def free_only(self, cpus: str) -> Node:
        return Node(self.topology, TopologyIndex.of(self.topology).cpus - frozenset(cpulist(cpus)))

    @property
    def index(self) -> TopologyIndex:
        return TopologyIndex.of(self.topology)

    @property
    def free(self) -> frozenset[int]:
        return self.index.cpus - self.held

    def pick(self, count: int, **kw: Any) -> Pick | NoFit:
        return pick_cpus(self.index, self.free, count, **kw)


def node(topology: Topology = T64) -> Node:
    return Node(topology)


# NUMA 0 with its first four cores held: NUMA 0 has 8 free CPUs, the others 16; socket 0 has 24, socket 1 has 32.
QUARTER_HELD = node().holding(cores(0, 1, 2, 3))
# NUMA 0: three whole cores; NUMA 1: two whole cores and two lone threads (2, 3). Nothing else free.
FRAGMENTED = node().free_only("0-3,32-33,8-9,40-41")
# Four whole free cores in every NUMA node: 8 free CPUs each.
FOUR_CORES_EACH = node().free_only(cores(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27))
# Free CPUs per NUMA node 10 / 9 / 9 / 9: no two NUMA nodes hold 20.
TEN_NINE_NINE_NINE = node().free_only("0-4,32-36,8-12,40-43,16-20,48-51,24-28,56-59")
# Free CPUs per NUMA node 12 / 6 / 12 / 2: only NUMA nodes 0 and 2 together hold 20.
TWELVE_SIX_TWELVE_TWO = node().free_only(cores(0, 1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 18, 19, 20, 21, 24))


# --- hand-worked cases ----------------------------------------------------------------------------------------

CASES = [
    # Empty node, FullPCPUs: both strategies agree when every NUMA node is equally free (ties break by id).
    *[
        pytest.param(node(), n, {"strategy": s}, pick(cpus, *numas), id=f"empty-full-{n}-{s}")
        for s in (MOST, LEAST)
        for n, cpus, numas in [
            (2, "0,32", (0,)),
            (4, "0-1,32-33", (0,)),
            (16, "0-7,32-39", (0,)),
            # 17 > one NUMA node: socket 0, whole NUMA 0, then the odd CPU from NUMA 1's first core.
            (17, "0-8,32-39", (0, 1)),
            # 40 > one socket: all of socket 0 (32), then whole cores 16..19 of socket 1.
            (40, "0-19,32-51", (0, 1, 2)),
        ]
    ],
    pytest.param(node(), 2, {"bind": CpuBindPolicy.DEFAULT}, pick("0,32", 0), id="default-is-full-pcpus"),
    # MostAllocated packs into the fullest NUMA node; LeastAllocated goes to the emptiest NUMA node, and among
    # equally empty ones to the emptier socket (socket 1 has 32 free, socket 0 has 24).
    pytest.param(QUARTER_HELD, 4, {"strategy": MOST}, pick("4-5,36-37", 0), id="partial-most-packs"),
    pytest.param(QUARTER_HELD, 4, {"strategy": LEAST}, pick("16-17,48-49", 2), id="partial-least-spreads"),
    # Odd count: whole cores for the even part, then one CPU from the core with the fewest free CPUs.
    pytest.param(node().holding("0"), 3, {"strategy": MOST}, pick("1,32-33", 0), id="odd-fills-half-used-core"),
    pytest.param(node().holding("0"), 3, {"strategy": LEAST}, pick("16-17,48", 2), id="odd-breaks-a-core-if-none"),
    pytest.param(node(T8), 3, {}, pick("0-1,4", 0), id="t8-odd"),
    pytest.param(node(T8).holding("0"), 2, {"strategy": MOST}, pick("1,5", 0), id="t8-most"),
    pytest.param(node(T8).holding("0"), 2, {"strategy": LEAST}, pick("2,6", 1), id="t8-least"),
    # SpreadByPCPUs: one CPU per core, from a NUMA node, else a socket, with that many free cores; only then
    # second threads, in one NUMA node, else one socket.
    pytest.param(node(), 4, {"bind": SPREAD}, pick("0-3", 0), id="spread-4"),
    pytest.param(node(), 10, {"bind": SPREAD}, pick("0-9", 0, 1), id="spread-10-cores-of-the-socket-not-siblings"),
    pytest.param(node(), 20, {"bind": SPREAD}, pick("0-15,32-35", 0, 1), id="spread-20-one-socket"),
    pytest.param(QUARTER_HELD, 4, {"bind": SPREAD}, pick("4-7", 0), id="spread-packs-most-allocated"),
    pytest.param(QUARTER_HELD, 6, {"bind": SPREAD}, pick("8-13", 1), id="spread-a-node-with-six-free-cores"),
    pytest.param(node(T8), 2, {"bind": SPREAD}, pick("0-1", 0), id="t8-spread"),
    # Whole cores across NUMA nodes (None) versus one NUMA node with two lone threads (any NUMA policy).
    pytest.param(FRAGMENTED, 6, {}, pick("0,8-9,32,40-41", 0, 1), id="none-prefers-whole-cores"),
    *[
        pytest.param(FRAGMENTED, 6, {"numa_policy": p}, pick("0-3,32-33", 0), id=f"{p}-keeps-one-numa-node")
        for p in (NumaPolicy.BEST_EFFORT, NumaPolicy.RESTRICTED, NumaPolicy.SINGLE_NUMA_NODE)
    ],
    # No NUMA node has 10 free CPUs.
    pytest.param(FOUR_CORES_EACH, 10, {}, pick("0-3,8,32-35,40", 0, 1), id="none-spans-numa"),
    pytest.param(
        FOUR_CORES_EACH,
        10,
        {"numa_policy": NumaPolicy.BEST_EFFORT},
        pick("0-3,8,32-35,40", 0, 1),
        id="besteffort-admits",
    ),
    pytest.param(FOUR_CORES_EACH, 10, {"numa_policy": NumaPolicy.RESTRICTED}, NoFit(RESTRICTED), id="restricted-1"),
    pytest.param(
        FOUR_CORES_EACH, 10, {"numa_policy": NumaPolicy.SINGLE_NUMA_NODE}, NoFit(SINGLE_NUMA_NODE), id="single-nofit"
    ),
    pytest.param(
        node(), 17, {"numa_policy": NumaPolicy.SINGLE_NUMA_NODE}, NoFit(SINGLE_NUMA_NODE), id="single-too-big"
    ),
    pytest.param(
        node(), 16, {"numa_policy": NumaPolicy.SINGLE_NUMA_NODE}, pick("0-7,32-39", 0), id="single-whole-numa"
    ),
    # 20 CPUs need two NUMA nodes (16 each): Restricted admits only if some two hold 20 free CPUs.
    pytest.param(TEN_NINE_NINE_NINE, 20, {"numa_policy": NumaPolicy.RESTRICTED}, NoFit(RESTRICTED), id="restricted-2"),
    pytest.param(
        TEN_NINE_NINE_NINE,
        20,
        {"numa_policy": NumaPolicy.BEST_EFFORT},
        pick("0-4,8-11,16,32-36,40-43,48", 0, 1, 2),
        id="besteffort-falls-back",
    ),
    pytest.param(
        TWELVE_SIX_TWELVE_TWO,
        20,
        {"numa_policy": NumaPolicy.RESTRICTED},
        pick("0-5,16-19,32-37,48-51", 0, 2),
        id="restricted-two-numa-nodes-across-sockets",
    ),
    pytest.param(TWELVE_SIX_TWELVE_TWO, 20, {}, pick("0-5,8-10,24,32-37,40-42,56", 0, 1, 3), id="none-three-numa"),
    # Too full.
    pytest.param(node().free_only("0-3"), 5, {}, NoFit(INSUFFICIENT_CPU), id="insufficient"),
    pytest.param(node(T8), 9, {"numa_policy": NumaPolicy.SINGLE_NUMA_NODE}, NoFit(INSUFFICIENT_CPU), id="t8-too-big"),
    # Twelve one-CPU NUMA nodes: 6 CPUs need 6 nodes; too many sets to enumerate, so the 6 with most free.
    pytest.param(
        node(Topology.uniform(1, 12, 1, 1)).holding("2"),
        6,
        {"numa_policy": NumaPolicy.RESTRICTED},
        pick("0-1,3-6", 0, 1, 3, 4, 5, 6),
        id="restricted-many-numa-nodes",
    ),
]


@pytest.mark.parametrize(("at", "count", "kw", "expected"), CASES)
def test_pick_cpus(at: Node, count: int, kw: dict[str, Any], expected: Pick | NoFit) -> None:
    assert at.pick(count, **kw) == expected


@pytest.mark.parametrize("policy", list(NumaPolicy))
@pytest.mark.parametrize(("at", "count", "kw", "expected"), CASES)
def test_numa_fit_agrees_with_every_case(
    at: Node, count: int, kw: dict[str, Any], expected: Pick | NoFit, policy: NumaPolicy
) -> None:
    kw = {**kw, "numa_policy": policy}
    assert numa_fit(at.index, at.free, count, policy) == isinstance(at.pick(count, **kw), Pick)


def test_cpus_outside_the_topology_are_ignored() -> None:
    index = TopologyIndex.of(T8)
    assert pick_cpus(index, frozenset({2, 6, 100, 101}), 2) == pick("2,6", 1)
    assert pick_cpus(index, frozenset({2, 100, 101}), 2) == NoFit(INSUFFICIENT_CPU)
    assert not numa_fit(index, frozenset({2, 100}), 2, NumaPolicy.NONE)


@pytest.mark.parametrize("count", [0, -1])
def test_count_must_be_positive(count: int) -> None:
    index = TopologyIndex.of(T8)
    with pytest.raises(ValueError, match="at least 1 CPU"):
        pick_cpus(index, index.cpus, count)
    with pytest.raises(ValueError, match="at least 1 CPU"):
        numa_fit(index, index.cpus, count, NumaPolicy.NONE)


def test_strategy_and_policies_accept_their_plain_strings() -> None:
    index = TopologyIndex.of(T64)
    free = QUARTER_HELD.free
    kw: dict[str, Any] = {"bind": "FullPCPUs", "numa_policy": "SingleNUMANode", "strategy": "LeastAllocated"}
    assert pick_cpus(index, free, 4, **kw) == pick("16-17,48-49", 2)


# --- TopologyIndex --------------------------------------------------------------------------------------------


def test_index_of_t64() -> None:
    index = TopologyIndex.of(T64)
    assert index.cpus == frozenset(range(64))
    assert index.numa_ids == (0, 1, 2, 3)
    assert index.socket_ids == (0, 1)
    assert index.threads_per_core == 2
    assert [index.numa_of[c] for c in (0, 9, 17, 63)] == [0, 1, 2, 3]
    assert [index.core_of[c] for c in (0, 32, 9, 63)] == [0, 0, 9, 31]
    assert [index.socket_of[c] for c in (0, 15, 16, 63)] == [0, 0, 1, 1]
    assert dict(index.socket_of_numa) == {0: 0, 1: 0, 2: 1, 3: 1}
    assert dict(index.numas_of_socket) == {0: (0, 1), 1: (2, 3)}
    assert index.cores_of_numa[1] == tuple(range(8, 16))
    assert index.cpus_of_core[5] == (5, 37)
    assert index.cpus_of_numa[3] == frozenset(cpulist("24-31,56-63"))
    assert [index.min_numa_nodes(n) for n in (1, 16, 17, 32, 33, 64)] == [1, 1, 2, 2, 3, 4]


def test_index_of_is_shared_by_equal_topologies() -> None:
    assert TopologyIndex.of(T64) is TopologyIndex.of(Topology.uniform(2, 2, 8, 2))
    assert TopologyIndex.of(T64) is not TopologyIndex.of(T8)


def test_index_is_immutable() -> None:
    index = TopologyIndex.of(T8)
    with pytest.raises(AttributeError, match="immutable"):
        index.cpus = frozenset()
    with pytest.raises(AttributeError, match="immutable"):
        del index.numa_ids
    with pytest.raises(TypeError):
        index.numa_of[0] = 1  # type: ignore[index]


def test_index_of_an_irregular_topology() -> None:
    """Cores of different sizes and ids out of order: whole-core picking takes larger cores first."""
    topology = Topology(
        sockets=(
            Socket(
                id=3,
                numa_nodes=(
                    NumaNode(id=5, cores=(Core(id=9, cpus=(7,)), Core(id=2, cpus=(4, 1)), Core(id=4, cpus=(0, 6)))),
                ),
            ),
        )
    )
    index = TopologyIndex.of(topology)
    assert index.numa_ids == (5,)
    assert index.cores_of_numa[5] == (2, 4, 9)
    assert index.cpus_of_core[2] == (1, 4)
    assert index.threads_per_core == 2
    assert pick_cpus(index, index.cpus, 4) == Pick(cpus=(0, 1, 4, 6), numa_nodes=(5,))
    assert pick_cpus(index, index.cpus, 3) == Pick(cpus=(1, 4, 7), numa_nodes=(5,))


# --- properties -----------------------------------------------------------------------------------------------
# Strategies are explicit: hypothesis ignores msgspec.Meta bounds, so nothing here uses st.from_type.

uniform_topologies = st.builds(
    Topology.uniform, st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 2)
)
smt_topologies = st.builds(Topology.uniform, st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.just(2))


@st.composite
def irregular_topologies(draw: st.DrawFn) -> Topology:
    """Uneven sockets, NUMA nodes and cores (one or two threads), with CPU ids shuffled."""
    shape = draw(
        st.lists(
            st.lists(st.lists(st.integers(1, 2), min_size=1, max_size=4), min_size=1, max_size=3), min_size=1
        ).filter(lambda s: len(s) <= 2)
    )
    total = sum(t for numas in shape for threads in numas for t in threads)
    ids = iter(draw(st.permutations(range(total))))
    numa_ids = itertools.count()
    core_ids = itertools.count()
    sockets = []
    for s, numas in enumerate(shape):
        nodes = []
        for threads in numas:
            node_cores = tuple(Core(id=next(core_ids), cpus=tuple(next(ids) for _ in range(t))) for t in threads)
            nodes.append(NumaNode(id=next(numa_ids), cores=node_cores))
        sockets.append(Socket(id=s, numa_nodes=tuple(nodes)))
    return Topology(sockets=tuple(sockets))


topologies = uniform_topologies | irregular_topologies()
PREFERRED = [b for b in CpuBindPolicy if b is not CpuBindPolicy.FULL_PCPUS_ONLY]  # they always fit what fits
binds = st.sampled_from(PREFERRED)
policies = st.sampled_from(list(NumaPolicy))
numa_strategies = st.sampled_from(list(NumaStrategy))


@dataclass(frozen=True)
class Request:
    index: TopologyIndex
    free: frozenset[int]
    count: int
    bind: CpuBindPolicy
    policy: NumaPolicy
    strategy: NumaStrategy

    def pick(self, free: frozenset[int] | None = None) -> Pick | NoFit:
        return pick_cpus(
            self.index,
            self.free if free is None else free,
            self.count,
            bind=self.bind,
            numa_policy=self.policy,
            strategy=self.strategy,
        )


@st.composite
def requests(draw: st.DrawFn, topologies: st.SearchStrategy[Topology] = topologies) -> Request:
    index = TopologyIndex.of(draw(topologies))
    free = frozenset(draw(st.sets(st.sampled_from(sorted(index.cpus)))))
    count = draw(st.integers(1, len(index.cpus) + 1))
    return Request(index, free, count, draw(binds), draw(policies), draw(numa_strategies))


@given(requests())
def test_a_pick_is_count_distinct_free_cpus_and_their_numa_nodes(r: Request) -> None:
    got = r.pick()
    if isinstance(got, NoFit):
        assert got.reason in {INSUFFICIENT_CPU, SINGLE_NUMA_NODE, RESTRICTED}
        assert (got.reason == INSUFFICIENT_CPU) == (r.count > len(r.free))
        assert got.reason in {INSUFFICIENT_CPU, str(r.policy)}
        return
    assert len(got.cpus) == r.count
    assert len(set(got.cpus)) == r.count
    assert set(got.cpus) <= r.free
    assert list(got.cpus) == sorted(got.cpus)
    assert got.numa_nodes == tuple(sorted({r.index.numa_of[c] for c in got.cpus}))


@given(requests())
def test_none_and_best_effort_admit_whatever_fits(r: Request) -> None:
    if r.policy in (NumaPolicy.NONE, NumaPolicy.BEST_EFFORT):
        assert isinstance(r.pick(), Pick) == (r.count <= len(r.free))


@given(requests())
def test_single_numa_node_means_one_numa_node(r: Request) -> None:
    got = pick_cpus(r.index, r.free, r.count, bind=r.bind, numa_policy=NumaPolicy.SINGLE_NUMA_NODE)
    if isinstance(got, Pick):
        assert len(got.numa_nodes) == 1
    else:
        assert not any(len(r.index.cpus_of_numa[n] & r.free) >= r.count for n in r.index.numa_ids)


@given(requests())
def test_restricted_spans_the_fewest_numa_nodes_that_could_hold_it(r: Request) -> None:
    got = pick_cpus(r.index, r.free, r.count, bind=r.bind, numa_policy=NumaPolicy.RESTRICTED)
    if isinstance(got, Pick):
        assert len(got.numa_nodes) <= r.index.min_numa_nodes(r.count)


@given(requests(smt_topologies))
def test_full_pcpus_takes_whole_cores_when_there_are_enough(r: Request) -> None:
    count = r.count - r.count % 2
    whole = [c for n in r.index.numa_ids for c in r.index.cores_of_numa[n] if set(r.index.cpus_of_core[c]) <= r.free]
    if count == 0 or 2 * len(whole) < count:
        return
    for bind in (CpuBindPolicy.DEFAULT, CpuBindPolicy.FULL_PCPUS):
        got = pick_cpus(r.index, r.free, count, bind=bind, strategy=r.strategy)
        assert isinstance(got, Pick)
        picked = set(got.cpus)
        assert all(set(r.index.cpus_of_core[r.index.core_of[c]]) <= picked for c in picked)


@given(requests())
def test_same_inputs_same_cpuset(r: Request) -> None:
    again = frozenset(sorted(r.free, reverse=True))  # an equal set built in another order
    fresh = TopologyIndex(r.index.topology)  # an index built anew, not the cached one
    first = r.pick()
    assert r.pick() == first
    assert r.pick(again) == first
    assert pick_cpus(fresh, set(r.free), r.count, bind=r.bind, numa_policy=r.policy, strategy=r.strategy) == first  # type: ignore[arg-type]


@given(requests())
def test_numa_fit_agrees_with_pick_cpus(r: Request) -> None:
    for policy in NumaPolicy:
        got = pick_cpus(r.index, r.free, r.count, bind=r.bind, numa_policy=policy, strategy=r.strategy)
        assert numa_fit(r.index, r.free, r.count, policy) == isinstance(got, Pick)


@given(
    topologies,
    st.lists(st.tuples(st.integers(1, 8), binds, policies, numa_strategies), min_size=1, max_size=40),
)
def test_exclusive_allocations_never_overlap(
    topology: Topology, stream: list[tuple[int, CpuBindPolicy, NumaPolicy, NumaStrategy]]
) -> None:
    """Place a stream of requests on one node, each taking its CPUs out of the free set."""
    index = TopologyIndex.of(topology)
    free = index.cpus
    held: list[tuple[int, ...]] = []
    for count, bind, policy, strategy in stream:
        got = pick_cpus(index, free, count, bind=bind, numa_policy=policy, strategy=strategy)
        assert numa_fit(index, free, count, policy) == isinstance(got, Pick)
        if isinstance(got, Pick):
            assert set(got.cpus) <= free
            free = free - set(got.cpus)
            held.append(got.cpus)
    taken = [c for cpus in held for c in cpus]
    assert len(taken) == len(set(taken))
    assert set(taken) | free == index.cpus


# --- micro-benchmark ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_picks_on_a_half_full_node() -> None:
    """The hot path as the placement benchmark drives it, over every policy. Not timed: benchmarks report and
    tests check correctness; time the same loop with ``python -c`` (about 10 µs a pick on a 2-core VM)."""
    index = TopologyIndex.of(T64)
    half = node().holding("0-3,32-35,9,12,16-21,48-53,26-31,60-63").free
    assert len(half) == 32
    requests = itertools.islice(
        itertools.cycle(itertools.product((1, 2, 4, 8), PREFERRED, list(NumaPolicy), list(NumaStrategy))),
        10_000,
    )
    picks = 0
    for count, bind, policy, strategy in requests:
        got = pick_cpus(index, half, count, bind=bind, numa_policy=policy, strategy=strategy)
        picks += isinstance(got, Pick)
    assert picks == 10_000


def _free_cores(index: TopologyIndex, free: frozenset[int], numas: Iterable[int]) -> int:
    return sum(1 for n in numas for c in index.cores_of_numa[n] if set(index.cpus_of_core[c]) & free)


@given(requests(smt_topologies | irregular_topologies()))
def test_spread_by_pcpus_never_shares_a_core_when_a_numa_node_or_socket_has_enough_free_cores(r: Request) -> None:
    _never_siblings_when_cores_suffice(r)


def _never_siblings_when_cores_suffice(r: Request) -> None:
    """Koordinator's SpreadByPCPUs looks for a NUMA node, then a socket, with ``count`` distinct free cores
    before it settles for free CPUs: hyperthread siblings are what the policy exists to avoid."""
    index = r.index
    by_numa = any(_free_cores(index, r.free, (n,)) >= r.count for n in index.numa_ids)
    by_socket = any(_free_cores(index, r.free, index.numas_of_socket[s]) >= r.count for s in index.socket_ids)
    if not (by_numa or by_socket):
        return
    got = pick_cpus(index, r.free, r.count, bind=CpuBindPolicy.SPREAD_BY_PCPUS, strategy=r.strategy)
    assert isinstance(got, Pick)
    cores = [index.core_of[c] for c in got.cpus]
    assert len(set(cores)) == len(cores), f"siblings picked: {got.cpus}"
    if by_numa:
        assert len(got.numa_nodes) == 1


@st.composite
def core_level_requests(draw: st.DrawFn) -> Request:
    """Two-thread topologies whose cores are each wholly free, half free or taken: where siblings matter."""
    index = TopologyIndex.of(draw(smt_topologies))
    free: set[int] = set()
    for n in index.numa_ids:
        for c in index.cores_of_numa[n]:
            free.update(index.cpus_of_core[c][: draw(st.integers(0, 2))])
    count = draw(st.integers(1, max(1, len(free))))
    return Request(index, frozenset(free), count, CpuBindPolicy.SPREAD_BY_PCPUS, NumaPolicy.NONE, draw(numa_strategies))


@given(core_level_requests())
def test_spread_by_pcpus_prefers_distinct_cores_over_free_cpus(r: Request) -> None:
    _never_siblings_when_cores_suffice(r)


@given(core_level_requests())
def test_single_numa_node_spread_prefers_a_node_with_enough_free_cores(r: Request) -> None:
    index = r.index
    if not any(_free_cores(index, r.free, (n,)) >= r.count for n in index.numa_ids):
        return
    got = pick_cpus(index, r.free, r.count, bind=CpuBindPolicy.SPREAD_BY_PCPUS, numa_policy=NumaPolicy.SINGLE_NUMA_NODE)
    assert isinstance(got, Pick)
    assert len({index.core_of[c] for c in got.cpus}) == r.count


def test_spread_by_pcpus_takes_the_numa_node_with_free_cores_over_the_one_with_free_siblings() -> None:
    """NUMA 0 has two whole free cores (4 CPUs), NUMA 1 one free CPU on each of its 4 cores: 3 CPUs spread
    come from NUMA 1, one per core, not 0, 1 and 0's sibling 8 (transcribed from the issue's finding)."""
    index = TopologyIndex.of(Topology.uniform(1, 2, 4, 2))
    free = frozenset({0, 8, 1, 9, 4, 5, 6, 7})
    for strategy in NumaStrategy:
        got = pick_cpus(index, free, 3, bind=CpuBindPolicy.SPREAD_BY_PCPUS, strategy=strategy)
        assert got == Pick(cpus=(4, 5, 6), numa_nodes=(1,))


def test_full_pcpus_takes_a_wholly_free_numa_node_before_cores_of_a_used_one() -> None:
    """2 sockets x 2 NUMA nodes x 4 two-thread cores; NUMA node 3 has one free core. 24 CPUs: socket 0 whole,
    then NUMA node 2 whole -- three NUMA nodes, not a core of node 3 and three of node 2 (four NUMA nodes)."""
    index = TopologyIndex.of(Topology.uniform(2, 2, 4, 2))
    held = frozenset(c for core in index.cores_of_numa[3][1:] for c in index.cpus_of_core[core])
    for strategy in NumaStrategy:
        got = pick_cpus(index, index.cpus - held, 24, bind=CpuBindPolicy.FULL_PCPUS, strategy=strategy)
        assert isinstance(got, Pick) and got.numa_nodes == (0, 1, 2)


@st.composite
def numa_sized_requests(draw: st.DrawFn) -> tuple[TopologyIndex, frozenset[int], int]:
    """A uniform topology with some cores held, and a request of whole NUMA nodes that wholly free ones hold."""
    index = TopologyIndex.of(
        draw(st.builds(Topology.uniform, st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.just(2)))
    )
    held: set[int] = set()
    for n in index.numa_ids:
        if draw(st.booleans()):
            for core in index.cores_of_numa[n][: draw(st.integers(1, len(index.cores_of_numa[n])))]:
                held.update(index.cpus_of_core[core])
    free = index.cpus - held
    wholly = [n for n in index.numa_ids if index.cpus_of_numa[n] <= free]
    assume = draw(st.integers(1, max(1, len(wholly))))
    size = len(index.cpus_of_numa[index.numa_ids[0]])
    return index, frozenset(free), (assume if wholly else 0) * size


@given(numa_sized_requests(), numa_strategies)
def test_full_pcpus_spans_as_few_numa_nodes_as_whole_free_ones_allow(
    case: tuple[TopologyIndex, frozenset[int], int], strategy: NumaStrategy
) -> None:
    index, free, count = case
    if count == 0:
        return
    got = pick_cpus(index, free, count, bind=CpuBindPolicy.FULL_PCPUS, strategy=strategy)
    assert isinstance(got, Pick)
    assert len(got.numa_nodes) == count // len(index.cpus_of_numa[index.numa_ids[0]])


@given(requests())
def test_full_pcpus_only_is_full_pcpus_when_that_gives_whole_cores_and_refused_otherwise(r: Request) -> None:
    only = pick_cpus(
        r.index, r.free, r.count, bind=CpuBindPolicy.FULL_PCPUS_ONLY, numa_policy=r.policy, strategy=r.strategy
    )
    preferred = pick_cpus(
        r.index, r.free, r.count, bind=CpuBindPolicy.FULL_PCPUS, numa_policy=r.policy, strategy=r.strategy
    )
    if isinstance(preferred, NoFit):
        assert only == preferred
        return
    whole = all(set(r.index.cpus_of_core[r.index.core_of[c]]) <= set(preferred.cpus) for c in preferred.cpus)
    assert only == (preferred if whole else NoFit(FULL_PCPUS_ONLY))


def test_full_pcpus_only_refuses_an_odd_count_on_two_thread_cores() -> None:
    index = TopologyIndex.of(T64)
    assert pick_cpus(index, index.cpus, 3, bind=CpuBindPolicy.FULL_PCPUS_ONLY) == NoFit(FULL_PCPUS_ONLY)
    assert pick_cpus(index, index.cpus, 4, bind=CpuBindPolicy.FULL_PCPUS_ONLY) == pick("0-1,32-33", 0)


@pytest.mark.parametrize(
    ("count", "bind", "policy", "step"),
    [
        (4, CpuBindPolicy.FULL_PCPUS, NumaPolicy.NONE, "a: whole cores of one NUMA node"),
        (20, CpuBindPolicy.FULL_PCPUS, NumaPolicy.NONE, "b: one socket, wholly free NUMA nodes before cores"),
        (40, CpuBindPolicy.FULL_PCPUS, NumaPolicy.NONE, "c: packed over sockets"),
        (3, CpuBindPolicy.FULL_PCPUS, NumaPolicy.NONE, "a: whole cores of one NUMA node"),
        (4, CpuBindPolicy.SPREAD_BY_PCPUS, NumaPolicy.NONE, "spread: one NUMA node with enough free cores"),
        (10, CpuBindPolicy.SPREAD_BY_PCPUS, NumaPolicy.NONE, "spread: one socket with enough free cores"),
        (4, CpuBindPolicy.FULL_PCPUS, NumaPolicy.SINGLE_NUMA_NODE, "within the SingleNUMANode hint (NUMA 0)"),
    ],
)
def test_the_step_that_chose_the_cpus_is_said(count: int, bind: CpuBindPolicy, policy: NumaPolicy, step: str) -> None:
    index = TopologyIndex.of(T64)
    got, said = pick_cpus_explained(index, index.cpus, count, bind=bind, numa_policy=policy)
    assert got == pick_cpus(index, index.cpus, count, bind=bind, numa_policy=policy)
    assert step in said
