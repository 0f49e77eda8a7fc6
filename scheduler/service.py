"""The scheduler's service loop: the async shell around the pure core.

It keeps a projection current from the log, and on every wake: reconciles (appending what the reconciler
asks), then schedules pending containers in batches against a snapshot it updates as it places, submits each
batch as a plan to the applier (which re-checks it against the latest state and appends ``ContainerScheduled``
or rejects with a refresh position; rejected containers are planned again) and records unschedulable ones.
It sends nothing: the dispatcher (``scheduler.dispatch``) derives every command from the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec

from scheduler.feasible import Request, request_of
from scheduler.plan import Plan, PlanResult, Rejection, ResizeRefused, check_plan, resize, scheduled_event
from scheduler.reconcile import Action, next_restart_ns, reconcile
from scheduler.snapshot import PENDING_STATES, NodeSnap, Snapshot, node_snap
from scheduler.stack import DEFAULT, Placement, StackConfig, Unschedulable, place
from store.errors import StoreClosed, UndecodableEvent, WrongExpectedVersion
from store.log import EventLog
from store.projection import Projection
from store.projections import ClusterState, ContainerState, ContainerView, version, version_key
from store.recorder import NO_STREAM
from wire import events as ev
from wire.ids import container_stream, new_container_id
from wire.spec import ContainerSpec

log = logging.getLogger("corral.scheduler")


_CAPACITY_EVENTS = (
    ev.NodeRegistered,
    ev.NodeImagesChanged,
    ev.NodeRecovered,
    ev.NodeUncordoned,
    ev.ContainerExited,
    ev.ContainerStopped,
    ev.ContainerLost,
    ev.ContainerResized,  # a smaller request leaves room
)


class DryRun(msgspec.Struct, frozen=True, gc=False):
    decision: Placement | Unschedulable
    position: int


def _replaced_version(state: ClusterState, action: Action) -> tuple[str, int] | None:
    """For a replacement, the version key of the container it replaces and that container's version as decided."""
    e = action.event
    if isinstance(e, ev.ContainerSubmitted) and e.replaces is not None:
        key = f"container/{e.replaces}"
        return key, state.versions.get(key, NO_STREAM)
    return None


def seed_of(eval_id: uuid.UUID, container_id: str) -> int:
    """A decision's seed: from the evaluation id and the container, so a decision replays exactly."""
    return (eval_id.int ^ int(container_id, 16)) & ((1 << 63) - 1)


class PlanApplier:
    """The single writer's plan check: one plan at a time, against the latest state (``latest`` folds the log
    up to its head and returns the projection; the scheduler's own, so no event is folded twice)."""

    def __init__(self, log_: EventLog, latest: Callable[[], Awaitable[ClusterState]]) -> None:
        self.log = log_
        self.latest = latest
        self._lock = asyncio.Lock()

    async def submit(self, plan: Plan) -> PlanResult:
        """Check the plan, then append each placement against the container's version the check saw: one
        changed meanwhile (stopped, say) is rejected, never placed."""
        async with self._lock:
            state = await self.latest()
            result = check_plan(state, plan)
            outcomes = await asyncio.gather(
                *(
                    self.log.append(
                        container_stream(p.container_id),
                        [scheduled_event(p)],
                        version(state, "container", p.container_id),
                        correlation=plan.eval_id,
                    )
                    for p in result.accepted
                ),
                return_exceptions=True,
            )
            accepted, rejected = [], list(result.rejected)
            for p, outcome in zip(result.accepted, outcomes, strict=True):
                if isinstance(outcome, WrongExpectedVersion):
                    rejected.append(Rejection(placement=p, reason="the container changed since the plan check"))
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    accepted.append(p)
            return msgspec.structs.replace(result, accepted=tuple(accepted), rejected=tuple(rejected))

    async def resize(
        self, container_id: str, request: int, limit: int | None, actor: str = ""
    ) -> ev.ContainerResized | ResizeRefused | None:
        """Change a live container's CPU request and limit in place: decided under the same lock as placements
        (a resize and a placement never both take the last free CPU), appended against the version checked."""
        for _ in range(8):
            async with self._lock:
                state = await self.latest()
                decided = resize(state, container_id, request, limit, actor)
                if decided is None or isinstance(decided, ResizeRefused):
                    return decided  # None: it has these values already
                try:
                    await self.log.append(
                        container_stream(container_id), [decided], version(state, "container", container_id)
                    )
                except WrongExpectedVersion:
                    continue  # the container changed meanwhile: decide again
                return decided
        return ResizeRefused("container_id", f"container {container_id} kept changing; try again")


