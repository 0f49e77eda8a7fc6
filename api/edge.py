"""The HTTP edge's plumbing: what a request and an answer look like, errors as ``{error, field, reason}``, the
strict body check, the bearer-token guard and the server-sent-events encoder. The handlers are in
``api.routes``; ``api.app`` puts them together (and says what the errors mean).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import QueryParameter
from litestar.types import ExceptionHandlersMap, Message, Scope

from api.paging import CONTINUE_HEADER, MAX_PAGE
from api.redact import redact
from api.tokens import Role, Tokens
from store.errors import InvalidAppend, PositionTooOld, StoreClosed
from store.log import Recorded
from store.projections import (
    ClusterState,
    ContainerView,
    NodeView,
    ServiceView,
)
from store.telemetry import NodePoint, Point
from wire import events as ev
from wire.burst import BurstConfig
from wire.codec import encode_json
from wire.commands import ImageEntry
from wire.events import EVENT_TYPES
from wire.pss import ProcessFacts, Verdict
from wire.resources import MAX_CPU_MILLIS, CpuMillis
from wire.spec import ContainerSpec, ImageRef, ServiceSpec

T = TypeVar("T")
MAX_BODY = 256 * 1024
MAX_POSITION = 2**62  # log positions are SQLite integers
MAX_TAIL = 100_000  # as GetLogs bounds it
HEARTBEAT_S = 15.0
FROM_ZERO: dict[str, Any] = {"minimum": 0}  # Litestar drops a bound of 0 from the document
IF_MATCH = {"pattern": '^"?[0-9]{1,19}"?$'}
VERSION_MATCH = {"pattern": '^"?-?[0-9]{1,18}"?$'}  # a stream version: -1 is "never written"
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


def bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else ""


class Authorize:
    """The guard of every route but ``/healthz``: an admin token may do anything; a read-only token may read
    (GET, HEAD, and handlers marked ``opt={"reads_only": True}``); anything else is 401. The principal is kept
    in the request's state for the handlers (``Viewer``)."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        who = self.tokens.who(bearer(connection))
        if who is not None:
            connection.state.principal = who
        if who is not None and who.role is Role.ADMIN:
            return
        if who is not None and who.role is Role.READ_ONLY:
            if connection.scope.get("method") in ("GET", "HEAD") or handler.opt.get("reads_only"):
                return
            raise PermissionDeniedException("this token may only read")
        raise NotAuthorizedException(
            "a bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="corral"'},
        )


class Viewer(msgspec.Struct, frozen=True):
    """Who asks: the principal its events record as ``actor``; a read-only token sees environment names, not
    values."""

    redacting: bool
    principal: str = ""

    def shown(self, value: T) -> T:
        return redact(value) if self.redacting else value


class Submitted(msgspec.Struct, frozen=True):
    id: str
    position: int
    duplicate: bool = False


class StopAccepted(msgspec.Struct, frozen=True):
    id: str
    state: str


class Scale(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    replicas: Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class Resize(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A live container's new CPU request and limit (a field left out keeps its value)."""

    cpu_request_millis: CpuMillis | None = None
    cpu_limit_millis: Annotated[int, msgspec.Meta(ge=1, le=MAX_CPU_MILLIS)] | None = None


class BurstPolicyView(msgspec.Struct, frozen=True):
    """The cluster's CPU Burst configuration and its version (-1: never set; the defaults apply)."""

    config: BurstConfig
    version: int


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


class ContainerStatus(ContainerView, frozen=True):
    """A container as the API shows it while it waits (``scheduled`` or ``stopping``): with the reason."""

    waiting: str = ""  # why it has not moved on yet (from the control plane's sends, not from the log)


class HistoryEntry(msgspec.Struct, frozen=True):
    position: int
    version: int
    recorded_ns: int
    event: ev.Event


class PullRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    image: ImageRef


class Pulled(msgspec.Struct, frozen=True):
    node: str
    image: str


class Removed(msgspec.Struct, frozen=True):
    node: str
    image: str


class Imported(msgspec.Struct, frozen=True):
    node: str
    image_id: str
    tags: tuple[str, ...] = ()


IMPORT_MAX_BYTES = 8 << 30  # an image tarball streamed to a node (its store refuses more uncompressed layers)


class Audit(msgspec.Struct, frozen=True):
    """A running container against the Pod Security Standards (``wire.pss``)."""

    container_id: str
    node: str
    baseline: bool  # every baseline control passes
    restricted: bool  # every control passes
    controls: list[Verdict]
    facts: ProcessFacts


# Bodies and answers whose schemas the document takes from msgspec.
SCHEMA_TYPES = (
    ContainerSpec,
    ServiceSpec,
    Scale,
    Resize,
    BurstConfig,
    BurstPolicyView,
    Submitted,
    StopAccepted,
    ContainerView,
    ContainerStatus,
    NodeView,
    ServiceView,
    ClusterState,
    PlanResult,
    HistoryEntry,
    Samples,
    NodeSamples,
    Audit,
    PullRequest,
    Pulled,
    Removed,
    Imported,
    ImageEntry,
)


def error_body(status: int, error: str, field: str | None = None, reason: str | None = None) -> Response[Any]:
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
    return error_body(422, "invalid request", field or "body", reason or "invalid")


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    response = error_body(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})  # Allow on a 405, WWW-Authenticate on a 401
    return response


class BodyError(HTTPException):
    """A body refused before any handler runs: not JSON (415), not well-formed (400), or not what is asked for."""

    def __init__(self, status: int, reason: str, field: str = "body", error: str = "invalid request") -> None:
        super().__init__(status_code=status, detail=error)
        self.field, self.reason = field, reason


def allow_every_method(methods: dict[str, set[str]]) -> Callable[[Message, Scope], Awaitable[None]]:
    """A ``before_send`` hook: Litestar's automatic OPTIONS answer lists only the first handler of a path;
    say every method the path has (``methods``: by path template, filled in once the app is built)."""

    async def fix(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
            return
        allowed = methods.get(str(scope.get("path_template", "")), set())
        if allowed:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
            message["headers"] = [*headers, (b"allow", ", ".join(sorted(allowed)).encode())]

    return fix


def _body_error(_: Request[Any, Any, Any], exc: BodyError) -> Response[Any]:
    return error_body(exc.status_code, str(exc.detail), exc.field, exc.reason)


_NOT_NULL = frozenset({"since", "at", "tail", "grace", "limit", "state"})  # optional numbers and enums


async def strict_body(request: Request[Any, Any, Any]) -> None:
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
        return error_body(422, "invalid request", "body", str(exc))
    return error_body(500, "internal error", reason=type(exc).__name__)


async def sse(
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


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    BodyError: _body_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unhandled,
}
