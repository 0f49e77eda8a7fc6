"""The README's main job through the CLI: ``corral up`` a real local cluster (nats-server, control plane, two
nodelets), run containers with ``corral run``, list them, ``corral down`` — and nothing is left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from api.local import alive
from tests.integration.conftest import CORRAL, ROOT, corral
from tests.natsserver import free_port
from tests.runcenv import needs_runc

pytestmark = [needs_runc, pytest.mark.slow]


def rows_id(env: dict[str, str], name: str) -> str:
    rows = json.loads(corral(env, "ps", "-a", "-o", "json").stdout)
    return next(c["id"] for c in rows if c["spec"]["name"] == name)


def test_up_run_ps_down(home: dict[str, str]) -> None:
    up = corral(home, "up", "--nodes", "2", "--port", str(free_port()), "--nats-port", str(free_port()))
    assert up.returncode == 0, up.stdout + up.stderr
    ok = corral(home, "run", "--name", "hello", "busybox", "--", "sh", "-c", "echo hi")
    assert (ok.returncode, ok.stdout) == (0, "hi\n"), ok.stdout + ok.stderr
    failed = corral(home, "run", "--name", "oops", "busybox", "--", "sh", "-c", "exit 7")
    assert failed.returncode == 7, failed.stdout + failed.stderr
    lsr = corral(
        home,
        "run",
        "-d",
        "--name",
        "db",
        "--qos",
        "LSR",
        "--cpu-request",
        "1",
        "--memory",
        "64Mi",
        "busybox",
        "--",
        "sleep",
        "600",
    )
    assert lsr.returncode == 0, lsr.stderr
    # --cpus is a cap, as docker run --cpus; --cpu-request alone is none (measured in the cgroup, from outside)
    for name, flag, value in (("capped", "--cpus", "0.5"), ("uncapped", "--cpu-request", "500m")):
        r = corral(home, "run", "-d", "--name", name, flag, value, "busybox", "--", "sleep", "600")
        assert r.returncode == 0, r.stderr
    quotas = {}
    for c in json.loads(corral(home, "ps", "-o", "json").stdout):
        if c["spec"]["name"] in ("capped", "uncapped"):
            rel = f"{Path(home['CORRAL_HOME']).name}/{c['node']}/{c['id']}"
            v1, v2 = Path("/sys/fs/cgroup/cpu") / rel / "cpu.cfs_quota_us", Path("/sys/fs/cgroup") / rel / "cpu.max"
            raw = v1.read_text() if v1.exists() else v2.read_text().split()[0].replace("max", "-1")
            quotas[c["spec"]["name"]] = raw.strip()
    assert quotas == {"capped": "50000", "uncapped": "-1"}, quotas
    audit = corral(home, "audit", rows_id(home, "db"))  # the Pod Security Standards, read from the process
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "meets the baseline standard and does not meet the restricted one" in " ".join(audit.stdout.split())
    strict = corral(home, "run", "-d", "--name", "strict", "--user", "nobody", "--run-as-non-root", "--cap-drop",
                    "ALL", "--cap-add", "NET_BIND_SERVICE", "busybox", "--", "sleep", "600")  # fmt: skip
    assert strict.returncode == 0, strict.stderr
    audit = corral(home, "audit", strict.stdout.strip())
    assert "meets the baseline standard and meets the restricted one" in " ".join(audit.stdout.split()), audit.stdout
    bad = corral(home, "run", "--name", "Bad_Name", "busybox")
    assert bad.returncode == 125
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
    assert all("busybox:latest" in n["images"] for n in nodes), nodes  # each nodelet says what it holds
    down = corral(home, "down")
    assert down.returncode == 0, down.stderr
    name = Path(home["CORRAL_HOME"]).name
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{name}/*")), "cgroups left behind"
    assert name not in Path("/proc/self/mounts").read_text(), "mounts left behind"


def up_args() -> list[str]:
    return ["up", "--nodes", "2", "--port", str(free_port()), "--nats-port", str(free_port())]


def test_run_is_attached_like_docker_run(home: dict[str, str], tmp_path: Path) -> None:
    """Output streams while it runs, the exit code is the container's, 125 when Corral cannot run it."""
    assert corral(home, *up_args()).returncode == 0
    r = corral(home, "run", "busybox", "--", "sh", "-c", "echo one; echo two >&2; sleep 2; echo three; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "one\nthree\n", "two\n"), r
    (tmp_path / "env").write_text("# a comment\nA=from-file\nB=b\n")
    r = corral(
        home, "run", "--rm", "--env-file", str(tmp_path / "env"), "-e", "B=from-flag", "-l", "team=x",
        "busybox", "--", "sh", "-c", "echo $A $B",
    )  # fmt: skip
    assert (r.returncode, r.stdout) == (0, "from-file from-flag\n"), r
    assert corral(home, "ps", "-a", "-o", "json").stdout.count('"team"') == 0  # --rm removed it
    r = corral(home, "run", "--pull", "never", "no-such-image")
    assert r.returncode == 125
    assert "no node holds image" in r.stderr  # refused at submit: nothing was appended
    r = corral(home, "run", "--rm", "127.0.0.1:1/no-such-image")  # nothing listens there: the pull fails
    assert r.returncode == 125
    assert "image pull failed" in r.stderr and "connection refused" in r.stderr, r.stderr
    r = corral(home, "run", "--qos", "LSR", "--cpu-request", "64", "--memory", "64Mi", "busybox")
    assert r.returncode == 125
    assert "insufficient CPU" in r.stderr
    r = corral(home, "run", "-v", "/etc:/host-etc:ro", "busybox", "--", "true")
    assert r.returncode == 125
    assert "mount" in r.stderr
    r = corral(home, "run", "-d", "busybox", "--", "sleep", "60")
    assert r.returncode == 0
    assert len(r.stdout.strip()) == 16


def test_ctrl_c_stops_the_container_and_exits_130(home: dict[str, str]) -> None:
    assert corral(home, *up_args()).returncode == 0
    proc = subprocess.Popen(
        [*CORRAL, "run", "--name", "sleeper", "--stop-timeout", "1", "busybox", "--", "sh", "-c", "echo up; sleep 60"],
        env=home,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "up\n"  # it runs and its output is here
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert json.loads(corral(home, "ps", "-a", "-o", "json").stdout)[0]["state"] == "stopped"


def test_secrets_stay_off_command_lines_and_in_private_files(home: dict[str, str]) -> None:
    up = corral(home, *up_args())
    assert up.returncode == 0, up.stderr
    cluster = Path(home["CORRAL_HOME"])
    token = json.loads((cluster / "env.json").read_text())["token"]
    assert token not in up.stdout + up.stderr  # not printed unless asked
    assert token in corral(home, "env").stdout
    stored = (cluster / "tokens.json").read_text()
    assert token not in stored and hashlib.sha256(token.encode()).hexdigest() in stored  # hashes, never tokens
    seeds = [p.read_text().strip() for p in (cluster / "keys").iterdir()]
    assert len(seeds) == 3
    assert all(seed.startswith("SU") for seed in seeds)  # nkey user seeds
    secret_values = [token, *seeds]
    for pid in json.loads((cluster / "pids.json").read_text()).values():
        cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        assert not any(value in cmdline for value in secret_values), cmdline
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert not any(value in environ for value in secret_values)
    for path in (cluster / "tokens.json", cluster / "env.json", cluster / "nats.conf", *(cluster / "keys").iterdir()):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in (cluster, cluster / "keys"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    assert "password" not in (cluster / "nats.conf").read_text()


def test_a_failed_up_stops_what_it_started_and_says_why(home: dict[str, str]) -> None:
    with socket.socket() as taken:  # the NATS port is in use: nats-server exits at once
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = corral(home, "up", "--nodes", "2", "--port", str(free_port()), "--nats-port", str(port))
    assert up.returncode == 1
    assert "nats exited with code" in up.stderr, up.stderr
    assert "address already in use" in up.stderr
    cluster = Path(home["CORRAL_HOME"])
    assert not (cluster / "pids.json").exists()
    assert str(cluster) not in _all_cmdlines()


def test_up_and_down_twenty_times(home: dict[str, str]) -> None:
    for i in range(20):
        up = corral(home, *up_args())
        assert up.returncode == 0, (i, up.stdout, up.stderr)
        down = corral(home, "down")
        assert down.returncode == 0, (i, down.stdout, down.stderr)
        assert str(Path(home["CORRAL_HOME"])) not in _all_cmdlines(), i


def _all_cmdlines() -> str:
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if alive(int(proc.name)):
                out.append((proc / "cmdline").read_text())
    return "\n".join(out)
