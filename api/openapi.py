"""The OpenAPI document, as the API behaves: Litestar lays out the paths and parameters; the schemas of bodies
come from msgspec itself (so bounds, patterns and ``additionalProperties: false`` are the ones the decoder
enforces); every error is the ``Error`` body; the bearer scheme guards all but the public paths."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin


class Error(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every 4xx and 5xx answer: what went wrong, and for bad input the field and the reason."""

    error: str
    field: str | None = None
    reason: str | None = None


_WHY = {
    400: "Malformed or empty JSON body",
    401: "No valid bearer token",
    403: "A read-only token on a write",
    404: "No such object",
    409: "Conflicts with the object's state",
    410: "The asked-for log position was truncated away",
    412: "The cluster changed since the position in If-Match",
    413: "Body over 256 KiB (an image import: over 8 GiB)",
    415: "Body not application/json (an image import: not application/x-tar)",
    422: "A field does not validate (named in `field`, why in `reason`)",
    502: "The node could not answer",
    503: "The node is unreachable",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    return {c: ResponseSpec(data_container=Error, description=_WHY[c], generate_examples=False) for c in codes}


BEARER = "bearer"
_UNAUTHORIZED_HEADERS = {
    "WWW-Authenticate": {"description": '`Bearer realm="corral"`', "schema": {"type": "string"}},
}


# Bodies a handler streams itself (not JSON, so Litestar does not document them): path -> media type.
RAW_BODIES = {"/v1/nodes/{name}/images/import": "application/octet-stream"}  # also application/x-tar


def refine(doc: dict[str, Any], types: Iterable[Any], public: frozenset[str]) -> dict[str, Any]:
    """Litestar's document with msgspec's schemas for ``types`` and ``Error`` for every error response."""
    doc = copy.deepcopy(doc)
    _, components = msgspec.json.schema_components([*types, Error], ref_template="#/components/schemas/{name}")
    doc.setdefault("components", {}).setdefault("schemas", {}).update(components)
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in doc.get("paths", {}).items():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for parameter in op.get("parameters", []):
                parameter["schema"] = _never_null(parameter["schema"])
            if path in public:
                op["security"] = []
            if path in RAW_BODIES:
                binary = {"schema": {"type": "string", "format": "binary"}}
                op["requestBody"] = {"required": True, "content": {RAW_BODIES[path]: binary}}
            for code, response in op["responses"].items():
                if int(code) >= 400:
                    response["content"] = error
                    response.pop("headers", None)
                if int(code) == 401:
                    response["headers"] = _UNAUTHORIZED_HEADERS
    return doc


def _never_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter is absent or has a value; Litestar writes ``T | None`` as ``oneOf: [T, null]``."""
    alternatives = [s for s in schema.get("oneOf", []) if s != {"type": "null"}]
    if len(alternatives) != 1 or len(alternatives) == len(schema.get("oneOf", [])):
        return schema
    rest = {k: v for k, v in schema.items() if k != "oneOf"}
    return {**alternatives[0], **rest}


class RefinedJson(JsonRenderPlugin):
    """Serves ``refine``'s document at /schema/openapi.json (refined once)."""

    def __init__(self, types: Iterable[Any], public: frozenset[str]) -> None:
        super().__init__()
        self._types, self._public = tuple(types), public
        self._doc: dict[str, Any] | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._doc is None:
            self._doc = refine(openapi_schema, self._types, self._public)
        return self.render_json(request, self._doc)
