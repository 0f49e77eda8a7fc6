"""CPU Burst policy core, table-driven from the documented behaviour (../shared/reference/cpu-burst.md)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelet.burst import (
    Burst,
    BurstController,
    Change,
    NodeState,
    Running,
    Scale,
    ShareSample,
    TokenBucket,
    base_quota_us,
    decide,
    eligible,
    new_bucket,
    node_state,
    spend,
    static_burst,
    target_quota,
)
from tests.builders import spec
from wire.burst import (
    DEFAULTS,
    BurstConfig,
    BurstPolicy,
    BurstSettings,
    BurstStrategy,
    NodeBurstStrategy,
    Resolved,
    resolve,
)
from wire.spec import QoS

AUTO = Resolved(policy=BurstPolicy.AUTO)
S = 10**9


def scaled(start: int, base: int, decision: Scale, steps: int, policy: Resolved = AUTO) -> list[int]:
    out, cur = [], start
    for _ in range(steps):
        cur = target_quota(cur, base, policy, decision)
        out.append(cur)
    return out


def test_limit_two_cpus_throttled_every_second_on_an_idle_node_scales_up_to_the_ceiling() -> None:
    base = base_quota_us(2000)
    assert base == 200_000
    decision = decide(AUTO, None, throttled_ratio=0.4, node=NodeState.IDLE)
    assert decision is Scale.UP
    assert scaled(base, base, decision, 7) == [240000, 288000, 345600, 414720, 497664, 597196, 600000]


def test_scale_down_from_the_ceiling_to_the_base() -> None:
    assert scaled(600_000, 200_000, Scale.DOWN, 5) == [480000, 384000, 307200, 245760, 200000]


@pytest.mark.parametrize(
    ("policy", "bucket_allowed", "ratio", "node", "decision"),
    [
        pytest.param(BurstPolicy.NONE, True, 0.5, NodeState.IDLE, Scale.RESET, id="none-resets"),
        pytest.param(BurstPolicy.CPU_BURST_ONLY, True, 0.5, NodeState.IDLE, Scale.RESET, id="burst-only-resets"),
        pytest.param(BurstPolicy.CFS_QUOTA_BURST_ONLY, True, 0.5, NodeState.IDLE, Scale.UP, id="quota-only-scales"),
        pytest.param(BurstPolicy.AUTO, True, 0.01, NodeState.IDLE, Scale.UP, id="any-throttling-scales-up"),
        pytest.param(BurstPolicy.AUTO, True, 0.0, NodeState.IDLE, Scale.REMAIN, id="not-throttled-remains"),
        pytest.param(BurstPolicy.AUTO, True, None, NodeState.IDLE, Scale.REMAIN, id="no-data-remains"),
        pytest.param(BurstPolicy.AUTO, False, 0.5, NodeState.IDLE, Scale.DOWN, id="empty-bucket-scales-down"),
        pytest.param(BurstPolicy.AUTO, True, 0.5, NodeState.OVERLOAD, Scale.DOWN, id="overload-up-becomes-down"),
        pytest.param(BurstPolicy.AUTO, True, 0.0, NodeState.OVERLOAD, Scale.DOWN, id="overload-remain-becomes-down"),
        pytest.param(BurstPolicy.AUTO, True, 0.5, NodeState.COOLING, Scale.REMAIN, id="cooling-up-becomes-remain"),
        pytest.param(BurstPolicy.AUTO, True, 0.5, NodeState.UNKNOWN, Scale.REMAIN, id="unknown-up-becomes-remain"),
        pytest.param(BurstPolicy.AUTO, False, 0.5, NodeState.COOLING, Scale.DOWN, id="cooling-keeps-down"),
        pytest.param(BurstPolicy.NONE, True, 0.5, NodeState.OVERLOAD, Scale.RESET, id="off-resets-even-overloaded"),
    ],
)
def test_decide(
    policy: BurstPolicy, bucket_allowed: bool, ratio: float | None, node: NodeState, decision: Scale
) -> None:
    bucket = TokenBucket(100.0, 50.0 if bucket_allowed else 0.0)
    assert decide(Resolved(policy=policy), bucket, ratio, node) is decision


@pytest.mark.parametrize(
    ("current", "decision", "want"),
    [
        (200_000, Scale.REMAIN, 200_000),
        (345_600, Scale.REMAIN, 345_600),
        (345_600, Scale.RESET, 200_000),
        (150_000, Scale.REMAIN, 200_000),  # below the base (changed by hand): back within bounds
        (900_000, Scale.REMAIN, 600_000),
        (200_000, Scale.DOWN, 200_000),
        (600_000, Scale.UP, 600_000),
    ],
)
def test_target_quota_stays_within_base_and_ceiling(current: int, decision: Scale, want: int) -> None:
    assert target_quota(current, 200_000, AUTO, decision) == want


@given(
    base=st.integers(1000, 10**7),
    percent=st.integers(100, 1000),
    current=st.integers(0, 10**8),
    decisions=st.lists(st.sampled_from(list(Scale)), max_size=30),
)
def test_property_quota_always_within_bounds(base: int, percent: int, current: int, decisions: list[Scale]) -> None:
    policy = Resolved(policy=BurstPolicy.AUTO, cfs_quota_burst_percent=percent)
    for d in decisions:
        current = target_quota(current, base, policy, d)
        assert base <= current <= base * percent // 100


def test_token_bucket_as_documented() -> None:
    policy = Resolved(policy=BurstPolicy.AUTO, cfs_quota_burst_percent=150, cfs_quota_burst_period_seconds=100)
    bucket = new_bucket(policy)
    assert bucket == TokenBucket(5000.0, 5000.0)
    for _ in range(10):
        bucket = spend(bucket, 150, 1.0)
    assert bucket == TokenBucket(5000.0, 4500.0)
    assert bucket.allowed


@pytest.mark.parametrize(
    ("tokens", "usage", "dt", "after"),
    [
        (100.0, 250, 1.0, -50.0),
        (100.0, 100, 5.0, 100.0),  # at the limit: nothing spent
        (100.0, 80, 3.0, 100.0),  # between 60 % and 100 %: nothing refilled
        (100.0, 59, 2.0, 182.0),
        (-5000.0, 1000, 10.0, -5000.0),  # clamped at -capacity
        (4990.0, 0, 10.0, 5000.0),  # clamped at capacity
        (100.0, 500, 0.9, 100.0),  # whole seconds only
        (100.0, 200, 2.7, -100.0),
    ],
)
def test_spend(tokens: float, usage: float, dt: float, after: float) -> None:
    assert spend(TokenBucket(5000.0, tokens), usage, dt).tokens == pytest.approx(after)


def test_no_time_budget_means_no_bucket() -> None:
    assert new_bucket(AUTO) is None
    assert decide(AUTO, None, 0.5, NodeState.IDLE) is Scale.UP


def test_an_empty_bucket_is_not_allowed_and_refills() -> None:
    bucket = TokenBucket(10.0, 0.0)
    assert not bucket.allowed
    assert spend(bucket, 10, 1.0).allowed


@pytest.mark.parametrize(
    ("policy", "limit", "quota", "burst"),
    [
        pytest.param(BurstPolicy.NONE, 2000, 200_000, Burst(0, 0, "policy none"), id="off"),
        pytest.param(BurstPolicy.CFS_QUOTA_BURST_ONLY, 2000, 200_000, Burst(0, 0, "policy cfsQuotaBurstOnly"), id="q"),
        pytest.param(
            BurstPolicy.CPU_BURST_ONLY,
            2000,
            200_000,
            Burst(200_000, 2_000_000, "cpuBurstPercent 1000 clamped to the quota 200000us"),
            id="default-1000-percent-clamped",
        ),
        pytest.param(
            BurstPolicy.AUTO,
            2000,
            345_600,
            Burst(345_600, 2_000_000, "cpuBurstPercent 1000 clamped to the quota 345600us"),
            id="clamped-to-the-scaled-quota",
        ),
    ],
)
def test_static_burst(policy: BurstPolicy, limit: int, quota: int, burst: Burst) -> None:
    assert static_burst(Resolved(policy=policy), limit, quota) == burst


def test_static_burst_within_the_quota_is_not_clamped() -> None:
    assert static_burst(Resolved(policy=BurstPolicy.AUTO, cpu_burst_percent=50), 500, 50_000) == Burst(
        25_000, 25_000, "cpuBurstPercent 50"
    )


@given(limit=st.integers(1, 256_000), percent=st.integers(0, 100_000), quota=st.integers(1000, 10**8))
def test_property_burst_never_exceeds_the_quota(limit: int, percent: int, quota: int) -> None:
    b = static_burst(Resolved(policy=BurstPolicy.CPU_BURST_ONLY, cpu_burst_percent=percent), limit, quota)
    assert 0 <= b.burst_us <= quota
    assert b.burst_us == min(b.wanted_us, quota)


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({"cpu_limit_millis": 500}, True),
        ({"cpu_limit_millis": 500, "qos": QoS.LS}, True),
        ({}, False),  # no limit: no quota to burst above
        ({"cpu_limit_millis": 500, "qos": QoS.BE}, False),
        ({"cpu_request_millis": 2000, "cpu_limit_millis": 2000, "qos": QoS.LSE}, False),
        ({"cpu_request_millis": 2000, "cpu_limit_millis": 2000, "memory_limit_bytes": 1 << 30}, False),  # LSR
    ],
)
def test_eligible(kwargs: dict[str, object], ok: bool) -> None:
    assert eligible(spec("c", **kwargs)) is ok


def share(at_s: float, busy_s: float, outside_s: float = 0.0, pool: float = 2.0) -> ShareSample:
    return ShareSample(int(at_s * S), int(busy_s * S), int(outside_s * S), pool)


@pytest.mark.parametrize(
    ("samples", "state"),
    [
        pytest.param([], NodeState.UNKNOWN, id="no-data"),
        pytest.param([share(0, 0)], NodeState.UNKNOWN, id="one-sample"),
        pytest.param([share(0, 0), share(5, 2)], NodeState.IDLE, id="20-percent"),
        pytest.param([share(0, 0), share(5, 4.5)], NodeState.COOLING, id="45-percent"),
        pytest.param([share(0, 0), share(5, 5)], NodeState.OVERLOAD, id="50-percent"),
        pytest.param([share(0, 0), share(5, 9, outside_s=5)], NodeState.IDLE, id="be-use-is-outside-the-pool"),
        pytest.param([share(0, 0), share(5, 3, pool=1.0)], NodeState.OVERLOAD, id="exclusive-cpus-shrink-the-pool"),
        pytest.param(
            [share(0, 0), share(1, 1), share(2, 2), share(7, 3)], NodeState.IDLE, id="only-the-last-five-seconds"
        ),
        pytest.param([share(0, 5), share(5, 1)], NodeState.UNKNOWN, id="counters-went-back"),
    ],
)
def test_node_state(samples: list[ShareSample], state: NodeState) -> None:
    assert node_state(samples, 50) is state


# --- precedence ---------------------------------------------------------------------------------------------------


def test_defaults_are_koordinators() -> None:
    assert (
        resolve(BurstConfig(), {})
        == DEFAULTS
        == Resolved(
            policy=BurstPolicy.NONE,
            cpu_burst_percent=1000,
            cfs_quota_burst_percent=300,
            cfs_quota_burst_period_seconds=-1,
            share_pool_threshold_percent=50,
        )
    )


CONFIG = BurstConfig(
    cluster=BurstStrategy(policy=BurstPolicy.CPU_BURST_ONLY, cpu_burst_percent=200, share_pool_threshold_percent=60),
    nodes=(
        NodeBurstStrategy(selector={"pool": "batch"}, strategy=BurstStrategy(policy=BurstPolicy.NONE)),
        NodeBurstStrategy(
            selector={"pool": "web", "zone": "a"},
            strategy=BurstStrategy(policy=BurstPolicy.AUTO, share_pool_threshold_percent=70),
        ),
        NodeBurstStrategy(selector={"pool": "web"}, strategy=BurstStrategy(cfs_quota_burst_percent=150)),
    ),
)


@pytest.mark.parametrize(
    ("labels", "container", "want"),
    [
        pytest.param({}, None, {"policy": "cpuBurstOnly", "cpu_burst_percent": 200, "threshold": 60}, id="cluster"),
        pytest.param({"pool": "batch"}, None, {"policy": "none", "cpu_burst_percent": 200}, id="node-overrides"),
        pytest.param(
            {"pool": "web", "zone": "a"}, None, {"policy": "auto", "threshold": 70, "ceiling": 300}, id="first-match"
        ),
        pytest.param({"pool": "web"}, None, {"policy": "cpuBurstOnly", "ceiling": 150}, id="second-match"),
        pytest.param(
            {"pool": "batch"},
            BurstSettings(policy=BurstPolicy.AUTO, cfs_quota_burst_period_seconds=30),
            {"policy": "auto", "period": 30, "cpu_burst_percent": 200},
            id="container-overrides-field-by-field",
        ),
        pytest.param(
            {},
            BurstStrategy(share_pool_threshold_percent=99),
            {"threshold": 60},
            id="a-container-never-sets-the-threshold",
        ),
    ],
)
def test_precedence(labels: dict[str, str], container: BurstSettings | None, want: dict[str, object]) -> None:
    got = resolve(CONFIG, labels, container)
    names = {
        "policy": got.policy,
        "cpu_burst_percent": got.cpu_burst_percent,
        "threshold": got.share_pool_threshold_percent,
        "ceiling": got.cfs_quota_burst_percent,
        "period": got.cfs_quota_burst_period_seconds,
    }
    assert {k: names[k] for k in want} == want


@pytest.mark.parametrize(
    "body",
    [
        {"policy": "sometimes"},
        {"cfs_quota_burst_percent": 99},
        {"cfs_quota_burst_period_seconds": -2},
        {"cpu_burst_percent": -1},
        {"share_pool_threshold_percent": 0},
        {"share_pool_threshold_percent": 101},
        {"unknown": 1},
    ],
)
def test_bad_strategies_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(body), type=BurstStrategy)


def test_a_container_setting_cannot_carry_a_threshold() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"share_pool_threshold_percent": 50}', type=BurstSettings)


def test_config_round_trips() -> None:
    assert msgspec.json.decode(msgspec.json.encode(CONFIG), type=BurstConfig) == CONFIG


# --- the controller over time ------------------------------------------------------------------------------------


def running(cid: str, quota: int | None, burst: int, policy: Resolved = AUTO, **kwargs: Any) -> Running:
    s = spec(cid, **({"cpu_request_millis": 1000, "cpu_limit_millis": 2000} | kwargs))
    return Running(container_id=cid, spec=s, quota_us=quota, burst_us=burst, policy=policy)


def drive(
    pool: float,
    seconds: int,
    throttled_per_s: int,
    node_busy_per_s: float,
    policy: Resolved = AUTO,
    quota: int = 200_000,
    burst: int = 0,
    usage_per_s: float = 1.0,
) -> list[Change]:
    """Feed one container ``seconds`` sweeps 1 s apart on a node whose share pool has ``pool`` CPUs, applying
    each change as the shell would."""
    controller = BurstController()
    changes = []
    for t in range(seconds):
        usage = {"c1": (int(t * usage_per_s * S), t * 10, t * throttled_per_s)}
        runs = [running("c1", quota, burst, policy)]
        got = controller.step(t * S, int(t * node_busy_per_s * S), usage, runs, pool)
        for change in got:
            quota, burst = change.quota_us, change.burst_us
        changes += got
    return changes


def test_controller_scales_a_throttled_container_up_to_the_ceiling_on_an_idle_node() -> None:
    changes = drive(8, seconds=9, throttled_per_s=5, node_busy_per_s=1.0)
    assert [c.quota_us for c in changes] == [200000, 240000, 288000, 345600, 414720, 497664, 597196, 600000]
    assert [c.burst_us for c in changes] == [c.quota_us for c in changes]  # 1000 % clamped to the quota
    assert changes[0].scale is Scale.REMAIN  # the first second: no ratio yet, and the node unknown
    assert all(c.scale is Scale.UP for c in changes[1:])
    assert "clamped" in changes[0].burst.reason


def test_controller_scales_down_on_an_overloaded_node() -> None:
    changes = drive(2, seconds=7, throttled_per_s=5, node_busy_per_s=1.9, quota=600_000, burst=600_000)
    assert [c.quota_us for c in changes] == [480000, 384000, 307200, 245760, 200000]
    assert all(c.scale is Scale.DOWN for c in changes)


def test_controller_leaves_a_container_alone_when_nothing_changes() -> None:
    assert drive(8, seconds=5, throttled_per_s=0, node_busy_per_s=1.0, burst=200_000) == []


def test_controller_resets_when_the_policy_is_turned_off() -> None:
    off = Resolved(policy=BurstPolicy.NONE)
    changes = drive(8, seconds=3, throttled_per_s=5, node_busy_per_s=1.0, policy=off, quota=414_720, burst=300_000)
    assert [(c.quota_us, c.burst_us, c.scale) for c in changes] == [(200_000, 0, Scale.RESET)]


def test_controller_scales_down_when_the_time_budget_is_spent() -> None:
    budget = Resolved(policy=BurstPolicy.AUTO, cfs_quota_burst_percent=150, cfs_quota_burst_period_seconds=2)
    # Capacity 2 x 50 = 100 tokens; using 3 CPUs of a 2-CPU limit (150 %) spends 50 a second.
    changes = drive(8, seconds=6, throttled_per_s=5, node_busy_per_s=3.0, policy=budget, usage_per_s=3.0)
    scales = [c.scale for c in changes]
    assert Scale.UP in scales and scales[-1] is Scale.DOWN


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"qos": QoS.BE}, id="BE"),
        pytest.param({"cpu_request_millis": 2000, "cpu_limit_millis": 2000, "qos": QoS.LSE}, id="LSE"),
        pytest.param({"cpu_limit_millis": None}, id="no-limit"),
    ],
)
def test_controller_never_touches_ineligible_containers(kwargs: dict[str, Any]) -> None:
    controller = BurstController()
    for t in range(5):
        r = running("c1", 200_000 if kwargs.get("qos") is not QoS.LSE else None, 0, **kwargs)
        assert controller.step(t * S, t * S, {"c1": (t * S, t * 10, t * 5)}, [r], 8) == []


def test_controller_forgets_containers_that_are_gone() -> None:
    controller = BurstController()
    controller.step(0, 0, {"c1": (0, 0, 0)}, [running("c1", 200_000, 0)], 8)
    controller.step(S, S, {}, [], 8)
    assert controller._seen == {} and controller._buckets == {}


def test_exclusive_and_be_use_is_outside_the_share_pool() -> None:
    """Two CPUs, one held by an LSE container spinning, a BE container using the other: the share pool (1 CPU)
    is idle, so a throttled LS container still scales up."""
    controller = BurstController()
    lse = running("lse", None, 0, cpu_request_millis=1000, cpu_limit_millis=1000, qos=QoS.LSE)
    be = running("be", 100_000, 0, qos=QoS.BE)
    quota, burst = 200_000, 200_000
    scales = []
    for t in range(4):
        usage = {"lse": (t * S, 0, 0), "be": (int(t * 0.9 * S), 0, 0), "ls": (int(t * 0.05 * S), t * 10, t * 5)}
        ls = running("ls", quota, burst)
        for change in controller.step(t * S, int(t * 1.95 * S), usage, [lse, be, ls], 1.0):
            quota, burst = change.quota_us, change.burst_us
            scales.append(change.scale)
    assert scales == [Scale.UP] * 3  # from the second sweep on
    assert controller.node_state(50) is NodeState.IDLE


def test_a_container_outside_the_pool_that_exits_moves_nothing() -> None:
    """A BE container that used an hour of CPU exits: the share pool's use must not jump (only each container's
    own change between sweeps counts), so the auto container keeps scaling up on an idle node."""
    controller = BurstController()
    hour = 3600 * S
    be = running("be", 100_000, 0, qos=QoS.BE)
    quota, burst, scales = 200_000, 200_000, []
    for t in range(8):
        usage = {"ls": (int(t * 0.5 * S), t * 10, t * 5)}
        runs = [running("ls", quota, burst)]
        if t < 4:
            usage["be"] = (hour + t * S // 10, 0, 0)
            runs.append(be)
        for change in controller.step(t * S, hour + int(t * 0.6 * S), usage, runs, 8.0):
            quota, burst = change.quota_us, change.burst_us
            scales.append(change.scale)
        assert controller.node_state(50) in (NodeState.IDLE, NodeState.UNKNOWN), t
    assert scales == [Scale.UP] * 7


def test_the_time_budget_counts_fractions_of_a_second() -> None:
    """Sweeps 0.5 s apart at 300 % of the limit: every two of them spend a whole second's worth."""
    policy = Resolved(policy=BurstPolicy.AUTO, cfs_quota_burst_percent=300, cfs_quota_burst_period_seconds=1)
    controller = BurstController()
    for t in range(5):
        usage = {"c1": (int(t * 0.5 * 6 * S), t * 5, 0)}
        controller.step(t * S // 2, t * S, usage, [running("c1", 200_000, 200_000, policy)], 8.0)
    assert controller._buckets["c1"] == TokenBucket(200.0, -200.0)  # 2 s at +200: spent, clamped at -capacity


def test_a_threshold_change_keeps_the_time_budget() -> None:
    budget = Resolved(policy=BurstPolicy.AUTO, cfs_quota_burst_percent=150, cfs_quota_burst_period_seconds=10)
    controller = BurstController()
    for t, threshold in enumerate((50, 50, 70)):
        policy = msgspec.structs.replace(budget, share_pool_threshold_percent=threshold)
        usage = {"c1": (t * 3 * S, t * 10, 0)}
        controller.step(t * S, t * S, usage, [running("c1", 200_000, 200_000, policy)], 8.0)
    assert controller._buckets["c1"] == TokenBucket(500.0, 400.0)  # 2 s at 150 %: 100 spent; a new bucket: 450