class Scheduler:
    def __init__(
        self,
        log_: EventLog,
        *,
        config: StackConfig = DEFAULT,
        batch: int = 512,
        new_id: Callable[[], str] = new_container_id,
        clock: Callable[[], int] = time.time_ns,
        projection: Projection | None = None,
    ) -> None:
        self.log = log_
        self.config = config
        self.batch = batch
        self.new_id = new_id
        self.clock = clock
        self.projection = projection if projection is not None else Projection(log_.recorder)
        self.projection.observers.append(self._observe)
        self.applier = PlanApplier(log_, self._latest)
        self._nodes: dict[str, NodeSnap] = {}
        self._dirty_nodes: set[str] = set(self.state.nodes)  # a loaded state: every node needs its snapshot
        self._unschedulable_at: dict[str, int] = {}  # container → node-set version when it last did not fit
        self._cluster_version = 0
        self.placed = 0
        self.decision_ms: list[float] | None = None  # set to a list to record each decision's time (benchmarks)
        self.seen = 0  # the position the last round started from: later events need a round

    # --- state ------------------------------------------------------------------------------------------------

    @property
    def state(self) -> ClusterState:
        """The projection's state (the scheduler owns none of its own)."""
        return self.projection.state

    def _observe(self, position: int, event: ev.Event, before: ContainerView | None) -> None:
        """Mark the nodes whose snapshot an event folded by the projection changes: the node it names, and the
        node its container was on (an exit releases CPUs there whatever node the event names)."""
        node = getattr(event, "node", None)
        if isinstance(node, str):
            self._dirty_nodes.add(node)
        if before is not None and before.node is not None:
            self._dirty_nodes.add(before.node)
        if isinstance(event, _CAPACITY_EVENTS):
            self._cluster_version += 1  # capacity appeared: unschedulable containers may fit now

    def snapshot(self) -> Snapshot:
        """The current snapshot, rebuilding only the nodes that events touched."""
        for name in self._dirty_nodes:
            view = self.state.nodes.get(name)
            if view is None:
                self._nodes.pop(name, None)
                continue
            self._nodes[name] = node_snap(view, self.state.containers)
        self._dirty_nodes.clear()
        return Snapshot(self.state.position, dict(self._nodes), tuple(sorted(self._nodes)))

    # --- one round ----------------------------------------------------------------------------------------------

    async def round(self) -> int:
        """Reconcile, then schedule everything pending; returns how many containers were placed."""
        await self.projection.catch_up()
        self.seen = self.state.position
        state = self.state
        decided = [
            (a, state.versions.get(version_key(a.event), NO_STREAM), _replaced_version(state, a))
            for a in reconcile(state, self.new_id, self.clock())
        ]
        ours: dict[str, int] = {}  # versions our own appends of this pass moved streams to
        for action, checked, replaced in decided:  # each against the version it was decided on
            if replaced is not None:
                key, then = replaced
                await self.projection.catch_up()
                if self.state.versions.get(key, NO_STREAM) != ours.get(key, then):
                    continue  # the container it replaces changed meanwhile (stopped, say): the next round decides
            try:
                await self.log.append(action.stream, [action.event], checked)
                ours[version_key(action.event)] = checked + 1
            except WrongExpectedVersion:
                log.info(
                    "%s for %s: changed meanwhile; the next round decides again",
                    type(action.event).__name__,
                    action.stream,
                )
        await self.projection.catch_up()
        pending = [c for c in self.state.containers.values() if c.state in PENDING_STATES]
        self._unschedulable_at = {c.id: v for c in pending if (v := self._unschedulable_at.get(c.id)) is not None}
        pending = [c for c in pending if self._unschedulable_at.get(c.id) != self._cluster_version]
        pending.sort(key=lambda c: c.submitted_position)
        placed = 0
        for i in range(0, len(pending), self.batch):
            placed += await self._schedule(
                [request_of(c.id, c.spec, c.service_id) for c in pending[i : i + self.batch]]
            )
        self.placed += placed
        return placed

    async def _latest(self) -> ClusterState:
        return await self.projection.catch_up()

    async def _schedule(self, requests: list[Request]) -> int:
        eval_id = uuid.uuid4()
        seen_version = self._cluster_version  # the capacity the decisions below saw (not what folds after)
        snap = self.snapshot()
        nodes = dict(snap.nodes)
        working = Snapshot(snap.position, nodes, snap.order)
        placements: list[Placement] = []
        unschedulable: list[Unschedulable] = []
        for req in requests:
            t = time.perf_counter_ns()
            seed = seed_of(eval_id, req.container_id)
            decision = place(working, req, seed, self.config)
            if self.decision_ms is not None:
                self.decision_ms.append((time.perf_counter_ns() - t) / 1e6)
            if isinstance(decision, Unschedulable):
                unschedulable.append(decision)
                continue
            decision = msgspec.structs.replace(
                decision, snapshot_position=snap.position, seed=seed, batch_index=len(placements)
            )
            placements.append(decision)
            nodes[decision.node] = nodes[decision.node].with_placement(
                decision.qos, decision.cpuset, decision.resources, req.service_id, req.exclusive
            )
        plan = Plan(
            eval_id=eval_id,
            snapshot_position=snap.position,
            placements=tuple(placements),
            requests={r.container_id: r for r in requests},
        )
        result = await self.applier.submit(plan)
        for rejection in result.rejected:
            log.info("plan %s: %s rejected: %s", eval_id, rejection.placement.container_id, rejection.reason)
        verdicts = []
        for u in unschedulable:
            self._unschedulable_at[u.container_id] = seen_version
            view = self.state.containers.get(u.container_id)
            if view is not None and view.state is ContainerState.UNSCHEDULABLE and view.unschedulable == u.message:
                continue  # the same fact again: recorded once, when it changes
            event = ev.ContainerUnschedulable(
                container_id=u.container_id, nodes_total=u.nodes_total, reasons=u.reasons, message=u.message
            )
            checked = version(self.state, "container", u.container_id)
            verdicts.append(self.log.append(container_stream(u.container_id), [event], checked, correlation=eval_id))
        for outcome in await asyncio.gather(*verdicts, return_exceptions=True):  # one group commit for the batch
            if isinstance(outcome, BaseException) and not isinstance(outcome, WrongExpectedVersion):
                raise outcome  # a verdict on a container that changed meanwhile is dropped: the next round judges
        await self.projection.catch_up()  # the dispatcher sees the placements as they fold
        return len(result.accepted)

    async def dry_run(self, spec: ContainerSpec, service_id: str | None = None) -> DryRun:
        """Where a container with ``spec`` would go now, and why (or why not), without changing anything; the
        position lets a caller submit only if nothing changed since (Nomad's ``job plan`` / ``-check-index``)."""
        await self.projection.catch_up()
        eval_id = uuid.uuid4()
        probe = new_container_id()
        decision = place(self.snapshot(), request_of(probe, spec, service_id), seed_of(eval_id, probe), self.config)
        return DryRun(decision=decision, position=self.state.position)

    async def run(self, stop: asyncio.Event) -> None:
        """Schedule whenever the log moves, until ``stop`` is set."""
        await self.projection.catch_up()
        while not stop.is_set():
            try:
                await self.round()
            except StoreClosed:
                return
            except UndecodableEvent:
                raise  # the log holds what this version cannot read: stop, never schedule on a partial state
            except Exception:  # a bug must not stop scheduling for good: say so, back off, go on
                log.exception("scheduling round failed")
                await asyncio.sleep(0.5)
                continue
            # Wait past what the last round saw, not past the state: others fold events into the state too
            # (the API, to answer), and an event folded by them still needs a round.
            waiter = asyncio.ensure_future(self.log.recorder.wait_beyond(self.seen))
            stopper = asyncio.ensure_future(stop.wait())
            now = self.clock()
            due = next_restart_ns(self.state, now)  # a back-off that ends is a reason for a round too
            try:
                await asyncio.wait(
                    {waiter, stopper},
                    timeout=None if due is None else (due - now) / 1e9 + 0.01,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for f in (waiter, stopper):
                    f.cancel()
                await asyncio.gather(waiter, stopper, return_exceptions=True)  # retrieve, never leak
            if isinstance(waiter.exception() if waiter.done() and not waiter.cancelled() else None, StoreClosed):
                return
