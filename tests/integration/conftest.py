"""Fixtures the integration tests share: a short state root and a runc runtime that leaves nothing; a real
nats-server, a control plane on it and its HTTP API served by a real uvicorn."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import Tokens, create_app
from api.controlplane import ControlPlane
from nodelet.runtime import RuncRuntime, RuntimePaths
from tests.natsserver import free_port, nats_server
from tests.runcenv import clear_runtime, short_root


@pytest.fixture
def root() -> Iterator[Path]:
    with short_root("corral-test") as path:
        yield path


@pytest.fixture
async def runtime(root: Path) -> AsyncIterator[RuncRuntime]:
    rt = RuncRuntime(RuntimePaths(root / "rt"))
    yield rt
    await clear_runtime(rt, "/corral-test")


ADMIN = {"Authorization": "Bearer admin-token"}
READER = {"Authorization": "Bearer read-token"}


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with nats_server(tmp_path) as url:
        yield url


@pytest.fixture
async def cp(nats_url: str, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(tmp_path / "cp", nats_url)
    await plane.start()
    yield plane
    await plane.stop()


@pytest.fixture
async def client(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    """The app served by a real uvicorn on a loopback port (streaming responses need a real server)."""
    app = create_app(cp, Tokens.plain(["admin-token"], ["read-token"]))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110 -- uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        yield c
    server.should_exit = True
    await serving


CORRAL = [sys.executable, "-m", "api.cli"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home() -> Iterator[dict[str, str]]:
    """The environment of a local cluster's CLI, its home a short path under /run; torn down after."""
    path = Path(f"/run/corral-t{uuid.uuid4().hex[:6]}")
    env = {**os.environ, "CORRAL_HOME": str(path)}
    env.pop("CORRAL_ADDR", None)
    env.pop("CORRAL_TOKEN", None)
    yield env
    # Bounded, and generous: schemathesis leaves a cluster of some 2,000 containers to take down.
    subprocess.run([*CORRAL, "down"], env=env, cwd=ROOT, capture_output=True, timeout=300, check=False)
    subprocess.run(["rm", "-rf", str(path)], check=False)


def corral(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CORRAL, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
