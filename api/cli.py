"""The ``corral`` command line: a thin HTTP client of the API (httpx), with docker/kubectl habits, plus
``up``/``down`` for a local cluster (a real nats-server, the control plane and N nodelets on this machine).

``CORRAL_ADDR`` and ``CORRAL_TOKEN`` choose the API; after ``corral up`` they default to the local cluster's.
Listings take ``-o json|wide``. Failures exit non-zero with the API's error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api import tokens as tokens_file
from api.local import LocalCluster, UpFailed
from store.sqlite import verify as sqlite_verify
from wire.burst import BurstConfig, resolve
from wire.resources import format_cpu, format_memory, parse_cpu, parse_memory
from wire.spec import BurstSettings

app = typer.Typer(
    help="Corral: an event-sourced container platform with NUMA- and cpuset-aware placement.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)
LOCAL = Path(os.environ.get("CORRAL_HOME", "/run/corral-local"))  # short: conmon socket paths must fit


class Failed(Exception):
    pass


# --- the HTTP client ---------------------------------------------------------------------------------------------


def _defaults() -> tuple[str, str]:
    addr, token = os.environ.get("CORRAL_ADDR"), os.environ.get("CORRAL_TOKEN")
    env = LOCAL / "env.json"
    if (addr is None or token is None) and env.exists():
        saved = json.loads(env.read_text())
        addr, token = addr or saved["addr"], token or saved["token"]
    return addr or "http://127.0.0.1:8080", token or ""


def client(timeout: float | None = 30) -> httpx.Client:
    """An API client; ``timeout=None`` for a stream that may stay quiet for long."""
    addr, token = _defaults()
    headers = {"Authorization": f"Bearer {token}"} if token else {}  # none: the API answers 401, said below
    return httpx.Client(base_url=addr, headers=headers, timeout=timeout)


def _send(c: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    try:
        r = c.request(method, path, **kw)
    except httpx.HTTPError as e:
        raise Failed(f"cannot reach the API at {_defaults()[0]}: {e}") from None
    if r.status_code == 401 and "Authorization" not in c.headers:
        raise Failed(f"401 the API at {_defaults()[0]} needs a token: set CORRAL_TOKEN")
    if r.status_code >= 400:
        try:
            body = r.json()
            field = f" ({body['field']}: {body.get('reason', '')})" if "field" in body else ""
            raise Failed(f"{r.status_code} {body.get('error', r.text)}{field}")
        except ValueError:
            raise Failed(f"{r.status_code} {r.text}") from None
    return r


def call(method: str, path: str, **kw: Any) -> Any:
    with client() as c:
        r = _send(c, method, path, **kw)
    return r.json() if r.content else None


PAGE = 500  # items per list request, as kubectl's --chunk-size


def listing(path: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Every item of a list endpoint, a page at a time."""
    items: list[Any] = []
    query = {**(params or {}), "limit": PAGE}
    with client() as c:
        while True:
            r = _send(c, "GET", path, params=query)
            items += r.json()
            if "Corral-Continue" not in r.headers:
                return items
            query["continue"] = r.headers["Corral-Continue"]


def _fail(e: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(str(e))}")  # escaped: a message may hold [brackets], not markup
    return typer.Exit(1)


Output = Annotated[str, typer.Option("-o", "--output", help="table, wide or json")]


def _fetch(path: str, params: dict[str, Any] | None = None) -> list[Any]:
    try:
        return listing(path, params)
    except Failed as e:
        raise _fail(e) from None


def _show(
    rows: list[dict[str, Any]], output: str, columns: Sequence[str], row: Callable[[dict[str, Any]], list[str]]
) -> None:
    """Print a listing as JSON or as a table of ``columns`` with ``row(item)`` cells."""
    if output == "json":
        console.print_json(json.dumps(rows))
        return
    table = Table(box=None)
    for col in columns:
        table.add_column(col)
    for item in rows:
        table.add_row(*row(item))
    console.print(table)


# --- containers ----------------------------------------------------------------------------------------------------


ENDED = ("exited", "stopped", "lost")  # the terminal container states
AT_MOST_ONE = "never two copies: its node stops it when cut off from the control plane, before it can be replaced"

