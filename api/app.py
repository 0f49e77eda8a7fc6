"""The HTTP API (Litestar): typed handlers over the control plane, msgspec in and out, OpenAPI generated.

Errors are JSON ``{"error": ..., "field": ..., "reason": ...}`` with a 4xx status: 401 without a token, 403 for
a read-only token on a write, 404 for an unknown id, 413 for a body over the limit, 422 for a body that does
not validate (the field and the reason named), 410 for an event position truncated away. Bodies are strict:
``application/json`` only (415), malformed or empty is 400, no type is coerced. A POST with an
``Idempotency-Key`` answers a retry with the first answer and never makes a second container; the same key
with another body is 422, and 409 once what it made was removed. A read-only token sees environment names,
not values. Lists page with ``limit`` and ``continue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Litestar, Request, Response, delete, get, patch, post
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.response import Stream
from litestar.types import Message, Scope
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from api.controlplane import ControlPlane
from api.openapi import BEARER, RefinedJson, errors
from api.paging import CONTINUE_HEADER, MAX_PAGE, Page, next_headers, page
from api.redact import redact
from scheduler.stack import Placement, Unschedulable
from store.errors import InvalidAppend, PositionTooOld, StoreClosed, WrongExpectedVersion
from store.log import Recorded
from store.projections import (
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
from store.telemetry import NodePoint, Point
from wire import events as ev
from wire.codec import encode_json
from wire.commands import LogsReply
from wire.events import EVENT_TYPES
from wire.ids import container_stream, new_container_id, new_service_id, node_stream, service_stream
from wire.spec import ContainerSpec, ServiceSpec, host_mount_allowed, image_name

T = TypeVar("T")
MAX_BODY = 256 * 1024
MAX_POSITION = 2**62  # log positions are SQLite integers
MAX_TAIL = 100_000  # as GetLogs bounds it
HEARTBEAT_S = 15.0
FROM_ZERO: dict[str, Any] = {"minimum": 0}  # Litestar drops a bound of 0 from the document
IF_MATCH = {"pattern": '^"?[0-9]{1,19}"?$'}
LAST_EVENT_ID = {"pattern": "^[0-9]{1,18}$"}  # every 18-digit position is at most MAX_POSITION
_ONE_TYPE = "|".join(sorted(EVENT_TYPES))
EVENT_TYPE_LIST = {"pattern": f"^(?:{_ONE_TYPE})(?:,(?:{_ONE_TYPE}))*$"}
Limit = Annotated[int | None, QueryParameter(ge=1, le=MAX_PAGE, description="at most this many items")]
Continue = Annotated[
    str | None,
    QueryParameter(name="continue", max_length=256, description="where the page starts: a Corral-Continue value"),
]
PAGE_HEADERS = [
    ResponseHeader(name=CONTINUE_HEADER, documentation_only=True, description="the next page's continue value"),
    ResponseHeader(name="Link", documentation_only=True, description='the next page, `rel="next"` (RFC 8288)'),
]


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else ""


def _everything(_: object) -> bool:
    return True


class Tokens(msgspec.Struct, frozen=True):
    admin: frozenset[str]
    read_only: frozenset[str] = frozenset()


class Submitted(msgspec.Struct, frozen=True):
    id: str
    position: int
    duplicate: bool = False


class StopAccepted(msgspec.Struct, frozen=True):
    id: str
    state: str


class Scale(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    replicas: Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class Samples(msgspec.Struct, frozen=True):
    recent: list[Point]  # full rate, oldest first
    older: list[Point]  # downsampled


class NodeSamples(msgspec.Struct, frozen=True):
    recent: list[NodePoint]
    older: list[NodePoint]


class PlanResult(msgspec.Struct, frozen=True):
    fits: bool
    position: int
    node: str | None = None
    cpuset: tuple[int, ...] = ()
    numa_nodes: tuple[int, ...] = ()
    reason: str = ""


class HistoryEntry(msgspec.Struct, frozen=True):
    position: int
    version: int
    recorded_ns: int
    event: ev.Event


# Bodies and answers whose schemas the document takes from msgspec.
SCHEMA_TYPES = (
    ContainerSpec,
    ServiceSpec,
    Scale,
    Submitted,
    StopAccepted,
    ContainerView,
    NodeView,
    ServiceView,
    ClusterState,
    PlanResult,
    HistoryEntry,
    Samples,
    NodeSamples,
)


def _error(status: int, error: str, field: str | None = None, reason: str | None = None) -> Response[Any]:
    body: dict[str, Any] = {"error": error}
    if field is not None:
        body["field"] = field
    if reason is not None:
        body["reason"] = reason
    return Response(content=body, status_code=status)


_AT = re.compile(r"at `\$\.?([^`]*)`")


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar says 400 for a body that does not decode; Corral says 422 and names the field and the reason."""
    text = str(exc.detail or exc)
    extra = [e for e in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(e, dict)]
    message = str(extra[0].get("message", text)) if extra else text
    key = str(extra[0].get("key", "")) if extra else ""
    found = _AT.search(message)
    field: str | None = found.group(1) if found else (key.removeprefix("data.").removeprefix("data") or None)
    reason = _AT.sub("", message).strip(" -")
    if field in (None, "") and ":" in reason:  # our own checks say "field: reason"
        field, reason = (part.strip() for part in reason.split(":", 1))
    if field and "." not in field and reason.startswith(f"{field}:"):
        reason = reason[len(field) + 1 :].strip()
    if "Object contains unknown field" in reason or "Object missing required field" in reason:
        named = re.search(r"`([^`]+)`", reason)
        inner = named.group(1) if named else ""
        field = f"{field}.{inner}" if field and field != "body" else inner
        reason = "unknown field" if "unknown" in reason else "required"
    return _error(422, "invalid request", field or "body", reason or "invalid")


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    response = _error(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})  # Allow on a 405, WWW-Authenticate on a 401
    return response


