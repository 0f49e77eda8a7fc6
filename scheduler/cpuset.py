"""Exclusive cpusets: which CPUs of one node an LSE or LSR container gets, in Koordinator's order.

A pure function of the node's topology and its free CPUs. The scheduler calls it for every placement, the
plan check calls it again, and the nodelet only applies the result (see shared/reference/cpuset-numa.md).

Pipeline of ``pick_cpus``:

1. **Enough CPU**: ``count`` above the number of free CPUs → ``NoFit("insufficient CPU")``.
2. **NUMA policy** chooses the NUMA nodes to pick from (the *scope*):

   - ``None``: every NUMA node.
   - ``SingleNUMANode``: one NUMA node with at least ``count`` free CPUs, else ``NoFit("SingleNUMANode")``.
   - ``Restricted``: as the kubelet's Topology Manager, a hint is *preferred* when it spans the fewest NUMA
     nodes that could ever hold the request: ``k`` = the least number of NUMA nodes whose total CPUs (free or
     not) reach ``count``. The request is admitted only if some ``k`` NUMA nodes together have ``count``
     free CPUs; the CPUs then come from those ``k`` nodes. Else ``NoFit("Restricted")``.
   - ``BestEffort``: as ``Restricted`` when a preferred set exists, else every NUMA node (always admitted).

   Among admissible sets of ``k`` nodes the first is taken by: fewest sockets spanned, (FullPCPUs) whole free
   cores that cover the even part, free CPUs by strategy, free CPUs of the spanned sockets by strategy, ids.
3. **Bind policy** picks the CPUs inside the scope:

   - FullPCPUs (also ``Default``, and any policy on one-thread cores): whole free cores

     a. from the first NUMA node, ordered by strategy, whose whole free cores cover ``count``;
     b. from a socket whose whole free cores cover it: wholly free NUMA nodes first, then whole cores from the
        NUMA nodes already spanned, then the others in strategy order;
     c. the kubelet's packed order over every socket: wholly free sockets that fit, then wholly free NUMA nodes
        that fit (the largest first), then whole cores one at a time, from the NUMA nodes already spanned first,
        then from the sockets with the most whole free CPUs;

     and of the picks of b (every socket that can) and c, the one spanning the fewest NUMA nodes, then
     sockets, then b before c in strategy order: a container spans as few NUMA nodes as it can;
     d. what whole cores cannot cover (an odd count on two-thread cores, or too few whole cores) is taken as
        single CPUs in the *fallback order*, so a half-used core is filled before a whole one is broken.

     FullPCPUs is *preferred*, as Koordinator's default: it falls back to single CPUs instead of failing the
     node. ``FullPCPUsOnly`` *requires* whole cores: the same pick, refused (``NoFit("FullPCPUsOnly")``) when it
     is not made of whole cores (an odd count on two-thread cores, or too few whole free cores).
   - SpreadByPCPUs: one CPU of every core before any core's second CPU, from the first NUMA node (by strategy)
     with ``count`` distinct free cores, else the first such socket; only then the first NUMA node, then socket,
     with ``count`` free CPUs; else every free CPU in the fallback order.

Strategy order: ``MostAllocated`` packs (fewest free CPUs first), ``LeastAllocated`` spreads (most free first).
NUMA nodes are ordered by (free CPUs, free CPUs of their socket, id), sockets by (free CPUs, id).

Fallback order, over the free CPUs of the scope not yet picked: cores by (CPUs already picked in their socket,
most first; socket free CPUs by strategy; NUMA node free CPUs by strategy; free CPUs on the core, fewest first;
socket, NUMA node and core ids), a core's CPUs by id.

Every order ends in ids, so the same inputs always give the same cpuset. ``numa_fit`` answers, cheaply and
for every bind policy and strategy, whether ``pick_cpus`` returns a ``Pick``.

Glossary:

- *CPU*: a logical CPU (a hyperthread), the unit of a cpuset.
- *core*: a physical core; its CPUs are hyperthread siblings.
- *whole free core*: a core all of whose CPUs are free.
- *free*: CPUs held exclusively by nobody and not reserved, as the caller passes them.
- *scope*: the NUMA nodes a pick may draw from.
- *tail*: ``count % threads_per_core``, the CPUs that whole cores cannot cover.
"""

