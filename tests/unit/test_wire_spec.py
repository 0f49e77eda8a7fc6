"""wire.spec: ContainerSpec and ServiceSpec validation, QoS derivation and JSON round trips."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import checks
from wire.codec import encode_json
from wire.resources import MAX_CPU_MILLIS, MAX_MEMORY_BYTES
from wire.spec import (
    MIN_CONTAINER_MEMORY,
    ContainerSpec,
    CpuBindPolicy,
    NumaPolicy,
    QoS,
    RestartPolicy,
    ServiceSpec,
    derive_qos,
)

GI = 2**30
DROP = object()  # marks a field to leave out of the body
DIGEST = "sha256:" + "0123456789abcdef" * 4


def body(**fields: Any) -> bytes:
    """A ContainerSpec JSON body: a valid minimal spec with some fields replaced (or DROPped)."""
    merged: dict[str, Any] = {"name": "web", "image": "busybox", **fields}
    return msgspec.json.encode({k: v for k, v in merged.items() if v is not DROP})


def decode(raw: bytes) -> ContainerSpec:
    return msgspec.json.decode(raw, type=ContainerSpec)


def service_body(**fields: Any) -> bytes:
    merged: dict[str, Any] = {"name": "api", "replicas": 3, "template": {"name": "web", "image": "busybox"}, **fields}
    return msgspec.json.encode({k: v for k, v in merged.items() if v is not DROP})


# --- invalid container specs ---------------------------------------------------------------------------------

INVALID_SPECS = [
    # name
    pytest.param(body(name="Web"), "name: 'Web' is not a DNS-1123 label", id="name-uppercase"),
    pytest.param(body(name="web_1"), "name: 'web_1' is not a DNS-1123 label", id="name-underscore"),
    pytest.param(body(name="-web"), "name: '-web' is not a DNS-1123 label", id="name-leading-dash"),
    pytest.param(body(name="web-"), "name: 'web-' is not a DNS-1123 label", id="name-trailing-dash"),
    pytest.param(body(name="a.b"), "name: 'a.b' is not a DNS-1123 label", id="name-dot"),
    pytest.param(body(name="web\n"), "is not a DNS-1123 label", id="name-trailing-newline"),
    pytest.param(body(name="a" * 64), "`$.name`", id="name-too-long"),
    pytest.param(body(name=""), "`$.name`", id="name-empty"),
    pytest.param(body(name=1), "Expected `str`, got `int` - at `$.name`", id="name-int"),
    pytest.param(body(name=DROP), "missing required field `name`", id="name-missing"),
    # image
    pytest.param(body(image=""), "`$.image`", id="image-empty"),
    pytest.param(body(image="BusyBox"), "image: 'BusyBox' is not an image reference", id="image-uppercase"),
    pytest.param(body(image="busy box"), "image: 'busy box' is not an image reference", id="image-space"),
    pytest.param(body(image="busybox:"), "image: 'busybox:' is not an image reference", id="image-empty-tag"),
    pytest.param(body(image="busybox@sha256:abc"), "is not an image reference", id="image-short-digest"),
    pytest.param(body(image="/busybox"), "image: '/busybox' is not an image reference", id="image-leading-slash"),
    pytest.param(body(image="a" * 256), "`$.image`", id="image-too-long"),
    pytest.param(body(image=None), "Expected `str`, got `null` - at `$.image`", id="image-null"),
    pytest.param(body(image=DROP), "missing required field `image`", id="image-missing"),
    # shape
    pytest.param(body(cpus=2), "unknown field `cpus`", id="unknown-field"),
    pytest.param(body(Name="web"), "unknown field `Name`", id="unknown-field-case"),
    pytest.param(b"[]", "Expected `object`, got `array`", id="not-an-object"),
    # CPU and memory
    pytest.param(body(cpu_request_millis=-1), "`$.cpu_request_millis`", id="cpu-negative"),
    pytest.param(body(cpu_request_millis=MAX_CPU_MILLIS + 1), "`$.cpu_request_millis`", id="cpu-over-max"),
    pytest.param(body(cpu_request_millis="500m"), "got `str` - at `$.cpu_request_millis`", id="cpu-as-string"),
    pytest.param(body(cpu_request_millis=1.5), "got `float` - at `$.cpu_request_millis`", id="cpu-as-float"),
    pytest.param(body(cpu_request_millis=True), "got `bool` - at `$.cpu_request_millis`", id="cpu-as-bool"),
    pytest.param(body(cpu_limit_millis=-1000), "`$.cpu_limit_millis`", id="limit-negative"),
    pytest.param(body(cpu_limit_millis=0), "cpu_limit_millis: must be positive", id="limit-zero"),
    pytest.param(
        body(cpu_request_millis=2000, cpu_limit_millis=1000),
        "cpu_request_millis: request 2 is above the limit 1",
        id="request-above-limit",
    ),
    pytest.param(
        body(cpu_request_millis=1500, cpu_limit_millis=1000),
        "cpu_request_millis: request 1500m is above the limit 1",
        id="request-above-limit-millicores",
    ),
    pytest.param(
        body(memory_limit_bytes=MIN_CONTAINER_MEMORY - 1),
        "memory_limit_bytes: 4194303 is below the minimum of 4Mi",
        id="memory-below-4Mi",
    ),
    pytest.param(body(memory_limit_bytes=0), "memory_limit_bytes: 0 is below the minimum of 4Mi", id="memory-zero"),
    pytest.param(body(memory_limit_bytes=-1), "`$.memory_limit_bytes`", id="memory-negative"),
    pytest.param(body(memory_limit_bytes=MAX_MEMORY_BYTES + 1), "`$.memory_limit_bytes`", id="memory-over-max"),
    pytest.param(body(memory_limit_bytes="1Gi"), "got `str` - at `$.memory_limit_bytes`", id="memory-as-string"),
    # QoS rules
    pytest.param(
        body(qos="LSE", cpu_request_millis=1500, cpu_limit_millis=1500, memory_limit_bytes=GI),
        "cpu_request_millis: LSE needs a whole number of CPUs, got 1500m",
        id="LSE-fractional-cpus",
    ),
    pytest.param(
        body(qos="LSR", cpu_request_millis=2500, cpu_limit_millis=2500),
        "cpu_request_millis: LSR needs a whole number of CPUs, got 2500m",
        id="LSR-fractional-cpus",
    ),
    pytest.param(
        body(qos="LSE", cpu_request_millis=2000),
        "cpu_limit_millis: LSE needs a CPU limit equal to the request",
        id="LSE-without-limit",
    ),
    pytest.param(body(qos="LSE"), "cpu_limit_millis: LSE needs a CPU limit", id="LSE-with-nothing"),
    pytest.param(
        body(qos="LSR", cpu_request_millis=1000, cpu_limit_millis=2000),
        "cpu_limit_millis: LSR needs a CPU limit equal to the request",
        id="LSR-request-below-limit",
    ),
    pytest.param(
        body(cpu_request_millis=500, cpu_bind_policy="FullPCPUs"),
        "cpu_bind_policy: only LSE and LSR get exclusive CPUs; this container is LS",
        id="bind-policy-on-LS",
    ),
    pytest.param(
        body(cpu_bind_policy="SpreadByPCPUs"),
        "cpu_bind_policy: only LSE and LSR get exclusive CPUs; this container is BE",
        id="bind-policy-on-BE",
    ),
    pytest.param(
        body(
            qos="LS", cpu_request_millis=2000, cpu_limit_millis=2000, memory_limit_bytes=GI, cpu_bind_policy="FullPCPUs"
        ),
        "cpu_bind_policy: only LSE and LSR get exclusive CPUs; this container is LS",
        id="bind-policy-on-explicit-LS",
    ),
    # enums
    pytest.param(body(qos="Guaranteed"), "Invalid enum value 'Guaranteed' - at `$.qos`", id="qos-kubernetes-name"),
    pytest.param(body(qos="lsr"), "Invalid enum value 'lsr' - at `$.qos`", id="qos-lowercase"),
    pytest.param(body(qos=1), "`$.qos`", id="qos-int"),
    pytest.param(body(numa_policy="single"), "Invalid enum value 'single' - at `$.numa_policy`", id="numa-policy"),
    pytest.param(body(numa_policy="none"), "Invalid enum value 'none' - at `$.numa_policy`", id="numa-policy-case"),
    pytest.param(
        body(restart_policy="always"), "Invalid enum value 'always' - at `$.restart_policy`", id="restart-policy"
    ),
    pytest.param(
        body(cpu_bind_policy="fullpcpus"), "Invalid enum value 'fullpcpus' - at `$.cpu_bind_policy`", id="bind-policy"
    ),
    # labels and node selector
    pytest.param(body(labels={"-bad": "x"}), "labels: key '-bad' is not a label key", id="label-key-leading-dash"),
    pytest.param(body(labels={"a/b/c": "x"}), "labels: key 'a/b/c' is not a label key", id="label-key-two-slashes"),
    pytest.param(body(labels={"Ex.com/app": "x"}), "labels: key 'Ex.com/app' is not", id="label-key-uppercase-prefix"),
    pytest.param(body(labels={"a" * 64: "x"}), "labels: key", id="label-key-name-too-long"),
    pytest.param(body(labels={"": "x"}), "`key` in `$.labels`", id="label-key-empty"),
    pytest.param(
        body(labels={"app": "a b"}), "labels: value 'a b' of 'app' is not a label value", id="label-value-space"
    ),
    pytest.param(body(labels={"app": "-x"}), "labels: value '-x' of 'app'", id="label-value-leading-dash"),
    pytest.param(body(labels={"app": "a" * 64}), "`$.labels[...]`", id="label-value-too-long"),
    pytest.param(body(labels={"app": 1}), "got `int` - at `$.labels[...]`", id="label-value-int"),
    pytest.param(body(labels=["app"]), "Expected `object`, got `array` - at `$.labels`", id="labels-as-list"),
    pytest.param(body(labels={f"k{i}": "v" for i in range(65)}), "`$.labels`", id="too-many-labels"),
    pytest.param(body(node_selector={"a b": "x"}), "node_selector: key 'a b' is not a label key", id="selector-key"),
    pytest.param(body(node_selector={"zone": "a/b"}), "node_selector: value 'a/b'", id="selector-value"),
    # env and command
    pytest.param(body(env={"1A": "x"}), "env: '1A' is not an environment variable name", id="env-leading-digit"),
    pytest.param(body(env={"A-B": "x"}), "env: 'A-B' is not an environment variable name", id="env-dash"),
    pytest.param(body(env={"A=B": "x"}), "env: 'A=B' is not an environment variable name", id="env-equals"),
    pytest.param(body(env={"": "x"}), "`key` in `$.env`", id="env-empty-name"),
    pytest.param(body(env={"A": 1}), "got `int` - at `$.env[...]`", id="env-value-int"),
    pytest.param(body(command="ls -l"), "Expected `array`, got `str` - at `$.command`", id="command-string"),
    pytest.param(body(command=["ls", 1]), "got `int` - at `$.command[1]`", id="command-int-arg"),
]


@pytest.mark.parametrize(("raw", "error"), INVALID_SPECS)
def test_invalid_container_spec(raw: bytes, error: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        decode(raw)
    assert error in str(info.value)


def test_invalid_table_is_large() -> None:
    assert len(INVALID_SPECS) >= 25


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"cpu_limit_millis": 0}, "cpu_limit_millis: must be positive", id="limit-zero"),
        pytest.param(
            {"cpu_request_millis": 3000, "cpu_limit_millis": 2000}, "cpu_request_millis: request 3", id="above-limit"
        ),
        pytest.param({"memory_limit_bytes": 1024}, "memory_limit_bytes: 1024 is below", id="memory-low"),
        pytest.param({"qos": QoS.LSR}, "cpu_limit_millis: LSR needs a CPU limit", id="LSR-without-limit"),
        pytest.param({"cpu_bind_policy": CpuBindPolicy.FULL_PCPUS}, "cpu_bind_policy: ", id="bind-policy-on-BE"),
    ],
)
def test_construction_runs_the_same_checks(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=r"^\w+: ") as info:
        ContainerSpec(name="web", image="busybox", **kwargs)
    assert error in str(info.value)


# --- valid container specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "qos", "exclusive_cpus"),
    [
        pytest.param({}, QoS.BE, 0, id="nothing-is-BE"),
        pytest.param({"cpu_request_millis": 500}, QoS.LS, 0, id="request-only-is-LS"),
        pytest.param({"memory_limit_bytes": GI}, QoS.LS, 0, id="memory-only-is-LS"),
        pytest.param({"cpu_limit_millis": 1000}, QoS.LS, 0, id="limit-only-is-LS"),
        pytest.param(
            {"cpu_request_millis": 2000, "cpu_limit_millis": 2000, "memory_limit_bytes": GI},
            QoS.LSR,
            2,
            id="guaranteed-whole-cpus-is-LSR",
        ),
        pytest.param(
            {"cpu_request_millis": 2000, "cpu_limit_millis": 2000}, QoS.LS, 0, id="guaranteed-cpu-without-memory-is-LS"
        ),
        pytest.param(
            {"cpu_request_millis": 1500, "cpu_limit_millis": 1500, "memory_limit_bytes": GI},
            QoS.LS,
            0,
            id="guaranteed-fractional-cpus-is-LS",
        ),
        pytest.param(
            {"cpu_request_millis": 1000, "cpu_limit_millis": 2000, "memory_limit_bytes": GI},
            QoS.LS,
            0,
            id="burstable-is-LS",
        ),
        pytest.param(
            {"qos": "LSE", "cpu_request_millis": 4000, "cpu_limit_millis": 4000, "memory_limit_bytes": GI},
            QoS.LSE,
            4,
            id="explicit-LSE",
        ),
        pytest.param(
            {"qos": "LSE", "cpu_request_millis": 1000, "cpu_limit_millis": 1000}, QoS.LSE, 1, id="LSE-without-memory"
        ),
        pytest.param(
            {"qos": "LSR", "cpu_request_millis": 3000, "cpu_limit_millis": 3000}, QoS.LSR, 3, id="LSR-without-memory"
        ),
        pytest.param(
            {"qos": "LS", "cpu_request_millis": 2000, "cpu_limit_millis": 2000, "memory_limit_bytes": GI},
            QoS.LS,
            0,
            id="explicit-LS-kept-over-LSR",
        ),
        pytest.param({"qos": "BE", "memory_limit_bytes": GI}, QoS.BE, 0, id="explicit-BE-kept-over-LS"),
        pytest.param({"qos": None}, QoS.BE, 0, id="explicit-null-is-derived"),
        pytest.param(
            {
                "cpu_request_millis": 2000,
                "cpu_limit_millis": 2000,
                "memory_limit_bytes": GI,
                "cpu_bind_policy": "FullPCPUs",
            },
            QoS.LSR,
            2,
            id="LSR-with-FullPCPUs",
        ),
        pytest.param(
            {
                "qos": "LSE",
                "cpu_request_millis": 8000,
                "cpu_limit_millis": 8000,
                "cpu_bind_policy": "SpreadByPCPUs",
            },
            QoS.LSE,
            8,
            id="LSE-with-SpreadByPCPUs",
        ),
        pytest.param(
            {"cpu_request_millis": MAX_CPU_MILLIS, "cpu_limit_millis": MAX_CPU_MILLIS, "memory_limit_bytes": GI},
            QoS.LSR,
            1024,
            id="LSR-max-cpus",
        ),
        pytest.param({"memory_limit_bytes": MIN_CONTAINER_MEMORY}, QoS.LS, 0, id="memory-exactly-4Mi"),
    ],
)
def test_qos_derivation(fields: dict[str, Any], qos: QoS, exclusive_cpus: int) -> None:
    spec = decode(body(**fields))
    expected_fields = {**fields, "qos": qos}
    assert spec == ContainerSpec(name="web", image="busybox", **expected_fields)
    assert spec.qos is qos
    assert spec.exclusive_cpus == exclusive_cpus
    assert spec.qos.exclusive is (exclusive_cpus > 0)


@pytest.mark.parametrize(
    ("request_millis", "limit", "memory", "qos"),
    [
        pytest.param(0, None, None, QoS.BE, id="nothing"),
        pytest.param(1000, 1000, GI, QoS.LSR, id="guaranteed"),
        pytest.param(1000, 1000, None, QoS.LS, id="no-memory"),
        pytest.param(1001, 1001, GI, QoS.LS, id="not-whole"),
        pytest.param(0, None, GI, QoS.LS, id="memory-only"),
        pytest.param(0, 1000, None, QoS.LS, id="limit-only"),
        pytest.param(100, None, None, QoS.LS, id="request-only"),
    ],
)
def test_derive_qos(request_millis: int, limit: int | None, memory: int | None, qos: QoS) -> None:
    assert derive_qos(request_millis, limit, memory) is qos


@pytest.mark.parametrize(
    ("qos", "exclusive"),
    [(QoS.LSE, True), (QoS.LSR, True), (QoS.LS, False), (QoS.BE, False)],
    ids=["LSE", "LSR", "LS", "BE"],
)
def test_qos_exclusive(qos: QoS, exclusive: bool) -> None:
    assert qos.exclusive is exclusive


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "busybox:latest",
        "library/busybox:1.36.1-musl",
        "docker.io/library/busybox:1.36",
        "localhost:5000/app",
        "registry.example.com:443/team/app:v1.2.3_rc",
        "ghcr.io/org/app@" + DIGEST,
        "ghcr.io/org/app:1.0@" + DIGEST,
        DIGEST,
        "my_app",
        "a/b__c",
        "a" * 255,
    ],
)
def test_valid_image_references(image: str) -> None:
    assert decode(body(image=image)).image == image


def test_full_spec_decodes_to_the_expected_struct() -> None:
    raw = body(
        name="db-0",
        image="postgres:16",
        command=["postgres", "-c", "shared_buffers=1GB"],
        env={"PGDATA": "/data", "_X1": ""},
        cpu_request_millis=4000,
        cpu_limit_millis=4000,
        memory_limit_bytes=8 * GI,
        qos="LSE",
        cpu_bind_policy="FullPCPUs",
        numa_policy="SingleNUMANode",
        node_selector={"corral.io/zone": "a", "ssd": "true"},
        restart_policy="OnFailure",
        labels={"app": "db", "example.com/tier": "data", "empty": ""},
    )
    assert decode(raw) == ContainerSpec(
        name="db-0",
        image="postgres:16",
        command=("postgres", "-c", "shared_buffers=1GB"),
        env={"PGDATA": "/data", "_X1": ""},
        cpu_request_millis=4000,
        cpu_limit_millis=4000,
        memory_limit_bytes=8 * GI,
        qos=QoS.LSE,
        cpu_bind_policy=CpuBindPolicy.FULL_PCPUS,
        numa_policy=NumaPolicy.SINGLE_NUMA_NODE,
        node_selector={"corral.io/zone": "a", "ssd": "true"},
        restart_policy=RestartPolicy.ON_FAILURE,
        labels={"app": "db", "example.com/tier": "data", "empty": ""},
    )


def test_minimal_spec_defaults() -> None:
    assert decode(body()) == ContainerSpec(
        name="web",
        image="busybox",
        command=(),
        env={},
        cpu_request_millis=0,
        cpu_limit_millis=None,
        memory_limit_bytes=None,
        qos=QoS.BE,
        cpu_bind_policy=CpuBindPolicy.DEFAULT,
        numa_policy=NumaPolicy.NONE,
        node_selector={},
        restart_policy=RestartPolicy.NEVER,
        labels={},
    )


# --- round trips ---------------------------------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
images = st.sampled_from(["busybox", "busybox:1.36", "docker.io/library/nginx:1.25", DIGEST])
whole_cpus = st.integers(min_value=1, max_value=64).map(lambda n: n * 1000)
memory = st.integers(min_value=MIN_CONTAINER_MEMORY, max_value=MAX_MEMORY_BYTES)
label_keys = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
label_values = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?)?", fullmatch=True)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)


@st.composite
def container_specs(draw: st.DrawFn) -> ContainerSpec:
    common: dict[str, Any] = {
        "name": draw(names),
        "image": draw(images),
        "command": tuple(draw(st.lists(st.text(max_size=20), max_size=4))),
        "env": draw(st.dictionaries(env_names, st.text(max_size=20), max_size=4)),
        "labels": draw(st.dictionaries(label_keys, label_values, max_size=4)),
        "node_selector": draw(st.dictionaries(label_keys, label_values, max_size=2)),
        "numa_policy": draw(st.sampled_from(NumaPolicy)),
        "restart_policy": draw(st.sampled_from(RestartPolicy)),
    }
    if draw(st.booleans()):  # exclusive: whole CPUs, request == limit
        cpus = draw(whole_cpus)
        return ContainerSpec(
            **common,
            cpu_request_millis=cpus,
            cpu_limit_millis=cpus,
            memory_limit_bytes=draw(st.none() | memory),
            qos=draw(st.sampled_from([QoS.LSE, QoS.LSR])),
            cpu_bind_policy=draw(st.sampled_from(CpuBindPolicy)),
        )
    request = draw(st.integers(min_value=0, max_value=MAX_CPU_MILLIS))
    limit = draw(st.none() | st.integers(min_value=max(request, 1), max_value=MAX_CPU_MILLIS))
    mem = draw(st.none() | memory)
    derived = derive_qos(request, limit, mem)
    qos = draw(st.sampled_from([None, QoS.LS, QoS.BE] if not derived.exclusive else [None, QoS.LS, QoS.BE, derived]))
    return ContainerSpec(**common, cpu_request_millis=request, cpu_limit_millis=limit, memory_limit_bytes=mem, qos=qos)


@given(container_specs())
def test_container_spec_json_round_trip(spec: ContainerSpec) -> None:
    assert spec.qos is not None
    assert decode(encode_json(spec)) == spec


@given(container_specs())
def test_derived_qos_matches_derive_qos(spec: ContainerSpec) -> None:
    reset = msgspec.structs.replace(spec, qos=None, cpu_bind_policy=CpuBindPolicy.DEFAULT)
    assert reset.qos is derive_qos(spec.cpu_request_millis, spec.cpu_limit_millis, spec.memory_limit_bytes)


@given(container_specs(), st.integers(min_value=0, max_value=10_000))
def test_service_spec_json_round_trip(template: ContainerSpec, replicas: int) -> None:
    service = ServiceSpec(name="api", replicas=replicas, template=template)
    assert msgspec.json.decode(encode_json(service), type=ServiceSpec) == service


# --- ServiceSpec ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [0, 1, 10_000], ids=["zero", "one", "max"])
def test_service_replicas_in_bounds(replicas: int) -> None:
    assert msgspec.json.decode(service_body(replicas=replicas), type=ServiceSpec) == ServiceSpec(
        name="api", replicas=replicas, template=ContainerSpec(name="web", image="busybox")
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param(service_body(replicas=-1), "Expected `int` >= 0 - at `$.replicas`", id="replicas-negative"),
        pytest.param(
            service_body(replicas=10_001), "Expected `int` <= 10000 - at `$.replicas`", id="replicas-over-max"
        ),
        pytest.param(service_body(replicas="3"), "got `str` - at `$.replicas`", id="replicas-string"),
        pytest.param(service_body(replicas=DROP), "missing required field `replicas`", id="replicas-missing"),
        pytest.param(service_body(template=DROP), "missing required field `template`", id="template-missing"),
        pytest.param(service_body(name="API"), "name: 'API' is not a DNS-1123 label", id="name-uppercase"),
        pytest.param(service_body(name="a" * 64), "`$.name`", id="name-too-long"),
        pytest.param(service_body(image="busybox"), "unknown field `image`", id="unknown-field"),
        pytest.param(
            service_body(template={"name": "Web", "image": "busybox"}),
            "name: 'Web' is not a DNS-1123 label",
            id="template-name",
        ),
        pytest.param(
            service_body(template={"name": "web", "image": "busybox", "cpu_limit_millis": 0}),
            "cpu_limit_millis: must be positive, or left out for no limit - at `$.template`",
            id="template-limit-zero",
        ),
        pytest.param(
            service_body(template={"name": "web", "image": "busybox", "cpus": 1}),
            "unknown field `cpus` - at `$.template`",
            id="template-unknown-field",
        ),
        pytest.param(
            service_body(template={"name": "web", "image": "busybox", "qos": "Gold"}),
            "Invalid enum value 'Gold' - at `$.template.qos`",
            id="template-bad-enum",
        ),
        pytest.param(
            service_body(template={"name": "web", "image": "busybox", "memory_limit_bytes": 1}),
            "memory_limit_bytes: 1 is below the minimum of 4Mi - at `$.template`",
            id="template-memory-low",
        ),
    ],
)
def test_invalid_service_spec(raw: bytes, error: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(raw, type=ServiceSpec)
    assert error in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param({"name": "Web", "image": "busybox"}, id="name"),
        pytest.param({"name": "web", "image": "Bad Image"}, id="image"),
        pytest.param({"name": "web", "image": "busybox", "env": {"1X": ""}}, id="env"),
        pytest.param({"name": "web", "image": "busybox", "cpu_limit_millis": 0}, id="limit"),
    ],
)
def test_nested_template_errors_point_at_template(template: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"at `\$\.template") as info:
        msgspec.json.decode(service_body(template=template), type=ServiceSpec)
    assert str(info.value).split(":", 1)[0] in {"name", "image", "env", "cpu_limit_millis"}


# --- trusted decoding (the store's replay of its own log) ----------------------------------------------------


def test_trusted_decode_skips_pattern_checks_of_a_resolved_spec() -> None:
    raw = body(name="Not_A_Label", image="Not An Image", qos="BE")
    with checks.trusted():
        spec = decode(raw)
    assert (spec.name, spec.image, spec.qos) == ("Not_A_Label", "Not An Image", QoS.BE)
    with pytest.raises(msgspec.ValidationError, match=r"^name: "):
        decode(raw)


def test_trusted_decode_still_resolves_qos() -> None:
    raw = body(cpu_request_millis=2000, cpu_limit_millis=2000, memory_limit_bytes=GI)
    with checks.trusted():
        spec = decode(raw)
    assert spec.qos is QoS.LSR
    assert spec == decode(raw)


def test_trusted_decode_still_checks_lengths_and_types() -> None:
    with checks.trusted(), pytest.raises(msgspec.ValidationError, match=r"`\$\.name`"):
        decode(body(name="a" * 64, qos="BE"))
