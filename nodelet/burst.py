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
    return _qos(spec) is QoS.LS and spec.cpu_limit_millis is not None


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


# --- one node's controller: state carried from one second to the next ----------------------------------------


class Running(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A running container as the controller sees it: what it asked for and what its cgroup holds now."""

    container_id: str
    spec: ContainerSpec
    quota_us: int | None
    burst_us: int
    policy: Resolved  # resolved for this container on this node


class Change(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """New quota and burst for one container, and why (only made when either differs from its cgroup's)."""

    container_id: str
    quota_us: int
    burst_us: int
    scale: Scale
    burst: Burst


class _Seen(msgspec.Struct, frozen=True, gc=False):
    at_ns: int
    usage_ns: int
    nr_periods: int
    nr_throttled: int


class BurstController:
    """Koordinator's 1 s CPU Burst loop over one node, without I/O: ``step`` takes a sweep (cumulative counters
    per container and of the node, at ``at_ns``), the running containers and the share pool's size, and returns
    the cgroup changes. Each container keeps its last sample (for the throttled ratio and use) and its token
    bucket; the node keeps 5 s of share-pool samples, whose CPU used outside the pool is summed from each
    container's own change between sweeps (a container that comes or goes moves nothing)."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}  # eligible containers: their last sample
        self._used: dict[str, int] = {}  # every container: its CPU time at the last sweep
        self._outside_ns = 0  # CPU time used outside the share pool since the controller began
        self._buckets: dict[str, TokenBucket | None] = {}
        self._bucket_key: dict[str, tuple[int, int]] = {}
        self._carry_s: dict[str, float] = {}  # the part of a second the bucket has not counted yet
        self._node: list[ShareSample] = []

    def node_state(self, threshold_percent: int) -> NodeState:
        return node_state(self._node, threshold_percent)

    def step(
        self,
        at_ns: int,
        node_busy_ns: int,
        usage: dict[str, tuple[int, int, int]],
        running: Sequence[Running],
        pool_cpus: float,
    ) -> list[Change]:
        """``usage``: per container id, cumulative (usage_ns, nr_periods, nr_throttled) at ``at_ns``;
        ``pool_cpus``: the CPUs of the share pool (the node's, less the exclusive ones and the reserved)."""
        used = {r.container_id: usage[r.container_id][0] for r in running if r.container_id in usage}
        for r in running:
            was, now = self._used.get(r.container_id), used.get(r.container_id)
            if not _shares_pool(r) and was is not None and now is not None and now >= was:
                self._outside_ns += now - was
        self._used = used
        self._node.append(ShareSample(at_ns, node_busy_ns, self._outside_ns, pool_cpus))
        self._node = [s for s in self._node if at_ns - s.at_ns <= WINDOW_NS]
        changes: list[Change] = []
        alive = set()
        for r in running:
            alive.add(r.container_id)
            if r.container_id not in usage or r.quota_us is None or not eligible(r.spec):
                continue
            cpu, periods, throttled = usage[r.container_id]
            sample = _Seen(at_ns, cpu, periods, throttled)
            before = self._seen.get(r.container_id)
            self._seen[r.container_id] = sample
            change = self._decide(r, before, sample)
            if change is not None:
                changes.append(change)
        for gone in set(self._seen) - alive:
            self.forget(gone)
        return changes

    def _decide(self, r: Running, before: _Seen | None, now: _Seen) -> Change | None:
        assert r.quota_us is not None and r.spec.cpu_limit_millis is not None
        cid, limit, policy = r.container_id, r.spec.cpu_limit_millis, r.policy
        key = (policy.cfs_quota_burst_percent, policy.cfs_quota_burst_period_seconds)
        if self._bucket_key.get(cid) != key:  # a new time budget starts a new bucket (other fields keep it)
            self._buckets[cid] = new_bucket(policy)
            self._bucket_key[cid] = key
            self._carry_s[cid] = 0.0
        bucket = self._buckets[cid]
        ratio = None
        if before is not None and now.nr_periods > before.nr_periods and now.nr_throttled >= before.nr_throttled:
            ratio = (now.nr_throttled - before.nr_throttled) / (now.nr_periods - before.nr_periods)
        if bucket is not None and before is not None and now.at_ns > before.at_ns:
            dt_s = (now.at_ns - before.at_ns) / 1e9
            use = max(now.usage_ns - before.usage_ns, 0) / 1e9 / dt_s / (limit / 1000) * 100
            counted = self._carry_s[cid] + dt_s  # whole seconds count; the rest waits for the next sweep
            bucket = spend(bucket, use, counted)
            self._carry_s[cid] = counted - math.floor(counted)
            self._buckets[cid] = bucket
        scale = decide(policy, bucket, ratio, self.node_state(policy.share_pool_threshold_percent))
        quota = target_quota(r.quota_us, base_quota_us(limit), policy, scale)
        burst = static_burst(policy, limit, quota)
        if quota == r.quota_us and burst.burst_us == r.burst_us:
            return None
        return Change(container_id=cid, quota_us=quota, burst_us=burst.burst_us, scale=scale, burst=burst)

    def forget(self, container_id: str) -> None:
        for table in (self._seen, self._buckets, self._bucket_key, self._carry_s):
            table.pop(container_id, None)


def _qos(spec: ContainerSpec) -> QoS:
    return spec.qos or derive_qos(spec.cpu_request_millis, spec.cpu_limit_millis, spec.memory_limit_bytes)


def _shares_pool(r: Running) -> bool:
    """LS (and unclassified) containers make the share pool's use; LSE/LSR/BE are outside it."""
    return _qos(r.spec) is QoS.LS
