"""CPU Burst through the platform, with real parts: the cluster's policy changed through the log reaches a real
nodelet without a restart, and the files of the container's real cgroup (read here, by version) show the burst
and the quota each policy gives: cpuBurstOnly a burst clamped to the quota, auto a quota scaled up while the
container is throttled, none both back to what the limit gives."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from api.controlplane import ControlPlane
from nodelet.cgroups import detect_layout
from store.projections import ContainerState
from tests.builders import spec
from tests.integration.test_control_plane import Nodelets, submit, until, view
from tests.runcenv import needs_runc
from wire import events as ev
from wire.burst import BurstConfig, BurstStrategy
from wire.ids import BURST_POLICY_STREAM, container_stream
from wire.spec import BurstPolicy

pytestmark = [needs_runc, pytest.mark.slow]


def bandwidth(tag: str, cid: str) -> tuple[int, int]:
    """(quota, burst) in µs, read from the container's cgroup files: the ground truth."""
    layout = detect_layout()
    path = f"/corral-cp-{tag}/n1/{cid}"
    if layout.version == 1:
        quota = int(Path(layout.file("cpu.cfs_quota_us", path)).read_text())
        burst = int(Path(layout.file("cpu.cfs_burst_us", path)).read_text())
    else:
        quota = int(Path(layout.file("cpu.max", path)).read_text().split()[0])
        burst = int(Path(layout.file("cpu.max.burst", path)).read_text())
    return quota, burst


async def set_policy(cp: ControlPlane, policy: BurstPolicy) -> None:
    config = BurstConfig(cluster=BurstStrategy(policy=policy))
    await cp.log.append(BURST_POLICY_STREAM, [ev.BurstPolicyChanged(config=config)])


async def files_until(tag: str, cid: str, check: object, timeout_s: float = 30) -> tuple[int, int]:
    async with asyncio.timeout(timeout_s):
        while True:
            seen = await asyncio.to_thread(bandwidth, tag, cid)
            if check(*seen):  # type: ignore[operator]
                return seen
            await asyncio.sleep(0.2)


@pytest.mark.skipif(
    not os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_burst_us") and not os.path.exists("/sys/fs/cgroup/cpu.max.burst"),
    reason="the kernel has no CPU burst",
)
async def test_burst_policies_reach_a_running_container_without_a_restart(
    control: ControlPlane, nodelets: Nodelets, tag: str
) -> None:
    nodelets.start("n1")
    await until(control, lambda: "n1" in control.projection.state.nodes)
    busy = spec("busy", command=("sh", "-c", "while :; do :; done"), cpu_request_millis=100, cpu_limit_millis=500)
    cid = await submit(control, busy)
    await until(control, lambda: (v := view(control, cid)) is not None and v.state is ContainerState.RUNNING)
    assert await asyncio.to_thread(bandwidth, tag, cid) == (50_000, 0)  # no policy yet: the limit's quota

    # cpuBurstOnly: 1000 % of the limit is 10x the quota, which the kernel refuses: clamped to the quota.
    await set_policy(control, BurstPolicy.CPU_BURST_ONLY)
    assert await files_until(tag, cid, lambda q, b: b > 0) == (50_000, 50_000)
    await until(control, lambda: (v := view(control, cid)) is not None and v.burst_us == 50_000)
    v = view(control, cid)
    assert v is not None and "clamped to the quota" in v.burst_reason

    # auto: throttled every second under half a CPU, on a node with CPU to spare, the quota grows.
    await set_policy(control, BurstPolicy.AUTO)
    quota, burst = await files_until(tag, cid, lambda q, b: q >= 60_000)
    assert 60_000 <= quota <= 150_000 and burst == quota  # within [base, 300 % of it]; the burst follows it
    await until(control, lambda: (v := view(control, cid)) is not None and (v.cfs_quota_us or 0) >= 60_000)

    # none: both back to what the limit gives.
    await set_policy(control, BurstPolicy.NONE)
    assert await files_until(tag, cid, lambda q, b: q == 50_000 and b == 0) == (50_000, 0)
    await until(control, lambda: (v := view(control, cid)) is not None and v.cfs_quota_us == 50_000 and v.burst_us == 0)
    history = [r.event for r in await control.log.read_stream(container_stream(cid))]
    reasons = [e.reason for e in history if isinstance(e, ev.CfsQuotaScaled)]
    assert reasons[0] == "scale up" and reasons[-1] == "reset"
