"""The HTTP API's handlers, as Litestar controllers: containers, services, nodes, the log (events and state at
a position) and metrics. Each handler gets what it needs as a dependency — the projection (the one owner of
the cluster state), the event log, the control plane for what reaches nodes, the viewer for redaction — and
every write is a decision appended with the version it was checked against (``Projection.decide``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.response import Stream
from litestar.types import ControllerRouterHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from api.controlplane import ControlPlane
from api.delivery import waiting
from api.edge import (
    EVENT_TYPE_LIST,
    FROM_ZERO,
    IF_MATCH,
    IMPORT_MAX_BYTES,
    LAST_EVENT_ID,
    MAX_POSITION,
    MAX_TAIL,
    PAGE_HEADERS,
    VERSION_MATCH,
    Audit,
    BodyError,
    BurstPolicyView,
    ContainerStatus,
    Continue,
    HistoryEntry,
    Imported,
    Limit,
    NodeSamples,
    PlanResult,
    Pulled,
    PullRequest,
    Removed,
    Resize,
    Samples,
    Scale,
    StopAccepted,
    Submitted,
    Viewer,
    sse,
)
from api.openapi import errors
from api.paging import Page, next_headers, page
from scheduler.feasible import can_run_image
from scheduler.plan import ResizeRefused
from scheduler.stack import Placement, Unschedulable
from store.errors import WrongExpectedHead, WrongExpectedVersion
from store.log import EventLog, Recorded
from store.projection import Projection
from store.projections import (
    BURST_POLICY_KEY,
    ClusterState,
    ContainerState,
    ContainerView,
    NodeView,
    ServiceView,
    apply_all,
    decode_snapshot,
)
from store.projector import DEFAULT_SNAPSHOT
from store.recorder import NO_STREAM
from store.sqlite import SqliteRecorder
from wire import checks
from wire import events as ev
from wire.burst import BurstConfig
from wire.commands import CommandRejected, ImageEntry, LogsReply, Reject
from wire.events import EVENT_TYPES
from wire.ids import (
    BURST_POLICY_STREAM,
    container_stream,
    new_container_id,
    new_service_id,
    node_stream,
    service_stream,
)
from wire.pss import Level, admission, judge
from wire.spec import (
    SECCOMP_RUNTIME_DEFAULT,
    SECCOMP_UNCONFINED,
    ContainerSpec,
    PullPolicy,
    ServiceSpec,
    host_mount_allowed,
    image_name,
)

# What handlers get injected, by parameter name (see ``api.app``).
CPDep = NamedDependency[ControlPlane]
ProjectionDep = NamedDependency[Projection]
LogDep = NamedDependency[EventLog]
ViewerDep = NamedDependency[Viewer]


# --- pure decisions --------------------------------------------------------------------------------------------


def stop_decision(
    state: ClusterState, cid: str, grace: float, reason: str = "", *, backoff: bool = True, actor: str = ""
) -> list[ev.Event]:
    """A stop, if the container still needs one: live and not stopping already, or (with ``backoff``) ended and
    waiting out a restart back-off (a stop then means it must not come back)."""
    c = state.containers.get(cid)
    if c is None:
        return []
    if (not c.state.terminal and c.state is not ContainerState.STOPPING) or (backoff and c.backoff_until_ns):
        return [ev.ContainerStopRequested(container_id=cid, grace_s=grace, reason=reason, actor=actor)]
    return []


def id_for(kind: str, idempotency_key: str | None) -> str | None:
    """With a key, the id is derived from it: a retry finds the stream exists, even after a restart."""
    return hashlib.sha256(f"{kind}/{idempotency_key}".encode()).hexdigest()[:16] if idempotency_key else None


def _everything(_: object) -> bool:
    return True


# --- lookups shared by the controllers -------------------------------------------------------------------------


async def _container(projection: Projection, cid: str) -> ContainerView:
    c = (await projection.catch_up()).containers.get(cid)
    if c is None:
        raise HTTPException(status_code=404, detail=f"no container {cid}")
    return c


async def _service(projection: Projection, sid: str) -> ServiceView:
    svc = (await projection.catch_up()).services.get(sid)
    if svc is None:
        raise HTTPException(status_code=404, detail=f"no service {sid}")
    return svc


async def _node(projection: Projection, name: str) -> NodeView:
    n = (await projection.catch_up()).nodes.get(name)
    if n is None:
        raise HTTPException(status_code=404, detail=f"no node {name}")
    return n


def _explained(cp: ControlPlane, s: ClusterState, c: ContainerView) -> ContainerView:
    """``c`` with the reason it waits, if it waits (``scheduled`` or ``stopping``)."""
    if c.state is not ContainerState.SCHEDULED and c.state is not ContainerState.STOPPING:
        return c
    node = s.nodes.get(c.node) if c.node is not None else None
    reason = waiting(c, node, cp.publisher.deliveries.get(c.id))
    return ContainerStatus(**msgspec.structs.asdict(c), waiting=reason)


def _paged(request: Request[Any, Any, Any], viewer: Viewer, found: Page[Any]) -> Response[Any]:
    query = {k: v for k, v in request.query_params.items() if k != "continue"}
    return Response(viewer.shown(found.items), headers=next_headers(request.url.path, query, found.next))


async def _create_once(
    projection: Projection,
    event_log: EventLog,
    entity_id: str,
    stream: str,
    event: ev.ContainerSubmitted | ev.ServiceCreated,
    *,
    expected_head: int | None = None,
) -> Submitted:
    """Append the event that creates a new stream; if the stream exists (a retry with the same
    Idempotency-Key), answer with the first append instead — if the retry asks for the same thing and what
    the key made still exists (the IETF Idempotency-Key draft: a reused key with another body is 422).
    With ``expected_head`` (If-Match), the append is a compare-and-set on the log's head in the writer's
    transaction: 412 if anything was appended since -- unless it is a retry of a submission that was made (its
    own append moved the head), which gets the first answer again."""
    try:
        [position] = await event_log.append(stream, [event], NO_STREAM, expected_head=expected_head)
    except WrongExpectedHead as e:
        made = await event_log.read_stream(stream)
        if not made:
            raise HTTPException(
                status_code=412, detail=f"the cluster changed since position {e.expected} (now {e.current}): plan again"
            ) from None
        return await _made_before(projection, entity_id, made[0], event)
    except WrongExpectedVersion:
        return await _made_before(projection, entity_id, (await event_log.read_stream(stream))[0], event)
    return Submitted(id=entity_id, position=position)


async def _made_before(
    projection: Projection, entity_id: str, first: Recorded, event: ev.ContainerSubmitted | ev.ServiceCreated
) -> Submitted:
    """The answer to a retry with the same Idempotency-Key, from what its first request appended."""
    if not isinstance(first.event, type(event)) or first.event.spec != event.spec:
        raise BodyError(422, "this key was used for a different request body", "Idempotency-Key")
    s = await projection.catch_up()
    if entity_id not in (s.containers if isinstance(event, ev.ContainerSubmitted) else s.services):
        raise BodyError(409, f"what this key made ({entity_id}) was removed; use a new key", "Idempotency-Key")
    return Submitted(id=entity_id, position=first.position, duplicate=True)


async def _live_node(projection: Projection, name: str) -> NodeView:
    view = await _node(projection, name)
    if view.lost:
        raise HTTPException(status_code=503, detail=f"node {name} is lost")
    return view


def _node_refused(name: str, reply: CommandRejected) -> HTTPException:
    if reply.code is Reject.NODE_UNREACHABLE:
        return HTTPException(status_code=503, detail=f"node {name} is unreachable; try again")
    return HTTPException(status_code=502, detail=f"node {name}: {reply.code}: {reply.message}")


async def _runnable_somewhere(projection: Projection, spec: ContainerSpec, prefix: str = "") -> None:
    """Refuse what every registered node would refuse: an image none holds, a host path none allows (with
    no node registered yet, nothing is known)."""
    nodes = (await projection.catch_up()).nodes.values()
    image, may_pull = image_name(spec.image), spec.pullable
    has_image = [n for n in nodes if can_run_image(n.images, n.pulls, image, may_pull)]
    if nodes and not has_image:
        why = (
            f"no node holds image {spec.image!r} and its image_pull_policy is Never"
            if spec.image_pull_policy is PullPolicy.NEVER
            else f"no node holds image {spec.image!r}, and none pulls"
            if may_pull
            else f"no node holds image {spec.image!r}"
        )
        raise BodyError(422, f"{why}; pull it first (corral image pull IMAGE --all)", f"{prefix}image")
    for m in spec.mounts:
        if has_image and not any(host_mount_allowed(m.source, n.host_mounts) for n in has_image):
            raise BodyError(
                422, f"no node with the image allows host path {m.source!r} to be mounted", f"{prefix}mounts"
            )
    profile = spec.seccomp_profile
    if has_image and profile != SECCOMP_RUNTIME_DEFAULT and not any(profile in n.seccomp_profiles for n in has_image):
        why = "allows Unconfined" if profile == SECCOMP_UNCONFINED else f"holds the profile {profile!r}"
        raise BodyError(422, f"no node with the image {why}", f"{prefix}seccomp_profile")
    admits = [n for n in has_image if not admission(spec, n.pod_security)]
    if has_image and not admits:
        failed = admission(spec, has_image[0].pod_security)
        raise BodyError(
            422, f"no node with the image admits it: {'; '.join(failed)}", f"{prefix}security", "pod security"
        )


# --- containers ------------------------------------------------------------------------------------------------


class ContainerController(Controller):
    path = "/v1/containers"
    tags = ["containers"]

    @post(
        "/",
        status_code=201,
        opt={"body": ContainerSpec},
        responses=errors(400, 401, 403, 409, 412, 413, 415, 422),
    )
    async def create_container(
        self,
        *,
        projection: ProjectionDep,
        event_log: LogDep,
        viewer: ViewerDep,
        data: JSONBody[ContainerSpec],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", schema_extra=IF_MATCH)] = None,
    ) -> Submitted:
        """Submit a container. ``If-Match`` with the position a plan returned submits only if nothing was
        appended since (Nomad's ``-check-index``)."""
        expected_head = None
        if if_match is not None:
            expected = if_match.strip('"')
            if not expected.isdigit():
                raise ValidationException("If-Match: expected the log position a plan returned")
            expected_head = int(expected)
        await _runnable_somewhere(projection, data)
        cid = id_for("corral", idempotency_key) or new_container_id()
        event = ev.ContainerSubmitted(
            container_id=cid, spec=data, idempotency_key=idempotency_key, actor=viewer.principal
        )
        return await _create_once(projection, event_log, cid, container_stream(cid), event, expected_head=expected_head)

    @get("/", responses=errors(401, 422), response_headers=PAGE_HEADERS)
    async def list_containers(
        self,
        *,
        request: Request[Any, Any, Any],
        cp: CPDep,
        projection: ProjectionDep,
        viewer: ViewerDep,
        node: FromQuery[str | None] = None,
        state_: Annotated[ContainerState | None, QueryParameter(name="state")] = None,
        limit: Limit = None,
        start: Continue = None,
    ) -> Response[list[ContainerStatus]]:
        """Containers in id order; with ``limit``, a page at a time (the next one named by ``Corral-Continue``
        and ``Link``)."""
        s = await projection.catch_up()

        def keep(c: ContainerView) -> bool:
            return (node is None or c.node == node) and (state_ is None or c.state == state_)

        found = page(s.containers, keep, limit, start)
        return _paged(request, viewer, Page([_explained(cp, s, c) for c in found.items], found.next))

    @get("/{cid:str}", responses=errors(401, 404))
    async def get_container(
        self, *, cp: CPDep, projection: ProjectionDep, viewer: ViewerDep, cid: FromPath[str]
    ) -> ContainerStatus:
        """A container; while it is ``scheduled`` or ``stopping``, ``waiting`` says why it has not moved on."""
        c = await _container(projection, cid)
        return viewer.shown(_explained(cp, projection.state, c))  # type: ignore[return-value]

    @delete("/{cid:str}", status_code=202, responses=errors(401, 403, 404, 422))
    async def stop_container(
        self,
        *,
        projection: ProjectionDep,
        event_log: LogDep,
        viewer: ViewerDep,
        cid: FromPath[str],
        grace: Annotated[float, QueryParameter(ge=0, le=3600, schema_extra=FROM_ZERO)] = 10.0,
    ) -> StopAccepted:
        """Stop a container: TERM, then KILL after ``grace`` seconds (0 to 3600)."""
        await _container(projection, cid)
        await projection.decide(
            event_log,
            ("container", cid),
            container_stream(cid),
            lambda s: stop_decision(s, cid, grace, actor=viewer.principal),
        )
        return StopAccepted(id=cid, state=str((await _container(projection, cid)).state))

    @patch("/{cid:str}", opt={"body": Resize}, responses=errors(400, 401, 403, 404, 409, 413, 415, 422))
    async def resize_container(
        self, *, cp: CPDep, projection: ProjectionDep, viewer: ViewerDep, cid: FromPath[str], data: JSONBody[Resize]
    ) -> ContainerStatus:
        """Change a live LS container's CPU request and limit in place (``docker update --cpus``, Kubernetes'
        in-place resize): 409 if its node cannot hold the new request, or it is not live, or not LS; its node
        changes the cgroup's shares and quota without a restart (``ContainerResized``)."""
        c = await _container(projection, cid)
        request = c.spec.cpu_request_millis if data.cpu_request_millis is None else data.cpu_request_millis
        limit = c.spec.cpu_limit_millis if data.cpu_limit_millis is None else data.cpu_limit_millis
        decided = await cp.scheduler.applier.resize(cid, request, limit, actor=viewer.principal)
        if isinstance(decided, ResizeRefused):
            raise BodyError(409 if decided.conflict else 422, decided.reason, decided.field, "cannot resize")
        return viewer.shown(_explained(cp, projection.state, await _container(projection, cid)))  # type: ignore[return-value]

    @post("/{cid:str}/remove", status_code=202, responses=errors(401, 403, 404, 409))
    async def remove_container(
        self, *, cp: CPDep, projection: ProjectionDep, viewer: ViewerDep, cid: FromPath[str]
    ) -> StopAccepted:
        """Forget an ended container (``docker rm``); a running one must be stopped first (409)."""
        c = await _container(projection, cid)
        if not c.state.terminal:
            raise HTTPException(status_code=409, detail=f"cannot remove container in state {c.state}; stop it first")
        await cp.remove(cid, actor=viewer.principal)
        return StopAccepted(id=cid, state="removed")

    @get("/{cid:str}/history", responses=errors(401, 404))
    async def history(
        self,
        *,
        projection: ProjectionDep,
        event_log: LogDep,
        viewer: ViewerDep,
        cid: FromPath[str],
    ) -> list[HistoryEntry]:
        await _container(projection, cid)
        return [
            HistoryEntry(r.position, r.version, r.recorded_ns, viewer.shown(r.event))
            for r in await event_log.read_stream(container_stream(cid))
        ]

    @get("/{cid:str}/logs", responses=errors(401, 404, 409, 422, 502, 503), media_type="text/plain")
    async def logs(
        self,
        *,
        cp: CPDep,
        projection: ProjectionDep,
        cid: FromPath[str],
        tail: Annotated[int | None, QueryParameter(ge=0, le=MAX_TAIL, schema_extra=FROM_ZERO)] = None,
        follow: FromQuery[bool] = False,
    ) -> Response[Any]:
        """The container's output, stdout and stderr interleaved; ``tail`` keeps the last lines (0 to 100000);
        ``follow`` streams new lines until the container ends."""
        c = await _container(projection, cid)
        node = c.node
        if node is None:
            raise HTTPException(status_code=409, detail=f"container {cid} has not been placed on a node yet")

        async def ask(since: int | None, tail_: int | None) -> LogsReply:
            reply = await cp.get_logs(node, cid, since=since, tail=tail_)
            if isinstance(reply, LogsReply):
                return reply
            if reply.code == "node_unreachable":
                raise HTTPException(status_code=503, detail=f"node {node} is unreachable; try again")
            if reply.code == "unknown_container":
                raise HTTPException(status_code=404, detail=f"node {node} keeps no logs for container {cid}")
            raise HTTPException(status_code=502, detail=f"node {node} could not read the logs ({reply.code})")

        # A node answers a page at a time (a reply must fit a NATS message): the last ``tail`` lines are the
        # ones from the log's end less ``tail``, paged forward like the rest.
        since = None if tail is None else max(0, (await ask(None, 0)).next_line - tail)
        first = await ask(since, None)  # before the answer starts: a failure is still a status code

        async def stream() -> AsyncIterator[bytes]:
            reply = first
            while True:
                yield "".join(f"{line}\n" for line in reply.lines).encode()
                if reply.more:
                    reply = await ask(reply.next_line, None)
                    continue
                if not follow:
                    return
                await asyncio.sleep(0.5)
                view = (await projection.catch_up()).containers.get(cid)
                reply = await ask(reply.next_line, None)
                if not reply.lines and not reply.more and view is not None and view.state.terminal:
                    return

        return Stream(stream(), media_type="text/plain")

    @get("/{cid:str}/audit", responses=errors(401, 404, 409, 502, 503))
    async def audit_container(self, *, cp: CPDep, projection: ProjectionDep, cid: FromPath[str]) -> Audit:
        """The running container judged against the Kubernetes Pod Security Standards, baseline and restricted,
        from what its node reads of the process in /proc (capabilities, no_new_privs, seccomp, user, shared
        namespaces, mounts), not from what was asked for."""
        c = await _container(projection, cid)
        if c.node is None or c.state is not ContainerState.RUNNING:
            raise HTTPException(status_code=409, detail=f"container {cid} is {c.state}: only a running one is audited")
        reply = await cp.audit(c.node, cid)
        if isinstance(reply, CommandRejected):
            if reply.code == "node_unreachable":
                raise HTTPException(status_code=503, detail=f"node {c.node} is unreachable; try again")
            raise HTTPException(status_code=502, detail=f"node {c.node} could not audit it: {reply.message}")
        verdicts = judge(reply.facts)
        return Audit(
            container_id=cid,
            node=c.node,
            baseline=all(v.ok for v in verdicts if v.level is Level.BASELINE),
            restricted=all(v.ok for v in verdicts),
            controls=verdicts,
            facts=reply.facts,
        )

    @get("/{cid:str}/stats", responses=errors(401, 404))
    async def container_stats(self, *, cp: CPDep, projection: ProjectionDep, cid: FromPath[str]) -> Samples:
        await _container(projection, cid)
        recent, older = cp.telemetry.container(cid)
        return Samples(recent=recent, older=older)


# --- services --------------------------------------------------------------------------------------------------


class ServiceController(Controller):
    path = "/v1/services"
    tags = ["services"]

    @post("/", status_code=201, opt={"body": ServiceSpec}, responses=errors(400, 401, 403, 409, 413, 415, 422))
    async def create_service(
        self,
        *,
        projection: ProjectionDep,
        event_log: LogDep,
        viewer: ViewerDep,
        data: JSONBody[ServiceSpec],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> Submitted:
        await _runnable_somewhere(projection, data.template, "template.")
        sid = id_for("corral-svc", idempotency_key) or new_service_id()
        event = ev.ServiceCreated(service_id=sid, spec=data, actor=viewer.principal)
        return await _create_once(projection, event_log, sid, service_stream(sid), event)

    @get("/", responses=errors(401, 422), response_headers=PAGE_HEADERS)
    async def list_services(
        self,
        *,
        request: Request[Any, Any, Any],
        projection: ProjectionDep,
        viewer: ViewerDep,
        limit: Limit = None,
        start: Continue = None,
    ) -> Response[list[ServiceView]]:
        """Services in id order, paged as containers are."""
        return _paged(request, viewer, page((await projection.catch_up()).services, _everything, limit, start))

    @patch("/{sid:str}", opt={"body": Scale}, responses=errors(400, 401, 403, 404, 413, 415, 422))
    async def scale_service(
        self,
        *,
        projection: ProjectionDep,
        event_log: LogDep,
        viewer: ViewerDep,
        sid: FromPath[str],
        data: JSONBody[Scale],
    ) -> ServiceView:
        await _service(projection, sid)

        def scale(s: ClusterState) -> list[ev.Event]:
            svc = s.services.get(sid)
            if svc is None or data.replicas == svc.replicas:
                return []
            return [
                ev.ServiceScaled(
                    service_id=sid, replicas_from=svc.replicas, replicas_to=data.replicas, actor=viewer.principal
                )
            ]

        await projection.decide(event_log, ("service", sid), service_stream(sid), scale)
        return await _service(projection, sid)

    @delete("/{sid:str}", status_code=202, responses=errors(401, 403, 404))
    async def delete_service(
        self, *, projection: ProjectionDep, event_log: LogDep, viewer: ViewerDep, sid: FromPath[str]
    ) -> StopAccepted:
        await _service(projection, sid)
        await projection.decide(
            event_log,
            ("service", sid),
            service_stream(sid),
            lambda s: [ev.ServiceDeleted(service_id=sid, actor=viewer.principal)] if sid in s.services else [],
        )
        return StopAccepted(id=sid, state="deleted")


# --- nodes -----------------------------------------------------------------------------------------------------


async def _node_fact(
    projection: Projection,
    event_log: EventLog,
    name: str,
    fact: Callable[[NodeView], list[ev.Event]],
) -> None:
    await _node(projection, name)
    await projection.decide(
        event_log, ("node", name), node_stream(name), lambda s: fact(s.nodes[name]) if name in s.nodes else []
    )


class NodeController(Controller):
    path = "/v1/nodes"
    tags = ["nodes"]

    @get("/", responses=errors(401, 422), response_headers=PAGE_HEADERS)
    async def list_nodes(
        self,
        *,
        request: Request[Any, Any, Any],
        projection: ProjectionDep,
        viewer: ViewerDep,
        limit: Limit = None,
        start: Continue = None,
    ) -> Response[list[NodeView]]:
        """Nodes in name order, paged as containers are."""
        return _paged(request, viewer, page((await projection.catch_up()).nodes, _everything, limit, start))

    @get("/{name:str}/stats", responses=errors(401, 404))
    async def node_stats(self, *, cp: CPDep, projection: ProjectionDep, name: FromPath[str]) -> NodeSamples:
        await _node(projection, name)
        recent, older = cp.telemetry.node(name)
        return NodeSamples(recent=recent, older=older)

    @post(
        "/{name:str}/images",
        status_code=201,
        opt={"body": PullRequest},
        responses=errors(400, 401, 403, 404, 413, 415, 422, 503),
    )
    async def pull_image(
        self, *, cp: CPDep, projection: ProjectionDep, name: FromPath[str], data: JSONBody[PullRequest]
    ) -> Pulled:
        """Have the node pull an image from its registry (answered once pulled; 422 with the registry's reason,
        e.g. ``manifest unknown``, when the image cannot be pulled); its images change (``ImagePulled``,
        ``NodeImagesChanged``)."""
        await _live_node(projection, name)
        reply = await cp.pull_image(name, data.image)
        if isinstance(reply, CommandRejected):
            if reply.code is Reject.NODE_UNREACHABLE:
                raise _node_refused(name, reply)
            raise BodyError(422, f"node {name} could not pull {data.image}: {reply.message}", "image", "pull failed")
        return Pulled(node=name, image=data.image)

    @get("/{name:str}/images", responses=errors(401, 404, 502, 503))
    async def list_images(self, *, cp: CPDep, projection: ProjectionDep, name: FromPath[str]) -> list[ImageEntry]:
        """The images the node holds, asked of the node: sizes, last use (image GC takes the least recently used
        first), and whether a container there was made from each."""
        await _live_node(projection, name)
        reply = await cp.list_images(name)
        if isinstance(reply, CommandRejected):
            raise _node_refused(name, reply)
        return list(reply.images)

    @delete("/{name:str}/images", status_code=200, responses=errors(401, 403, 404, 409, 422, 502, 503))
    async def remove_image(
        self,
        *,
        cp: CPDep,
        projection: ProjectionDep,
        name: FromPath[str],
        image: Annotated[
            str,
            QueryParameter(
                min_length=1,
                max_length=255,
                description="a name or an image id",
                schema_extra=checks.schema_pattern(checks.IMAGE_REF),
            ),
        ],
        force: Annotated[bool, QueryParameter(description="an id's every name, or a name's image outright")] = False,
    ) -> Removed:
        """``docker rmi`` on one node: a name loses that name, and the image goes with its last one; 409 while a
        container there was made from it, 404 when the node lacks it."""
        await _live_node(projection, name)
        try:
            checks.image_ref("image", image)
        except ValueError as e:
            raise BodyError(422, str(e).partition(": ")[2], "image") from None
        reply = await cp.remove_image(name, image, force)
        if isinstance(reply, CommandRejected):
            if reply.code is Reject.IMAGE_IN_USE:
                raise HTTPException(status_code=409, detail=reply.message)
            if reply.code is Reject.UNKNOWN_IMAGE:
                raise HTTPException(status_code=404, detail=reply.message)
            raise _node_refused(name, reply)
        return Removed(node=name, image=image)

    @post(
        "/{name:str}/images/import",
        status_code=201,
        request_max_body_size=IMPORT_MAX_BYTES,
        responses=errors(401, 403, 404, 413, 415, 422, 502, 503),
    )
    async def import_image(
        self, *, request: Request[Any, Any, Any], cp: CPDep, projection: ProjectionDep, name: FromPath[str]
    ) -> Imported:
        """Import an image tarball (``docker save``, or an OCI image layout as ``skopeo copy oci-archive:``
        writes one; plain or gzip) into the node's store, streamed through to the node: the body is the
        tarball, ``Content-Type: application/x-tar``. 422 says what the store refused, nothing is kept then."""
        await _live_node(projection, name)
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in ("application/x-tar", "application/octet-stream", "application/gzip"):
            raise BodyError(415, f"Content-Type must be application/x-tar, not {media or 'missing'}", "Content-Type")
        reply = await cp.import_image(name, request.stream())
        if isinstance(reply, CommandRejected):
            if reply.code in (Reject.INVALID_IMAGE, Reject.INVALID_COMMAND):
                raise BodyError(422, f"node {name} refused the image: {reply.message}", "body", "invalid image")
            raise _node_refused(name, reply)
        return Imported(node=name, image_id=reply.image_id, tags=reply.tags)

    @post("/{name:str}/cordon", status_code=202, responses=errors(401, 403, 404))
    async def cordon(
        self, *, projection: ProjectionDep, event_log: LogDep, viewer: ViewerDep, name: FromPath[str]
    ) -> NodeView:
        # Idempotent: cordoning a cordoned node records nothing.
        cordoned = ev.NodeCordoned(node=name, actor=viewer.principal)
        await _node_fact(projection, event_log, name, lambda n: [] if n.cordoned else [cordoned])
        return await _node(projection, name)

    @post("/{name:str}/uncordon", status_code=202, responses=errors(401, 403, 404))
    async def uncordon(
        self, *, projection: ProjectionDep, event_log: LogDep, viewer: ViewerDep, name: FromPath[str]
    ) -> NodeView:
        uncordoned = ev.NodeUncordoned(node=name, actor=viewer.principal)
        await _node_fact(projection, event_log, name, lambda n: [uncordoned] if n.cordoned else [])
        return await _node(projection, name)

    @post("/{name:str}/drain", status_code=202, responses=errors(401, 403, 404))
    async def drain(
        self, *, projection: ProjectionDep, event_log: LogDep, viewer: ViewerDep, name: FromPath[str]
    ) -> NodeView:
        """Cordon the node and stop its containers; services place replacements elsewhere."""
        drained = ev.NodeDrained(node=name, actor=viewer.principal)
        await _node_fact(projection, event_log, name, lambda n: [] if n.drained else [drained])
        on_node = [c.id for c in (await projection.catch_up()).containers.values() if c.node == name]
        await asyncio.gather(  # one group commit, not one per container
            *(
                projection.decide(
                    event_log,
                    ("container", cid),
                    container_stream(cid),
                    functools.partial(
                        stop_decision, cid=cid, grace=10.0, reason="node drained", backoff=False, actor=viewer.principal
                    ),
                )
                for cid in on_node
            )
        )
        return await _node(projection, name)


# --- CPU Burst ---------------------------------------------------------------------------------------------------


def _burst_view(state: ClusterState) -> BurstPolicyView:
    return BurstPolicyView(config=state.burst, version=state.versions.get(BURST_POLICY_KEY, -1))


class BurstPolicyController(Controller):
    path = "/v1/burst-policy"
    tags = ["cpu burst"]

    @get("/", responses=errors(401))
    async def get_burst_policy(self, *, projection: ProjectionDep) -> BurstPolicyView:
        """The cluster strategy and the node strategies (first whose selector matches a node's labels wins);
        a container's own ``burst`` settings override them field by field."""
        return _burst_view(await projection.catch_up())

    @put("/", opt={"body": BurstConfig}, responses=errors(400, 401, 403, 412, 413, 415, 422))
    async def put_burst_policy(
        self,
        *,
        projection: ProjectionDep,
        event_log: LogDep,
        viewer: ViewerDep,
        data: JSONBody[BurstConfig],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", schema_extra=VERSION_MATCH)] = None,
    ) -> BurstPolicyView:
        """Replace the whole configuration (recorded as ``BurstPolicyChanged``; nodes apply it within a
        second, without a restart). ``If-Match`` with the version read replaces only if it is still current."""
        expected = None
        if if_match is not None:
            try:
                expected = int(if_match.strip('"'))
            except ValueError:
                raise BodyError(422, "expected the version a GET returned", "If-Match") from None

        def change(state: ClusterState) -> list[ev.Event]:
            current = _burst_view(state)
            if expected is not None and expected != current.version:
                raise HTTPException(
                    status_code=412, detail=f"the policy is at version {current.version}, not {expected}: read again"
                )
            if current.config == data and current.version >= 0:
                return []
            return [ev.BurstPolicyChanged(config=data, actor=viewer.principal)]

        await projection.decide(event_log, ("cluster", "burst-policy"), BURST_POLICY_STREAM, change)
        return _burst_view(await projection.catch_up())


# --- the log: plans, events, state at a position ---------------------------------------------------------------


async def _state_base(cp: ControlPlane, at: int) -> ClusterState:
    """The state to replay from up to ``at``: empty if the log still starts at 1, else the snapshot saved
    when it was truncated, if that is not past ``at``."""
    oldest = await cp.recorder.oldest()
    if oldest <= 1:
        return ClusterState()
    saved = await cp.recorder.load_snapshot(DEFAULT_SNAPSHOT)
    base = decode_snapshot(saved[1]) if saved is not None else None
    if base is None or base.position > at or base.position < oldest - 1:
        raise BodyError(
            410, f"position {at} was truncated away; the oldest position that can be rebuilt is {oldest}", "at"
        )
    return base


class LogController(Controller):
    path = "/v1"
    tags = ["log"]

    @post(
        "/plan",
        status_code=200,
        opt={"reads_only": True, "body": ContainerSpec},
        responses=errors(400, 401, 413, 415, 422),
    )
    async def plan(self, *, cp: CPDep, data: JSONBody[ContainerSpec]) -> PlanResult:
        """Where the container would go now, and the log position that answer holds for (pass it as
        ``If-Match`` to submit only if nothing changed since)."""
        result = await cp.scheduler.dry_run(data)
        d = result.decision
        if isinstance(d, Placement):
            return PlanResult(
                fits=True,
                position=result.position,
                node=d.node,
                cpuset=d.cpuset,
                numa_nodes=d.numa_nodes,
                reason=d.reason,
            )
        assert isinstance(d, Unschedulable)
        return PlanResult(fits=False, position=result.position, reason=d.message)

    @get("/events", responses=errors(401, 410, 422), media_type="text/event-stream")
    async def events(
        self,
        *,
        cp: CPDep,
        event_log: LogDep,
        viewer: ViewerDep,
        since: Annotated[int | None, QueryParameter(ge=0, le=MAX_POSITION, schema_extra=FROM_ZERO)] = None,
        type_: Annotated[str | None, QueryParameter(name="type", max_length=4096, schema_extra=EVENT_TYPE_LIST)] = None,
        last_event_id: Annotated[
            str | None, HeaderParameter(name="Last-Event-ID", max_length=20, schema_extra=LAST_EVENT_ID)
        ] = None,
    ) -> Response[Any]:
        """Server-sent events from a log position: ``id:`` is the position (``Last-Event-ID`` resumes with
        neither gap nor repeat; ``since=0`` is the oldest position kept); a ``: caught-up`` comment once the
        head at the request is passed; ``: heartbeat`` comments keep an idle stream open."""
        if last_event_id is not None and not last_event_id.isdigit():
            raise ValidationException("Last-Event-ID: expected a log position")
        start = int(last_event_id) + 1 if last_event_id else (since if since is not None else 1)
        if start > MAX_POSITION:
            raise ValidationException(f"Last-Event-ID: at most {MAX_POSITION}")
        wanted = set(type_.split(",")) if type_ is not None else None
        if wanted is not None and not wanted <= EVENT_TYPES.keys():
            unknown = ", ".join(sorted(wanted - EVENT_TYPES.keys()))
            raise ValidationException(f"type: unknown event type {unknown}")
        oldest, head = await cp.recorder.oldest(), await cp.recorder.head()
        if start == 0:  # since=0: everything the log still holds
            start = oldest
        if start < oldest:
            raise BodyError(
                410,
                "position too old: re-read state with GET /v1/state and resume from its position",
                "since",
                f"position {start} was truncated away; the oldest position still kept is {oldest}",
            )
        return Stream(
            sse(event_log.subscribe(start), head, wanted, viewer.redacting),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @get("/state", responses=errors(401, 404, 410, 422))
    async def state_at(
        self,
        *,
        cp: CPDep,
        projection: ProjectionDep,
        event_log: LogDep,
        viewer: ViewerDep,
        at: Annotated[int | None, QueryParameter(ge=0, le=MAX_POSITION, schema_extra=FROM_ZERO)] = None,
    ) -> ClusterState:
        """The cluster as it was at log position ``at`` (replayed; 0 is before the first event), or now.
        404 past the head; 410 before the oldest position the log can still rebuild."""
        if at is None:
            return viewer.shown(await projection.catch_up())
        head = await cp.recorder.head()
        if at > head:
            raise BodyError(404, f"position {at} is past the head of the log ({head})", "at")
        past = await _state_base(cp, at)
        while past.position < at:
            rows = await event_log.read_all(past.position + 1, min(10_000, at - past.position))
            if not rows:
                break
            apply_all(past, ((r.position, r.event) for r in rows))
        return viewer.shown(past)


# --- metrics ---------------------------------------------------------------------------------------------------


class _RefusedReports(Collector):
    """corral_node_reports_refused_total: what nodes reported and the control plane refused, by node and reason."""

    def __init__(self, cp: CPDep) -> None:
        self.cp = cp

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "corral_node_reports_refused",
            "Reports refused: about another node's container, from an older epoch, or about an ended container",
            labels=["node", "reason"],
        )
        for (node, reason), count in sorted(self.cp.refused_reports.items()):
            family.add_metric([node, reason], count)
        yield family


class _GroupCommit(Collector):
    """corral_store_transactions_total and corral_store_appends_total: appends per transaction is how well the
    log's writer groups concurrent appends (node reports, submissions) into one commit (SQLite only)."""

    def __init__(self, cp: CPDep) -> None:
        self.cp = cp

    def collect(self) -> Iterator[CounterMetricFamily]:
        recorder = self.cp.log.recorder
        if not isinstance(recorder, SqliteRecorder):
            return
        yield CounterMetricFamily(
            "corral_store_transactions", "Transactions the log's writer committed", value=recorder.batches
        )
        yield CounterMetricFamily("corral_store_appends", "Appends those transactions held", value=recorder.appends)


class Metrics:
    """One app's Prometheus registry: gauges set from the state at each scrape, counters kept by the control
    plane."""

    def __init__(self, cp: CPDep) -> None:
        self.registry = CollectorRegistry()
        self.containers = Gauge("corral_containers", "Containers by state", ["state"], registry=self.registry)
        self.nodes = Gauge("corral_nodes", "Registered nodes", ["status"], registry=self.registry)
        labels = ["container", "node"]
        self.quota = Gauge(
            "corral_container_cfs_quota_us", "CFS quota set by CPU Burst", labels, registry=self.registry
        )
        self.burst = Gauge(
            "corral_container_cpu_burst_us", "CPU burst set by CPU Burst", labels, registry=self.registry
        )
        self.registry.register(_RefusedReports(cp))
        self.registry.register(_GroupCommit(cp))

    def render(self, s: ClusterState) -> bytes:
        counts: dict[str, int] = {}
        for c in s.containers.values():
            counts[c.state] = counts.get(c.state, 0) + 1
        for st in ContainerState:
            self.containers.labels(state=str(st)).set(counts.get(st, 0))
        self.quota.clear()
        self.burst.clear()
        for c in s.containers.values():
            if c.state is ContainerState.RUNNING and c.node is not None:
                if c.cfs_quota_us is not None:
                    self.quota.labels(container=c.id, node=c.node).set(c.cfs_quota_us)
                if c.burst_us is not None:
                    self.burst.labels(container=c.id, node=c.node).set(c.burst_us)
        self.nodes.labels(status="lost").set(sum(1 for n in s.nodes.values() if n.lost))
        self.nodes.labels(status="ready").set(sum(1 for n in s.nodes.values() if not n.lost))
        return generate_latest(self.registry)


MetricsDep = NamedDependency[Metrics]


@get("/metrics", responses=errors(401), media_type="text/plain", tags=["metrics"])
async def metrics(projection: ProjectionDep, prometheus: MetricsDep) -> Response[bytes]:
    return Response(content=prometheus.render(await projection.catch_up()), media_type=CONTENT_TYPE_LATEST)


@get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


CONTROLLERS: list[ControllerRouterHandler] = [
    BurstPolicyController,
    ContainerController,
    ServiceController,
    NodeController,
    LogController,
    metrics,
]
