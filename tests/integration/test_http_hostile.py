"""Hostile and odd input against the HTTP API of a real control plane (real nats-server, real SQLite): nothing is
appended before validation, the log stays readable, the watch survives idleness."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.controlplane import ControlPlane
from store.projections import ClusterState, apply_all
from store.projector import save_snapshot
from store.recorder import ANY, NewEvent
from store.sqlite import SqliteRecorder
from tests.integration.conftest import ADMIN, READER
from tests.natsserver import free_port
from wire import events as ev
from wire.codec import encode
from wire.ids import container_stream, new_event_id, node_stream
from wire.pss import Enforce
from wire.resources import Resources
from wire.topology import Topology

GOOD = {"name": "web", "image": "busybox", "command": ["sleep", "60"], "cpu_request_millis": 500}


async def submit(client: httpx.AsyncClient) -> str:
    r = await client.post("/v1/containers", json=GOOD, headers=ADMIN)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize("grace", ["-1", "nan", "inf", "1e308", "3601", "abc", ""])
async def test_a_bad_stop_parameter_appends_nothing_and_the_log_stays_readable(
    client: httpx.AsyncClient, cp: ControlPlane, grace: str
) -> None:
    cid = await submit(client)
    before = await cp.log.read_stream(container_stream(cid))  # the scheduler may append to it meanwhile
    r = await client.delete(f"/v1/containers/{cid}", params={"grace": grace}, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "grace", r.json()
    after = await cp.log.read_stream(container_stream(cid))
    assert after[: len(before)] == before
    assert not [r for r in after if isinstance(r.event, ev.ContainerStopRequested)]  # the stop appended nothing
    for path in ("/v1/containers", "/v1/nodes", "/v1/state", "/metrics", f"/v1/containers/{cid}"):
        assert (await client.get(path, headers=READER)).status_code == 200, path
    r = await client.delete(f"/v1/containers/{cid}", params={"grace": "0"}, headers=ADMIN)
    assert r.status_code == 202  # and a good stop still works


async def test_an_idle_watcher_survives_heartbeats_then_gets_the_next_event(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("api.edge.HEARTBEAT_S", 0.2)
    lines: list[str] = []
    async with asyncio.timeout(20), client.stream("GET", "/v1/events", params={"since": 1}, headers=READER) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        posted = False
        async for line in r.aiter_lines():
            lines.append(line)
            if not posted and lines.count(": heartbeat") >= 3:
                await submit(client)  # after three heartbeats of idleness
                posted = True
            if line.startswith("data:"):
                break
    assert lines[0] == ": caught-up"  # an empty log: caught up at once
    assert lines.count(": heartbeat") >= 3
    data = [line for line in lines if line.startswith("data:")]
    assert json.loads(data[0][5:])["event"]["type"] == "ContainerSubmitted"
    assert "data: " not in [line for line in lines if not line.startswith("data: {")]  # no empty data lines


async def test_caught_up_is_said_after_the_head_at_the_request(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    for _ in range(3):
        await submit(client)
    head = await cp.recorder.head()
    seen: list[str] = []
    async with asyncio.timeout(10), client.stream("GET", "/v1/events", params={"since": 2}, headers=READER) as r:
        async for line in r.aiter_lines():
            if line.startswith("id:") or line.startswith(":"):
                seen.append(line)
            if line == ": caught-up":
                break
    assert seen[-1] == ": caught-up"
    ids = [int(line[3:]) for line in seen[:-1]]
    assert ids == list(range(2, ids[-1] + 1))  # every position from 2, in order
    assert ids[-1] >= head


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "-5"}, "since"),
        ({"since": str(10**30)}, "since"),
        ({"since": "x"}, "since"),
        ({"since": "null"}, "since"),
        ({"type": "NoSuchEvent"}, "type"),
    ],
)
async def test_bad_event_stream_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    r = await client.get("/v1/events", params=params, headers=READER)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


async def test_since_zero_is_the_start_of_the_log(client: httpx.AsyncClient) -> None:
    await submit(client)
    seen: list[str] = []
    async with asyncio.timeout(10), client.stream("GET", "/v1/events", params={"since": 0}, headers=READER) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            seen.append(line)
            if line == ": caught-up":
                break
    assert "id: 1" in seen


async def test_a_control_plane_whose_log_holds_an_undecodable_event_exits_naming_it(
    tmp_path: Path, nats_url: str
) -> None:
    data = tmp_path / "cp"
    data.mkdir()
    recorder = await SqliteRecorder.open(data / "corral.db")
    bad: dict[str, Any] = {"type": "ContainerStopRequested", "container_id": "0000000000000001", "grace_s": -1.0}
    await recorder.append(
        "container-0000000000000001",
        [NewEvent(new_event_id().bytes, "ContainerStopRequested", encode(bad), 1)],
        ANY,
    )
    await recorder.close()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"admin": ["a"]}))
    args = ["--data-dir", str(data), "--nats", nats_url, "--tokens", str(tokens), "--port", str(free_port())]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.serve",
        *args,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:  # it hung: never leave it behind
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    assert "position 1 (ContainerStopRequested)" in stderr.decode(), stderr.decode()


def deep(levels: int, inner: str = "") -> str:
    return "[" * levels + inner + "]" * levels


@pytest.mark.parametrize(
    "body",
    [
        deep(10_000),
        '{"name": "web", "image": "busybox", "env": {"A": ' + deep(10_000, "1") + "}}",
        '{"name": "web", "image": "busybox", "labels": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}",
    ],
)
async def test_deeply_nested_json_is_a_4xx_not_a_500(client: httpx.AsyncClient, cp: ControlPlane, body: str) -> None:
    head = await cp.recorder.head()
    for path in ("/v1/containers", "/v1/plan", "/v1/services"):
        r = await client.post(path, content=body, headers={**ADMIN, "Content-Type": "application/json"})
        assert r.status_code in (400, 422), (path, r.status_code, r.text[:200])
        assert r.json()["field"] and r.json()["reason"], r.json()
    assert await cp.recorder.head() == head


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"name": "web", "image": "busy', "malformed JSON"),
        ("", "a JSON body is required"),
        ("   ", "a JSON body is required"),
        ("{'name': 'x'}", "malformed JSON"),
    ],
)
async def test_malformed_and_empty_bodies_are_400_with_field_and_reason(
    client: httpx.AsyncClient, content: str, reason: str
) -> None:
    r = await client.post("/v1/containers", content=content, headers={**ADMIN, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "body"
    assert r.json()["reason"].startswith(reason), r.json()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/containers", {**GOOD, "cpu_request_millis": "500"}, "cpu_request_millis"),
        ("/v1/containers", {**GOOD, "cpu_request_millis": 500.0}, "cpu_request_millis"),
        ("/v1/containers", {**GOOD, "read_only_root": "true"}, "read_only_root"),
        ("/v1/containers", {**GOOD, "command": "sleep 60"}, "command"),
        ("/v1/services", {"name": "s", "replicas": "3", "template": GOOD}, "replicas"),
        ("/v1/services", {"name": "s", "replicas": 3.0, "template": GOOD}, "replicas"),
        ("/v1/plan", {**GOOD, "cpu_request_millis": "500"}, "cpu_request_millis"),
    ],
)
async def test_types_are_strict_no_string_or_float_becomes_an_integer(
    client: httpx.AsyncClient, cp: ControlPlane, path: str, body: dict[str, Any], field: str
) -> None:
    head = await cp.recorder.head()
    r = await client.post(path, json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    assert await cp.recorder.head() == head


async def test_scale_is_strict_too(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/services", json={"name": "s", "replicas": 1, "template": GOOD}, headers=ADMIN)
    sid = r.json()["id"]
    r = await client.patch(f"/v1/services/{sid}", json={"replicas": "2"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["field"] == "replicas", r.text


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_declared_json_is_415(
    client: httpx.AsyncClient, cp: ControlPlane, media: str | None
) -> None:
    head = await cp.recorder.head()
    headers = {**ADMIN, **({"Content-Type": media} if media else {})}
    r = await client.post("/v1/containers", content=json.dumps(GOOD), headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["field"] == "Content-Type"
    assert await cp.recorder.head() == head
    ok = await client.post(
        "/v1/containers", content=json.dumps(GOOD), headers={**ADMIN, "Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 201, ok.text


async def test_null_is_not_a_value_of_a_number_or_an_enum(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/containers", params={"state": "null"}, headers=READER)
    assert r.status_code == 422 and r.json()["field"] == "state", r.text
    r = await client.get("/v1/containers", params={"state": "running"}, headers=READER)
    assert r.status_code == 200


@pytest.mark.parametrize("tail", ["-1", str(10**30), "100001", "x"])
async def test_bad_log_tail_is_422(client: httpx.AsyncClient, tail: str) -> None:
    cid = await submit(client)
    r = await client.get(f"/v1/containers/{cid}/logs", params={"tail": tail}, headers=READER)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "tail"


@pytest.mark.parametrize("at", ["-1", str(10**30), "x", "null"])
async def test_bad_state_position_is_422(client: httpx.AsyncClient, at: str) -> None:
    r = await client.get("/v1/state", params={"at": at}, headers=READER)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "at"


async def test_state_at_zero_past_the_head_and_after_truncation(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    ids = [await submit(client) for _ in range(4)]
    head = await cp.recorder.head()
    r = await client.get("/v1/state", params={"at": 0}, headers=READER)
    assert r.status_code == 200 and r.json()["containers"] == {}, r.text
    r = await client.get("/v1/state", params={"at": head + 1000}, headers=READER)
    assert r.status_code == 404 and r.json()["field"] == "at", r.text
    # The snapshot a truncation keeps: the state at position 2, then everything before 3 deleted.
    at2 = ClusterState()
    apply_all(at2, ((e.position, e.event) for e in await cp.log.read_all(1, 2)))
    await save_snapshot(cp.recorder, at2)
    await cp.recorder.truncate_before(3)
    for at in (2, 3, head):
        r = await client.get("/v1/state", params={"at": at}, headers=READER)
        assert r.status_code == 200, (at, r.text)
        assert r.json()["position"] == at
    assert set(r.json()["containers"]) == set(ids)
    r = await client.get("/v1/state", params={"at": 1}, headers=READER)
    assert r.status_code == 410 and r.json()["field"] == "at", r.text
    assert (await client.get("/v1/state", headers=READER)).status_code == 200


async def test_state_after_truncation_without_a_snapshot_is_410(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    for _ in range(3):
        await submit(client)
    await cp.recorder.truncate_before(3)
    r = await client.get("/v1/state", params={"at": 3}, headers=READER)
    assert r.status_code == 410, r.text
    assert (await client.get("/v1/state", headers=READER)).status_code == 200


async def test_idempotency_key_reused_with_another_body_is_422(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    key = {**ADMIN, "Idempotency-Key": "k-1"}
    first = await client.post("/v1/containers", json=GOOD, headers=key)
    assert first.status_code == 201
    again = await client.post("/v1/containers", json=GOOD, headers=key)
    assert again.status_code == 201 and again.json() == {**first.json(), "duplicate": True}
    other = await client.post("/v1/containers", json={**GOOD, "name": "other"}, headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["field"] == "Idempotency-Key"
    svc = {"name": "s", "replicas": 0, "template": GOOD}
    assert (await client.post("/v1/services", json=svc, headers=key)).status_code == 201  # keys are per kind
    r = await client.post("/v1/services", json={**svc, "replicas": 1}, headers=key)
    assert r.status_code == 422, r.text
    assert len((await client.get("/v1/containers", headers=READER)).json()) == 1
    assert len((await client.get("/v1/services", headers=READER)).json()) == 1


async def test_idempotency_key_of_a_removed_container_is_409(client: httpx.AsyncClient) -> None:
    key = {**ADMIN, "Idempotency-Key": "k-2"}
    cid = (await client.post("/v1/containers", json=GOOD, headers=key)).json()["id"]
    assert (await client.delete(f"/v1/containers/{cid}", params={"grace": 0}, headers=ADMIN)).status_code == 202
    async with asyncio.timeout(10):
        while (await client.get(f"/v1/containers/{cid}", headers=READER)).json()["state"] not in (  # noqa: ASYNC110
            "stopped",
            "exited",
            "failed",
            "lost",
        ):
            await asyncio.sleep(0.05)
    assert (await client.post(f"/v1/containers/{cid}/remove", headers=ADMIN)).status_code == 202
    r = await client.post("/v1/containers", json=GOOD, headers=key)
    assert r.status_code == 409, r.text
    assert r.json()["field"] == "Idempotency-Key"


async def register(
    cp: ControlPlane,
    name: str,
    images: tuple[str, ...],
    host_mounts: tuple[str, ...] = (),
    seccomp_profiles: tuple[str, ...] = (),
    pod_security: Enforce = Enforce.PRIVILEGED,
) -> None:
    topo = Topology.uniform(1, 1, 2, 2, memory_per_numa=8 << 30)
    event = ev.NodeRegistered(
        node=name,
        topology=topo,
        capacity=Resources(4000, 8 << 30),
        epoch=1,
        images=images,
        host_mounts=host_mounts,
        seccomp_profiles=seccomp_profiles,
        pod_security=pod_security,
    )
    await cp.log.append(node_stream(name), [event])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "image": "nosuch"}, "image"),
        ({**GOOD, "image": "app:2"}, "image"),  # the node holds app:1
        ({**GOOD, "mounts": [{"source": "/etc", "destination": "/m"}]}, "mounts"),
        ({**GOOD, "mounts": [{"source": "/srv", "destination": "/m"}]}, "mounts"),
        ({**GOOD, "image": "app:1", "mounts": [{"source": "/srv/data/x", "destination": "/m"}]}, "mounts"),
        ({**GOOD, "seccomp_profile": "Unconfined"}, "seccomp_profile"),  # no node allows it
        ({**GOOD, "seccomp_profile": "localhost/nosuch"}, "seccomp_profile"),
        ({**GOOD, "image": "app:1", "seccomp_profile": "localhost/audit"}, "seccomp_profile"),  # n1 has it, not app:1
        ({**GOOD, "seccomp_profile": "localhost/../x"}, "seccomp_profile"),  # not a profile name
    ],
)
async def test_what_every_node_would_refuse_is_refused_at_submit(
    client: httpx.AsyncClient, cp: ControlPlane, body: dict[str, Any], field: str
) -> None:
    await register(cp, "n1", ("busybox:latest",), ("/srv/data",), ("localhost/audit",))
    await register(cp, "n2", ("app:1", "busybox:latest"))
    head = await cp.recorder.head()
    r = await client.post("/v1/containers", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    r = await client.post("/v1/services", json={"name": "s", "replicas": 1, "template": body}, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == f"template.{field}", r.json()
    assert await cp.recorder.head() == head


@pytest.mark.parametrize(
    ("source", "why"),
    [("/", "whole file system"), ("/proc/1/root", "kernel interface"), ("/sys", "kernel interface"),
     ("/dev/sda", "kernel interface")],
)  # fmt: skip
async def test_the_host_root_and_kernel_paths_are_never_mounted(
    client: httpx.AsyncClient, cp: ControlPlane, source: str, why: str
) -> None:
    await register(cp, "n1", ("busybox:latest",), ("/",))  # even where a node allows everything
    head = await cp.recorder.head()
    for read_only in (False, True):
        body = {**GOOD, "mounts": [{"source": source, "destination": "/m", "read_only": read_only}]}
        r = await client.post("/v1/containers", json=body, headers=ADMIN)
        assert r.status_code == 422, r.text
        assert r.json()["field"].startswith("mounts") and why in r.json()["reason"], r.json()
    assert await cp.recorder.head() == head  # nothing appended for the refusals
    r = await client.post("/v1/containers", json={**GOOD, "mounts": [{"source": "/procfs", "destination": "/m"}]},
                          headers=ADMIN)  # fmt: skip
    assert r.status_code == 201, r.text  # a name that only starts like one is fine


async def test_a_container_no_node_admits_is_refused_at_submit(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    await register(cp, "n1", ("busybox:latest",), pod_security=Enforce.RESTRICTED)
    head = await cp.recorder.head()
    r = await client.post("/v1/containers", json=GOOD, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "security" and "drop ALL" in r.json()["reason"], r.json()
    assert await cp.recorder.head() == head
    restricted = {**GOOD, "user": "1000", "run_as_non_root": True, "capabilities": {"drop": ["ALL"]}}
    r = await client.post("/v1/containers", json=restricted, headers=ADMIN)
    assert r.status_code == 201, r.text


async def test_what_some_node_would_run_is_accepted_and_an_import_is_seen(
    client: httpx.AsyncClient, cp: ControlPlane
) -> None:
    await register(cp, "n1", ("busybox:latest",), ("/srv/data",), ("Unconfined", "localhost/audit"))
    for body in (
        {**GOOD, "image": "docker.io/library/busybox:latest"},
        {**GOOD, "mounts": [{"source": "/srv/data/x", "destination": "/m"}]},
        {**GOOD, "seccomp_profile": "Unconfined"},
        {**GOOD, "seccomp_profile": "localhost/audit"},
    ):
        r = await client.post("/v1/containers", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
    assert (await client.post("/v1/containers", json={**GOOD, "image": "app:3"}, headers=ADMIN)).status_code == 422
    await cp.log.append(node_stream("n1"), [ev.NodeImagesChanged(node="n1", images=("app:3", "busybox:latest"))])
    r = await client.post("/v1/containers", json={**GOOD, "image": "app:3"}, headers=ADMIN)
    assert r.status_code == 201, r.text


async def test_the_document_says_what_the_api_does(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    spec = doc["components"]["schemas"]["ContainerSpec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["name"]["pattern"].startswith("^")
    assert spec["properties"]["cpu_request_millis"]["minimum"] == 0
    post = doc["paths"]["/v1/containers"]["post"]["responses"]
    for code in ("400", "401", "403", "409", "412", "413", "415", "422"):
        assert post[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, code
    assert "WWW-Authenticate" in post["401"]["headers"]
    at = next(p for p in doc["paths"]["/v1/state"]["get"]["parameters"] if p["name"] == "at")
    assert at["schema"]["type"] == "integer" and at["schema"]["minimum"] == 0  # absent or a number, never null
    events = doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
    assert list(events) == ["text/event-stream"]
    listed = doc["paths"]["/v1/containers"]["get"]
    assert {"Corral-Continue", "Link"} <= set(listed["responses"]["200"]["headers"])
    assert listed["responses"]["200"]["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/ContainerStatus"
    }
    limit = next(p for p in listed["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["type"], limit["schema"]["minimum"], limit["schema"]["maximum"]) == ("integer", 1, 5000)


async def test_401_says_how_to_authenticate_and_405_and_options_say_what_is_allowed(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/v1/containers")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await client.request("TRACE", "/v1/containers/0000000000000001", headers=ADMIN)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["Allow"].split(",")} >= {"GET", "DELETE"}
    r = await client.options("/v1/containers/0000000000000001", headers=ADMIN)
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"GET", "PATCH", "DELETE", "OPTIONS"}
    r = await client.options("/v1/services/0000000000000001", headers=ADMIN)
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"PATCH", "DELETE", "OPTIONS"}


async def test_cordon_uncordon_and_drain_record_a_change_once(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    await register(cp, "n1", ("busybox:latest",))
    stream = node_stream("n1")
    for path in ("cordon", "cordon", "uncordon", "uncordon", "drain", "drain"):
        r = await client.post(f"/v1/nodes/n1/{path}", headers=ADMIN)
        assert r.status_code == 202, r.text
    kinds = [type(r.event).__name__ for r in await cp.log.read_stream(stream)]
    assert kinds == ["NodeRegistered", "NodeCordoned", "NodeUncordoned", "NodeDrained"]


async def test_lists_page_with_limit_and_a_continue_token(client: httpx.AsyncClient) -> None:
    ids = sorted([await submit(client) for _ in range(7)])
    got: list[str] = []
    url: str | None = "/v1/containers?limit=3"
    pages = 0
    while url is not None and pages < 10:
        r = await client.get(url, headers=READER)
        assert r.status_code == 200, r.text
        got += [c["id"] for c in r.json()]
        pages += 1
        link = r.headers.get("link")
        assert (link is None) == ("corral-continue" not in r.headers)
        url = link[1 : link.index(">")] if link else None
    assert pages == 3 and got == ids
    r = await client.get("/v1/containers", params={"limit": 3, "continue": ids[5]}, headers=READER)
    assert [c["id"] for c in r.json()] == ids[5:] and "link" not in r.headers
    assert len((await client.get("/v1/containers", headers=READER)).json()) == 7  # no limit: all of them
    for path in ("/v1/nodes", "/v1/services"):
        assert (await client.get(path, params={"limit": 1}, headers=READER)).status_code == 200


@pytest.mark.parametrize("limit", ["0", "-1", "5001", "x", "null"])
async def test_a_bad_limit_is_422(client: httpx.AsyncClient, limit: str) -> None:
    for path in ("/v1/containers", "/v1/nodes", "/v1/services"):
        r = await client.get(path, params={"limit": limit}, headers=READER)
        assert r.status_code == 422 and r.json()["field"] == "limit", (path, r.text)


async def test_a_read_only_token_sees_env_names_not_values(client: httpx.AsyncClient) -> None:
    body = {**GOOD, "env": {"DB_PASSWORD": "hunter2"}}
    r = await client.post("/v1/containers", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    svc = {"name": "api", "replicas": 1, "template": body}
    assert (await client.post("/v1/services", json=svc, headers=ADMIN)).status_code == 201

    async def seen(headers: dict[str, str]) -> str:
        texts = [
            (await client.get(path, headers=headers)).text
            for path in (
                "/v1/containers",
                f"/v1/containers/{cid}",
                f"/v1/containers/{cid}/history",
                "/v1/services",
                "/v1/state",
                "/v1/state?at=2",
            )
        ]
        async with asyncio.timeout(10), client.stream("GET", "/v1/events?since=1", headers=headers) as s:
            async for line in s.aiter_lines():
                texts.append(line)
                if line == ": caught-up":
                    break
        return "\n".join(texts)

    reader, admin = await seen(READER), await seen(ADMIN)
    assert "hunter2" not in reader and reader.count("DB_PASSWORD") >= 8
    assert admin.count("hunter2") >= 8


async def test_an_open_watch_does_not_hold_up_a_stop_of_the_control_plane(tmp_path: Path, nats_url: str) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"admin": ["a"]}))
    port = free_port()
    args = ["--data-dir", str(tmp_path / "cp"), "--nats", nats_url, "--tokens", str(tokens), "--port", str(port)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.serve", *args, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await c.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            async with c.stream("GET", "/v1/events", headers={"Authorization": "Bearer a"}) as watch:
                assert watch.status_code == 200
                await anext(watch.aiter_lines())  # ": caught-up": the watch is open
                started = asyncio.get_running_loop().time()
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(20):
                    code = await proc.wait()
                took = asyncio.get_running_loop().time() - started
        assert code == 0
        assert took < 15, f"the stop took {took:.1f} s"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