from __future__ import annotations

import bisect
import enum
import functools
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from types import MappingProxyType
from typing import Final, NoReturn, final

import msgspec

from wire.spec import CpuBindPolicy, NumaPolicy
from wire.topology import Topology

# Stable reason keys, counted in "0/5000 nodes fit: ..." messages.
INSUFFICIENT_CPU: Final = "insufficient CPU"
SINGLE_NUMA_NODE: Final = "SingleNUMANode"
RESTRICTED: Final = "Restricted"
FULL_PCPUS_ONLY: Final = "FullPCPUsOnly"  # whole cores were required and the node cannot give them

# Above this many candidate NUMA sets, Restricted/BestEffort take the k nodes with the most free CPUs.
_MAX_NUMA_SETS: Final = 128


class NumaStrategy(enum.StrEnum):
    MOST_ALLOCATED = "MostAllocated"  # pack: the NUMA node or socket with the fewest free CPUs first
    LEAST_ALLOCATED = "LeastAllocated"  # spread: the most free CPUs first


class Pick(msgspec.Struct, frozen=True, gc=False):
    """The CPUs a container gets and the NUMA nodes they lie in, both sorted."""

    cpus: tuple[int, ...]
    numa_nodes: tuple[int, ...]


class NoFit(msgspec.Struct, frozen=True, gc=False):
    """Why the node cannot hold the request; ``reason`` is one of the module's reason keys."""

    reason: str


_Core = tuple[int, tuple[int, ...]]  # (core id, its CPUs sorted)
_WholeCore = tuple[frozenset[int], tuple[int, ...]]  # (its CPUs as a set, the same sorted)


