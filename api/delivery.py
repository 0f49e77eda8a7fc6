"""Why a container waits: what the control plane knows of a start or stop it sent, and the reason shown in state
for a container that is ``scheduled`` or ``stopping`` (``waiting``), so that nothing waits without one.

Deliveries are the control plane's own memory of its sends (not facts of the log): they are shown, never
decided on. The reason is pure: the container, its node and the delivery in, a sentence out.
"""

from __future__ import annotations

import msgspec

from store.projections import ContainerState, ContainerView, NodeView

SYNC_S = 10  # how often a nodelet reconciles against what the log says it must run


class Delivery(msgspec.Struct):
    """The sends of one command to one node: how many, since when, and what the last one got."""

    op: str  # "start" or "stop"
    node: str
    epoch: int
    attempts: int = 0
    first_ns: int = 0  # wall clock of the first send
    last: str = "sending"  # "sending", "accepted", or what the last try got ("no answer: TimeoutError", ...)
    refusal: str = ""  # why the node refused it for good, if it did
    done: bool = False  # the sender stopped: answered, refused, or out of tries (the node's sync takes over)


def waiting(c: ContainerView, node: NodeView | None, d: Delivery | None) -> str:
    """Why ``c`` is still ``scheduled`` or ``stopping`` ("" in any other state)."""
    if c.state is ContainerState.SCHEDULED:
        op, goal = "start", "running"
    elif c.state is ContainerState.STOPPING:
        op, goal = "stop", "ended"
    else:
        return ""
    if c.node is None or node is None:
        return f"its node {c.node} is not registered"
    if node.lost:
        return f"its node {c.node} is lost: the container is declared lost"
    if c.state is ContainerState.SCHEDULED and c.wait_reason:
        return f"{c.wait_reason}: {c.wait_message}" if c.wait_message else c.wait_reason  # the node said why
    if d is None or d.op != op or d.node != c.node or d.epoch != node.epoch:
        return f"waiting for {c.node} to report it {goal} (its {op} is sent, or taken by the node's sync)"
    tries = f"{d.attempts} {'try' if d.attempts == 1 else 'tries'}"
    if d.last == "accepted":
        return f"{c.node} accepted the {op}; waiting for it to report it {goal}"
    if d.done:
        what = f"{c.node} refused the {op}: {d.refusal}" if d.refusal else f"{c.node} did not answer the {op}"
        return f"{what} ({tries}, last: {d.last}); its sync (every {SYNC_S} s) settles it"
    return f"sending the {op} to {c.node} ({tries}, last: {d.last})"
