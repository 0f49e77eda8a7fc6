"""CPU Burst policy, the pure core (../shared/reference/cpu-burst.md): Koordinator's static burst, dynamic CFS
quota scaling, token bucket and node state, corrected where upstream kernels refuse Koordinator's values (a
burst above the quota gives EINVAL, so it is clamped to the quota and the clamp reported). No I/O, no clock:
the shell feeds it samples and writes what it decides.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import msgspec

from wire.burst import Resolved
from wire.spec import ContainerSpec, QoS, derive_qos

PERIOD_US = 100_000  # Koordinator takes the period as 100 ms
MIN_QUOTA_US = 1000
REFILL_BELOW_PERCENT = 60  # the token bucket refills only while use is below this share of the limit


def eligible(spec: ContainerSpec) -> bool:
    """LS (or unclassified, which resolves to LS) with a CPU limit; never LSE/LSR (exclusive cpusets, no quota)
    nor BE."""
    qos = spec.qos or derive_qos(spec.cpu_request_millis, spec.cpu_limit_millis, spec.memory_limit_bytes)
    return qos is QoS.LS and spec.cpu_limit_millis is not None


def base_quota_us(limit_millis: int) -> int:
    """The quota a limit gives (Kubernetes' mapping): limit x 100 ms, at least 1 ms."""
    return max(limit_millis * PERIOD_US // 1000, MIN_QUOTA_US)


# --- static burst --------------------------------------------------------------------------------------------


class Burst(msgspec.Struct, frozen=True, gc=False):
    burst_us: int
    wanted_us: int  # before the clamp: equal unless the kernel would refuse it
    reason: str


def static_burst(policy: Resolved, limit_millis: int, quota_us: int) -> Burst:
    """``limit x cpuBurstPercent`` (µs per 100 ms period) when the policy bursts, else 0; clamped to the quota
    in force (the kernel refuses a burst above it: Koordinator's default of 1000 % is 10x the quota)."""
    if not policy.policy.burst:
        return Burst(0, 0, f"policy {policy.policy}")
    wanted = limit_millis * PERIOD_US // 1000 * policy.cpu_burst_percent // 100
    if wanted > quota_us:
        return Burst(quota_us, wanted, f"cpuBurstPercent {policy.cpu_burst_percent} clamped to the quota {quota_us}us")
    return Burst(wanted, wanted, f"cpuBurstPercent {policy.cpu_burst_percent}")


# --- token bucket --------------------------------------------------------------------------------------------


class TokenBucket(msgspec.Struct, frozen=True, gc=False):
    """Time budget above the limit: ``capacity`` = period x (cfsQuotaBurstPercent - 100), starting full."""

    capacity: float
    tokens: float

    @property
    def allowed(self) -> bool:
        return self.tokens > 0


def new_bucket(policy: Resolved) -> TokenBucket | None:
    """None: no time budget (cfsQuotaBurstPeriodSeconds -1, the default)."""
    if policy.cfs_quota_burst_period_seconds < 0:
        return None
    capacity = float(policy.cfs_quota_burst_period_seconds * (policy.cfs_quota_burst_percent - 100))
    return TokenBucket(capacity, capacity)


def spend(bucket: TokenBucket, usage_percent: float, dt_s: float) -> TokenBucket:
    """One check: ``usage_percent`` of the limit over ``dt_s`` (whole seconds count). At or above the limit the
    excess is spent; below 60 % the headroom is refilled; between, nothing changes."""
    dt = math.floor(dt_s)
    tokens = bucket.tokens
    if usage_percent >= 100:
        tokens -= (usage_percent - 100) * dt
    elif usage_percent < REFILL_BELOW_PERCENT:
        tokens += (100 - usage_percent) * dt
    return TokenBucket(bucket.capacity, min(max(tokens, -bucket.capacity), bucket.capacity))


# --- node state ----------------------------------------------------------------------------------------------


class NodeState(enum.StrEnum):
    IDLE = "idle"
    COOLING = "cooling"
    OVERLOAD = "overload"
    UNKNOWN = "unknown"


class ShareSample(msgspec.Struct, frozen=True, gc=False):
    """One sweep of the node: cumulative CPU time (ns) of the node and of its LSE/LSR/BE containers, at
    ``at_ns``; the share pool's size in CPUs (logical CPUs less those LSE/LSR containers request)."""

    at_ns: int
    node_busy_ns: int
    outside_pool_ns: int
    pool_cpus: float


WINDOW_NS = 5_000_000_000


def node_state(samples: Sequence[ShareSample], threshold_percent: int) -> NodeState:
    """Share-pool use over the last 5 s (the newest sample and the oldest within 5 s of it): ≥ threshold is
    Overload, ≥ 90 % of it Cooling, else Idle; fewer than two samples, or counters that went back, Unknown."""
    if len(samples) < 2:
        return NodeState.UNKNOWN
    last = samples[-1]
    first = next((s for s in samples if last.at_ns - s.at_ns <= WINDOW_NS), last)
    elapsed = last.at_ns - first.at_ns
    used = (last.node_busy_ns - first.node_busy_ns) - (last.outside_pool_ns - first.outside_pool_ns)
    if elapsed <= 0 or last.pool_cpus <= 0 or last.node_busy_ns < first.node_busy_ns:
        return NodeState.UNKNOWN
    ratio = max(used, 0) / (elapsed * last.pool_cpus)
    threshold = threshold_percent / 100
    if ratio >= threshold:
        return NodeState.OVERLOAD
    if ratio >= 0.9 * threshold:
        return NodeState.COOLING
    return NodeState.IDLE


# --- dynamic quota -------------------------------------------------------------------------------------------


class Scale(enum.StrEnum):
    UP = "scale up"
    DOWN = "scale down"
    RESET = "reset"
    REMAIN = "remain"


def decide(policy: Resolved, bucket: TokenBucket | None, throttled_ratio: float | None, node: NodeState) -> Scale:
    """Koordinator's decision: off → Reset; bucket empty → Down; throttled in the last sample → Up, else Remain
    (no data: Remain). Then the node: Overload turns Up and Remain into Down; Cooling or Unknown turns Up into
    Remain."""
    if not policy.policy.scales_quota:
        return Scale.RESET
    if bucket is not None and not bucket.allowed:
        decision = Scale.DOWN
    elif throttled_ratio is not None and throttled_ratio > 0:
        decision = Scale.UP
    else:
        decision = Scale.REMAIN
    if node is NodeState.OVERLOAD and decision in (Scale.UP, Scale.REMAIN):
        return Scale.DOWN
    if node in (NodeState.COOLING, NodeState.UNKNOWN) and decision is Scale.UP:
        return Scale.REMAIN
    return decision


def target_quota(current_us: int, base_us: int, policy: Resolved, decision: Scale) -> int:
    """The quota a decision gives: x1.2, x0.8, the base, or as it is; within [base, base x ceiling %]."""
    ceiling = base_us * policy.cfs_quota_burst_percent // 100
    match decision:
        case Scale.UP:
            want = current_us * 6 // 5  # integers: no float rounding down to one µs short
        case Scale.DOWN:
            want = current_us * 4 // 5
        case Scale.RESET:
            want = base_us
        case Scale.REMAIN:
            want = current_us
    return min(max(want, base_us), ceiling)
