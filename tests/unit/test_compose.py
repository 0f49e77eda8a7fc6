"""The compose demo's pure parts: the identities its `keys` service writes, and the cgroup values its test
expects from what the API reports."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]
import pytest

from api import tokens
from api.composetest import cpulist, expected_cgroup
from api.identities import write_compose_identities
from wire import subjects

NODES = ["node-1", "node-2", "node-3"]
ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_each_role_gets_only_its_own_files_private(tmp_path: Path) -> None:
    assert write_compose_identities(tmp_path, NODES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["control", "nats", *NODES]
    assert sorted(p.name for p in (tmp_path / "control").iterdir()) == [
        "admin-token", "nats.nk", "read-only-token", "tokens.json",
    ]  # fmt: skip
    for node in NODES:
        assert [p.name for p in (tmp_path / node).iterdir()] == ["nats.nk"]
    for path in tmp_path.rglob("*"):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


def test_nats_config_admits_each_seed_with_its_permissions(tmp_path: Path) -> None:
    write_compose_identities(tmp_path, NODES)
    conf = json.loads((tmp_path / "nats" / "nats.conf").read_text())
    assert (conf["port"], conf["http"]) == (4222, "0.0.0.0:8222")
    users = {u["nkey"]: u.get("permissions") for u in conf["authorization"]["users"]}
    assert len(users) == 4  # one identity each, none shared
    text = json.dumps(conf)
    for role, perms in [("control", subjects.control_permissions())] + [
        (n, subjects.node_permissions(n)) for n in NODES
    ]:
        seed = (tmp_path / role / "nats.nk").read_bytes()
        assert users[nkeys.from_seed(bytearray(seed)).public_key.decode()] == perms
        assert seed.decode() not in text  # the server's config holds public keys only


def test_tokens_file_matches_the_token_files(tmp_path: Path) -> None:
    write_compose_identities(tmp_path, NODES)
    known = tokens.load(tmp_path / "control" / "tokens.json")
    admin = (tmp_path / "control" / "admin-token").read_text()
    reader = (tmp_path / "control" / "read-only-token").read_text()
    assert known.who(admin) == tokens.Principal("admin", tokens.Role.ADMIN)
    assert known.who(reader) == tokens.Principal("reader", tokens.Role.READ_ONLY)
    stored = (tmp_path / "control" / "tokens.json").read_text()
    assert admin not in stored and reader not in stored


def test_a_second_run_keeps_the_identities(tmp_path: Path) -> None:
    write_compose_identities(tmp_path, NODES)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert not write_compose_identities(tmp_path, NODES)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def container(qos: str, request: int, limit: int | None, cpuset: list[int], quota: int | None = None) -> Any:
    return {"spec": {"qos": qos, "cpu_request_millis": request, "cpu_limit_millis": limit},
            "cpuset": cpuset, "cfs_quota_us": quota}  # fmt: skip


ALL = frozenset(range(4))
NONE: frozenset[int] = frozenset()


@pytest.mark.parametrize(
    ("c", "lse", "lsr", "want"),
    [
        # LSR: its own CPUs, no quota, shares from the request
        (container("LSR", 2000, 2000, [2, 3]), NONE, frozenset({2, 3}), ("2048", "-1", "2,3")),
        # LS beside an LSR: the CPUs no exclusive container holds; quota from the limit
        (container("LS", 250, 500, []), NONE, frozenset({2, 3}), ("256", "50000", "0,1")),
        # a quota the burst policy scaled: the API's value
        (container("LS", 250, 500, [], quota=75000), NONE, NONE, ("256", "75000", "0,1,2,3")),
        # BE may run on LSR CPUs, not on LSE ones; its shares are the minimum
        (container("BE", 0, None, []), frozenset({0}), frozenset({2, 3}), ("2", "-1", "1,2,3")),
        # LS with every CPU held exclusively: falls back to the BE pool
        (container("LS", 100, None, []), NONE, ALL, ("102", "-1", "0,1,2,3")),
        # a tiny request still gets the kernel's minimum of 2 shares; a tiny limit the minimum quota
        (container("LS", 1, 5, []), NONE, NONE, ("2", "1000", "0,1,2,3")),
    ],
)
def test_expected_cgroup(c: Any, lse: frozenset[int], lsr: frozenset[int], want: tuple[str, str, str]) -> None:
    got = expected_cgroup(c, ALL, lse, lsr)
    assert (got["cpu.shares"], got["cpu.cfs_quota_us"], got["cpuset.cpus"]) == want


@pytest.mark.parametrize(("text", "cpus"), [("0-2,5", {0, 1, 2, 5}), ("3\n", {3}), ("", set())])
def test_cpulist(text: str, cpus: set[int]) -> None:
    assert cpulist(text) == cpus


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_file_is_valid_for_compose_v1() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "deploy" / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
