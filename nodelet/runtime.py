"""The container runtime: a contract, and its implementation over the runc CLI with conmon as monitor.

Each container gets a conmon process that runs ``runc create``, becomes the container's parent, keeps its
logs and writes its exit code to disk, so containers outlive the nodelet and a restarted nodelet learns how
they ended. The nodelet runs ``runc start``/``kill``/``delete`` itself. Facts behind this module:
shared/reference/runtime.md ("Driving conmon").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from wire.checks import hex_id
from wire.files import private_dir, write_private


class RuntimeError_(Exception):
    """A runtime operation failed; the message carries the runtime's own words."""


class ExitStatus(msgspec.Struct, frozen=True):
    """How a container ended. ``code`` is None when it is unknowable (its monitor died): never invented."""

    code: int | None
    oom_killed: bool = False

    @property
    def signal(self) -> int | None:
        return self.code - 128 if self.code is not None and self.code > 128 else None


class Runtime(Protocol):
    """What the nodelet needs of a runtime; the runc runtime and the hollow runtime implement it."""

    async def create(self, container_id: str, bundle: Path, config: dict[str, Any]) -> int: ...

    async def start(self, container_id: str) -> None: ...

    async def kill(self, container_id: str, sig: int) -> None: ...

    async def wait(self, container_id: str, timeout_s: float | None = None) -> ExitStatus | None: ...

    async def stop(self, container_id: str, grace_s: float) -> ExitStatus: ...

    def exit_status(self, container_id: str) -> ExitStatus | None: ...

    async def delete(self, container_id: str) -> None: ...

    async def status(self, container_id: str) -> str | None: ...

    def logs(self, container_id: str) -> Path: ...

    def rotate_logs(self, container_id: str) -> None:
        """Move the current log to ``<log>.1`` (replacing an older one) and start a new file, losing nothing."""
        ...

    def adopt(self, container_id: str, bundle: Path) -> bool:
        """Take back a container this runtime made before a restart; True if its monitor is alive."""
        ...


async def stop_with_grace(runtime: Runtime, container_id: str, grace_s: float) -> ExitStatus:
    """TERM, then KILL once the grace period is over (a PID 1 without handlers ignores TERM)."""
    with contextlib.suppress(RuntimeError_):
        await runtime.kill(container_id, signal.SIGTERM)
    status = await runtime.wait(container_id, grace_s)
    if status is None:
        with contextlib.suppress(RuntimeError_):
            await runtime.kill(container_id, signal.SIGKILL)
        status = await runtime.wait(container_id, 30)
    return status or ExitStatus(code=None)


# The nodelet rotates a log past 10 MiB once a second; a container writing faster than that meets this hard cap,
# where conmon starts the live file over (what it held is lost; the rotated file stays).
LOG_SIZE_MAX = 20 << 20


class RuntimePaths(msgspec.Struct, frozen=True):
    root: Path

    @property
    def runc_root(self) -> Path:
        return self.root / "runc"

    @property
    def exits(self) -> Path:
        return self.root / "exits"

    @property
    def persist(self) -> Path:
        return self.root / "persist"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def sockets(self) -> Path:
        return self.root / "sockets"

    def all(self) -> Sequence[Path]:
        return (self.runc_root, self.exits, self.persist, self.logs, self.sockets)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError_(f"{name} is not installed (apt-get install -y runc conmon)")
    return found