@final
class TopologyIndex:
    """Lookup tables of one topology, built once and shared; immutable. Ids and tuples are sorted."""

    __slots__ = (
        "_cap_prefix",
        "_cores_by_id",
        "_numa_of",
        "_numa_sets",
        "_socket_numas",
        "_socket_of_numa",
        "_whole_order",
        "core_of",
        "cores_of_numa",
        "cpus",
        "cpus_of_core",
        "cpus_of_numa",
        "numa_ids",
        "numa_of",
        "numas_of_socket",
        "socket_ids",
        "socket_of",
        "socket_of_numa",
        "threads_per_core",
        "topology",
    )

    topology: Topology
    cpus: frozenset[int]
    numa_ids: tuple[int, ...]
    socket_ids: tuple[int, ...]
    threads_per_core: int  # the most CPUs on one core
    numa_of: Mapping[int, int]  # cpu → NUMA node
    core_of: Mapping[int, int]  # cpu → core
    socket_of: Mapping[int, int]  # cpu → socket
    socket_of_numa: Mapping[int, int]
    numas_of_socket: Mapping[int, tuple[int, ...]]
    cores_of_numa: Mapping[int, tuple[int, ...]]
    cpus_of_core: Mapping[int, tuple[int, ...]]
    cpus_of_numa: Mapping[int, frozenset[int]]
    # The hot path reads these plain containers.
    _numa_of: dict[int, int]
    _socket_of_numa: dict[int, int]
    _socket_numas: dict[int, tuple[int, ...]]
    _numa_sets: dict[int, frozenset[int]]
    _cores_by_id: dict[int, tuple[_Core, ...]]
    _whole_order: dict[int, tuple[_WholeCore, ...]]  # per NUMA node: larger cores first, then by id
    _cap_prefix: tuple[int, ...]  # sums of the 1, 2, ... largest NUMA node sizes

    def __init__(self, topology: Topology) -> None:
        numa_of: dict[int, int] = {}
        core_of: dict[int, int] = {}
        socket_of: dict[int, int] = {}
        socket_of_numa: dict[int, int] = {}
        socket_numas: dict[int, tuple[int, ...]] = {}
        cpus_of_core: dict[int, tuple[int, ...]] = {}
        cores_by_id: dict[int, tuple[_Core, ...]] = {}
        whole_order: dict[int, tuple[_WholeCore, ...]] = {}
        numa_sets: dict[int, frozenset[int]] = {}
        for socket in topology.sockets:
            socket_numas[socket.id] = tuple(sorted(n.id for n in socket.numa_nodes))
            for numa in socket.numa_nodes:
                socket_of_numa[numa.id] = socket.id
                cores: list[_Core] = []
                for core in numa.cores:
                    cpus = tuple(sorted(core.cpus))
                    cpus_of_core[core.id] = cpus
                    cores.append((core.id, cpus))
                    for cpu in cpus:
                        numa_of[cpu] = numa.id
                        core_of[cpu] = core.id
                        socket_of[cpu] = socket.id
                cores.sort()
                cores_by_id[numa.id] = tuple(cores)
                by_size = sorted(cores, key=lambda c: (-len(c[1]), c[0]))
                whole_order[numa.id] = tuple((frozenset(cpus), cpus) for _, cpus in by_size)
                numa_sets[numa.id] = frozenset(cpu for _, cpus in cores for cpu in cpus)
        sizes = sorted((len(s) for s in numa_sets.values()), reverse=True)
        put = functools.partial(object.__setattr__, self)
        put("topology", topology)
        put("cpus", frozenset(numa_of))
        put("numa_ids", tuple(sorted(socket_of_numa)))
        put("socket_ids", tuple(sorted(socket_numas)))
        put("threads_per_core", max(len(c) for c in cpus_of_core.values()))
        put("numa_of", MappingProxyType(numa_of))
        put("core_of", MappingProxyType(core_of))
        put("socket_of", MappingProxyType(socket_of))
        put("socket_of_numa", MappingProxyType(socket_of_numa))
        put("numas_of_socket", MappingProxyType(socket_numas))
        put("cores_of_numa", MappingProxyType({n: tuple(c for c, _ in cs) for n, cs in cores_by_id.items()}))
        put("cpus_of_core", MappingProxyType(cpus_of_core))
        put("cpus_of_numa", MappingProxyType(numa_sets))
        put("_numa_of", numa_of)
        put("_socket_of_numa", socket_of_numa)
        put("_socket_numas", socket_numas)
        put("_numa_sets", numa_sets)
        put("_cores_by_id", cores_by_id)
        put("_whole_order", whole_order)
        put("_cap_prefix", tuple(itertools.accumulate(sizes)))

    @classmethod
    def of(cls, topology: Topology) -> TopologyIndex:
        """The index of ``topology``, shared by every equal topology (a bounded cache)."""
        return _index_of(topology)

    def min_numa_nodes(self, count: int) -> int:
        """The fewest NUMA nodes whose CPUs (free or not) add up to ``count``; one more than exist if none do."""
        return bisect.bisect_left(self._cap_prefix, count) + 1

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"TopologyIndex is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"TopologyIndex is immutable: cannot delete {name}")

    def __repr__(self) -> str:
        return f"TopologyIndex({len(self.cpus)} CPUs, {len(self.numa_ids)} NUMA nodes, {len(self.socket_ids)} sockets)"


@functools.lru_cache(maxsize=1024)
def _index_of(topology: Topology) -> TopologyIndex:
    return TopologyIndex(topology)


def pick_cpus(
    index: TopologyIndex,
    free: frozenset[int],
    count: int,
    *,
    bind: CpuBindPolicy = CpuBindPolicy.DEFAULT,
    numa_policy: NumaPolicy = NumaPolicy.NONE,
    strategy: NumaStrategy = NumaStrategy.MOST_ALLOCATED,
) -> Pick | NoFit:
    """The exact CPUs for an exclusive container of ``count`` CPUs, or why the node cannot hold it.

    ``free`` is every CPU held exclusively by nobody and not reserved; CPUs outside the topology are ignored.
    """
    return pick_cpus_explained(index, free, count, bind=bind, numa_policy=numa_policy, strategy=strategy)[0]


