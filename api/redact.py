"""What a read-only token sees: everything but the values of containers' environment, which may hold secrets
(their names stay, as ``kubectl describe`` shows a secret's keys). Pure: views in, redacted views out."""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace

from store.log import Recorded
from store.projections import ClusterState, ContainerView, ServiceView
from wire import events as ev
from wire.spec import ContainerSpec, ServiceSpec

REDACTED = "<redacted>"


def spec(s: ContainerSpec) -> ContainerSpec:
    return replace(s, env=dict.fromkeys(s.env, REDACTED)) if s.env else s


def service_spec(s: ServiceSpec) -> ServiceSpec:
    return replace(s, template=spec(s.template)) if s.template.env else s


def redact(value: Any) -> Any:
    """``value`` with every environment value in it replaced by ``REDACTED``; anything else unchanged."""
    match value:
        case ContainerView() | ev.ContainerSubmitted() if value.spec.env:
            return replace(value, spec=spec(value.spec))
        case ServiceView() | ev.ServiceCreated() if value.spec.template.env:
            return replace(value, spec=service_spec(value.spec))
        case Recorded():
            return replace(value, event=redact(value.event))
        case ClusterState():
            return ClusterState(
                position=value.position,
                nodes=value.nodes,
                containers={k: redact(c) for k, c in value.containers.items()},
                services={k: redact(s) for k, s in value.services.items()},
            )
        case list():
            return [redact(x) for x in value]
    return value