class RuncRuntime:
    def __init__(
        self,
        paths: RuntimePaths,
        runc: str = "runc",
        conmon: str = "conmon",
        runc_timeout_s: float = 120.0,
        log_size_max: int = LOG_SIZE_MAX,
    ) -> None:
        self.paths = paths
        self.log_size_max = log_size_max  # conmon's hard cap on a live log: a flood cannot outrun rotation
        self.runc_timeout_s = runc_timeout_s  # a runc that hangs (the host's mount table jammed, say) is killed
        self.runc = _binary(runc)
        self.conmon = _binary(conmon)
        for d in paths.all():
            private_dir(d)
        # Socket paths are limited to 108 bytes; conmon's attach socket lives under this directory.
        self._bundles: dict[str, Path] = {}

    async def _runc(self, *args: str, check: bool = True) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            self.runc,
            "--root",
            str(self.paths.runc_root),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(self.runc_timeout_s):
                out, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RuntimeError_(f"runc {args[0]}: no answer in {self.runc_timeout_s:.0f} s; killed") from None
        text = out.decode(errors="replace").strip()
        if check and proc.returncode != 0:
            raise RuntimeError_(f"runc {args[0]}: {text or f'exit {proc.returncode}'}")
        return proc.returncode or 0, text

    async def create(self, container_id: str, bundle: Path, config: dict[str, Any]) -> int:
        """Write the bundle's config and have a new conmon run ``runc create``; return the container's pid."""
        hex_id("container_id", container_id)
        if (bundle / "conmon.pid").exists():
            raise RuntimeError_(f"container {container_id} has a monitor already")  # never two conmons for one id
        write_private(bundle / "config.json", json.dumps(config).encode())  # holds the environment
        persist = self.paths.persist / container_id
        persist.mkdir(parents=True, exist_ok=True)
        sync_r, sync_w = os.pipe()
        # conmon's own output goes to a file, never a pipe: its daemonized child would hold a pipe open.
        conmon_log = (bundle / "conmon.log").open("wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                self.conmon,
                "--cid",
                container_id,
                "--cuuid",
                container_id,
                "--name",
                container_id,
                "--runtime",
                self.runc,
                "--runtime-arg",
                f"--root={self.paths.runc_root}",
                "--bundle",
                str(bundle),
                "--container-pidfile",
                str(bundle / "pidfile"),
                "--conmon-pidfile",
                str(bundle / "conmon.pid"),
                "--exit-dir",
                str(self.paths.exits),
                "--persist-dir",
                str(persist),
                "--log-path",
                f"k8s-file:{self.logs(container_id)}",
                "--log-size-max",
                str(self.log_size_max),
                "--socket-dir-path",
                str(self.paths.sockets),
                cwd=bundle,
                pass_fds=(sync_w,),
                env={**os.environ, "_OCI_SYNCPIPE": str(sync_w)},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=conmon_log,
                stderr=asyncio.subprocess.STDOUT,
            )
        except BaseException:
            os.close(sync_r)
            raise
        finally:
            os.close(sync_w)
            conmon_log.close()
        try:
            line = await asyncio.wait_for(asyncio.to_thread(_read_line, sync_r), timeout=30)
        finally:
            os.close(sync_r)
        await proc.wait()  # the first conmon process exits once it has forked
        if not line:
            said = (bundle / "conmon.log").read_text(errors="replace").strip()
            raise RuntimeError_(f"conmon failed before reporting: {said or f'exit {proc.returncode}'}")
        report = json.loads(line)
        pid = int(report.get("pid", -1))
        if pid <= 0:
            raise RuntimeError_(f"runc create: {report.get('message', 'failed')}")
        self._bundles[container_id] = bundle
        return pid

    async def start(self, container_id: str) -> None:
        await self._runc("start", container_id)

    async def kill(self, container_id: str, sig: int) -> None:
        await self._runc("kill", container_id, str(int(sig)))

    def known(self) -> tuple[str, ...]:
        """The containers this runtime made or adopted and has not deleted."""
        return tuple(self._bundles)

    def exit_status(self, container_id: str) -> ExitStatus | None:
        """The exit conmon recorded, if it has."""
        persist = self.paths.persist / container_id
        for f in (persist / "exit", self.paths.exits / container_id):
            with contextlib.suppress(FileNotFoundError, ValueError):
                return ExitStatus(code=int(f.read_text()), oom_killed=(persist / "oom").exists())
        return None

    def monitor_pid(self, container_id: str, bundle: Path | None = None) -> int | None:
        bundle = bundle or self._bundles.get(container_id)
        if bundle is None:
            return None
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((bundle / "conmon.pid").read_text())
        return None

    def adopt(self, container_id: str, bundle: Path) -> bool:
        self._bundles[container_id] = bundle
        pid = self.monitor_pid(container_id, bundle)
        return pid is not None and _is_monitor(pid, container_id)

    async def wait(self, container_id: str, timeout_s: float | None = None) -> ExitStatus | None:
        """Wait for the container to end; None on timeout. If its monitor is gone and no exit was
        recorded, the exit code is unknown."""
        status = self.exit_status(container_id)
        if status is not None:
            return status
        pid = self.monitor_pid(container_id)
        if pid is None:
            raise RuntimeError_(f"container {container_id}: no monitor known")
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return self.exit_status(container_id) or ExitStatus(code=None)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:  # a pidfd turns readable when the process exits
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        try:
            async with asyncio.timeout(timeout_s):
                await done
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return self.exit_status(container_id) or ExitStatus(code=None)

    async def stop(self, container_id: str, grace_s: float) -> ExitStatus:
        return await stop_with_grace(self, container_id, grace_s)

    async def status(self, container_id: str) -> str | None:
        """runc's status (created, running, stopped), or None if runc does not know the container."""
        code, text = await self._runc("state", container_id, check=False)
        if code != 0:
            return None
        return str(json.loads(text)["status"])

    async def delete(self, container_id: str) -> None:
        """Remove the runc container and what conmon left; the log stays until ``forget``."""
        code, text = await self._runc("delete", container_id, check=False)
        if code != 0 and "does not exist" not in text and "not found" not in text:
            raise RuntimeError_(f"runc delete: {text}")
        bundle = self._bundles.pop(container_id, None)
        if bundle is not None:
            for name in ("ctl", "winsz", "pidfile", "conmon.pid"):
                with contextlib.suppress(FileNotFoundError):
                    (bundle / name).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.paths.sockets / container_id).unlink()

    def forget(self, container_id: str) -> None:
        """Drop the exit record and logs of a removed container."""
        shutil.rmtree(self.paths.persist / container_id, ignore_errors=True)
        for f in (self.paths.exits / container_id, self.logs(container_id)):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()

    def logs(self, container_id: str) -> Path:
        return self.paths.logs / f"{container_id}.log"

    def rotate_logs(self, container_id: str) -> None:
        """Rename the log, then tell conmon through its control fifo to reopen (runtime.md: "Rotation without
        loss"); lines written in between land in the renamed file."""
        bundle = self._bundles.get(container_id)
        log = self.logs(container_id)
        if bundle is None or not log.exists():
            return
        os.replace(log, log.with_name(log.name + ".1"))
        try:
            fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:  # conmon is gone: nothing more will be written
            raise RuntimeError_(f"container {container_id}: cannot reach its monitor to reopen the log: {e}") from e
        try:
            os.write(fd, b"2 0 0\n")
        finally:
            os.close(fd)


def _is_monitor(pid: int, container_id: str) -> bool:
    """Whether ``pid`` is alive (not a zombie) and is the conmon of ``container_id`` (pids get reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z" and b"conmon" in argv[0] and container_id.encode() in argv


def _read_line(fd: int) -> str:
    """Read one line from a pipe (conmon keeps its end open, so never wait for EOF)."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()
