from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelet.pools import Pools, cpuset_for, pools
from wire.spec import QoS

ALL = tuple(range(8))


@pytest.mark.parametrize(
    ("exclusive", "expected"),
    [
        pytest.param([], Pools(ls=ALL, be=ALL), id="nothing-held"),
        pytest.param([(QoS.LSE, (0, 1))], Pools(ls=(2, 3, 4, 5, 6, 7), be=(2, 3, 4, 5, 6, 7)), id="lse"),
        pytest.param([(QoS.LSR, (0, 1))], Pools(ls=(2, 3, 4, 5, 6, 7), be=ALL), id="lsr-shared-with-be"),
        pytest.param(
            [(QoS.LSE, (0,)), (QoS.LSR, (1, 2))], Pools(ls=(3, 4, 5, 6, 7), be=(1, 2, 3, 4, 5, 6, 7)), id="both"
        ),
        pytest.param([(QoS.LSR, ALL)], Pools(ls=ALL, be=ALL), id="all-lsr-ls-falls-back-to-be"),
        pytest.param([(QoS.LSE, ALL)], Pools(ls=ALL, be=ALL), id="all-lse-degraded"),
    ],
)
def test_pools(exclusive: list[tuple[QoS, tuple[int, ...]]], expected: Pools) -> None:
    assert pools(ALL, exclusive) == expected


@pytest.mark.parametrize(
    ("qos", "own", "expected"),
    [(QoS.LSE, (0,), (0,)), (QoS.LSR, (1,), (1,)), (QoS.LS, (), (2, 3)), (QoS.BE, (), (1, 2, 3))],
)
def test_cpuset_for(qos: QoS, own: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert cpuset_for(qos, own, Pools(ls=(2, 3), be=(1, 2, 3))) == expected


holdings = st.lists(
    st.tuples(st.sampled_from([QoS.LSE, QoS.LSR]), st.lists(st.sampled_from(ALL), max_size=3).map(tuple)),
    max_size=4,
)


@given(holdings)
def test_pools_never_share_an_lse_cpu_unless_degraded(exclusive: list[tuple[QoS, tuple[int, ...]]]) -> None:
    p = pools(ALL, exclusive)
    lse = {c for q, held in exclusive if q is QoS.LSE for c in held}
    lsr = {c for q, held in exclusive if q is QoS.LSR for c in held}
    assert p.ls and p.be
    assert set(p.ls) <= set(p.be) or set(p.be) == set(ALL)
    if lse != set(ALL):
        assert not lse & set(p.be)
        assert not lse & set(p.ls)
    if lse | lsr != set(ALL):
        assert not (lse | lsr) & set(p.ls)
