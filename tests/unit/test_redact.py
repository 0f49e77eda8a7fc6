"""A read-only token sees environment names, never values, wherever a spec appears."""

from __future__ import annotations

import uuid

import pytest

from api.redact import REDACTED, redact
from store.log import Recorded
from store.projections import ClusterState, ContainerState, ContainerView, ServiceView
from tests.builders import spec
from wire import events as ev
from wire.spec import ServiceSpec

SECRET = spec("web", env={"TOKEN": "hunter2", "MODE": "prod"})
SVC = ServiceSpec(name="api", replicas=2, template=SECRET)
VIEW = ContainerView(id="c1", spec=SECRET, state=ContainerState.PENDING)
SERVICE = ServiceView(id="s1", spec=SVC, replicas=2)
SUBMITTED = ev.ContainerSubmitted(container_id="c1", spec=SECRET)
CREATED = ev.ServiceCreated(service_id="s1", spec=SVC)


def recorded(e: ev.Event) -> Recorded:
    return Recorded(
        position=1,
        stream="s",
        version=0,
        event_id=uuid.uuid4(),
        occurred_ns=1,
        recorded_ns=1,
        correlation=None,
        causation=None,
        event=e,
    )


def envs(value: object) -> list[dict[str, str]]:
    """Every env mapping inside ``value``."""
    match value:
        case ContainerView() | ev.ContainerSubmitted():
            return [value.spec.env]
        case ServiceView() | ev.ServiceCreated():
            return [value.spec.template.env]
        case Recorded():
            return envs(value.event)
        case ClusterState():
            return [e for v in [*value.containers.values(), *value.services.values()] for e in envs(v)]
        case list():
            return [e for v in value for e in envs(v)]
    return []


@pytest.mark.parametrize(
    "value",
    [
        VIEW,
        SERVICE,
        SUBMITTED,
        CREATED,
        recorded(SUBMITTED),
        recorded(CREATED),
        [VIEW, SERVICE],
        ClusterState(position=3, containers={"c1": VIEW}, services={"s1": SERVICE}),
    ],
)
def test_values_go_names_stay(value: object) -> None:
    found = envs(redact(value))
    assert found and all(e == {"TOKEN": REDACTED, "MODE": REDACTED} for e in found)
    assert all(e["TOKEN"] == "hunter2" for e in envs(value))  # the original is untouched


@pytest.mark.parametrize(
    "value",
    [
        ev.ContainerStopRequested(container_id="c1", grace_s=1.0),
        ContainerView(id="c2", spec=spec(), state=ContainerState.PENDING),
        7,
    ],
)
def test_what_holds_no_environment_is_unchanged(value: object) -> None:
    assert redact(value) == value
