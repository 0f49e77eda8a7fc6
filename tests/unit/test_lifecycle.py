from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelet.lifecycle import LEFTOVER, TERMINAL, TRANSITIONS, IllegalTransition, Op, State, adopted, transition

S, Op_ = State, Op


@pytest.mark.parametrize(
    ("state", "op", "after"),
    [
        (S.CREATED, Op_.START, S.RUNNING),
        (S.CREATED, Op_.STOP, S.STOPPING),
        (S.CREATED, Op_.EXIT, S.EXITED),
        (S.RUNNING, Op_.STOP, S.STOPPING),
        (S.RUNNING, Op_.EXIT, S.EXITED),
        (S.STOPPING, Op_.EXIT, S.STOPPED),
        (S.STOPPING, Op_.STOP, S.STOPPING),
        (S.EXITED, Op_.REMOVE, S.REMOVED),
        (S.STOPPED, Op_.REMOVE, S.REMOVED),
        (S.EXITED, Op_.STOP, S.EXITED),
        (S.REMOVED, Op_.REMOVE, S.REMOVED),
    ],
)
def test_legal(state: State, op: Op, after: State) -> None:
    assert transition(state, op) is after


@pytest.mark.parametrize(
    ("state", "op", "message"),
    [
        (S.EXITED, Op_.START, "cannot start container in state exited"),
        (S.RUNNING, Op_.REMOVE, "cannot remove container in state running; stop it first"),
        (S.STOPPING, Op_.REMOVE, "cannot remove container in state stopping; wait until it has stopped"),
        (S.RUNNING, Op_.START, "cannot start container in state running; it is running already"),
        (S.REMOVED, Op_.START, "cannot start container in state removed"),
        (S.REMOVED, Op_.EXIT, "cannot exit container in state removed"),
        (S.STOPPED, Op_.START, "cannot start container in state stopped"),
    ],
)
def test_illegal_names_the_state(state: State, op: Op, message: str) -> None:
    with pytest.raises(IllegalTransition) as err:
        transition(state, op)
    assert str(err.value) == message
    assert (err.value.state, err.value.op) == (state, op)


def test_table_is_total_over_legal_pairs_only() -> None:
    for state, op in itertools.product(State, Op):
        if (state, op) in TRANSITIONS:
            assert transition(state, op) in State
        else:
            with pytest.raises(IllegalTransition):
                transition(state, op)


@given(st.lists(st.sampled_from(list(Op)), max_size=30))
def test_no_way_back_from_an_end(ops: list[Op]) -> None:
    """Once a container has ended it never runs again, and stop/remove are safe to repeat."""
    state = S.CREATED
    ended = False
    for op in ops:
        try:
            state = transition(state, op)
        except IllegalTransition:
            continue
        ended = ended or state in TERMINAL
        if ended:
            assert state in TERMINAL
    if state in TERMINAL:
        assert transition(state, Op_.STOP) in TERMINAL


@pytest.mark.parametrize(
    ("runc_status", "state"),
    [
        ("running", S.RUNNING),
        ("paused", S.RUNNING),
        ("stopped", S.RUNNING),  # ended while the node was down: its exit follows as a transition
        ("created", S.CREATED),
        ("creating", S.CREATED),
        (None, S.CREATED),  # runc does not know it
        ("something new", S.CREATED),
    ],
)
def test_adopted(runc_status: str | None, state: State) -> None:
    assert adopted(runc_status) is state


@pytest.mark.parametrize("runc_status", ["running", "paused", "stopped", "created", None])
def test_every_adopted_state_can_end_and_be_removed(runc_status: str | None) -> None:
    state = adopted(runc_status)
    assert transition(transition(state, Op_.EXIT), Op_.REMOVE) is S.REMOVED
    assert transition(transition(transition(state, Op_.STOP), Op_.EXIT), Op_.REMOVE) is S.REMOVED


def test_a_leftover_can_only_be_removed() -> None:
    assert LEFTOVER in TERMINAL
    assert transition(LEFTOVER, Op_.REMOVE) is S.REMOVED
    with pytest.raises(IllegalTransition):
        transition(LEFTOVER, Op_.START)
