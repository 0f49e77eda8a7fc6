"""The HTTP API over a real control plane (real nats-server, real SQLite): auth, idempotency, the table of bad
inputs (each a 4xx naming the field, never a 5xx), the event stream's resume and 410."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import httpx
import pytest

from api.controlplane import ControlPlane
from tests.integration.conftest import ADMIN, CORRAL, READER, ROOT
from wire import events as ev
from wire.ids import node_stream
from wire.resources import Resources
from wire.topology import Topology

GOOD = {"name": "web", "image": "busybox", "command": ["sleep", "60"], "cpu_request_millis": 500}


async def test_submit_get_list_stop(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/containers", json=GOOD, headers=ADMIN)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = await client.get(f"/v1/containers/{cid}", headers=READER)
    assert (r.status_code, r.json()["spec"]["name"]) == (200, "web")
    async with asyncio.timeout(10):  # pending until the scheduler sees there is no node: then it stays put
        while (await client.get(f"/v1/containers/{cid}", headers=READER)).json()["state"] != "unschedulable":  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    listed = (await client.get("/v1/containers?state=unschedulable", headers=READER)).json()
    assert [c["id"] for c in listed] == [cid]
    assert (await client.get("/v1/containers?state=pending", headers=READER)).json() == []
    r = await client.delete(f"/v1/containers/{cid}", headers=ADMIN)
    assert r.status_code == 202
    history = [h["event"] for h in (await client.get(f"/v1/containers/{cid}/history", headers=READER)).json()]
    assert history[0]["type"] == "ContainerSubmitted"
    # the audit trail: who asked, by the token's principal (the conftest's admin token is admin-1)
    wanted = ("ContainerSubmitted", "ContainerStopRequested")
    asked = {e["type"]: e.get("actor") for e in history if e["type"] in wanted}
    assert asked == {"ContainerSubmitted": "admin-1", "ContainerStopRequested": "admin-1"}, history
    assert all(e.get("actor", "") == "" for e in history if e["type"] == "ContainerUnschedulable")


async def test_idempotency_key_gives_one_container(client: httpx.AsyncClient) -> None:
    headers = {**ADMIN, "Idempotency-Key": "deploy-42"}
    first = await client.post("/v1/containers", json=GOOD, headers=headers)
    again = await client.post("/v1/containers", json=GOOD, headers=headers)
    assert first.status_code == 201
    assert again.json() == {**first.json(), "duplicate": True}
    assert len((await client.get("/v1/containers", headers=READER)).json()) == 1


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v1/containers", {}, 401),
        ("GET", "/v1/containers", {"Authorization": "Bearer wrong"}, 401),
        ("POST", "/v1/containers", READER, 403),
        ("GET", "/v1/containers/0123456789abcdef", ADMIN, 404),
        ("GET", "/healthz", {}, 200),
    ],
)
async def test_auth_and_not_found(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    r = await client.request(method, path, headers=headers, json=GOOD if method == "POST" else None)
    assert r.status_code == status
    if status >= 400:
        assert "error" in r.json()


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("name missing", {"image": "busybox"}, "name"),
    ("image missing", {"name": "web"}, "image"),
    ("name uppercase", {**GOOD, "name": "Web"}, "name"),
    ("name underscore", {**GOOD, "name": "my_app"}, "name"),
    ("name too long", {**GOOD, "name": "a" * 64}, "name"),
    ("name empty", {**GOOD, "name": ""}, "name"),
    ("name number", {**GOOD, "name": 5}, "name"),
    ("name leading dash", {**GOOD, "name": "-web"}, "name"),
    ("image empty", {**GOOD, "image": ""}, "image"),
    ("image bad chars", {**GOOD, "image": "Busy Box"}, "image"),
    ("command not a list", {**GOOD, "command": "sleep 60"}, "command"),
    ("command of numbers", {**GOOD, "command": [1, 2]}, "command"),
    ("env not an object", {**GOOD, "env": ["A=1"]}, "env"),
    ("env bad name", {**GOOD, "env": {"1A": "x"}}, "env"),
    ("cpu negative", {**GOOD, "cpu_request_millis": -1}, "cpu_request_millis"),
    ("cpu string", {**GOOD, "cpu_request_millis": "500m"}, "cpu_request_millis"),
    ("cpu too big", {**GOOD, "cpu_request_millis": 10**9}, "cpu_request_millis"),
    ("limit zero", {**GOOD, "cpu_limit_millis": 0}, "cpu_limit_millis"),
    ("request above limit", {**GOOD, "cpu_request_millis": 2000, "cpu_limit_millis": 1000}, "cpu_request_millis"),
    ("memory too small", {**GOOD, "memory_limit_bytes": 1024}, "memory_limit_bytes"),
    ("memory negative", {**GOOD, "memory_limit_bytes": -5}, "memory_limit_bytes"),
    ("qos unknown", {**GOOD, "qos": "GOLD"}, "qos"),
    (
        "LSE fractional",
        {**GOOD, "qos": "LSE", "cpu_request_millis": 1500, "cpu_limit_millis": 1500},
        "cpu_request_millis",
    ),
    ("LSR without limit", {**GOOD, "qos": "LSR", "cpu_request_millis": 2000}, "cpu_limit_millis"),
    (
        "LSR request != limit",
        {**GOOD, "qos": "LSR", "cpu_request_millis": 1000, "cpu_limit_millis": 2000},
        "cpu_limit_millis",
    ),
    ("bind policy on LS", {**GOOD, "cpu_bind_policy": "FullPCPUs"}, "cpu_bind_policy"),
    ("bind policy unknown", {**GOOD, "cpu_bind_policy": "Sideways"}, "cpu_bind_policy"),
    ("numa policy unknown", {**GOOD, "numa_policy": "Everywhere"}, "numa_policy"),
    ("restart policy unknown", {**GOOD, "restart_policy": "Sometimes"}, "restart_policy"),
    ("label key bad", {**GOOD, "labels": {"a b": "x"}}, "labels"),
    ("label value too long", {**GOOD, "labels": {"a": "x" * 64}}, "labels"),
    ("node selector not an object", {**GOOD, "node_selector": "zone=a"}, "node_selector"),
    ("unknown field", {**GOOD, "gpus": 1}, "gpus"),
    ("mount relative", {**GOOD, "mounts": [{"source": "data", "destination": "/data"}]}, "mounts"),
    ("read_only_root not bool", {**GOOD, "read_only_root": "yes"}, "read_only_root"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_a_422_naming_the_field(
    client: httpx.AsyncClient, case: str, body: dict[str, Any], field: str
) -> None:
    r = await client.post("/v1/containers", json=body, headers=ADMIN)
    assert r.status_code == 422, (case, r.status_code, r.text)
    problem = r.json()
    assert problem["field"].split(".")[0].split("[")[0] == field, problem
    assert problem["reason"]
    assert (await client.get("/v1/containers", headers=READER)).json() == []  # nothing half-done


async def test_body_not_json_and_body_too_large(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/containers", content=b"{not json", headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code in (400, 422)
    r = await client.post("/v1/containers", json={**GOOD, "env": {"A": "x" * 300_000}}, headers=ADMIN)
    assert r.status_code == 413


async def test_plan_says_where_it_would_go(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    topo = Topology.uniform(1, 1, 2, 2, memory_per_numa=8 << 30)
    await cp.log.append(
        node_stream("n1"), [ev.NodeRegistered(node="n1", topology=topo, capacity=Resources(4000, 8 << 30), epoch=1)]
    )
    lsr = {
        "name": "db",
        "image": "busybox",
        "cpu_request_millis": 2000,
        "cpu_limit_millis": 2000,
        "memory_limit_bytes": 1 << 30,
    }
    r = (await client.post("/v1/plan", json=lsr, headers=READER)).json()
    assert (r["fits"], r["node"], len(r["cpuset"])) == (True, "n1", 2)
    r = (
        await client.post(
            "/v1/plan", json={**lsr, "cpu_request_millis": 8000, "cpu_limit_millis": 8000}, headers=READER
        )
    ).json()
    assert (r["fits"], r["reason"]) == (False, "0/1 nodes fit: 1 insufficient CPU")


async def read_events(client: httpx.AsyncClient, n: int, **kw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(10), client.stream("GET", "/v1/events", **kw) as r:
        assert r.status_code == 200
        current: dict[str, Any] = {}
        async for line in r.aiter_lines():
            if line.startswith("id:"):
                current["id"] = int(line[3:].strip())
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:].strip())
            elif line == "" and current:
                out.append(current)
                current = {}
                if len(out) == n:
                    return out
    return out


async def test_event_stream_resumes_from_last_event_id_and_410s_when_truncated(
    client: httpx.AsyncClient, cp: ControlPlane
) -> None:
    for i in range(5):
        await client.post("/v1/containers", json={**GOOD, "name": f"c{i}"}, headers=ADMIN)
    first = await read_events(client, 3, headers=ADMIN, params={"since": 1})
    assert [e["id"] for e in first] == [1, 2, 3]
    rest = await read_events(client, 2, headers={**ADMIN, "Last-Event-ID": "3"})
    assert [e["id"] for e in rest] == [4, 5]  # resumed right after 3: no gap, no repeat
    assert rest[0]["data"]["position"] == 4
    assert await cp.recorder.truncate_before(4) == 3
    assert await cp.recorder.oldest() == 4  # a reader must not be stuck in an old snapshot
    r = await client.get("/v1/events", params={"since": 2}, headers=ADMIN)
    assert r.status_code == 410
    assert "truncated" in r.json()["error"]


async def test_metrics_and_openapi(client: httpx.AsyncClient) -> None:
    await client.post("/v1/containers", json=GOOD, headers=ADMIN)
    text = (await client.get("/metrics", headers=READER)).text
    assert 'corral_containers{state="pending"} 1.0' in text
    counters = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("corral_store_"))
    transactions, appends = (
        float(counters["corral_store_transactions_total"]),
        float(counters["corral_store_appends_total"]),
    )
    assert 1 <= transactions <= appends  # the submission is one of them
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/v1/containers" in schema["paths"]


async def until(cp: ControlPlane, check: Any, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            await cp.projection.catch_up()
            if check():
                return
            await cp.recorder.wait_beyond(cp.projection.state.position)


async def test_services_create_scale_delete(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    body = {"name": "api", "replicas": 3, "template": {**GOOD, "name": "api"}}
    r = await client.post("/v1/services", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    def replicas() -> int:
        return sum(
            1
            for c in cp.projection.state.containers.values()
            if c.service_id == sid and not c.state.terminal and c.state != "stopping"
        )

    await until(cp, lambda: replicas() == 3)
    r = await client.patch(f"/v1/services/{sid}", json={"replicas": 1}, headers=ADMIN)
    assert (r.status_code, r.json()["replicas"]) == (200, 1)
    await until(cp, lambda: replicas() == 1)
    assert (await client.patch(f"/v1/services/{sid}", json={"replicas": -1}, headers=ADMIN)).status_code == 422
    assert (await client.delete(f"/v1/services/{sid}", headers=ADMIN)).status_code == 202
    await until(cp, lambda: replicas() == 0)
    assert (await client.get("/v1/services", headers=READER)).json() == []
    assert (await client.patch("/v1/services/00000000000000ff", json={"replicas": 1}, headers=ADMIN)).status_code == 404


async def test_state_at_a_past_position(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/containers", json=GOOD, headers=ADMIN)).json()
    await client.post("/v1/containers", json={**GOOD, "name": "second"}, headers=ADMIN)
    past = (await client.get("/v1/state", params={"at": first["position"]}, headers=READER)).json()
    assert (past["position"], list(past["containers"])) == (first["position"], [first["id"]])
    now = (await client.get("/v1/state", headers=READER)).json()
    assert len(now["containers"]) == 2


async def test_nodes_cordon_and_drain(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    topo = Topology.uniform(1, 1, 2, 2, memory_per_numa=8 << 30)
    await cp.log.append(
        node_stream("n1"), [ev.NodeRegistered(node="n1", topology=topo, capacity=Resources(4000, 8 << 30), epoch=1)]
    )
    r = await client.post("/v1/nodes/n1/cordon", headers=ADMIN)
    assert (r.status_code, r.json()["cordoned"]) == (202, True)
    r = await client.post("/v1/nodes/n1/uncordon", headers=ADMIN)
    assert r.json()["cordoned"] is False
    r = await client.post("/v1/nodes/n1/drain", headers=ADMIN)
    assert (r.json()["cordoned"], r.json()["drained"]) == (True, True)
    assert (await client.post("/v1/nodes/nope/cordon", headers=ADMIN)).status_code == 404
    assert (await client.post("/v1/nodes/n1/cordon", headers=READER)).status_code == 403


async def test_plan_then_check_and_set_submit(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    position = (await client.post("/v1/plan", json=GOOD, headers=READER)).json()["position"]
    ok = await client.post("/v1/containers", json=GOOD, headers={**ADMIN, "If-Match": str(position)})
    assert ok.status_code == 201
    stale = await client.post("/v1/containers", json=GOOD, headers={**ADMIN, "If-Match": str(position)})
    assert stale.status_code == 412
    assert "plan again" in stale.json()["error"]
    bad = await client.post("/v1/containers", json=GOOD, headers={**ADMIN, "If-Match": "yesterday"})
    assert (bad.status_code, bad.json()["field"]) == (422, "If-Match")


async def test_a_retried_check_and_set_submit_gets_its_first_answer(client: httpx.AsyncClient) -> None:
    """A client that lost the answer retries with the same key and If-Match: its own append moved the head, so
    the retry is answered as a duplicate, not 412; another request at that position still gets 412."""
    position = (await client.post("/v1/plan", json=GOOD, headers=READER)).json()["position"]
    headers = {**ADMIN, "If-Match": str(position), "Idempotency-Key": "plan-1"}
    first = await client.post("/v1/containers", json=GOOD, headers=headers)
    assert first.status_code == 201
    again = await client.post("/v1/containers", json=GOOD, headers=headers)
    assert again.json() == {**first.json(), "duplicate": True}
    other = await client.post("/v1/containers", json=GOOD, headers={**headers, "Idempotency-Key": "plan-2"})
    assert other.status_code == 412
    changed = await client.post("/v1/containers", json={**GOOD, "name": "other"}, headers=headers)
    assert (changed.status_code, changed.json()["field"]) == (422, "Idempotency-Key")


async def test_remove_an_ended_container(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    cid = (await client.post("/v1/containers", json=GOOD, headers=ADMIN)).json()["id"]
    r = await client.post(f"/v1/containers/{cid}/remove", headers=ADMIN)
    assert r.status_code == 409
    assert "stop it first" in r.json()["error"]
    await client.delete(f"/v1/containers/{cid}", headers=ADMIN)  # never placed: the reconciler stops it at once
    await until(cp, lambda: cp.projection.state.containers[cid].state == "stopped")
    assert (await client.post(f"/v1/containers/{cid}/remove", headers=ADMIN)).status_code == 202
    assert (await client.get(f"/v1/containers/{cid}", headers=READER)).status_code == 404
    history = await cp.log.read_stream(f"container-{cid}")
    assert type(history[-1].event).__name__ == "ContainerRemoved"


async def test_the_apps_lifespan_owns_the_control_plane_and_stops_serving_when_it_fails(
    nats_url: str, tmp_path: Any
) -> None:
    from litestar.testing import AsyncTestClient

    from api.app import create_app
    from api.tokens import Tokens

    plane = ControlPlane(tmp_path / "cp", nats_url)
    failures: list[BaseException] = []
    app = create_app(plane, Tokens.plain(["t"]), on_failure=failures.append)
    async with AsyncTestClient(app) as c:  # runs the lifespan: the control plane starts
        r = await c.post(
            "/v1/containers", json={"name": "a", "image": "busybox"}, headers={"Authorization": "Bearer t"}
        )
        assert r.status_code == 201, r.text
        assert (await c.get("/healthz")).status_code == 200
        plane.failed.get_loop().call_soon_threadsafe(plane.failed.set_result, RuntimeError("the scheduler loop failed"))
        async with asyncio.timeout(5):
            while not failures:  # noqa: ASYNC110 -- the callback runs on the lifespan's loop
                await asyncio.sleep(0.01)
        assert [str(f) for f in failures] == ["the scheduler loop failed"]
    # After the lifespan, the control plane is stopped: its log is closed.
    with pytest.raises(Exception, match="closed"):
        await plane.log.append("x", [ev.NodeCordoned(node="n")])


async def test_a_container_whose_node_does_not_answer_says_why_it_waits(
    client: httpx.AsyncClient, cp: ControlPlane
) -> None:
    topo = Topology.uniform(1, 1, 2, 2, memory_per_numa=8 << 30)
    # A node in the log with no nodelet behind it (and no lease, so it is never lost): a start goes unanswered.
    await cp.log.append(
        node_stream("n9"), [ev.NodeRegistered(node="n9", topology=topo, capacity=Resources(4000, 8 << 30), epoch=1)]
    )
    r = await client.post("/v1/containers", json={"name": "a", "image": "busybox"}, headers=ADMIN)
    cid = r.json()["id"]
    async with asyncio.timeout(30):
        while True:
            view = (await client.get(f"/v1/containers/{cid}", headers=READER)).json()
            if "no answer" in view.get("waiting", ""):
                break
            await asyncio.sleep(0.1)
    assert view["state"] == "scheduled"
    assert view["waiting"].startswith("sending the start to n9 ("), view
    listed = (await client.get("/v1/containers", params={"state": "scheduled"}, headers=READER)).json()
    assert [c["id"] for c in listed] == [cid] and listed[0]["waiting"]
    # Once it no longer waits, there is nothing to explain.
    assert (await client.delete(f"/v1/containers/{cid}", params={"grace": "0"}, headers=ADMIN)).status_code == 202
    view = (await client.get(f"/v1/containers/{cid}", headers=READER)).json()
    assert view["state"] == "stopping" and view["waiting"].startswith(("sending the stop to n9", "waiting for n9")), (
        view
    )


async def test_burst_policy_get_put_and_check_and_set(client: httpx.AsyncClient, cp: ControlPlane) -> None:
    r = await client.get("/v1/burst-policy", headers=READER)
    assert r.json() == {"config": {"cluster": {}, "nodes": []}, "version": -1}
    config = {
        "cluster": {"policy": "cpuBurstOnly", "cpu_burst_percent": 100},
        "nodes": [{"selector": {"pool": "web"}, "strategy": {"policy": "auto", "share_pool_threshold_percent": 70}}],
    }
    r = await client.put("/v1/burst-policy", json=config, headers=ADMIN)
    assert (r.status_code, r.json()) == (200, {"config": config, "version": 0})
    assert (await client.put("/v1/burst-policy", json=config, headers=ADMIN)).json()["version"] == 0  # unchanged
    assert (await client.put("/v1/burst-policy", json=config, headers=READER)).status_code == 403
    stale = await client.put("/v1/burst-policy", json={}, headers={**ADMIN, "If-Match": "7"})
    assert stale.status_code == 412
    ok = await client.put("/v1/burst-policy", json={}, headers={**ADMIN, "If-Match": "0"})
    assert ok.json() == {"config": {"cluster": {}, "nodes": []}, "version": 1}
    history = [e.event for e in await cp.log.read_stream("cluster-burst-policy")]
    assert [type(e).__name__ for e in history] == ["BurstPolicyChanged", "BurstPolicyChanged"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cluster": {"policy": "sometimes"}}, "cluster.policy"),
        ({"cluster": {"cfs_quota_burst_percent": 50}}, "cluster.cfs_quota_burst_percent"),
        ({"cluster": {"cpu_burst_percent": "100"}}, "cluster.cpu_burst_percent"),
        ({"nodes": [{"selector": {"bad key!": "x"}}]}, "nodes[0].selector"),
        ({"cluster": {}, "extra": 1}, "extra"),
    ],
)
async def test_a_bad_burst_policy_is_refused_and_appends_nothing(
    client: httpx.AsyncClient, cp: ControlPlane, body: dict[str, Any], field: str
) -> None:
    r = await client.put("/v1/burst-policy", json=body, headers=ADMIN)
    assert r.status_code in (400, 422), r.text
    assert field.split("[", maxsplit=1)[0].split(".", maxsplit=1)[0] in r.text
    assert await cp.log.read_stream("cluster-burst-policy") == []


async def test_a_container_burst_setting_needs_an_ls_container_with_a_limit(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/containers", json={**GOOD, "burst": {"policy": "auto"}}, headers=ADMIN)
    assert (r.status_code, r.json()["field"]) == (422, "burst")
    ok = {**GOOD, "cpu_limit_millis": 500, "burst": {"policy": "auto", "cpu_burst_percent": 50}}
    assert (await client.post("/v1/containers", json=ok, headers=ADMIN)).status_code == 201


async def test_corral_burst_get_and_set(client: httpx.AsyncClient) -> None:
    env = {**os.environ, "CORRAL_ADDR": str(client.base_url), "CORRAL_TOKEN": "admin-token"}

    def burst(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CORRAL, "burst", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )

    async def config() -> dict[str, Any]:
        r = await asyncio.to_thread(burst, "get", "-o", "json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["config"]  # type: ignore[no-any-return]

    assert (await asyncio.to_thread(burst, "set", "--policy", "auto")).returncode == 0
    web = ("--selector", "pool=web")
    r = await asyncio.to_thread(burst, "set", *web, "--policy", "none", "--share-pool-threshold-percent", "70")
    assert r.returncode == 0, r.stderr
    assert await config() == {
        "cluster": {"policy": "auto"},
        "nodes": [{"selector": {"pool": "web"}, "strategy": {"policy": "none", "share_pool_threshold_percent": 70}}],
    }
    assert (await asyncio.to_thread(burst, "set", *web, "--unset", "policy")).returncode == 0
    assert (await config())["nodes"][0]["strategy"] == {"share_pool_threshold_percent": 70}
    table = await asyncio.to_thread(burst, "get")
    assert "cluster" in table.stdout and "pool=web" in table.stdout and "[1000]" in table.stdout
    assert (await asyncio.to_thread(burst, "set", *web, "--remove")).returncode == 0
    assert (await config())["nodes"] == []
    bad = await asyncio.to_thread(burst, "set", "--policy", "sometimes")
    assert bad.returncode == 1 and "policy" in bad.stderr
    assert await config() == {"cluster": {"policy": "auto"}, "nodes": []}


async def test_patch_resizes_a_live_container_and_refuses_what_does_not_fit(
    client: httpx.AsyncClient, cp: ControlPlane
) -> None:
    topo = Topology.uniform(1, 1, 2, 2, memory_per_numa=8 << 30)  # 4 CPUs
    await cp.log.append(
        node_stream("n1"), [ev.NodeRegistered(node="n1", topology=topo, capacity=Resources(4000, 8 << 30), epoch=1)]
    )
    cid = (await client.post("/v1/containers", json={**GOOD, "cpu_limit_millis": 1000}, headers=ADMIN)).json()["id"]
    await until(cp, lambda: cp.projection.state.containers[cid].state == "scheduled")
    r = await client.patch(
        f"/v1/containers/{cid}", json={"cpu_request_millis": 1000, "cpu_limit_millis": 2000}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    assert (r.json()["spec"]["cpu_request_millis"], r.json()["spec"]["cpu_limit_millis"]) == (1000, 2000)
    assert cp.projection.state.nodes["n1"].allocations[cid].resources.cpu_millis == 1000
    too_big = await client.patch(
        f"/v1/containers/{cid}", json={"cpu_request_millis": 5000, "cpu_limit_millis": 6000}, headers=ADMIN
    )
    assert (too_big.status_code, too_big.json()["field"]) == (409, "cpu_request_millis")
    above = await client.patch(f"/v1/containers/{cid}", json={"cpu_request_millis": 3000}, headers=ADMIN)
    assert (above.status_code, above.json()["field"]) == (422, "cpu_request_millis")  # above its limit
    for body in ({"cpu_request_millis": "2"}, {"cpus": 2}, {"cpu_limit_millis": 0}):
        bad = await client.patch(f"/v1/containers/{cid}", json=body, headers=ADMIN)
        assert bad.status_code in (400, 422), (body, bad.text)
    assert (await client.patch(f"/v1/containers/{cid}", json={}, headers=READER)).status_code == 403
    assert (await client.patch("/v1/containers/00000000000000ff", json={}, headers=ADMIN)).status_code == 404
    history = [type(e.event).__name__ for e in await cp.log.read_stream(f"container-{cid}")]
    assert history.count("ContainerResized") == 1  # the refused ones appended nothing