class BodyError(HTTPException):
    """A body refused before any handler runs: not JSON (415), not well-formed (400), or not what is asked for."""

    def __init__(self, status: int, reason: str, field: str = "body", error: str = "invalid request") -> None:
        super().__init__(status_code=status, detail=error)
        self.field, self.reason = field, reason


def _allow_for(handlers: list[HTTPRouteHandler]) -> Callable[[Message, Scope], Awaitable[None]]:
    """A ``before_send`` hook: Litestar's automatic OPTIONS answer lists only the first handler of a path;
    say every method the path has."""
    methods: dict[str, set[str]] = {}
    for h in handlers:
        for path in h.paths:
            methods.setdefault(path, {"OPTIONS"}).update(h.http_methods)

    async def fix(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
            return
        handler = scope.get("route_handler")
        allowed = set().union(*(methods.get(p, set()) for p in getattr(handler, "paths", ())))
        if allowed:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
            message["headers"] = [*headers, (b"allow", ", ".join(sorted(allowed)).encode())]

    return fix


def _body_error(_: Request[Any, Any, Any], exc: BodyError) -> Response[Any]:
    return _error(exc.status_code, str(exc.detail), exc.field, exc.reason)


_NOT_NULL = frozenset({"since", "at", "tail", "grace", "limit", "state"})  # optional numbers and enums


async def _strict_body(request: Request[Any, Any, Any]) -> None:
    """Decode a JSON body strictly, as the handler's ``opt["body"]`` type, before Litestar's own lax decode
    (which turns ``"3"`` into 3 and ``500.0`` into 500): a string is never a number, a float never an integer,
    unknown fields are refused, and ``Content-Type`` must be ``application/json``. A typed decode also fails
    at the first level that does not match, so no nesting depth reaches a recursion limit."""
    for name, value in request.query_params.multi_items():
        if value == "null" and name in _NOT_NULL:  # Litestar reads "null" as None for these
            raise BodyError(422, "not a valid value", name)
    body_type = request.route_handler.opt.get("body")
    if body_type is None:
        return
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise BodyError(415, f"Content-Type must be application/json, not {media or 'missing'}", "Content-Type")
    raw = await request.body()
    if not raw.strip():
        raise BodyError(400, "a JSON body is required")
    try:
        msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as e:
        raise ValidationException(str(e)) from None
    except msgspec.DecodeError as e:
        raise BodyError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise BodyError(400, "malformed JSON: nested too deeply") from None


def _unhandled(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, msgspec.ValidationError | ValueError | InvalidAppend):
        return _error(422, "invalid request", "body", str(exc))
    return _error(500, "internal error", reason=type(exc).__name__)


async def _sse(
    records: AsyncIterator[Recorded], head: int, wanted: set[str] | None, redacting: bool
) -> AsyncIterator[bytes]:
    """Encode a subscription as server-sent events. The pending read is kept across heartbeats: cancelling
    it would end the subscription (an async generator does not survive a cancelled ``__anext__``)."""
    it = records.__aiter__()
    caught_up = head < 1  # an empty log: caught up already
    if caught_up:
        yield b": caught-up\n\n"
    pending: asyncio.Future[Recorded] = asyncio.ensure_future(it.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
            if not done:
                yield b": heartbeat\n\n"
                continue
            try:
                rec = pending.result()
            except (StopAsyncIteration, PositionTooOld, StoreClosed):
                return
            pending = asyncio.ensure_future(it.__anext__())
            name = type(rec.event).__name__
            if wanted is None or name in wanted:
                if redacting:
                    rec = redact(rec)
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (rec.position, name.encode(), encode_json(rec))
            if not caught_up and rec.position >= head:
                caught_up = True
                yield b": caught-up\n\n"
    finally:
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


def _stop(state: ClusterState, cid: str, grace: float, reason: str = "", backoff: bool = True) -> list[ev.Event]:
    """A stop, if the container still needs one: live and not stopping already, or (with ``backoff``) ended and
    waiting out a restart back-off (a stop then means it must not come back)."""
    c = state.containers.get(cid)
    if c is None:
        return []
    if (not c.state.terminal and c.state is not ContainerState.STOPPING) or (backoff and c.backoff_until_ns):
        return [ev.ContainerStopRequested(container_id=cid, grace_s=grace, reason=reason)]
    return []


def _id_for(kind: str, idempotency_key: str | None) -> str | None:
    """With a key, the id is derived from it: a retry finds the stream exists, even after a restart."""
    return hashlib.sha256(f"{kind}/{idempotency_key}".encode()).hexdigest()[:16] if idempotency_key else None


class _RefusedReports(Collector):
    """corral_node_reports_refused_total: what nodes reported and the control plane refused, by node and reason."""

    def __init__(self, cp: ControlPlane) -> None:
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


def create_app(cp: ControlPlane, tokens: Tokens) -> Litestar:
    registry = CollectorRegistry()
    containers_gauge = Gauge("corral_containers", "Containers by state", ["state"], registry=registry)
    nodes_gauge = Gauge("corral_nodes", "Registered nodes", ["status"], registry=registry)
    registry.register(_RefusedReports(cp))

    def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        token = _bearer(connection)
        if token in tokens.admin:
            return
        if token in tokens.read_only:
            if connection.scope.get("method") in ("GET", "HEAD") or handler.opt.get("reads_only"):
                return
            raise PermissionDeniedException("this token may only read")
        raise NotAuthorizedException(
            "a bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="corral"'},
        )

    def reads_only(request: Request[Any, Any, Any]) -> bool:
        return _bearer(request) not in tokens.admin

    def shown(request: Request[Any, Any, Any], value: T) -> T:
        """``value`` as the caller may see it: a read-only token sees environment names, not values."""
        return redact(value) if reads_only(request) else value

    async def _create_once(entity_id: str, stream: str, event: ev.ContainerSubmitted | ev.ServiceCreated) -> Submitted:
        """Append the event that creates a new stream; if the stream exists (a retry with the same
        Idempotency-Key), answer with the first append instead — if the retry asks for the same thing and what
        the key made still exists (the IETF Idempotency-Key draft: a reused key with another body is 422)."""
        try:
            [position] = await cp.log.append(stream, [event], NO_STREAM)
        except WrongExpectedVersion:
            first = (await cp.log.read_stream(stream))[0]
            if not isinstance(first.event, type(event)) or first.event.spec != event.spec:
                raise BodyError(422, "this key was used for a different request body", "Idempotency-Key") from None
            s = await state()
            if entity_id not in (s.containers if isinstance(event, ev.ContainerSubmitted) else s.services):
                raise BodyError(
                    409, f"what this key made ({entity_id}) was removed; use a new key", "Idempotency-Key"
                ) from None
            return Submitted(id=entity_id, position=first.position, duplicate=True)
        return Submitted(id=entity_id, position=position)

    async def state() -> Any:
        return await cp.projection.catch_up()

    async def _runnable_somewhere(spec: ContainerSpec, prefix: str = "") -> None:
        """Refuse what every registered node would refuse: an image none holds, a host path none allows (with
        no node registered yet, nothing is known)."""
        nodes = (await state()).nodes.values()
        image = image_name(spec.image)
        has_image = [n for n in nodes if n.images is None or image in n.images]
        if nodes and not has_image:
            raise BodyError(422, f"no node holds image {spec.image!r}; import it on a node first", f"{prefix}image")
        for m in spec.mounts:
            if has_image and not any(host_mount_allowed(m.source, n.host_mounts) for n in has_image):
                raise BodyError(
                    422, f"no node with the image allows host path {m.source!r} to be mounted", f"{prefix}mounts"
                )

    @post(
        "/v1/containers",
        status_code=201,
        guards=[authorize],
        opt={"body": ContainerSpec},
        responses=errors(400, 401, 403, 409, 412, 413, 415, 422),
    )
    async def create_container(
        data: JSONBody[ContainerSpec],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", schema_extra=IF_MATCH)] = None,
    ) -> Submitted:
        if if_match is not None:
            # Check-and-set after a plan (Nomad's -check-index): submit only if nothing was appended since.
            expected = if_match.strip('"')
            if not expected.isdigit():
                raise ValidationException("If-Match: expected the log position a plan returned")
            head = await cp.recorder.head()
            if int(expected) != head:
                raise HTTPException(
                    status_code=412, detail=f"the cluster changed since position {expected} (now {head}): plan again"
                )
        await _runnable_somewhere(data)
        cid = _id_for("corral", idempotency_key) or new_container_id()
        event = ev.ContainerSubmitted(container_id=cid, spec=data, idempotency_key=idempotency_key)
        return await _create_once(cid, container_stream(cid), event)

    def _paged(request: Request[Any, Any, Any], found: Page[Any]) -> Response[Any]:
        query = {k: v for k, v in request.query_params.items() if k != "continue"}
        return Response(shown(request, found.items), headers=next_headers(request.url.path, query, found.next))

    @get("/v1/containers", guards=[authorize], responses=errors(401, 422), response_headers=PAGE_HEADERS)
    async def list_containers(
        request: Request[Any, Any, Any],
        node: FromQuery[str | None] = None,
        state_: Annotated[ContainerState | None, QueryParameter(name="state")] = None,
        limit: Limit = None,
        start: Continue = None,
    ) -> Response[list[ContainerView]]:
        """Containers in id order; with ``limit``, a page at a time (the next one named by ``Corral-Continue``
        and ``Link``)."""
        s = await state()

        def keep(c: ContainerView) -> bool:
            return (node is None or c.node == node) and (state_ is None or c.state == state_)

        return _paged(request, page(s.containers, keep, limit, start))

    async def _container(cid: FromPath[str]) -> ContainerView:
        c = (await state()).containers.get(cid)
        if c is None:
            raise HTTPException(status_code=404, detail=f"no container {cid}")
        return c  # type: ignore[no-any-return]

    @get("/v1/containers/{cid:str}", guards=[authorize], responses=errors(401, 404))
    async def get_container(request: Request[Any, Any, Any], cid: FromPath[str]) -> ContainerView:
        return shown(request, await _container(cid))

    @delete("/v1/containers/{cid:str}", status_code=202, guards=[authorize], responses=errors(401, 403, 404, 422))
    async def stop_container(
        cid: FromPath[str], grace: Annotated[float, QueryParameter(ge=0, le=3600, schema_extra=FROM_ZERO)] = 10.0
    ) -> StopAccepted:
        """Stop a container: TERM, then KILL after ``grace`` seconds (0 to 3600)."""
        await _container(cid)
        await cp.projection.decide(cp.log, ("container", cid), container_stream(cid), lambda s: _stop(s, cid, grace))
        return StopAccepted(id=cid, state=str((await _container(cid)).state))

    @post("/v1/containers/{cid:str}/remove", status_code=202, guards=[authorize], responses=errors(401, 403, 404, 409))
    async def remove_container(cid: FromPath[str]) -> StopAccepted:
        """Forget an ended container (``docker rm``); a running one must be stopped first (409)."""
        c = await _container(cid)
        if not c.state.terminal:
            raise HTTPException(status_code=409, detail=f"cannot remove container in state {c.state}; stop it first")
        await cp.remove(cid)
        return StopAccepted(id=cid, state="removed")

    @get("/v1/containers/{cid:str}/history", guards=[authorize], responses=errors(401, 404))
    async def history(request: Request[Any, Any, Any], cid: FromPath[str]) -> list[HistoryEntry]:
        await _container(cid)
        return [
            HistoryEntry(r.position, r.version, r.recorded_ns, shown(request, r.event))
            for r in await cp.log.read_stream(container_stream(cid))
        ]

    @get("/v1/nodes", guards=[authorize], responses=errors(401, 422), response_headers=PAGE_HEADERS)
    async def list_nodes(
        request: Request[Any, Any, Any], limit: Limit = None, start: Continue = None
    ) -> Response[list[NodeView]]:
        """Nodes in name order, paged as containers are."""
        return _paged(request, page((await state()).nodes, _everything, limit, start))

    @post(
        "/v1/plan",
        status_code=200,
        guards=[authorize],
        opt={"reads_only": True, "body": ContainerSpec},
        responses=errors(400, 401, 413, 415, 422),
    )
    async def plan(data: JSONBody[ContainerSpec]) -> PlanResult:
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

    @get("/v1/events", guards=[authorize], responses=errors(401, 410, 422), media_type="text/event-stream")
    async def events(
        request: Request[Any, Any, Any],
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
            _sse(cp.log.subscribe(start), head, wanted, reads_only(request)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- services -----------------------------------------------------------------------------------------------

    @post(
        "/v1/services",
        status_code=201,
        guards=[authorize],
        opt={"body": ServiceSpec},
        responses=errors(400, 401, 403, 409, 413, 415, 422),
    )
    async def create_service(
        data: JSONBody[ServiceSpec],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> Submitted:
        await _runnable_somewhere(data.template, "template.")
        sid = _id_for("corral-svc", idempotency_key) or new_service_id()
        return await _create_once(sid, service_stream(sid), ev.ServiceCreated(service_id=sid, spec=data))

    @get("/v1/services", guards=[authorize], responses=errors(401, 422), response_headers=PAGE_HEADERS)
    async def list_services(
        request: Request[Any, Any, Any], limit: Limit = None, start: Continue = None
    ) -> Response[list[ServiceView]]:
        """Services in id order, paged as containers are."""
        return _paged(request, page((await state()).services, _everything, limit, start))

    async def _service(sid: str) -> ServiceView:
        svc = (await state()).services.get(sid)
        if svc is None:
            raise HTTPException(status_code=404, detail=f"no service {sid}")
        return svc  # type: ignore[no-any-return]

    @patch(
        "/v1/services/{sid:str}",
        guards=[authorize],
        opt={"body": Scale},
        responses=errors(400, 401, 403, 404, 413, 415, 422),
    )
    async def scale_service(sid: FromPath[str], data: JSONBody[Scale]) -> ServiceView:
        await _service(sid)

        def scale(s: ClusterState) -> list[ev.Event]:
            svc = s.services.get(sid)
            if svc is None or data.replicas == svc.replicas:
                return []
            return [ev.ServiceScaled(service_id=sid, replicas_from=svc.replicas, replicas_to=data.replicas)]

        await cp.projection.decide(cp.log, ("service", sid), service_stream(sid), scale)
        return await _service(sid)

    @delete("/v1/services/{sid:str}", status_code=202, guards=[authorize], responses=errors(401, 403, 404))
    async def delete_service(sid: FromPath[str]) -> StopAccepted:
        await _service(sid)
        await cp.projection.decide(
            cp.log,
            ("service", sid),
            service_stream(sid),
            lambda s: [ev.ServiceDeleted(service_id=sid)] if sid in s.services else [],
        )
        return StopAccepted(id=sid, state="deleted")

    # --- logs, nodes, state ----------------------------------------------------------------------------------------

    @get(
        "/v1/containers/{cid:str}/logs",
        guards=[authorize],
        responses=errors(401, 404, 409, 422, 502, 503),
        media_type="text/plain",
    )
    async def logs(
        cid: FromPath[str],
        tail: Annotated[int | None, QueryParameter(ge=0, le=MAX_TAIL, schema_extra=FROM_ZERO)] = None,
        follow: FromQuery[bool] = False,
    ) -> Response[Any]:
        """The container's output, stdout and stderr interleaved; ``tail`` keeps the last lines (0 to 100000);
        ``follow`` streams new lines until the container ends."""
        c = await _container(cid)
        if c.node is None:
            raise HTTPException(status_code=409, detail=f"container {cid} has not been placed on a node yet")

        async def ask(since: int | None, tail_: int | None) -> LogsReply:
            reply = await cp.get_logs(c.node, cid, since=since, tail=tail_)  # type: ignore[arg-type]
            if isinstance(reply, LogsReply):
                return reply
            if reply.code == "node_unreachable":
                raise HTTPException(status_code=503, detail=f"node {c.node} is unreachable; try again")
            if reply.code == "unknown_container":
                raise HTTPException(status_code=404, detail=f"node {c.node} keeps no logs for container {cid}")
            raise HTTPException(status_code=502, detail=f"node {c.node} could not read the logs ({reply.code})")

        first = await ask(None, tail)
        if not follow:
            return Response(content="".join(f"{line}\n" for line in first.lines), media_type="text/plain")

        async def stream() -> AsyncIterator[bytes]:
            reply = first
            while True:
                for line in reply.lines:
                    yield f"{line}\n".encode()
                await asyncio.sleep(0.5)
                view = (await state()).containers.get(cid)
                reply = await ask(reply.next_line, None)
                if not reply.lines and view is not None and view.state.terminal:
                    return

        return Stream(stream(), media_type="text/plain")

    @get("/v1/containers/{cid:str}/stats", guards=[authorize], responses=errors(401, 404))
    async def container_stats(cid: FromPath[str]) -> Samples:
        await _container(cid)
        recent, older = cp.telemetry.container(cid)
        return Samples(recent=recent, older=older)

    @get("/v1/nodes/{name:str}/stats", guards=[authorize], responses=errors(401, 404))
    async def node_stats(name: FromPath[str]) -> NodeSamples:
        await _node(name)
        recent, older = cp.telemetry.node(name)
        return NodeSamples(recent=recent, older=older)

    @post("/v1/nodes/{name:str}/cordon", status_code=202, guards=[authorize], responses=errors(401, 403, 404))
    async def cordon(name: FromPath[str]) -> NodeView:
        # Idempotent: cordoning a cordoned node records nothing.
        await _node_fact(name, lambda n: [] if n.cordoned else [ev.NodeCordoned(node=name)])
        return await _node(name)

    @post("/v1/nodes/{name:str}/uncordon", status_code=202, guards=[authorize], responses=errors(401, 403, 404))
    async def uncordon(name: FromPath[str]) -> NodeView:
        await _node_fact(name, lambda n: [ev.NodeUncordoned(node=name)] if n.cordoned else [])
        return await _node(name)

    @post("/v1/nodes/{name:str}/drain", status_code=202, guards=[authorize], responses=errors(401, 403, 404))
    async def drain(name: FromPath[str]) -> NodeView:
        """Cordon the node and stop its containers; services place replacements elsewhere."""
        await _node_fact(name, lambda n: [] if n.drained else [ev.NodeDrained(node=name)])
        on_node = [c.id for c in (await state()).containers.values() if c.node == name]
        await asyncio.gather(  # one group commit, not one per container
            *(
                cp.projection.decide(
                    cp.log,
                    ("container", cid),
                    container_stream(cid),
                    functools.partial(_stop, cid=cid, grace=10.0, reason="node drained", backoff=False),
                )
                for cid in on_node
            )
        )
        return await _node(name)

    async def _node_fact(name: str, fact: Callable[[NodeView], list[ev.Event]]) -> None:
        await _node(name)
        await cp.projection.decide(
            cp.log, ("node", name), node_stream(name), lambda s: fact(s.nodes[name]) if name in s.nodes else []
        )

    async def _node(name: str) -> NodeView:
        n = (await state()).nodes.get(name)
        if n is None:
            raise HTTPException(status_code=404, detail=f"no node {name}")
        return n  # type: ignore[no-any-return]

    async def _state_base(at: int) -> ClusterState:
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

    @get("/v1/state", guards=[authorize], responses=errors(401, 404, 410, 422))
    async def state_at(
        request: Request[Any, Any, Any],
        at: Annotated[int | None, QueryParameter(ge=0, le=MAX_POSITION, schema_extra=FROM_ZERO)] = None,
    ) -> ClusterState:
        """The cluster as it was at log position ``at`` (replayed; 0 is before the first event), or now.
        422 past the head; 410 before the oldest position the log can still rebuild."""
        if at is None:
            return shown(request, await state())  # type: ignore[no-any-return]
        head = await cp.recorder.head()
        if at > head:
            raise BodyError(404, f"position {at} is past the head of the log ({head})", "at")
        past = await _state_base(at)
        while past.position < at:
            rows = await cp.log.read_all(past.position + 1, min(10_000, at - past.position))
            if not rows:
                break
            apply_all(past, ((r.position, r.event) for r in rows))
        return shown(request, past)

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/metrics", guards=[authorize], responses=errors(401), media_type="text/plain")
    async def metrics() -> Response[bytes]:
        s = await state()
        counts: dict[str, int] = {}
        for c in s.containers.values():
            counts[c.state] = counts.get(c.state, 0) + 1
        for st in ContainerState:
            containers_gauge.labels(state=str(st)).set(counts.get(st, 0))
        nodes_gauge.labels(status="lost").set(sum(1 for n in s.nodes.values() if n.lost))
        nodes_gauge.labels(status="ready").set(sum(1 for n in s.nodes.values() if not n.lost))
        return Response(content=generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    handlers = [
        create_service,
        list_services,
        scale_service,
        delete_service,
        logs,
        container_stats,
        node_stats,
        cordon,
        uncordon,
        drain,
        state_at,
        create_container,
        list_containers,
        get_container,
        stop_container,
        remove_container,
        history,
        list_nodes,
        plan,
        events,
        healthz,
        metrics,
    ]
    return Litestar(
        route_handlers=handlers,
        exception_handlers={
            BodyError: _body_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            Exception: _unhandled,
        },
        before_request=_strict_body,
        before_send=[_allow_for(handlers)],
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(
            title="Corral",
            version="0.1.0",
            security=[{BEARER: []}],
            components=Components(security_schemes={BEARER: SecurityScheme(type="http", scheme="bearer")}),
            render_plugins=[RefinedJson(SCHEMA_TYPES, public=frozenset({"/healthz"}))],
        ),
        debug=False,
    )
