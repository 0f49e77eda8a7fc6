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


def transition(state: State, op: Op) -> State:
    """The state after ``op``; raises ``IllegalTransition`` naming the state when the table has no entry."""
    try:
        return TRANSITIONS[state, op]
    except KeyError:
        raise IllegalTransition(state, op) from None