def pick_cpus_explained(
    index: TopologyIndex,
    free: frozenset[int],
    count: int,
    *,
    bind: CpuBindPolicy = CpuBindPolicy.DEFAULT,
    numa_policy: NumaPolicy = NumaPolicy.NONE,
    strategy: NumaStrategy = NumaStrategy.MOST_ALLOCATED,
) -> tuple[Pick | NoFit, str]:
    """``pick_cpus``, and the step of the pipeline that chose the CPUs (module docstring), in words."""
    if count < 1:
        raise ValueError(f"count: an exclusive cpuset needs at least 1 CPU, got {count}")
    if not free <= index.cpus:
        free = free & index.cpus
    if count > len(free):
        return NoFit(INSUFFICIENT_CPU), ""
    if bind == CpuBindPolicy.FULL_PCPUS_ONLY:
        got, step = pick_cpus_explained(
            index, free, count, bind=CpuBindPolicy.FULL_PCPUS, numa_policy=numa_policy, strategy=strategy
        )
        if isinstance(got, Pick) and not _whole_cores(index, got.cpus):
            return NoFit(FULL_PCPUS_ONLY), ""
        return got, step
    request = _Request(index, free, count, strategy)
    full = bind != CpuBindPolicy.SPREAD_BY_PCPUS or index.threads_per_core == 1
    scope = index.numa_ids
    if numa_policy != NumaPolicy.NONE:
        single = numa_policy == NumaPolicy.SINGLE_NUMA_NODE
        preferred = request.preferred_numas(full=full, single=single)
        if preferred is not None:
            scope = preferred
        elif single:
            return NoFit(SINGLE_NUMA_NODE), ""
        elif numa_policy == NumaPolicy.RESTRICTED:
            return NoFit(RESTRICTED), ""
    picked = request.full_pcpus(scope) if full else request.spread_by_pcpus(scope)
    picked.sort()
    numa_of = index._numa_of
    step = request.step
    if scope is not index.numa_ids:
        step = f"{step}, within the {numa_policy} hint (NUMA {','.join(map(str, scope))})"
    return Pick(cpus=tuple(picked), numa_nodes=tuple(sorted({numa_of[c] for c in picked}))), step


def _whole_cores(index: TopologyIndex, cpus: Sequence[int]) -> bool:
    """Whether ``cpus`` is made of whole cores (every CPU of each core it touches)."""
    mine = set(cpus)
    core_of, cpus_of_core = index.core_of, index.cpus_of_core
    return all(mine.issuperset(cpus_of_core[core_of[c]]) for c in cpus)


def numa_fit(index: TopologyIndex, free: frozenset[int], count: int, policy: NumaPolicy) -> bool:
    """Whether ``pick_cpus`` with this NUMA policy returns a ``Pick`` (for any bind policy and strategy)."""
    if count < 1:
        raise ValueError(f"count: an exclusive cpuset needs at least 1 CPU, got {count}")
    if not free <= index.cpus:
        free = free & index.cpus
    if count > len(free):
        return False
    if policy in (NumaPolicy.NONE, NumaPolicy.BEST_EFFORT):
        return True
    sets = index._numa_sets.values()
    k = 1 if policy == NumaPolicy.SINGLE_NUMA_NODE else index.min_numa_nodes(count)
    if k == 1:
        return any(len(s & free) >= count for s in sets)
    return sum(sorted((len(s & free) for s in sets), reverse=True)[:k]) >= count


