"""The CLI's CPU options say what they do: --cpu-request reserves (no cap), --cpu-limit caps, --cpus is Docker's
cap; --cpu is the old name of --cpu-request."""

from __future__ import annotations

from typing import Any

import pytest

from api.cli import Failed, _cpu_fields, _resources_of


@pytest.mark.parametrize(
    ("request_", "limit", "cpus", "qos", "fields"),
    [
        ("500m", None, None, None, {"cpu_request_millis": 500}),  # a request alone: no cap
        ("500m", "1", None, None, {"cpu_request_millis": 500, "cpu_limit_millis": 1000}),
        (None, None, "0.5", None, {"qos": "LS", "cpu_request_millis": 500, "cpu_limit_millis": 500}),
        (None, None, "2", None, {"qos": "LS", "cpu_request_millis": 2000, "cpu_limit_millis": 2000}),  # not LSR
        ("250m", None, "1", None, {"qos": "LS", "cpu_request_millis": 250, "cpu_limit_millis": 1000}),
        (None, None, "2", "LSR", {"cpu_request_millis": 2000, "cpu_limit_millis": 2000}),  # asked for: exclusive
        ("2", None, None, "LSR", {"cpu_request_millis": 2000, "cpu_limit_millis": 2000}),  # LSR: limit = request
        (None, None, None, None, {}),
    ],
)
def test_cpu_fields(
    request_: str | None, limit: str | None, cpus: str | None, qos: str | None, fields: dict[str, Any]
) -> None:
    assert _cpu_fields(request_, limit, cpus, qos) == fields


def test_cpus_and_a_limit_contradict() -> None:
    with pytest.raises(Failed, match="--cpus or --cpu-limit"):
        _cpu_fields(None, "1", "2", None)


def test_inspect_says_a_request_is_no_cap() -> None:
    spec = {"qos": "LS", "cpu_request_millis": 500, "cpu_limit_millis": None, "memory_limit_bytes": None}
    assert _resources_of(spec) == {
        "qos": "LS",
        "cpu_request": "500m (reserved; its share when CPUs are contended)",
        "cpu_limit": "none (no cap)",
        "memory_limit": "none",
    }
    capped = _resources_of(spec | {"cpu_limit_millis": 1500, "memory_limit_bytes": 64 << 20})
    assert (capped["cpu_limit"], capped["memory_limit"]) == ("1500m (a cap: CFS quota)", "64Mi")


def test_security_options_become_spec_fields() -> None:
    from api.cli import _security_fields

    assert _security_fields(None, False, None, None, None, False, None) == {}
    assert _security_fields("nobody", True, ["all"], ["cap_net_bind_service"], "Unconfined", True, "512Mi") == {
        "user": "nobody",
        "run_as_non_root": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "seccomp_profile": "Unconfined",
        "user_namespace": True,
        "ephemeral_storage_bytes": 512 << 20,
    }
