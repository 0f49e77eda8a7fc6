"""The container lifecycle on a node: one transition table, and errors that name the state.

``created`` (runc create done, the process waits) → ``running`` → ``exited`` (it ended on its own) or, through
``stopping``, ``stopped`` (it ended because it was asked to) → ``removed``. Stopping or removing what is already
stopped or removed is not an error (commands are retried); everything the table lacks is.
"""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"
    STOPPED = "stopped"
    REMOVED = "removed"


class Op(enum.StrEnum):
    START = "start"
    STOP = "stop"  # ask it to end (TERM, then KILL after the grace period)
    EXIT = "exit"  # the monitor saw it end
    REMOVE = "remove"


class IllegalTransition(Exception):
    def __init__(self, state: State, op: Op) -> None:
        hint = _HINTS.get((state, op), "")
        super().__init__(f"cannot {op} container in state {state}{hint}")
        self.state = state
        self.op = op


_S, _O = State, Op
TRANSITIONS: dict[tuple[State, Op], State] = {
    (_S.CREATED, _O.START): _S.RUNNING,
    (_S.CREATED, _O.STOP): _S.STOPPING,
    (_S.CREATED, _O.EXIT): _S.EXITED,
    (_S.CREATED, _O.REMOVE): _S.REMOVED,
    (_S.RUNNING, _O.STOP): _S.STOPPING,
    (_S.RUNNING, _O.EXIT): _S.EXITED,
    (_S.STOPPING, _O.STOP): _S.STOPPING,
    (_S.STOPPING, _O.EXIT): _S.STOPPED,
    (_S.EXITED, _O.STOP): _S.EXITED,
    (_S.EXITED, _O.EXIT): _S.EXITED,
    (_S.EXITED, _O.REMOVE): _S.REMOVED,
    (_S.STOPPED, _O.STOP): _S.STOPPED,
    (_S.STOPPED, _O.EXIT): _S.STOPPED,
    (_S.STOPPED, _O.REMOVE): _S.REMOVED,
    (_S.REMOVED, _O.STOP): _S.REMOVED,
    (_S.REMOVED, _O.REMOVE): _S.REMOVED,
}
_HINTS = {
    (_S.RUNNING, _O.REMOVE): "; stop it first",
    (_S.STOPPING, _O.REMOVE): "; wait until it has stopped",
    (_S.RUNNING, _O.START): "; it is running already",
}
TERMINAL = frozenset({_S.EXITED, _S.STOPPED, _S.REMOVED})
INITIAL = _S.CREATED  # a container the node has just been told to start

# A container found on disk when the node starts again, in the state it is adopted in, by what runc says of
# it. One whose process ended meanwhile is adopted as running, so that its exit is a transition (running →
# exited) like any other; one runc does not know (None) never got past create.
ADOPTED: dict[str | None, State] = {
    "running": _S.RUNNING,
    "paused": _S.RUNNING,
    "stopped": _S.RUNNING,
    "created": _S.CREATED,
    "creating": _S.CREATED,
    None: _S.CREATED,
}
LEFTOVER = _S.EXITED  # a bundle or log with no live record: it ran once and ended (it can only be removed)


def adopted(runc_status: str | None) -> State:
    """The state to adopt a container in, from runc's status of it (an unknown status: as if not created)."""
    return ADOPTED.get(runc_status, _S.CREATED)


def transition(state: State, op: Op) -> State:
    """The state after ``op``; raises ``IllegalTransition`` naming the state when the table has no entry."""
    try:
        return TRANSITIONS[state, op]
    except KeyError:
        raise IllegalTransition(state, op) from None