class _Request:
    """One call's view: the free CPUs counted per NUMA node, and the steps of the pipeline."""

    __slots__ = ("count", "free", "index", "numa_free", "sign", "step", "tail", "whole")

    def __init__(self, index: TopologyIndex, free: frozenset[int], count: int, strategy: NumaStrategy) -> None:
        self.index = index
        self.free = free
        self.count = count
        self.tail = count % index.threads_per_core
        # Multiplies a free count so that ascending order follows the strategy.
        self.sign = -1 if strategy == NumaStrategy.LEAST_ALLOCATED else 1
        self.numa_free = {n: len(s & free) for n, s in index._numa_sets.items()}
        self.whole: dict[int, int] = {}  # NUMA node → CPUs on its whole free cores, filled on demand
        self.step = ""  # which step of the pipeline chose the CPUs, in words

    # --- NUMA policy ----------------------------------------------------------------------------------------

    def preferred_numas(self, *, full: bool, single: bool) -> tuple[int, ...] | None:
        """The NUMA nodes of the best preferred hint, or None when no preferred hint has room."""
        index, count, nf, sign = self.index, self.count, self.numa_free, self.sign
        ids = index.numa_ids
        som = index._socket_of_numa
        need = count - self.tail if full else 0  # what whole cores should cover
        k = 1 if single else index.min_numa_nodes(count)
        if k == 1:
            fits = [n for n in ids if nf[n] >= count]
            if len(fits) <= 1:
                return tuple(fits) or None
            sf = _socket_free(som, ids, nf)
            if full:  # whole cores that cover the even part first
                return (min(fits, key=lambda n: (self.whole_cpus(n) < need, sign * nf[n], sign * sf[som[n]], n)),)
            # SpreadByPCPUs: a node with a free core for every CPU first
            return (min(fits, key=lambda n: (self.free_cores(n) < count, sign * nf[n], sign * sf[som[n]], n)),)
        if sum(sorted(nf.values(), reverse=True)[:k]) < count:
            return None
        if math.comb(len(ids), k) > _MAX_NUMA_SETS:
            return tuple(sorted(sorted(ids, key=lambda n: (-nf[n], n))[:k]))
        sf = _socket_free(som, ids, nf)
        best: tuple[tuple[int, bool, int, int, tuple[int, ...]], tuple[int, ...]] | None = None
        for combo in itertools.combinations(ids, k):
            total = sum(nf[n] for n in combo)
            if total < count:
                continue
            sockets = {som[n] for n in combo}
            covered = not full or sum(self.whole_cpus(n) for n in combo) >= need
            key = (len(sockets), not covered, sign * total, sign * sum(sf[s] for s in sockets), combo)
            if best is None or key < best[0]:
                best = (key, combo)
        return None if best is None else best[1]

    def free_cores(self, numa: int) -> int:
        """Cores of ``numa`` with at least one free CPU."""
        free = self.free
        return sum(1 for _, cpus in self.index._cores_by_id[numa] if not free.isdisjoint(cpus))

    def whole_cpus(self, numa: int) -> int:
        got = self.whole.get(numa)
        if got is None:
            free = self.free
            got = self.whole[numa] = sum(len(cpus) for cs, cpus in self.index._whole_order[numa] if cs <= free)
        return got

    # --- bind policies --------------------------------------------------------------------------------------

    def full_pcpus(self, scope: Sequence[int]) -> list[int]:
        index, count, tail, free, sign = self.index, self.count, self.tail, self.free, self.sign
        nf, som, whole_order = self.numa_free, index._socket_of_numa, index._whole_order
        sf = _socket_free(som, scope, nf)
        numa_key = _numa_key(nf, sf, som, sign)
        # a. one NUMA node
        for n in sorted((n for n in scope if nf[n] >= count), key=numa_key):
            picked: list[int] = []
            if _take_whole(whole_order[n], free, count, picked) <= tail:
                self.step = "a: whole cores of one NUMA node"
                return self.take_singles((n,), picked)
        # b. one socket whose whole free cores cover it, packed; c. the kubelet's packed order over every socket:
        #    wholly free sockets that fit, then wholly free NUMA nodes that fit (the largest first), then whole
        #    cores -- from the NUMA nodes already spanned, then from the sockets with the most whole free CPUs.
        #    Of these picks, the one spanning the fewest NUMA nodes, then sockets; then b before c, by strategy.
        numa_of, socket_of = index._numa_of, index.socket_of
        best: tuple[tuple[int, int, int], list[int]] | None = None
        sockets = sorted((s for s in sf if sf[s] >= count), key=lambda s: (sign * sf[s], s))
        for rank, s in enumerate(sockets):
            numas = sorted((n for n in scope if som[n] == s), key=numa_key)
            picked = []
            if self.pack(numas, count, picked) <= tail:
                picked = self.take_singles(numas, picked)
                key = (len({numa_of[c] for c in picked}), 1, rank)
                if best is None or key < best[0]:
                    best = (key, picked)
        chosen_socket = best is not None
        # One socket spanning as few NUMA nodes as any pick could: the packed pick cannot beat it (its key ties at
        # best, and ranks after), so it is not made.
        if best is None or best[0][0] > index.min_numa_nodes(count):
            picked = self.packed_everywhere(scope, numa_key)
            key = (len({numa_of[c] for c in picked}), len({socket_of[c] for c in picked}), len(sockets))
            if best is None or key < best[0]:
                best, chosen_socket = (key, picked), False
        self.step = (
            "b: one socket, wholly free NUMA nodes before cores"
            if chosen_socket
            else "c: packed over sockets (whole sockets, then NUMA nodes, then cores)"
        )
        if not _whole_cores(index, best[1]):
            self.step += ", topped up with single CPUs"
        return best[1]

    def packed_everywhere(self, scope: Sequence[int], numa_key: Callable[[int], tuple[int, int, int]]) -> list[int]:
        """Step c (module docstring), then single CPUs (step d)."""
        index, nf = self.index, self.numa_free
        som, whole_order = index._socket_of_numa, index._whole_order
        sf = _socket_free(som, scope, nf)
        socket_cpus = _socket_free(som, scope, {n: len(index._numa_sets[n]) for n in scope})
        whole_in_socket = _socket_free(som, scope, {n: self.whole_cpus(n) for n in scope})
        picked: list[int] = []
        left = self.count
        for s in sorted(sf, key=lambda s: (-sf[s], s)):
            if sf[s] == socket_cpus[s] == whole_in_socket[s] and 0 < sf[s] <= left:
                for n in sorted((n for n in scope if som[n] == s), key=numa_key):
                    for _, cpus in whole_order[n]:
                        picked.extend(cpus)
                left -= sf[s]
        numas = sorted(scope, key=lambda n: (-whole_in_socket[som[n]], som[n], numa_key(n)))
        self.pack(numas, left, picked)
        return self.take_singles(scope, picked)

    def pack(self, numas: Sequence[int], left: int, picked: list[int]) -> int:
        """Whole free cores of ``numas`` (in that order) into ``picked``, as the kubelet packs: wholly free NUMA
        nodes that fit first (the largest first), then single whole cores, from the NUMA nodes already spanned
        first. Returns how many CPUs are still wanted."""
        index, free, nf = self.index, self.free, self.numa_free
        numa_sets, whole_order, numa_of = index._numa_sets, index._whole_order, index._numa_of
        wholly = sorted(
            (n for n in numas if nf[n] and nf[n] == len(numa_sets[n])), key=lambda n: -nf[n]
        )  # stable: the given order among equals
        taken = set(picked)
        for n in wholly:
            if nf[n] <= left and taken.isdisjoint(numa_sets[n]):
                for _, cpus in whole_order[n]:
                    picked.extend(cpus)
                    taken.update(cpus)
                left -= nf[n]
        spanned = {numa_of[c] for c in picked}
        order = sorted(numas, key=lambda n: n not in spanned)  # stable
        for n in order:
            for core, cpus in whole_order[n]:
                if not left:
                    return 0
                if len(cpus) <= left and core <= free and taken.isdisjoint(cpus):
                    picked.extend(cpus)
                    taken.update(cpus)
                    left -= len(cpus)
        return left

    def spread_by_pcpus(self, scope: Sequence[int]) -> list[int]:
        """Koordinator's order: a NUMA node, then a socket, with ``count`` distinct free cores (no two CPUs share
        a core); only then a NUMA node, then a socket, with ``count`` free CPUs; else the fallback order."""
        index, count, free, sign = self.index, self.count, self.free, self.sign
        nf, som, cores_by_id = self.numa_free, index._socket_of_numa, index._cores_by_id
        sf = _socket_free(som, scope, nf)
        numa_key = _numa_key(nf, sf, som, sign)
        cores = {n: [[c for c in cpus if c in free] for _, cpus in cores_by_id[n]] for n in scope}
        free_cores = {n: sum(1 for cpus in cores[n] if cpus) for n in scope}
        socket_cores = _socket_free(som, scope, free_cores)

        def in_socket(s: int) -> list[list[int]]:
            return [cpus for n in sorted((n for n in scope if som[n] == s), key=numa_key) for cpus in cores[n]]

        for enough_numa, enough_socket, what in ((free_cores, socket_cores, "free cores"), (nf, sf, "free CPUs")):
            fits = [n for n in scope if enough_numa[n] >= count]
            if fits:
                self.step = f"spread: one NUMA node with enough {what}"
                return _spread(cores[min(fits, key=numa_key)], count)
            socket_fits = [s for s in sf if enough_socket[s] >= count]
            if socket_fits:
                self.step = f"spread: one socket with enough {what}"
                return _spread(in_socket(min(socket_fits, key=lambda s: (sign * sf[s], s))), count)
        self.step = "spread: every free CPU in the fallback order"
        return _spread(self.fallback_order(scope, []), count)

    # --- single CPUs ----------------------------------------------------------------------------------------

    def take_singles(self, scope: Sequence[int], picked: list[int]) -> list[int]:
        """Tops ``picked`` up to ``count`` with single CPUs of the scope, in the fallback order."""
        left = self.count - len(picked)
        if left:
            for cpus in self.fallback_order(scope, picked):
                if len(cpus) >= left:
                    picked.extend(cpus[:left])
                    break
                picked.extend(cpus)
                left -= len(cpus)
        return picked

    def fallback_order(self, scope: Sequence[int], picked: list[int]) -> list[list[int]]:
        """The scope's free, unpicked CPUs grouped by core, cores in the fallback order (module docstring)."""
        index, sign = self.index, self.sign
        som = index._socket_of_numa
        nf = self.numa_free
        used: dict[int, int] = {}  # socket → CPUs already picked there
        remaining: frozenset[int] | set[int] = self.free
        if picked:
            remaining = self.free.difference(picked)
            nf = dict(nf)
            numa_of = index._numa_of
            for c in picked:
                n = numa_of[c]
                nf[n] -= 1
                used[som[n]] = used.get(som[n], 0) + 1
        sf = _socket_free(som, scope, nf)
        ranked: list[tuple[tuple[int, int, int, int, int, int, int], list[int]]] = []
        for n in scope:
            s = som[n]
            head = (-used.get(s, 0), sign * sf[s], sign * nf[n])
            for core, cpus in index._cores_by_id[n]:
                mine = [c for c in cpus if c in remaining]
                if mine:
                    ranked.append(((*head, len(mine), s, n, core), mine))
        ranked.sort(key=itemgetter(0))
        return [cpus for _, cpus in ranked]


