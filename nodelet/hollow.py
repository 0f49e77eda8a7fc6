"""A hollow runtime for scale tests only: the ``Runtime`` contract with no processes behind it.

Containers are asyncio tasks that act out a small vocabulary of commands (``sh -c 'exit N'``, ``sleep S``,
``true``, ``echo ...``), so that many hollow nodelets fit in one process. Never use it where a test claims to
run real containers.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path
from typing import Any

from nodelet.runtime import ExitStatus, RuntimeError_, stop_with_grace


class _Hollow:
    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.status = "created"
        self.exit: ExitStatus | None = None
        self.done = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.ignores_term = True  # like a real PID 1 without handlers


class HollowRuntime:
    _pids = itertools.count(100_000)

    def __init__(self, logs_dir: Path) -> None:
        self._logs_dir = logs_dir
        logs_dir.mkdir(parents=True, exist_ok=True)
        self._containers: dict[str, _Hollow] = {}

    async def create(self, container_id: str, bundle: Path, config: dict[str, Any]) -> int:
        if container_id in self._containers:
            raise RuntimeError_(f"runc create: container with id {container_id} already exists")
        self._containers[container_id] = _Hollow(list(config["process"]["args"]))
        return next(self._pids)

    def _get(self, container_id: str) -> _Hollow:
        try:
            return self._containers[container_id]
        except KeyError:
            raise RuntimeError_(f"container {container_id} does not exist") from None

    async def start(self, container_id: str) -> None:
        c = self._get(container_id)
        if c.status != "created":
            raise RuntimeError_(f"runc start: cannot start a container that has {c.status}")
        c.status = "running"
        c.task = asyncio.create_task(self._act(container_id, c))

    async def _act(self, container_id: str, c: _Hollow) -> None:
        args = c.args
        code = 0
        if args[:2] == ["sh", "-c"] and len(args) == 3:
            script = args[2]
            for part in (p.strip() for p in script.split(";")):
                if part.startswith("echo "):
                    self._log(container_id, part[5:])
                elif part.startswith("exit "):
                    code = int(part[5:])
                    break
                elif part.startswith("sleep "):
                    await asyncio.sleep(float(part[6:]))
        elif args[:1] == ["sleep"]:
            await asyncio.sleep(float(args[1]))
        elif args[:1] == ["echo"]:
            self._log(container_id, " ".join(args[1:]))
        elif args[:1] == ["true"]:
            pass
        else:
            code = 127
        self._finish(c, code)

    def _log(self, container_id: str, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        with self.logs(container_id).open("a") as f:
            f.write(f"{stamp} stdout F {text}\n")

    def _finish(self, c: _Hollow, code: int) -> None:
        if c.exit is None:
            c.exit = ExitStatus(code=code)
            c.status = "stopped"
            c.done.set()

    async def kill(self, container_id: str, sig: int) -> None:
        c = self._get(container_id)
        if c.status != "running":
            raise RuntimeError_(f"runc kill: container {container_id} is not running")
        if sig == signal.SIGTERM and c.ignores_term:
            return
        if c.task is not None:
            c.task.cancel()
        self._finish(c, 128 + int(sig))

    async def wait(self, container_id: str, timeout_s: float | None = None) -> ExitStatus | None:
        c = self._get(container_id)
        try:
            async with asyncio.timeout(timeout_s):
                await c.done.wait()
        except TimeoutError:
            return None
        return c.exit

    async def stop(self, container_id: str, grace_s: float) -> ExitStatus:
        return await stop_with_grace(self, container_id, grace_s)

    def exit_status(self, container_id: str) -> ExitStatus | None:
        c = self._containers.get(container_id)
        return c.exit if c is not None else None

    async def status(self, container_id: str) -> str | None:
        c = self._containers.get(container_id)
        return c.status if c is not None else None

    async def delete(self, container_id: str) -> None:
        c = self._containers.get(container_id)
        if c is not None and c.status == "running":
            raise RuntimeError_(f"runc delete: cannot delete container {container_id} that is not stopped")
        self._containers.pop(container_id, None)

    def adopt(self, container_id: str, bundle: Path) -> bool:
        return container_id in self._containers

    def rotate_logs(self, container_id: str) -> None:
        log = self.logs(container_id)
        if log.exists():
            log.replace(log.with_name(log.name + ".1"))

    def logs(self, container_id: str) -> Path:
        return self._logs_dir / f"{container_id}.log"
