"""Why a container waits: the reason shown for ``scheduled`` and ``stopping``, from the container, its node and
what the control plane knows of its last send."""

from __future__ import annotations

import pytest

from api.delivery import Delivery, waiting
from store.projections import ContainerState, ContainerView, NodeView
from tests.builders import spec
from wire.resources import Resources
from wire.topology import Topology

S = ContainerState
NODE = NodeView(name="n1", topology=Topology.uniform(1, 1, 2, 1), capacity=Resources(2000, 1 << 30), epoch=3)
LOST = NodeView(name="n1", topology=NODE.topology, capacity=NODE.capacity, epoch=3, lost=True)


def c(state: ContainerState, node: str | None = "n1") -> ContainerView:
    return ContainerView(id="c1", spec=spec("a"), state=state, node=node)


@pytest.mark.parametrize(
    ("state", "node", "delivery", "reason"),
    [
        (S.RUNNING, NODE, None, ""),
        (S.PENDING, None, None, ""),
        (S.EXITED, NODE, Delivery("start", "n1", 3, done=True), ""),
        (S.SCHEDULED, None, None, "its node n1 is not registered"),
        (S.SCHEDULED, LOST, None, "its node n1 is lost: the container is declared lost"),
        (
            S.SCHEDULED,
            NODE,
            None,
            "waiting for n1 to report it running (its start is sent, or taken by the node's sync)",
        ),
        (S.STOPPING, NODE, None, "waiting for n1 to report it ended (its stop is sent, or taken by the node's sync)"),
        # a delivery of another command, node or epoch says nothing of this one
        (
            S.STOPPING,
            NODE,
            Delivery("start", "n1", 3, 1, last="accepted", done=True),
            "waiting for n1 to report it ended (its stop is sent, or taken by the node's sync)",
        ),
        (
            S.SCHEDULED,
            NODE,
            Delivery("start", "n1", 2, 1, last="accepted", done=True),
            "waiting for n1 to report it running (its start is sent, or taken by the node's sync)",
        ),
        (S.SCHEDULED, NODE, Delivery("start", "n1", 3, 1), "sending the start to n1 (1 try, last: sending)"),
        (
            S.SCHEDULED,
            NODE,
            Delivery("start", "n1", 3, 4, last="no answer: TimeoutError"),
            "sending the start to n1 (4 tries, last: no answer: TimeoutError)",
        ),
        (
            S.SCHEDULED,
            NODE,
            Delivery("start", "n1", 3, 2, last="accepted", done=True),
            "n1 accepted the start; waiting for it to report it running",
        ),
        (
            S.STOPPING,
            NODE,
            Delivery("stop", "n1", 3, 10, last="no answer: NoRespondersError", done=True),
            "n1 did not answer the stop (10 tries, last: no answer: NoRespondersError); "
            "its sync (every 10 s) settles it",
        ),
        (
            S.SCHEDULED,
            NODE,
            Delivery("start", "n1", 3, 1, last="refused: fenced", refusal="fenced", done=True),
            "n1 refused the start: fenced (1 try, last: refused: fenced); its sync (every 10 s) settles it",
        ),
    ],
)
def test_waiting(state: ContainerState, node: NodeView | None, delivery: Delivery | None, reason: str) -> None:
    assert waiting(c(state, "n1"), node, delivery) == reason


@pytest.mark.parametrize("state", [S.SCHEDULED, S.STOPPING])
@pytest.mark.parametrize("delivery", [None, Delivery("start", "n1", 3), Delivery("stop", "n1", 3, 9, done=True)])
def test_nothing_that_waits_waits_without_a_reason(state: ContainerState, delivery: Delivery | None) -> None:
    for node in (None, NODE, LOST):
        assert waiting(c(state), node, delivery)