# Exit codes as docker run's: the container's own, 125 when Corral could not run it, 128+n for a signal.
CANNOT_RUN = 125
PULL_FAILED = ("ErrImagePull", "ImagePullBackOff")
PULL_POLICIES = {"missing": "IfNotPresent", "always": "Always", "never": "Never"}  # docker run --pull
INTERRUPTED = 130


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    image: str,
    command: Annotated[list[str] | None, typer.Argument(help="the command, after --")] = None,
    name: Annotated[str, typer.Option(help="a DNS-1123 label (default: from the image)")] = "",
    env: Annotated[list[str] | None, typer.Option("-e", "--env", help="KEY=VALUE, or KEY to pass this shell's")] = None,
    env_file: Annotated[list[Path] | None, typer.Option("--env-file", help="KEY=VALUE lines")] = None,
    label: Annotated[list[str] | None, typer.Option("-l", "--label", help="key=value")] = None,
    volume: Annotated[
        list[str] | None, typer.Option("-v", "--volume", help="HOST:CONTAINER[:ro], within the node's allow-list")
    ] = None,
    cpu_request: CpuRequest = None,
    cpu_limit: CpuLimit = None,
    cpus: Cpus = None,
    cpu: CpuAlias = None,
    memory: Annotated[str | None, typer.Option(help="memory limit, e.g. 256Mi")] = None,
    qos: Annotated[str | None, typer.Option(help="LSE, LSR, LS or BE (default: derived)")] = None,
    cpuset_policy: Annotated[
        str | None, typer.Option(help="Default, FullPCPUs, FullPCPUsOnly or SpreadByPCPUs")
    ] = None,
    numa_policy: Annotated[str | None, typer.Option(help="None, BestEffort, Restricted or SingleNUMANode")] = None,
    cpu_exclusive_policy: Annotated[
        str | None, typer.Option(help="PCPULevel (no shared core) or NUMANodeLevel (no shared NUMA node)")
    ] = None,
    restart: Annotated[str, typer.Option(help="Never, OnFailure or Always")] = "Never",
    user: Annotated[
        str | None, typer.Option("-u", "--user", help="uid[:gid] or name[:group]; default: the image's")
    ] = None,
    run_as_non_root: Annotated[bool, typer.Option("--run-as-non-root", help="refuse to run it as root")] = False,
    cap_drop: Annotated[list[str] | None, typer.Option("--cap-drop", help="a capability to drop, or ALL")] = None,
    cap_add: Annotated[list[str] | None, typer.Option("--cap-add", help="add back one of the baseline set")] = None,
    seccomp: Annotated[
        str | None, typer.Option(help="RuntimeDefault, Unconfined (where the node allows) or localhost/<name>")
    ] = None,
    userns: Annotated[bool, typer.Option("--userns", help="a user namespace: root inside is not root outside")] = False,
    ephemeral_storage: Annotated[
        str | None, typer.Option(help="its writable layer and /tmp together, e.g. 512Mi (default: the node's)")
    ] = None,
    entrypoint: Annotated[
        str | None, typer.Option("--entrypoint", help="replaces the image's Entrypoint ('' clears it)")
    ] = None,
    workdir: Annotated[str | None, typer.Option("-w", "--workdir", help="default: the image's WorkingDir")] = None,
    pull: Annotated[
        str, typer.Option("--pull", help="missing (pull what its node lacks), always (ask the registry) or never")
    ] = "missing",
    detach: Annotated[bool, typer.Option("-d", "--detach", help="print the id and return")] = False,
    rm_: Annotated[bool, typer.Option("--rm", help="remove it once it has ended")] = False,
    stop_timeout: Annotated[float, typer.Option(help="on Ctrl-C: seconds between TERM and KILL")] = 10.0,
    at_most_one: Annotated[bool, typer.Option("--at-most-one", help=AT_MOST_ONE)] = False,
) -> None:
    """Run a container, attached: its output streams here and its exit code is this command's (125 when Corral
    could not run it; -d detaches). corral run --cpus 0.5 busybox -- sh -c 'echo hi'

    CPU: --cpu-request is what the scheduler reserves and the container's share when CPUs are contended (no
    cap); --cpu-limit caps it (CFS quota); --cpus N is Docker's cap: request and limit N, QoS LS."""
    try:
        spec = _run_spec(
            image, command, name, env or [], env_file or [], label or [], volume or [],
            _cpu_fields(cpu_request if cpu_request is not None else cpu, cpu_limit, cpus, qos), memory, qos,
        )  # fmt: skip
        spec["restart_policy"] = restart
        spec["at_most_one"] = at_most_one
        if pull not in PULL_POLICIES:
            raise Failed(f"--pull {pull!r}: expected missing, always or never")
        spec["image_pull_policy"] = PULL_POLICIES[pull]
        if entrypoint is not None:
            spec["entrypoint"] = [entrypoint] if entrypoint else []
        if workdir is not None:
            spec["working_dir"] = workdir
        spec |= _security_fields(user, run_as_non_root, cap_drop, cap_add, seccomp, userns, ephemeral_storage)
        if cpuset_policy is not None:
            spec["cpu_bind_policy"] = cpuset_policy
        if numa_policy is not None:
            spec["numa_policy"] = numa_policy
        if cpu_exclusive_policy is not None:
            spec["cpu_exclusive_policy"] = cpu_exclusive_policy
        submitted = call("POST", "/v1/containers", json=spec, headers={"Idempotency-Key": uuid.uuid4().hex})
    except (Failed, ValueError, OSError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(CANNOT_RUN) from None
    cid = submitted["id"]
    if detach:
        print(cid)
        return
    try:
        code = _attach(cid, stop_timeout)
    except Failed as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        code = CANNOT_RUN
    if rm_:
        with contextlib.suppress(Failed):
            if _wait(cid, lambda c: c["state"] in ENDED, 60)["state"] in ENDED:
                call("POST", f"/v1/containers/{cid}/remove")
    raise typer.Exit(code)


def _run_spec(
    image: str,
    command: list[str] | None,
    name: str,
    env: list[str],
    env_files: list[Path],
    labels: list[str],
    volumes: list[str],
    cpu_fields: dict[str, Any],
    memory: str | None,
    qos: str | None,
) -> dict[str, Any]:
    if command and command[0] == "--":
        command = command[1:]
    spec: dict[str, Any] = {
        "name": name or image.rsplit("/", maxsplit=1)[-1].split(":", maxsplit=1)[0].split("@", maxsplit=1)[0],
        "image": image,
        "command": command or [],
    }
    values: dict[str, str] = {}
    for path in env_files:
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                values.update([_pair(line, "--env-file", os.environ)])
    for item in env:
        values.update([_pair(item, "-e", os.environ)])
    if values:
        spec["env"] = values
    if labels:
        spec["labels"] = dict(_pair(item, "-l", None) for item in labels)
    if volumes:
        spec["mounts"] = [_volume(v) for v in volumes]
    spec.update(cpu_fields)
    if memory is not None:
        spec["memory_limit_bytes"] = parse_memory(memory)
    if qos is not None:
        spec["qos"] = qos
    return spec


CpuRequest = Annotated[
    str | None,
    typer.Option(help="CPU reserved for it and its share under contention, e.g. 500m or 2; not a cap"),
]
CpuLimit = Annotated[str | None, typer.Option(help="CPU cap (CFS quota); default: the request for LSE/LSR")]
Cpus = Annotated[str | None, typer.Option("--cpus", help="Docker's --cpus: a cap of N CPUs (request and limit N)")]
CpuAlias = Annotated[str | None, typer.Option("--cpu", hidden=True, help="the old name of --cpu-request")]


def _cpu_fields(request: str | None, limit: str | None, cpus: str | None, qos: str | None) -> dict[str, Any]:
    """The spec's CPU fields from the CLI's options (see ``run``)."""
    fields: dict[str, Any] = {}
    if cpus is not None:
        if limit is not None:
            raise Failed("--cpus is a limit already: give --cpus or --cpu-limit, not both")
        limit = cpus
        request = request if request is not None else cpus
        if qos is None:
            fields["qos"] = "LS"  # a cap, as docker run --cpus: not exclusive CPUs because it is whole
    if request is not None:
        fields["cpu_request_millis"] = parse_cpu(request)
    limit = limit if limit is not None else (request if qos in ("LSE", "LSR") else None)
    if limit is not None:
        fields["cpu_limit_millis"] = parse_cpu(limit)
    return fields


def _security_fields(
    user: str | None,
    run_as_non_root: bool,
    cap_drop: list[str] | None,
    cap_add: list[str] | None,
    seccomp: str | None,
    userns: bool,
    ephemeral_storage: str | None,
) -> dict[str, Any]:
    """The spec's security fields from ``run``'s options (left out when not given: the node's defaults)."""
    fields: dict[str, Any] = {}
    if user is not None:
        fields["user"] = user
    if run_as_non_root:
        fields["run_as_non_root"] = True
    if cap_drop or cap_add:
        fields["capabilities"] = {
            "drop": [c.upper().removeprefix("CAP_") for c in cap_drop or []],
            "add": [c.upper().removeprefix("CAP_") for c in cap_add or []],
        }
    if seccomp is not None:
        fields["seccomp_profile"] = seccomp
    if userns:
        fields["user_namespace"] = True
    if ephemeral_storage is not None:
        fields["ephemeral_storage_bytes"] = parse_memory(ephemeral_storage)
    return fields


def _pair(item: str, option: str, fallback: Any) -> tuple[str, str]:
    """KEY=VALUE; a bare KEY takes this shell's value (docker's -e KEY) when ``fallback`` is the environment."""
    key, sep, value = item.partition("=")
    if not sep:
        if fallback is None or key not in fallback:
            raise Failed(f"{option} {item!r}: expected KEY=VALUE")
        value = fallback[key]
    return key, value


def _volume(item: str) -> dict[str, Any]:
    parts = item.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise Failed(f"-v {item!r}: expected HOST:CONTAINER[:ro|rw]")
    return {"source": parts[0], "destination": parts[1], "read_only": len(parts) == 3 and parts[2] == "ro"}


def _attach(cid: str, stop_timeout: float) -> int:
    """Stream the container's output until it ends; its exit code (docker run's). Ctrl-C stops it: 130."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it (as docker run does)
    try:
        said: list[str] = []

        def placed_or_failed(c: dict[str, Any]) -> bool:
            if c["wait_reason"] == "Pulling" and not said:
                said.append(c["node"])
                err.print(f"pulling {escape(c['spec']['image'])} on {c['node']} ...")
            return c["state"] not in ("pending", "scheduled") or c["wait_reason"] in PULL_FAILED

        c = _wait(cid, placed_or_failed, 3600)
        if c["state"] == "unschedulable":
            call("DELETE", f"/v1/containers/{cid}", params={"grace": 0})  # docker run would not leave it queued
            raise Failed(f"{cid} cannot be placed: {c['unschedulable']}")
        if c["wait_reason"] in PULL_FAILED:
            call("DELETE", f"/v1/containers/{cid}", params={"grace": 0})  # as docker run: no pull, no container
            raise Failed(f"{cid} on {c['node']}: {c['wait_message']}")
        if c["node"] is not None and c["message"] == "":
            _stream_logs(cid)
        c = _wait(cid, lambda c: c["state"] in ENDED, 3600)
    except KeyboardInterrupt:
        err.print(f"stopping {cid} (KILL after {stop_timeout:g} s) ...")
        with contextlib.suppress(Failed, KeyboardInterrupt):
            call("DELETE", f"/v1/containers/{cid}", params={"grace": stop_timeout})
            _wait(cid, lambda c: c["state"] in ENDED, stop_timeout + 30)
        return INTERRUPTED
    return _exit_code(c)


def _exit_code(c: dict[str, Any]) -> int:
    if c["state"] == "lost":
        err.print(f"[red]error:[/red] {c['id']}: its node {c['node']} was lost")
        return CANNOT_RUN
    if c["exit_code"] is not None:
        return int(c["exit_code"])
    if c["signal"] is not None:
        return 128 + int(c["signal"])
    err.print(f"[red]error:[/red] {c['id']}: {escape(c['message'] or 'it ended with no exit code')}")
    return CANNOT_RUN


def _stream_logs(cid: str) -> None:
    """Copy the container's log (k8s-file lines: time, stream, P|F, text) to stdout and stderr as it comes."""
    with (
        client(timeout=None) as c,
        c.stream("GET", f"/v1/containers/{cid}/logs", params={"follow": True}) as r,
    ):
        if r.status_code >= 400:
            return  # it never ran (its node refused it): the reason is in its state
        for line in r.iter_lines():
            parts = line.split(" ", 3)
            if len(parts) < 3:
                continue
            out = sys.stderr if parts[1] == "stderr" else sys.stdout
            out.write((parts[3] if len(parts) == 4 else "") + ("" if parts[2] == "P" else "\n"))
            out.flush()


def _wait(cid: str, done: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        c: dict[str, Any] = call("GET", f"/v1/containers/{cid}")
        if done(c) or time.monotonic() > deadline:
            return c
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f}Gi"


def _cpus(c: dict[str, Any]) -> str:
    return f", CPUs {','.join(map(str, c['cpuset']))}" if c.get("cpuset") else ""


@app.command()
def ps(
    all_: Annotated[bool, typer.Option("-a", "--all", help="ended ones too")] = False,
    node: Annotated[str | None, typer.Option(help="only this node's")] = None,
    output: Output = "table",
) -> None:
    """List containers."""
    rows = _fetch("/v1/containers", params={"node": node} if node else None)
    now = time.time_ns()

    def backoff(c: dict[str, Any]) -> str:
        """How long until an exited container is restarted (Kubernetes shows CrashLoopBackOff)."""
        until = c.get("backoff_until_ns")
        return f" (restart in {math.ceil((until - now) / 1e9)}s)" if until is not None and until > now else ""

    if not all_:
        rows = [c for c in rows if c["state"] not in ENDED or backoff(c)]
    wide = output == "wide"

    def row(c: dict[str, Any]) -> list[str]:
        s = c["spec"]
        cells = [
            c["id"],
            s["name"],
            s["image"],
            s["qos"],
            c["state"] + backoff(c),
            c["node"] or "-",
            ",".join(map(str, c["cpuset"])) or "shared",
            "" if c["exit_code"] is None else str(c["exit_code"]),
        ]
        if wide:
            cells += [
                format_cpu(s["cpu_request_millis"])
                + "/"
                + (format_cpu(s["cpu_limit_millis"]) if s.get("cpu_limit_millis") is not None else "-"),
                format_memory(s["memory_limit_bytes"] or 0),
                "yes" if c["throttled"] else "",
                str(c.get("restarts", 0)),
                c.get("waiting") or c.get("unschedulable") or c.get("message") or "",
            ]
        return cells

    columns = ["ID", "NAME", "IMAGE", "QOS", "STATE", "NODE", "CPUS", "EXIT"] + (
        ["CPU REQ/LIM", "MEMORY", "THROTTLED", "RESTARTS", "REASON"] if wide else []
    )
    _show(rows, output, columns, row)


@app.command()
def inspect(container_id: str) -> None:
    """Show a container and its history (with why it was placed where it is)."""
    try:
        c = call("GET", f"/v1/containers/{container_id}")
        history = call("GET", f"/v1/containers/{container_id}/history")
        burst = _burst_of(c)
    except Failed as e:
        raise _fail(e) from None
    resources = _resources_of(c["spec"])
    console.print_json(json.dumps({"resources": resources, "container": c, "cpu_burst": burst, "history": history}))


def _resources_of(spec: dict[str, Any]) -> dict[str, str]:
    """A container's CPU and memory in words: the request is no cap, the limit is."""
    request, limit, memory = spec["cpu_request_millis"], spec.get("cpu_limit_millis"), spec.get("memory_limit_bytes")
    return {
        "qos": spec.get("qos") or "",
        "cpu_request": f"{format_cpu(request)} (reserved; its share when CPUs are contended)",
        "cpu_limit": f"{format_cpu(limit)} (a cap: CFS quota)" if limit is not None else "none (no cap)",
        "memory_limit": format_memory(memory) if memory is not None else "none",
    }


@app.command()
def audit(container_id: str, output: Output = "table") -> None:
    """Check a running container against the Kubernetes Pod Security Standards (baseline and restricted), from
    what its node reads of the process itself. Exits 1 if a baseline control fails."""
    try:
        report = call("GET", f"/v1/containers/{container_id}/audit")
    except Failed as e:
        raise _fail(e) from None
    if output == "json":
        console.print_json(json.dumps(report))
    else:
        _show(
            report["controls"],
            "table",
            ["LEVEL", "CONTROL", "RESULT", "DETAIL"],
            lambda v: [v["level"], v["control"], "pass" if v["ok"] else "FAIL", escape(v["detail"])],
        )
        said = {True: "meets", False: "does not meet"}
        console.print(
            f"{container_id} on {report['node']} {said[report['baseline']]} the baseline standard and "
            f"{said[report['restricted']]} the restricted one"
        )
    if not report["baseline"]:
        raise typer.Exit(1)


def _burst_of(c: dict[str, Any]) -> dict[str, Any]:
    """A container's CPU Burst: the settings that apply to it on its node, and its quota and burst with why."""
    config = msgspec.convert(call("GET", "/v1/burst-policy")["config"], BurstConfig)
    labels: dict[str, str] = next((n["labels"] for n in call("GET", "/v1/nodes") if n["name"] == c.get("node")), {})
    own = c["spec"].get("burst")
    policy = resolve(config, labels, msgspec.convert(own, BurstSettings) if own else None)
    return {
        "applies": msgspec.to_builtins(policy),
        "eligible": c["spec"].get("qos") == "LS" and c["spec"].get("cpu_limit_millis") is not None,
        "cfs_quota_us": c.get("cfs_quota_us"),
        "quota_reason": c.get("quota_reason", ""),
        "cpu_burst_us": c.get("burst_us"),
        "burst_reason": c.get("burst_reason", ""),
    }


@app.command()
def update(
    container_id: str,
    cpu_request: Annotated[str | None, typer.Option(help="new CPU request, e.g. 500m or 2")] = None,
    cpu_limit: Annotated[str | None, typer.Option(help="new CPU limit (one it has already)")] = None,
    cpu: CpuAlias = None,
) -> None:
    """Resize a running LS container's CPU in place (docker update): its node changes shares and quota without a
    restart; refused if the node cannot hold the new request."""
    body: dict[str, int] = {}
    try:
        request = cpu_request if cpu_request is not None else cpu
        if request is not None:
            body["cpu_request_millis"] = parse_cpu(request)
        if cpu_limit is not None:
            body["cpu_limit_millis"] = parse_cpu(cpu_limit)
        if not body:
            raise Failed("nothing to change: give --cpu-request and/or --cpu-limit")
        c = call("PATCH", f"/v1/containers/{container_id}", json=body)
    except (Failed, ValueError) as e:
        raise _fail(e) from None
    limit = c["spec"].get("cpu_limit_millis")
    console.print(
        f"{container_id}: request {format_cpu(c['spec']['cpu_request_millis'])}, "
        f"limit {format_cpu(limit) if limit is not None else 'none'}"
    )


@app.command()
def stop(container_ids: list[str], grace: Annotated[float, typer.Option(help="seconds before KILL")] = 10.0) -> None:
    """Stop containers (TERM, then KILL after the grace period)."""
    try:
        for cid in container_ids:
            call("DELETE", f"/v1/containers/{cid}", params={"grace": grace})
            console.print(cid)
    except Failed as e:
        raise _fail(e) from None


@app.command()
def rm(container_ids: list[str]) -> None:
    """Remove ended containers (their logs and files on the node go too)."""
    try:
        for cid in container_ids:
            call("POST", f"/v1/containers/{cid}/remove")
            console.print(cid)
    except Failed as e:
        raise _fail(e) from None


@app.command()
def nodes(output: Output = "table") -> None:
    """List nodes: topology, which container holds which CPUs."""

    def row(n: dict[str, Any]) -> list[str]:
        status = "lost" if n["lost"] else ("cordoned" if n["cordoned"] else "ready")
        held = sorted(cpu for a in n["allocations"].values() for cpu in a["cpuset"])
        mapped = " (declared)" if n["cpu_map"] else ""
        return [
            n["name"],
            status,
            str(n["epoch"]),
            f"{n['capacity']['cpu_millis'] // 1000}{mapped}",
            _gib(n["capacity"]["memory_bytes"]),
            str(len(n["allocations"])),
            ",".join(map(str, held)) or "-",
        ]

    _show(
        _fetch("/v1/nodes"), output, ("NODE", "STATUS", "EPOCH", "CPUS", "MEMORY", "CONTAINERS", "EXCLUSIVE CPUS"), row
    )


@app.command()
def events(
    since: Annotated[int, typer.Option(help="first log position")] = 1,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep streaming")] = False,
) -> None:
    """Print the event log (server-sent events), from a position; with -f, keep following (and resume where
    it left off if the connection drops)."""
    addr = _defaults()[0]
    last = since - 1
    delay = 0.2
    try:
        while True:
            try:
                with (
                    client(timeout=None) as c,
                    c.stream("GET", "/v1/events", params={"since": last + 1}) as r,
                ):
                    if r.status_code >= 400:
                        r.read()
                        raise Failed(f"{r.status_code} {r.json().get('error')}")
                    delay = 0.2
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            rec = json.loads(line[5:])
                            console.print(f"{rec['position']:>8} {rec['event']['type']:<24} {rec['stream']}")
                            last = rec["position"]
                        elif line == ": caught-up" and not follow:
                            return  # every event up to the head at the request is printed
            except httpx.TransportError as e:
                if not follow:
                    raise Failed(f"cannot reach the API at {addr}: {e}") from None
                err.print(f"[yellow]reconnecting[/yellow] after position {last}: {e}")
            if not follow:
                return
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    except Failed as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        return


@app.command()
def plan(
    image: str,
    cpu_request: CpuRequest = None,
    cpu_limit: CpuLimit = None,
    cpus: Cpus = None,
    cpu: CpuAlias = None,
    memory: Annotated[str | None, typer.Option()] = None,
    qos: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Dry run: where a container would go, and why (or why not)."""
    spec: dict[str, Any] = {"name": "plan", "image": image}
    try:
        spec.update(_cpu_fields(cpu_request if cpu_request is not None else cpu, cpu_limit, cpus, qos))
    except (Failed, ValueError) as e:
        raise _fail(e) from None
    if memory is not None:
        spec["memory_limit_bytes"] = parse_memory(memory)
    if qos is not None:
        spec["qos"] = qos
    try:
        r = call("POST", "/v1/plan", json=spec)
    except Failed as e:
        raise _fail(e) from None
    if r["fits"]:
        console.print(f"fits on {r['node']}{_cpus(r)}: {r['reason']} (position {r['position']})")
    else:
        console.print(f"does not fit: {r['reason']} (position {r['position']})")
        raise typer.Exit(1)


@app.command()
def logs(
    container_id: str,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing until it ends")] = False,
    tail: Annotated[int | None, typer.Option(help="only the last N lines")] = None,
) -> None:
    """Print a container's logs (k8s-file lines: time, stream, text)."""
    params: dict[str, Any] = {"follow": follow}
    if tail is not None:
        params["tail"] = tail
    try:
        with (
            client(timeout=None) as c,
            c.stream("GET", f"/v1/containers/{container_id}/logs", params=params) as r,
        ):
            if r.status_code >= 400:
                r.read()
                raise Failed(f"{r.status_code} {r.json().get('error')}")
            for line in r.iter_lines():
                parts = line.split(" ", 3)
                print(parts[3] if len(parts) == 4 else line)
    except Failed as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        return


service_app = typer.Typer(help="Services: N replicas of a container, spread across nodes.", no_args_is_help=True)
app.add_typer(service_app, name="service")


image_app = typer.Typer(help="Images on the nodes: pull, import, list, remove.", no_args_is_help=True)
app.add_typer(image_app, name="image")


@image_app.command("pull")
def image_pull(
    image: str,
    node: Annotated[list[str] | None, typer.Option("--node", help="a node to pull on (repeatable)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every node that is not lost")] = False,
) -> None:
    """Have nodes pull an image from its registry, e.g. corral image pull 127.0.0.1:5000/demo:1 --all."""

    def pull_on(name: str) -> str:
        call("POST", f"/v1/nodes/{name}/images", json={"image": image}, timeout=700)
        return f"pulled {escape(image)}"

    _on_nodes(node, all_, pull_on)


def _on_nodes(node: list[str] | None, all_: bool, act: Callable[[str], str]) -> None:
    """Do ``act`` on each node named, or on every node not lost; a line each; exit 1 if any failed."""
    try:
        names = list(node or [])
        if all_:
            names = [n["name"] for n in listing("/v1/nodes") if not n["lost"]]
        if not names:
            raise Failed("say where: --node NAME or --all")
    except Failed as e:
        raise _fail(e) from None
    failed = 0
    for name in names:
        try:
            console.print(f"{name}: {act(name)}")
        except Failed as e:
            failed += 1
            err.print(f"[red]{name}:[/red] {escape(str(e))}")
    if failed:
        raise typer.Exit(1)


@image_app.command("import")
def image_import(
    file: Annotated[Path, typer.Argument(help="a docker save tarball or an OCI image layout tarball (plain or gzip)")],
    node: Annotated[list[str] | None, typer.Option("--node", help="a node to import on (repeatable)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every node that is not lost")] = False,
) -> None:
    """Stream an image tarball to nodes, e.g. docker save app:1 > app.tar; corral image import app.tar --all."""
    if not file.is_file():
        raise _fail(Failed(f"{file}: no such file"))

    def chunks() -> Iterator[bytes]:
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    def import_on(name: str) -> str:
        headers = {"Content-Type": "application/x-tar"}
        done = call("POST", f"/v1/nodes/{name}/images/import", content=chunks(), headers=headers, timeout=700)
        return f"imported {done['image_id'][:19]} {escape(' '.join(done['tags']))}".rstrip()

    _on_nodes(node, all_, import_on)


@image_app.command("rm")
def image_rm(
    image: str,
    node: Annotated[list[str] | None, typer.Option("--node", help="a node to remove it from (repeatable)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every node that is not lost")] = False,
    force: Annotated[bool, typer.Option("-f", "--force", help="the image itself, whatever other names it has")] = False,
) -> None:
    """docker rmi: a name loses that name (the image goes with its last name); an image a container was made
    from stays (remove the container first)."""

    def remove_on(name: str) -> str:
        call("DELETE", f"/v1/nodes/{name}/images", params={"image": image, "force": force})
        return f"removed {escape(image)}"

    _on_nodes(node, all_, remove_on)


@image_app.command("ls")
def image_ls(
    node: Annotated[str | None, typer.Option("--node", help="only this node")] = None, output: Output = "table"
) -> None:
    """The images each node holds (asked of the nodes): size, last use, and whether a container uses it."""
    rows = []
    try:
        nodes = [n for n in listing("/v1/nodes") if (node is None or n["name"] == node) and not n["lost"]]
        for n in nodes:
            try:
                held = call("GET", f"/v1/nodes/{n['name']}/images")
            except Failed as e:
                err.print(f"[red]{n['name']}:[/red] {escape(str(e))}")
                continue
            for i in held:
                for name in i["tags"] or ["<none>"]:
                    rows.append({"node": n["name"], "image": name, **i})
    except Failed as e:
        raise _fail(e) from None

    def row(r: dict[str, Any]) -> list[str]:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_used_ns"] / 1e9))
        return [r["node"], r["image"], r["id"][7:19], f"{r['size_bytes'] / 1e6:.1f}MB", used, "yes" * r["in_use"]]

    _show(rows, output, ["NODE", "IMAGE", "ID", "SIZE", "LAST USED", "IN USE"], row)


store_app = typer.Typer(help="The control plane's event log (SQLite).", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("verify")
def store_verify(
    path: Annotated[Path, typer.Argument(help="the log, e.g. <data-dir>/corral.db (read only; it may be in use)")],
) -> None:
    """Check a whole log: SQLite's quick check, every event against its checksum, positions without gaps. Exit
    1 naming the first damaged position."""
    found = sqlite_verify(path)
    if found.first_bad is None:
        note = f" ({found.unchecked} from before checksums, unchecked)" if found.unchecked else ""
        console.print(f"{escape(found.path)}: ok, {found.events} events checked{note}")
        return
    where = f" at position {found.first_bad}" if found.first_bad else ""
    raise _fail(Failed(f"{found.path}: damaged{where}: {found.reason}"))


token_app = typer.Typer(help="API tokens (the control plane's --tokens file keeps only hashes).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("add")
def token_add(
    name: str,
    file: Annotated[Path, typer.Option("--file", help="the control plane's --tokens file (made if missing)")],
    read_only: Annotated[bool, typer.Option("--read-only", help="reads only, environment values redacted")] = False,
) -> None:
    """Make a token for principal NAME, add its hash to FILE and print the token (shown this once; the control
    plane reads the file when it starts). Events its requests cause record NAME as their actor."""
    known = tokens_file.read_entries(file) if file.exists() else []
    token = tokens_file.new_token()
    role = tokens_file.Role.READ_ONLY if read_only else tokens_file.Role.ADMIN
    try:
        tokens_file.write_entries(file, [*known, tokens_file.Entry(name, role, tokens_file.token_hash(token))])
    except ValueError as e:
        raise _fail(e) from None
    print(token)


@service_app.command("create")
def service_create(
    name: str,
    image: str,
    command: Annotated[list[str] | None, typer.Argument()] = None,
    replicas: Annotated[int, typer.Option(help="how many")] = 1,
    cpu_request: CpuRequest = None,
    cpu_limit: CpuLimit = None,
    cpus: Cpus = None,
    cpu: CpuAlias = None,
    memory: Annotated[str | None, typer.Option()] = None,
    at_most_one: Annotated[bool, typer.Option("--at-most-one", help=AT_MOST_ONE)] = False,
) -> None:
    """Create a service: corral service create web busybox --replicas 3 -- sleep 3600."""
    template: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": [a for a in (command or []) if a != "--"],
        "restart_policy": "Always",
        "at_most_one": at_most_one,
    }
    try:
        template.update(_cpu_fields(cpu_request if cpu_request is not None else cpu, cpu_limit, cpus, None))
    except (Failed, ValueError) as e:
        raise _fail(e) from None
    if memory is not None:
        template["memory_limit_bytes"] = parse_memory(memory)
    try:
        r = call("POST", "/v1/services", json={"name": name, "replicas": replicas, "template": template})
    except (Failed, ValueError) as e:
        raise _fail(e) from None
    console.print(r["id"])


@service_app.command("scale")
def service_scale(service_id: str, replicas: int) -> None:
    """Change a service's replica count."""
    try:
        call("PATCH", f"/v1/services/{service_id}", json={"replicas": replicas})
    except Failed as e:
        raise _fail(e) from None
    console.print(f"{service_id} scaled to {replicas}")


@service_app.command("rm")
def service_rm(service_id: str) -> None:
    """Delete a service (its containers are stopped)."""
    try:
        call("DELETE", f"/v1/services/{service_id}")
    except Failed as e:
        raise _fail(e) from None
    console.print(service_id)


@service_app.command("ls")
def service_ls(output: Output = "table") -> None:
    """List services."""

    def row(svc: dict[str, Any]) -> list[str]:
        return [svc["id"], svc["spec"]["name"], svc["spec"]["template"]["image"], str(svc["replicas"])]

    _show(_fetch("/v1/services"), output, ("ID", "NAME", "IMAGE", "REPLICAS"), row)


@app.command()
def node(action: str, name: str) -> None:
    """cordon, uncordon or drain a node."""
    if action not in ("cordon", "uncordon", "drain"):
        raise _fail(Failed(f"action: {action!r} is not cordon, uncordon or drain"))
    try:
        call("POST", f"/v1/nodes/{name}/{action}")
    except Failed as e:
        raise _fail(e) from None
    console.print(f"{name} {action}ed" if action != "drain" else f"{name} drained")


# --- the local cluster ---------------------------------------------------------------------------------------------


burst_app = typer.Typer(
    help="CPU Burst: the cluster's strategy and node strategies (Koordinator's).", no_args_is_help=True
)
app.add_typer(burst_app, name="burst")
BURST_FIELDS = (
    ("policy", "POLICY", "none"),
    ("cpu_burst_percent", "BURST%", "1000"),
    ("cfs_quota_burst_percent", "QUOTA%", "300"),
    ("cfs_quota_burst_period_seconds", "PERIOD_S", "-1"),
    ("share_pool_threshold_percent", "THRESHOLD%", "50"),
)


@burst_app.command("get")
def burst_get(output: Output = "table") -> None:
    """Show the CPU Burst configuration: the cluster strategy, then the node strategies (first match wins).
    A field not set inherits (the cluster's from Koordinator's defaults, shown in brackets)."""
    try:
        view = call("GET", "/v1/burst-policy")
    except Failed as e:
        raise _fail(e) from None
    if output == "json":
        console.print_json(json.dumps(view))
        return
    table = Table(box=None)
    for col in ("SCOPE", *(title for _, title, _ in BURST_FIELDS)):
        table.add_column(col)
    cluster = view["config"]["cluster"]
    table.add_row("cluster", *(str(cluster.get(k, f"[{d}]")) for k, _, d in BURST_FIELDS))
    for n in view["config"]["nodes"]:
        scope = ",".join(f"{k}={v}" for k, v in n["selector"].items()) or "every node"
        table.add_row(scope, *(str(n["strategy"].get(k, "-")) for k, _, _ in BURST_FIELDS))
    console.print(table)
    console.print(f"version {view['version']}")


def _selector(items: list[str]) -> dict[str, str]:
    return dict(_pair(item, "--selector", None) for item in items)


@burst_app.command("set")
def burst_set(
    policy: Annotated[str | None, typer.Option(help="none, cpuBurstOnly, cfsQuotaBurstOnly or auto")] = None,
    cpu_burst_percent: Annotated[int | None, typer.Option(help="burst as a percent of the CPU limit")] = None,
    cfs_quota_burst_percent: Annotated[int | None, typer.Option(help="ceiling of the scaled quota, %")] = None,
    cfs_quota_burst_period_seconds: Annotated[int | None, typer.Option(help="time budget above the limit")] = None,
    share_pool_threshold_percent: Annotated[int | None, typer.Option(help="share-pool use that is overload")] = None,
    selector: Annotated[
        list[str] | None, typer.Option(help="k=v (repeatable): a node strategy, not the cluster's")
    ] = None,
    unset: Annotated[list[str] | None, typer.Option(help="a field to inherit again (repeatable)")] = None,
    remove: Annotated[bool, typer.Option(help="remove the node strategy with this selector")] = False,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="replace the whole configuration (JSON)")] = None,
) -> None:
    """Change the cluster strategy, or with --selector the node strategy for exactly that selector (added last
    if there is none). Nodes apply the change within a second, without a restart."""
    given = {
        "policy": policy,
        "cpu_burst_percent": cpu_burst_percent,
        "cfs_quota_burst_percent": cfs_quota_burst_percent,
        "cfs_quota_burst_period_seconds": cfs_quota_burst_period_seconds,
        "share_pool_threshold_percent": share_pool_threshold_percent,
    }
    try:
        for _ in range(5):  # read, change, write with If-Match; again if someone else wrote meanwhile
            view = call("GET", "/v1/burst-policy")
            if file is not None:
                config = json.loads(file.read_text())
            else:
                config = _burst_changed(view["config"], given, _selector(selector or []), set(unset or ()), remove)
            try:
                view = call("PUT", "/v1/burst-policy", json=config, headers={"If-Match": str(view["version"])})
            except Failed as e:
                if str(e).startswith("412"):
                    continue
                raise
            console.print(f"burst policy at version {view['version']}")
            return
        raise Failed("the configuration kept changing under us; try again")
    except (Failed, ValueError, OSError) as e:
        raise _fail(e) from None


def _burst_changed(
    config: dict[str, Any], given: dict[str, Any], selector: dict[str, str], unset: set[str], remove: bool
) -> dict[str, Any]:
    """``config`` with the cluster strategy (no selector) or the node strategy for ``selector`` changed."""
    unknown = unset - {k for k, _, _ in BURST_FIELDS}
    if unknown:
        raise Failed(f"--unset: {', '.join(sorted(unknown))} is not a field")
    nodes = list(config.get("nodes", []))
    if remove:
        if not selector:
            raise Failed("--remove needs the --selector of a node strategy")
        kept = [n for n in nodes if n["selector"] != selector]
        if len(kept) == len(nodes):
            raise Failed(f"no node strategy has the selector {selector}")
        return {**config, "nodes": kept}
    if not selector:
        return {**config, "cluster": _strategy(config.get("cluster", {}), given, unset)}
    for i, n in enumerate(nodes):
        if n["selector"] == selector:
            nodes[i] = {**n, "strategy": _strategy(n["strategy"], given, unset)}
            break
    else:
        nodes.append({"selector": selector, "strategy": _strategy({}, given, unset)})
    return {**config, "nodes": nodes}


def _strategy(old: dict[str, Any], given: dict[str, Any], unset: set[str]) -> dict[str, Any]:
    return {k: v for k, v in {**old, **{k: v for k, v in given.items() if v is not None}}.items() if k not in unset}


@app.command()
def up(
    nodes_: Annotated[int, typer.Option("--nodes", help="how many nodelets")] = 3,
    port: Annotated[int, typer.Option(help="HTTP API port")] = 8080,
    nats_port: Annotated[int, typer.Option(help="NATS port")] = 4222,
    declared_topology: Annotated[str | None, typer.Option(help="e.g. 2x2x8x2, mapped onto the real CPUs")] = None,
    print_env: Annotated[bool, typer.Option("--print-env", help="print the export line with the admin token")] = False,
    nodelet_arg: Annotated[
        list[str] | None,
        typer.Option("--nodelet-arg", help="passed to every nodelet, e.g. --nodelet-arg=--insecure-registry=r:5000"),
    ] = None,
) -> None:
    """Start a local cluster: nats-server (an nkey per nodelet, limited to its subjects), the control plane and
    N nodelets, all under one private data directory."""
    try:
        env = LocalCluster(LOCAL).up(
            nodes_, port, nats_port, declared_topology=declared_topology, nodelet_args=tuple(nodelet_arg or ())
        )
    except UpFailed as e:
        raise _fail(e) from None
    console.print(f"[green]up[/green]: {nodes_} nodes, API {env['addr']}, state and logs in {LOCAL}")
    if print_env:
        print(_export_line(env))
    else:
        err.print('the CLI finds the cluster by itself; for other tools: eval "$(corral env)"')


def _export_line(env: dict[str, str]) -> str:
    return f"export CORRAL_ADDR={shlex.quote(env['addr'])} CORRAL_TOKEN={shlex.quote(env['token'])}"


@app.command("env")
def env_() -> None:
    """Print the local cluster's API address and admin token as shell exports: eval "$(corral env)"."""
    cluster = LocalCluster(LOCAL)
    if not cluster.is_up():
        raise _fail(Failed("no local cluster is up"))
    print(_export_line(cluster.env()))


def _stop_all(deadline: float) -> None:
    """Delete the services (the control plane stops their replicas) and stop the other containers, including
    those waiting out a restart back-off and any that appear meanwhile, until all have ended or ``deadline``
    passes; what is left then is reaped with runc. One failed request never ends the attempt early."""
    failures: list[str] = []

    def send(method: str, path: str, **kw: Any) -> None:
        try:
            _send(api, method, path, **kw)
        except Failed as e:
            failures.append(f"{method} {path}: {e}")

    def pending() -> list[dict[str, Any]]:
        """Live containers, and standalone ones waiting out a restart back-off (a deleted service's never
        restart)."""
        return [
            c
            for c in listing("/v1/containers")
            if c["state"] not in ENDED or (c.get("backoff_until_ns") and c.get("service_id") is None)
        ]

    left = max(0.0, deadline - time.monotonic())
    with client(timeout=min(30.0, left)) as api, console.status("stopping containers ..."):
        pool = ThreadPoolExecutor(16)
        asked: set[str] = set()
        try:
            futures_wait(
                [pool.submit(send, "DELETE", f"/v1/services/{s['id']}") for s in listing("/v1/services")],
                timeout=left,
            )
            while time.monotonic() < deadline:
                running = pending()
                if not running:
                    break
                for c in running:
                    if c.get("service_id") is None and c["id"] not in asked:
                        asked.add(c["id"])
                        pool.submit(send, "DELETE", f"/v1/containers/{c['id']}", params={"grace": 2})
                time.sleep(0.5)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # before the client they share is closed
    for f in failures[:5]:
        err.print(f"could not stop: {f}")


@app.command()
def down() -> None:
    """Stop the local cluster cleanly: stop its containers, then the nodelets, the control plane and NATS."""
    cluster = LocalCluster(LOCAL)
    if not cluster.is_up():
        err.print("no local cluster is up")
        raise typer.Exit(0)
    try:
        _stop_all(time.monotonic() + 30)
    except Failed as e:
        err.print(f"could not stop containers through the API: {e}")
    cluster.down()  # and any container the API could not stop in time is reaped
    console.print("[green]down[/green]")


bench_app = typer.Typer(help="Benchmarks that run against a real cluster.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("burst")
def bench_burst(quick: Annotated[bool, typer.Option(help="6 s runs instead of 20 s")] = False) -> None:
    """CPU Burst's effect on a bursty workload under a 0.5 CPU limit, per policy, beside a no-limit baseline."""
    from api.burstbench import main as run_bench  # noqa: PLC0415 -- only this command needs it

    run_bench(quick)


@bench_app.command("submit")
def bench_submit(quick: Annotated[bool, typer.Option(help="30 containers instead of 100")] = False) -> None:
    """HTTP submit → running p50/p99 on a local 3-node cluster (its own, unless CORRAL_ADDR is set)."""
    from api.bench import main as run_bench  # noqa: PLC0415 -- only this command needs it

    run_bench(quick)


@app.command()
def chaos(
    cycles: Annotated[int, typer.Option(help="faults to inject, one a cycle")] = 10,
    seed: Annotated[int, typer.Option(help="seed of the fault sequence")] = 1,
    nodes_: Annotated[int, typer.Option("--nodes", help="nodelets in the cluster")] = 3,
    converge_s: Annotated[float, typer.Option("--converge", help="bound on convergence after a heal, s")] = 30.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="inject only this fault type (repeatable): kill-nodelet, pause-short, pause-long, "
            "partition, partition-in, kill-control, nats-outage, mass-stop"
        ),
    ] = None,
) -> None:
    """Inject faults into a local cluster of its own and check, from runc and cgroups, that nothing is lost,
    doubled, stuck or overlapping; prints a line ``chaos: ...`` with the counts and times."""
    from api.chaos import run as run_chaos  # noqa: PLC0415 -- only this command needs it

    try:
        result = run_chaos(cycles, seed, nodes_, converge_s, faults=tuple(fault or ()))
    except ValueError as e:
        err.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(2) from None
    c = result.counts
    if c["lost"] or c["doubled"] or c["stuck"] or c["gaps"] or c["overlaps"]:
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the version."""
    console.print("corral 0.1.0")


def main(argv: list[str] | None = None) -> int:
    try:
        code = app(args=argv, standalone_mode=False)  # click returns a command's exit code here
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:  # a click usage error
        err.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
