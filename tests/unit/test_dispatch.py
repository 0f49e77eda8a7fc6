"""Commands derived from the log: what the dispatcher tells nodes, read from the state when it sends (a table of
states), and when (as events fold, and everything under way when it starts)."""

from __future__ import annotations

import pytest

from scheduler.dispatch import Dispatcher, command_for
from store.log import EventLog
from store.memory import MemoryRecorder
from store.projection import Projection
from store.projections import ClusterState, apply_all
from tests.unit.test_scheduler import Recorded, node, spec
from wire import events as ev
from wire.commands import StartContainer, StopContainer
from wire.ids import command_id, container_stream, node_stream
from wire.resources import Resources

C = "00000000000000c1"


def submitted() -> ev.ContainerSubmitted:
    return ev.ContainerSubmitted(container_id=C, spec=spec("a"))


def scheduled(epoch: int = 1) -> ev.ContainerScheduled:
    return ev.ContainerScheduled(container_id=C, node="n1", epoch=epoch, qos="BE", resources=Resources(100, 0))


def started() -> ev.ContainerStarted:
    return ev.ContainerStarted(container_id=C, node="n1", pid=7, started_ns=1)


def stop() -> ev.ContainerStopRequested:
    return ev.ContainerStopRequested(container_id=C, grace_s=3.0)


def state_of(*events: ev.Event) -> ClusterState:
    return apply_all(ClusterState(), enumerate(events, start=1))


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ((), None),
        ((node("n1"), submitted()), None),  # pending: nothing to tell anyone
        ((node("n1"), submitted(), scheduled()), ("start", 1)),
        ((node("n1", epoch=1), submitted(), scheduled(), node("n1", epoch=2)), ("start", 2)),  # the node's epoch now
        ((node("n1"), submitted(), scheduled(), started()), None),  # running: told already
        ((node("n1"), submitted(), scheduled(), started(), stop()), ("stop", 1)),
        ((node("n1"), submitted(), scheduled(), stop()), ("stop", 1)),  # stopped before it started: the stop only
        ((node("n1"), submitted(), scheduled(), ev.NodeLost(node="n1", epoch=1)), None),  # lost: nothing to reach
    ],
)
def test_command_for(events: tuple[ev.Event, ...], expected: tuple[str, int] | None) -> None:
    found = command_for(state_of(*events), C)
    if expected is None:
        assert found is None
        return
    op, epoch = expected
    assert found is not None
    name, command = found
    assert name == "n1"
    assert isinstance(command, StartContainer if op == "start" else StopContainer)
    assert (command.epoch, command.command_id) == (epoch, command_id(C, epoch, op))
    if isinstance(command, StopContainer):
        assert command.grace_s == 3.0


async def harness(*events: tuple[str, ev.Event]) -> tuple[EventLog, Projection, Recorded, Dispatcher]:
    log = EventLog(MemoryRecorder())
    for stream, e in events:
        await log.append(stream, [e])
    projection = await Projection.load(log.recorder)
    publisher = Recorded()
    return log, projection, publisher, Dispatcher(projection, publisher)


async def test_a_start_appended_before_the_dispatcher_ran_is_sent_when_it_starts() -> None:
    # A control plane that died between appending a placement and sending it.
    _, _, publisher, d = await harness(
        (node_stream("n1"), node("n1")), (container_stream(C), submitted()), (container_stream(C), scheduled())
    )
    assert await d.dispatch() == 0  # nothing folded since it was made
    d.everything_under_way()
    assert await d.dispatch() == 1
    assert [(n, c.container_id) for n, c in publisher.starts] == [("n1", C)]


async def test_events_as_they_fold_make_commands_due_and_each_is_sent_once() -> None:
    log, projection, publisher, d = await harness((node_stream("n1"), node("n1")))
    await log.append(container_stream(C), [submitted(), scheduled()])
    await projection.catch_up()
    assert await d.dispatch() == 1
    assert await d.dispatch() == 0  # told once
    await log.append(container_stream(C), [stop()])
    await projection.catch_up()
    assert await d.dispatch() == 1
    assert [c.container_id for _, c in publisher.starts] == [C]
    assert [(c.container_id, c.grace_s) for _, c in publisher.stops] == [(C, 3.0)]


async def test_what_is_sent_is_what_the_state_says_when_it_is_sent() -> None:
    log, projection, publisher, d = await harness((node_stream("n1"), node("n1")))
    await log.append(container_stream(C), [submitted(), scheduled(), stop()])  # folded together
    await projection.catch_up()
    assert await d.dispatch() == 1
    assert publisher.starts == []  # a start for a container that must stop would only be undone
    assert [c.container_id for _, c in publisher.stops] == [C]


def resized(request: int = 700, limit: int | None = 1400) -> ev.ContainerResized:
    return ev.ContainerResized(
        container_id=C, node="n1", cpu_request_millis=request, cpu_limit_millis=limit, resources=Resources(request, 0)
    )


async def test_a_resize_of_a_running_container_is_sent_once() -> None:
    log, projection, publisher, d = await harness((node_stream("n1"), node("n1")))
    await log.append(container_stream(C), [submitted(), scheduled(), started()])
    await projection.catch_up()
    await d.dispatch()
    await log.append(container_stream(C), [resized()])
    await projection.catch_up()
    assert await d.dispatch() == 1
    assert await d.dispatch() == 0
    [(name, update)] = publisher.updates
    assert (name, update.cpu_request_millis, update.cpu_limit_millis, update.epoch) == ("n1", 700, 1400, 1)


async def test_a_resize_while_starting_is_sent_once_it_runs() -> None:
    """The start went out with the old values: the update follows the node's report that it runs."""
    log, projection, publisher, d = await harness((node_stream("n1"), node("n1")))
    await log.append(container_stream(C), [submitted(), scheduled()])
    await projection.catch_up()
    await d.dispatch()
    await log.append(container_stream(C), [resized()])
    await projection.catch_up()
    await d.dispatch()
    assert publisher.updates == []
    await log.append(container_stream(C), [started()])
    await projection.catch_up()
    assert await d.dispatch() == 1
    assert [u.cpu_request_millis for _, u in publisher.updates] == [700]
