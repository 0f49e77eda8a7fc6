"""CPU pools on a node (Koordinator's QoS model), as a pure function of who holds which CPUs.

LSE containers own their CPUs outright; LSR containers own theirs but BE may run on them; LS containers share
what is left (the LS share pool); BE containers share everything but LSE CPUs (the BE pool). When exclusive
containers come and go, the pools move and every LS and BE container's cpuset follows.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from wire.spec import QoS


class Pools(msgspec.Struct, frozen=True, gc=False):
    ls: tuple[int, ...]
    be: tuple[int, ...]


def pools(all_cpus: Iterable[int], exclusive: Iterable[tuple[QoS, tuple[int, ...]]]) -> Pools:
    """The LS and BE pools given the exclusive holdings (QoS, CPUs) of running containers. A pool never ends
    up empty: with every CPU held exclusively, LS falls back to the BE pool and BE to all CPUs (degraded, but
    a container with no CPU at all cannot run)."""
    cpus = sorted(set(all_cpus))
    lse: set[int] = set()
    lsr: set[int] = set()
    for qos, held in exclusive:
        (lse if qos is QoS.LSE else lsr).update(held)
    be = tuple(c for c in cpus if c not in lse) or tuple(cpus)
    ls = tuple(c for c in be if c not in lsr) or be
    return Pools(ls=ls, be=be)


def cpuset_for(qos: QoS, own: tuple[int, ...], p: Pools) -> tuple[int, ...]:
    """The CPUs a container may run on."""
    if qos.exclusive:
        return own
    return p.be if qos is QoS.BE else p.ls
