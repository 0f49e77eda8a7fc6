"""Hostile and odd input against the HTTP API of a real control plane (real nats-server, real SQLite): nothing is
appended before validation, the log stays readable, the watch survives idleness."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.controlplane import ControlPlane
from store.recorder import ANY, NewEvent
from store.sqlite import SqliteRecorder
from tests.integration.conftest import ADMIN, READER
from tests.natsserver import free_port
from wire.codec import encode
from wire.ids import new_event_id

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
    head = await cp.recorder.head()
    r = await client.delete(f"/v1/containers/{cid}", params={"grace": grace}, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "grace", r.json()
    assert await cp.recorder.head() == head  # nothing appended
    for path in ("/v1/containers", "/v1/nodes", "/v1/state", "/metrics", f"/v1/containers/{cid}"):
        assert (await client.get(path, headers=READER)).status_code == 200, path
    r = await client.delete(f"/v1/containers/{cid}", params={"grace": "0"}, headers=ADMIN)
    assert r.status_code == 202  # and a good stop still works


async def test_an_idle_watcher_survives_heartbeats_then_gets_the_next_event(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("api.app.HEARTBEAT_S", 0.2)
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
