"""The HTTP API (Litestar): typed handlers over the control plane, msgspec in and out, OpenAPI generated.

Errors are JSON ``{"error": ..., "field": ..., "reason": ...}`` with a 4xx status: 401 without a token, 403 for
a read-only token on a write, 404 for an unknown id, 413 for a body over the limit, 422 for a body that does
not validate (the field and the reason named), 410 for an event position truncated away. Bodies are strict:
``application/json`` only (415), malformed or empty is 400, no type is coerced. A POST with an
``Idempotency-Key`` answers a retry with the first answer and never makes a second container; the same key
with another body is 422, and 409 once what it made was removed. A read-only token sees environment names,
not values. Lists page with ``limit`` and ``continue``.

Every route but ``/healthz`` sits under one router guarded by the bearer tokens; the handlers (``api.routes``)
get the projection, the event log, the control plane and the viewer as dependencies.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from litestar import Litestar, Request, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute

from api.controlplane import ControlPlane
from api.edge import (
    EXCEPTION_HANDLERS,
    MAX_BODY,
    SCHEMA_TYPES,
    Authorize,
    Viewer,
    allow_every_method,
    strict_body,
)
from api.openapi import BEARER, RefinedJson
from api.routes import CONTROLLERS, Metrics, healthz
from api.tokens import Role, Tokens
from store.log import EventLog
from store.projection import Projection

__all__ = ["Tokens", "create_app"]

log = logging.getLogger("corral.api")


def _running(
    cp: ControlPlane, on_failure: Callable[[BaseException], None]
) -> Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan hook that starts the control plane before the first request and stops it after the last;
    a loop of it that fails calls ``on_failure`` (the server then stops: the process must not serve a
    control plane that no longer works)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            await cp.start()
        except BaseException as e:
            log.error("cannot start: %s", e)
            await cp.stop()
            raise

        def failed(future: Any) -> None:
            if not future.cancelled():
                on_failure(future.result())

        cp.failed.add_done_callback(failed)
        try:
            yield
        finally:
            cp.failed.remove_done_callback(failed)
            await cp.stop()

    return lifespan


def create_app(
    cp: ControlPlane, tokens: Tokens, *, on_failure: Callable[[BaseException], None] | None = None
) -> Litestar:
    """The API over ``cp``. With ``on_failure``, the app's lifespan owns the control plane (starts it, stops it,
    reports its failure); without, the caller has started it."""

    def viewer(request: Request[Any, Any, Any]) -> Viewer:
        who = request.state.get("principal")  # set by the guard
        return Viewer(redacting=who is None or who.role is not Role.ADMIN, principal=who.name if who else "")

    prometheus = Metrics(cp)
    guarded = Router(
        path="/",
        guards=[Authorize(tokens)],
        route_handlers=CONTROLLERS,
        dependencies={
            # Resolved per request: the control plane makes its log and projection when it starts.
            "cp": Provide(lambda: cp, sync_to_thread=False),
            "projection": Provide(lambda: cp.projection, sync_to_thread=False),
            "event_log": Provide(lambda: cp.log, sync_to_thread=False),
            "viewer": Provide(viewer, sync_to_thread=False),
            "prometheus": Provide(lambda: prometheus, sync_to_thread=False),
        },
    )
    methods: dict[str, set[str]] = {}
    app = Litestar(
        route_handlers=[guarded, healthz],
        lifespan=[_running(cp, on_failure)] if on_failure is not None else [],
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=strict_body,
        before_send=[allow_every_method(methods)],
        request_max_body_size=MAX_BODY,
        openapi_config=OpenAPIConfig(
            title="Corral",
            version="0.1.0",
            security=[{BEARER: []}],
            components=Components(security_schemes={BEARER: SecurityScheme(type="http", scheme="bearer")}),
            render_plugins=[RefinedJson(SCHEMA_TYPES, public=frozenset({"/healthz"}))],
        ),
        signature_namespace={"ControlPlane": ControlPlane, "Projection": Projection, "EventLog": EventLog},
        debug=False,
    )
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            methods[route.path_format] = {"OPTIONS", *route.methods}
    return app
