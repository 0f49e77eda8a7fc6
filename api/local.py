"""The local cluster: a small process supervisor that starts nats-server, the control plane and N nodelets on
this machine under one private directory, and stops them again.

Every process gets its own NATS identity, an nkey (an Ed25519 key pair): the server's config holds only public
keys, each seed is a 0600 file that only its process reads. Nothing secret is ever on a command line (any local
user reads ``/proc/*/cmdline``). A failed ``up`` stops what it started and says which process failed, with the
last lines of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.identities import nats_config, write_tokens
from nodelet.purge import reap_containers
from wire.files import private_dir, write_private


def free_port() -> int:
    """A loopback port free now (for a cluster's API and NATS)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UpFailed(Exception):
    pass


def binary(name: str) -> str:
    """A tool beside this interpreter (the virtualenv's), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise UpFailed(f"{name} not found")
    return found


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def alive(pid: int) -> bool:
    """Running, not a zombie (the local cluster's processes outlive ``corral up`` and are reaped by init,
    which may take its time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def terminate(pid: int | None, grace_s: float = 15.0) -> None:
    """TERM, then KILL after ``grace_s``; reaps it when it is a child of this process."""
    terminate_all([pid] if pid is not None else [], grace_s)


def terminate_all(pids: list[int], grace_s: float = 15.0) -> None:
    """TERM them all at once, then KILL those still there after ``grace_s`` (one grace for all, not each)."""
    waiting = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a paused one could not take its TERM
            os.kill(pid, signal.SIGTERM)
            waiting.append(pid)
    deadline = time.monotonic() + grace_s
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    waiting.remove(pid)
                    continue
            if not alive(pid):
                waiting.remove(pid)
        time.sleep(0.02)
    for pid in waiting:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted: ``/sys/fs/cgroup`` (pure v2), ``/sys/fs/cgroup/unified``
    (hybrid), or None (pure v1)."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (root / "cgroup.controllers").exists():
            return root
    return None


class LocalCluster:
    def __init__(self, home: Path, *, process_cgroups: bool = False) -> None:
        """With ``process_cgroups``, each nodelet process runs in a cgroup v2 group of its own
        (``process_cgroup``), so that its sockets can be told apart (``nft ... socket cgroupv2``)."""
        self.home = home
        self.process_cgroups = process_cgroups
        self.pids_file = home / "pids.json"
        self.env_file = home / "env.json"
        self.commands_file = home / "commands.json"  # how each process was started (no secrets: those are files)

    def is_up(self) -> bool:
        return self.pids_file.exists()

    def env(self) -> dict[str, str]:
        """The API address and admin token of the running cluster."""
        return dict(json.loads(self.env_file.read_text()))

    def up(
        self,
        nodes: int,
        port: int,
        nats_port: int,
        *,
        declared_topology: str | None = None,
        allow_host_mounts: tuple[str, ...] = (),
        nodelet_args: tuple[str, ...] = (),
        timeout_s: float = 60.0,
        log_level: str = "INFO",
    ) -> dict[str, str]:
        if self.is_up():
            raise UpFailed(f"a local cluster is up already ({self.home}); run corral down first")
        home = private_dir(self.home)
        names = [f"node-{i + 1}" for i in range(nodes)]
        keys = private_dir(home / "keys")
        conf = nats_config(keys / "control.nk", {n: keys / f"{n}.nk" for n in names}, host="127.0.0.1", port=nats_port)
        write_private(home / "nats.conf", json.dumps(conf).encode())
        admin, _ = write_tokens(home / "tokens.json")
        url = f"nats://127.0.0.1:{nats_port}"
        api = f"http://127.0.0.1:{port}"
        commands: dict[str, list[str]] = {
            "nats": [binary("nats-server"), "-c", str(home / "nats.conf")],
            "control": [
                sys.executable, "-m", "api.serve", "--data-dir", str(home / "control"), "--nats", url,
                "--nats-nkey-seed", str(keys / "control.nk"), "--port", str(port),
                "--tokens", str(home / "tokens.json"), "--log-level", log_level,
            ],
        }  # fmt: skip
        for n in names:
            commands[n] = [
                sys.executable, "-m", "nodelet", "--node", n, "--nats", url, "--nkey-seed", str(keys / f"{n}.nk"),
                "--data-dir", str(home / n), "--cgroup-root", f"/{home.name}", "--log-level", log_level,
            ]  # fmt: skip
            if declared_topology:
                commands[n] += ["--declared-topology", declared_topology]
            for path in allow_host_mounts:
                commands[n] += ["--allow-host-mount", path]
            commands[n] += nodelet_args
        write_private(self.commands_file, json.dumps(commands).encode())
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            procs["nats"] = self._spawn(commands.pop("nats"), home / "nats.log")
            self._wait_port(nats_port, procs, timeout_s)
            procs["control"] = self._spawn(commands.pop("control"), home / "control.log")
            self.pids_file.write_text(json.dumps({name: p.pid for name, p in procs.items()}))
            write_private(self.env_file, json.dumps({"addr": api, "token": admin}).encode())
            with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {admin}"}, timeout=5) as c:
                before = self._wait_nodes(c, {}, procs, timeout_s)  # the API is up: the nodes it knows already
                for name, args in commands.items():
                    procs[name] = self._spawn_named(name, args, home / f"{name}.log")
                self.pids_file.write_text(json.dumps({name: p.pid for name, p in procs.items()}))
                self._wait_nodes(c, {n: before.get(n, 0) for n in names}, procs, timeout_s)
        except BaseException:
            for name in reversed(list(procs)):
                terminate(procs[name].pid, grace_s=5)
            self.pids_file.unlink(missing_ok=True)
            self.env_file.unlink(missing_ok=True)
            raise
        return {"addr": api, "token": admin}

    def pids(self) -> dict[str, int]:
        return dict(json.loads(self.pids_file.read_text()))

    def process_cgroup(self, name: str) -> Path | None:
        """The cgroup v2 group the nodelet ``name`` runs in (None: it runs where it was started)."""
        root = cgroup2_root()
        if not self.process_cgroups or root is None or not name.startswith("node-"):
            return None
        return root / f"{self.home.name}-procs" / name

    def _spawn_named(self, name: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        group = self.process_cgroup(name)
        if group is not None:
            group.mkdir(parents=True, exist_ok=True)
            # Join the group before exec, so every socket the process makes belongs to it.
            args = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group), *args]
        return self._spawn(args, log)

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to one of the cluster's processes (``nats``, ``control``, ``node-N``)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pids()[name], sig)

    def start(self, name: str) -> None:
        """Start one of the cluster's processes again, as ``up`` did (after it was killed or stopped)."""
        pids = self.pids()
        if alive(pids[name]):
            terminate(pids[name], grace_s=5)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pids[name], os.WNOHANG)
        args = json.loads(self.commands_file.read_text())[name]
        pids[name] = self._spawn_named(name, args, self.home / f"{name}.log").pid
        self.pids_file.write_text(json.dumps(pids))

    def reap_containers(self) -> None:
        """Kill and delete, with runc, every container the nodes left (call once the nodelets are stopped)."""
        for node in self.home.glob("node-*"):
            reap_containers(node, cgroup=f"/{self.home.name}/{node.name}")

    def down(self) -> None:
        """Stop every process (a paused one is woken to take its TERM), reap the containers left, and remove
        the cluster's cgroups. Containers are not stopped through the API first: callers do that if they can."""
        if self.is_up():
            for name in self.pids():
                self.signal(name, signal.SIGCONT)
            self.stop_processes()
            self.reap_containers()
        for d in sorted(Path("/sys/fs/cgroup").glob(f"*/{self.home.name}/**/"), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        for d in Path("/sys/fs/cgroup").glob(f"*/{self.home.name}"):
            with contextlib.suppress(OSError):
                d.rmdir()

    def stop_processes(self) -> None:
        """Stop the nodelets, then the control plane, then NATS (containers outlive the nodelets)."""
        pids: dict[str, int] = json.loads(self.pids_file.read_text())
        terminate_all([pid for k, pid in pids.items() if k.startswith("node-")])  # the nodelets together
        for key in ("control", "nats"):
            terminate(pids.get(key))
        self.pids_file.unlink()
        self.env_file.unlink(missing_ok=True)

    @staticmethod
    def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def _check_alive(self, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        for name, p in procs.items():
            code = p.poll()
            if code is not None:
                raise UpFailed(
                    f"{name} exited with code {code} while the cluster came up; "
                    f"the last lines of {self.home / (name + '.log')}:\n{log_tail(self.home / f'{name}.log')}"
                )

    def _wait_port(self, port: int, procs: dict[str, subprocess.Popen[bytes]], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive(procs)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise UpFailed(f"nats-server is not listening on port {port} after {timeout_s:.0f} s") from None
                time.sleep(0.02)

    def _wait_nodes(
        self,
        c: httpx.Client,
        older: dict[str, int],
        procs: dict[str, subprocess.Popen[bytes]],
        timeout_s: float,
    ) -> dict[str, int]:
        """Wait until the API answers and every node in ``older`` registered anew (an epoch past the one it had
        before this ``up``: an earlier cluster's nodes are still in the log). Returns the nodes' epochs."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive(procs)
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = c.get("/v1/nodes")
                if r.status_code == 200:
                    epochs = {n["name"]: n["epoch"] for n in r.json() if not n["lost"]}
                    if all(epochs.get(name, -1) > epoch for name, epoch in older.items()):
                        return {n["name"]: n["epoch"] for n in r.json()}
            if time.monotonic() > deadline:
                waiting = "the control plane" if not older else "the nodes to register"
                raise UpFailed(
                    f"gave up after {timeout_s:.0f} s waiting for {waiting}; the last lines of the control "
                    f"plane's log:\n{log_tail(self.home / 'control.log')}"
                )
            time.sleep(0.1)
