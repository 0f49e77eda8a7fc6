"""The README's main job through the CLI: ``corral up`` a real local cluster (nats-server, control plane, two
nodelets), run containers with ``corral run``, list them, ``corral down`` — and nothing is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.natsserver import free_port
from tests.runcenv import needs_runc

pytestmark = [needs_runc, pytest.mark.slow]
CORRAL = [sys.executable, "-m", "api.cli"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home() -> Iterator[dict[str, str]]:
    path = Path(f"/run/corral-t{uuid.uuid4().hex[:6]}")
    env = {**os.environ, "CORRAL_HOME": str(path)}
    env.pop("CORRAL_ADDR", None)
    env.pop("CORRAL_TOKEN", None)
    yield env
    subprocess.run([*CORRAL, "down"], env=env, cwd=ROOT, capture_output=True, timeout=120, check=False)
    subprocess.run(["rm", "-rf", str(path)], check=False)


def corral(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CORRAL, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def rows_id(env: dict[str, str], name: str) -> str:
    rows = json.loads(corral(env, "ps", "-a", "-o", "json").stdout)
    return next(c["id"] for c in rows if c["spec"]["name"] == name)


def test_up_run_ps_down(home: dict[str, str]) -> None:
    up = corral(home, "up", "--nodes", "2", "--port", str(free_port()), "--nats-port", str(free_port()))
    assert up.returncode == 0, up.stdout + up.stderr
    ok = corral(home, "run", "--name", "hello", "busybox", "--", "sh", "-c", "echo hi")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = corral(home, "run", "--name", "oops", "busybox", "--", "sh", "-c", "exit 7")
    assert (failed.returncode, "exited with code 7" in failed.stderr) == (1, True)
    lsr = corral(
        home,
        "run",
        "-d",
        "--name",
        "db",
        "--qos",
        "LSR",
        "--cpu",
        "1",
        "--memory",
        "64Mi",
        "busybox",
        "--",
        "sleep",
        "600",
    )
    assert lsr.returncode == 0, lsr.stderr
    bad = corral(home, "run", "--name", "Bad_Name", "busybox")
    assert bad.returncode == 1
    assert "name" in bad.stderr
    logs = corral(home, "logs", rows_id(home, "hello"))
    assert logs.stdout.splitlines() == ["hi"], logs.stdout + logs.stderr
    svc = corral(home, "service", "create", "web", "busybox", "--replicas", "2", "--", "sleep", "600")
    assert svc.returncode == 0, svc.stderr
    assert corral(home, "service", "rm", svc.stdout.strip()).returncode == 0
    ps = corral(home, "ps", "-a", "-o", "json")
    rows = {c["spec"]["name"]: c for c in json.loads(ps.stdout)}
    assert rows["hello"]["exit_code"] == 0
    assert rows["oops"]["exit_code"] == 7
    nodes = json.loads(corral(home, "nodes", "-o", "json").stdout)
    assert sorted(n["name"] for n in nodes) == ["node-1", "node-2"]
    down = corral(home, "down")
    assert down.returncode == 0, down.stderr
    name = Path(home["CORRAL_HOME"]).name
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{name}/*")), "cgroups left behind"
    assert name not in Path("/proc/self/mounts").read_text(), "mounts left behind"
