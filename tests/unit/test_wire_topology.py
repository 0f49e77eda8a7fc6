"""wire.topology: sockets → NUMA nodes → cores → logical CPUs, uniform builder and validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.codec import encode
from wire.events import Event
from wire.topology import MAX_CPUS, Core, CpuInfo, NumaNode, Socket, Topology

GI = 2**30


def core(i: int, *cpus: int) -> Core:
    return Core(id=i, cpus=cpus or (i,))


def numa(i: int, *cores: Core, memory: int = 0) -> NumaNode:
    return NumaNode(id=i, cores=cores, memory_bytes=memory)


# --- Topology.uniform ----------------------------------------------------------------------------------------


def test_uniform_2_sockets_2_numa_8_cores_2_threads() -> None:
    topo = Topology.uniform(2, 2, 8, 2, memory_per_numa=16 * GI)
    assert topo.cpu_count == 64
    assert topo.cpus() == tuple(range(64))
    assert topo.memory_bytes == 64 * GI
    assert [s.id for s in topo.sockets] == [0, 1]
    assert [n.id for n in topo.numa_nodes()] == [0, 1, 2, 3]
    assert [[n.id for n in s.numa_nodes] for s in topo.sockets] == [[0, 1], [2, 3]]
    cores = [c for n in topo.numa_nodes() for c in n.cores]
    assert [c.id for c in cores] == list(range(32))
    # Linux numbering: the siblings of core c are CPUs c and c + 32.
    assert all(c.cpus == (c.id, c.id + 32) for c in cores)


def test_uniform_cpu_infos_map_every_cpu_to_its_core_numa_and_socket() -> None:
    infos = {i.cpu: i for i in Topology.uniform(2, 2, 8, 2).cpu_infos()}
    assert len(infos) == 64
    for cpu in range(64):
        c = cpu % 32
        assert infos[cpu] == CpuInfo(cpu=cpu, core=c, numa=c // 8, socket=c // 16)
    # spot checks, spelled out
    assert infos[0] == CpuInfo(cpu=0, core=0, numa=0, socket=0)
    assert infos[32] == CpuInfo(cpu=32, core=0, numa=0, socket=0)
    assert infos[9] == CpuInfo(cpu=9, core=9, numa=1, socket=0)
    assert infos[17] == CpuInfo(cpu=17, core=17, numa=2, socket=1)
    assert infos[63] == CpuInfo(cpu=63, core=31, numa=3, socket=1)


def test_uniform_small_is_the_expected_struct() -> None:
    assert Topology.uniform(1, 2, 2, 2, memory_per_numa=GI) == Topology(
        sockets=(
            Socket(
                id=0,
                numa_nodes=(
                    NumaNode(id=0, cores=(Core(id=0, cpus=(0, 4)), Core(id=1, cpus=(1, 5))), memory_bytes=GI),
                    NumaNode(id=1, cores=(Core(id=2, cpus=(2, 6)), Core(id=3, cpus=(3, 7))), memory_bytes=GI),
                ),
            ),
        )
    )


def test_uniform_defaults_to_one_cpu() -> None:
    assert Topology.uniform() == Topology(sockets=(Socket(id=0, numa_nodes=(numa(0, core(0)),)),))


@pytest.mark.parametrize(
    ("shape", "cpus"),
    [
        pytest.param((1, 1, 1, 1), 1, id="1x1x1x1"),
        pytest.param((1, 1, 4, 2), 8, id="1x1x4x2"),
        pytest.param((2, 1, 4, 1), 8, id="2x1x4x1"),
        pytest.param((1, 4, 2, 4), 32, id="1x4x2x4"),
        pytest.param((1, 1, 2048, 2), MAX_CPUS, id="max-cpus"),
    ],
)
def test_uniform_cpu_count(shape: tuple[int, int, int, int], cpus: int) -> None:
    topo = Topology.uniform(*shape)
    assert topo.cpu_count == cpus
    assert topo.cpus() == tuple(range(cpus))


@given(
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=4),
)
def test_uniform_shape_properties(sockets: int, numa_per_socket: int, cores_per_numa: int, threads: int) -> None:
    topo = Topology.uniform(sockets, numa_per_socket, cores_per_numa, threads, memory_per_numa=GI)
    total_cores = sockets * numa_per_socket * cores_per_numa
    assert topo.cpu_count == total_cores * threads
    assert topo.cpus() == tuple(range(total_cores * threads))
    assert topo.memory_bytes == sockets * numa_per_socket * GI
    for info in topo.cpu_infos():
        assert info.core == info.cpu % total_cores
        assert info.numa == info.core // cores_per_numa
        assert info.socket == info.numa // numa_per_socket
    assert msgspec.msgpack.decode(encode(topo), type=Topology) == topo


def test_uniform_above_max_cpus_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^topology: 4098 CPUs is more than 4096$"):
        Topology.uniform(1, 1, 2049, 2)


# --- duplicate ids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sockets", "message"),
    [
        pytest.param(
            (Socket(id=0, numa_nodes=(numa(0, core(0, 0, 1), core(1, 1, 2)),)),),
            "topology: CPU id 1 appears twice",
            id="cpu-across-cores",
        ),
        pytest.param(
            (Socket(id=0, numa_nodes=(numa(0, core(0, 3, 3)),)),),
            "topology: CPU id 3 appears twice",
            id="cpu-within-a-core",
        ),
        pytest.param(
            (Socket(id=0, numa_nodes=(numa(0, core(0)), numa(1, core(1, 0)))),),
            "topology: CPU id 0 appears twice",
            id="cpu-across-numa-nodes",
        ),
        pytest.param(
            (Socket(id=0, numa_nodes=(numa(0, core(0, 0), core(0, 1)),)),),
            "topology: core id 0 appears twice",
            id="core-within-numa",
        ),
        pytest.param(
            (Socket(id=0, numa_nodes=(numa(0, core(5, 0)),)), Socket(id=1, numa_nodes=(numa(1, core(5, 1)),))),
            "topology: core id 5 appears twice",
            id="core-across-sockets",
        ),
        pytest.param(
            (Socket(id=0, numa_nodes=(numa(0, core(0)), numa(0, core(1)))),),
            "topology: NUMA node id 0 appears twice",
            id="numa-within-socket",
        ),
        pytest.param(
            (Socket(id=0, numa_nodes=(numa(2, core(0)),)), Socket(id=1, numa_nodes=(numa(2, core(1)),))),
            "topology: NUMA node id 2 appears twice",
            id="numa-across-sockets",
        ),
        pytest.param(
            (Socket(id=1, numa_nodes=(numa(0, core(0)),)), Socket(id=1, numa_nodes=(numa(1, core(1)),))),
            "topology: socket id 1 appears twice",
            id="socket",
        ),
    ],
)
def test_duplicate_ids_are_rejected(sockets: tuple[Socket, ...], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Topology(sockets=sockets)
    # The same check runs on decode, as a ValidationError with the same message.
    raw = msgspec.json.encode({"sockets": msgspec.to_builtins(sockets)})
    with pytest.raises(msgspec.ValidationError, match=f"^{message}$"):
        msgspec.json.decode(raw, type=Topology)


def test_duplicate_ids_inside_an_event_point_at_the_topology() -> None:
    bad = {"sockets": [{"id": 0, "numa_nodes": [{"id": 0, "cores": [{"id": 0, "cpus": [0, 0]}]}]}]}
    raw = msgspec.json.encode(
        {"type": "NodeRegistered", "node": "n1", "topology": bad, "capacity": {"cpu_millis": 1000}, "epoch": 1}
    )
    with pytest.raises(msgspec.ValidationError, match=r"topology: CPU id 0 appears twice - at `\$\.topology`"):
        msgspec.json.decode(raw, type=Event)


# --- decoding ------------------------------------------------------------------------------------------------


def _topology(**socket: Any) -> dict[str, Any]:
    s = {"id": 0, "numa_nodes": [{"id": 0, "cores": [{"id": 0, "cpus": [0]}]}], **socket}
    return {"sockets": [s]}


def _with_core(**core_fields: Any) -> dict[str, Any]:
    return {"sockets": [{"id": 0, "numa_nodes": [{"id": 0, "cores": [{"id": 0, "cpus": [0], **core_fields}]}]}]}


def _with_numa(**numa_fields: Any) -> dict[str, Any]:
    return {"sockets": [{"id": 0, "numa_nodes": [{"id": 0, "cores": [{"id": 0, "cpus": [0]}], **numa_fields}]}]}


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        pytest.param({"sockets": []}, "Expected `array` of length >= 1 - at `$.sockets`", id="no-sockets"),
        pytest.param(_topology(numa_nodes=[]), "length >= 1 - at `$.sockets[0].numa_nodes`", id="no-numa-nodes"),
        pytest.param(_with_numa(cores=[]), "length >= 1 - at `$.sockets[0].numa_nodes[0].cores`", id="no-cores"),
        pytest.param(_with_core(cpus=[]), "length >= 1 - at `$.sockets[0].numa_nodes[0].cores[0].cpus`", id="no-cpus"),
        pytest.param(
            _with_core(cpus=list(range(9))),
            "length <= 8 - at `$.sockets[0].numa_nodes[0].cores[0].cpus`",
            id="9-threads",
        ),
        pytest.param(
            _with_core(cpus=[-1]), "`int` >= 0 - at `$.sockets[0].numa_nodes[0].cores[0].cpus[0]`", id="cpu-neg"
        ),
        pytest.param(_with_core(cpus=[65536]), "`int` <= 65535", id="cpu-too-big"),
        pytest.param(_with_core(id=-1), "`int` >= 0 - at `$.sockets[0].numa_nodes[0].cores[0].id`", id="core-neg"),
        pytest.param(_with_numa(id=1024), "`int` <= 1023 - at `$.sockets[0].numa_nodes[0].id`", id="numa-too-big"),
        pytest.param(_with_numa(memory_bytes=-1), "`$.sockets[0].numa_nodes[0].memory_bytes`", id="memory-neg"),
        pytest.param(_topology(id=-1), "`int` >= 0 - at `$.sockets[0].id`", id="socket-neg"),
        pytest.param(_with_core(threads=2), "unknown field `threads`", id="unknown-core-field"),
        pytest.param(_topology(vendor="x"), "unknown field `vendor` - at `$.sockets[0]`", id="unknown-socket-field"),
        pytest.param({**_topology(), "cpus": 8}, "Object contains unknown field `cpus`", id="unknown-topology-field"),
        pytest.param({}, "missing required field `sockets`", id="missing-sockets"),
        pytest.param(_with_core(cpus="0-3"), "Expected `array`, got `str`", id="cpus-as-cpulist-string"),
    ],
)
def test_decode_rejects(doc: dict[str, Any], error: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(msgspec.json.encode(doc), type=Topology)
    assert error in str(info.value)


@pytest.mark.parametrize(
    "topo",
    [
        pytest.param(Topology.uniform(), id="one-cpu"),
        pytest.param(Topology.uniform(2, 2, 8, 2, memory_per_numa=8 * GI), id="2x2x8x2"),
        pytest.param(
            Topology(sockets=(Socket(id=3, numa_nodes=(numa(7, core(9, 4, 12), memory=GI),)),)),
            id="sparse-ids",
        ),
    ],
)
def test_round_trip(topo: Topology) -> None:
    assert msgspec.json.decode(msgspec.json.encode(topo), type=Topology) == topo
    assert msgspec.msgpack.decode(encode(topo), type=Topology) == topo


def test_cpus_are_sorted_whatever_the_declaration_order() -> None:
    topo = Topology(sockets=(Socket(id=0, numa_nodes=(numa(0, core(1, 5, 1), core(0, 4, 0)),)),))
    assert topo.cpus() == (0, 1, 4, 5)
    assert [i.cpu for i in topo.cpu_infos()] == [5, 1, 4, 0]
    assert topo.cpu_count == 4


@pytest.mark.parametrize(
    ("build", "match"),
    [
        pytest.param(lambda: Topology(sockets=()), "at least one socket", id="no-sockets"),
        pytest.param(lambda: Topology(sockets=(Socket(id=0, numa_nodes=()),)), "at least one socket", id="no-numa"),
        pytest.param(lambda: Topology.uniform(1, 1, 0), "needs a core", id="no-cores"),
        pytest.param(
            lambda: Topology(sockets=(Socket(id=0, numa_nodes=(NumaNode(id=0, cores=(Core(id=0, cpus=()),)),)),)),
            "needs a core",
            id="core-without-cpus",
        ),
        pytest.param(
            lambda: Topology(sockets=(Socket(id=0, numa_nodes=(NumaNode(id=0, cores=(Core(id=-1, cpus=(0,)),)),)),)),
            "non-negative",
            id="negative-core",
        ),
    ],
)
def test_construction_checks_levels_and_ids(build: Callable[[], Topology], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()