def _socket_free(
    socket_of_numa: Mapping[int, int], scope: Iterable[int], numa_free: Mapping[int, int]
) -> dict[int, int]:
    """Free CPUs per socket, counting only the NUMA nodes in scope."""
    out: dict[int, int] = {}
    for n in scope:
        s = socket_of_numa[n]
        out[s] = out.get(s, 0) + numa_free[n]
    return out


def _numa_key(
    numa_free: Mapping[int, int], socket_free: Mapping[int, int], socket_of_numa: Mapping[int, int], sign: int
) -> Callable[[int], tuple[int, int, int]]:
    """Strategy order of NUMA nodes: their free CPUs, then their socket's, then id."""
    return lambda n: (sign * numa_free[n], sign * socket_free[socket_of_numa[n]], n)


def _take_whole(cores: Sequence[_WholeCore], free: frozenset[int], left: int, picked: list[int]) -> int:
    """Appends whole free cores, in order, that fit in ``left`` CPUs; returns what is still left."""
    for core, cpus in cores:
        if not left:
            break
        if len(cpus) <= left and core <= free:
            picked.extend(cpus)
            left -= len(cpus)
    return left


def _spread(cores: list[list[int]], count: int) -> list[int]:
    """The first CPU of every core in order, then every second CPU, and so on, until ``count``."""
    out: list[int] = []
    depth = max(map(len, cores), default=0)
    for i in range(depth):
        for cpus in cores:
            if i < len(cpus):
                out.append(cpus[i])
                if len(out) == count:
                    return out
    raise AssertionError(f"cpuset: {count} CPUs asked of a scope with {len(out)} free")  # callers check room
