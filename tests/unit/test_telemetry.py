"""nodelet.telemetry: the parsers, the throttling detector (table-driven and properties) and the Sampler over
real files in a temporary directory. The Sampler on real cgroups, including a cgroup that vanishes, is in
tests/integration/test_telemetry_real.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelet.cgroups import StatsPaths
from nodelet.telemetry import (
    CpuStat,
    Hysteresis,
    Sampler,
    ThrottleDetector,
    ThrottleState,
    ThrottleTransition,
    container_sample,
    parse_cpu_stat,
    parse_memory,
    parse_proc_stat,
    parse_usage,
    stats_sample,
    step,
    throttle_event,
)
from tests.builders import cid
from wire.commands import ContainerSample, StatsSample
from wire.events import ContainerThrottled, ContainerUnthrottled

C1, C2 = cid(1), cid(2)
US = 1_000  # ns

# --- builders ----------------------------------------------------------------------------------------------------


def v1_cpu_stat(periods: int = 0, throttled: int = 0, throttled_ns: int = 0, bursts: int = 0, burst_ns: int = 0) -> str:
    return (
        f"nr_periods {periods}\nnr_throttled {throttled}\nthrottled_time {throttled_ns}\n"
        f"nr_bursts {bursts}\nburst_time {burst_ns}\n"
    )


def v2_cpu_stat(
    usage_us: int = 0, periods: int = 0, throttled: int = 0, throttled_us: int = 0, bursts: int = 0, burst_us: int = 0
) -> str:
    """cgroup v2 cpu.stat as Linux 6.x renders it."""
    return (
        f"usage_usec {usage_us}\nuser_usec {usage_us // 2}\nsystem_usec {usage_us - usage_us // 2}\n"
        f"core_sched.force_idle_usec 0\nnr_periods {periods}\nnr_throttled {throttled}\n"
        f"throttled_usec {throttled_us}\nnr_bursts {bursts}\nburst_usec {burst_us}\n"
    )


def sample(periods: int, throttled: int, container_id: str = C1) -> ContainerSample:
    """A sample with only the detector's counters set."""
    return ContainerSample(container_id, 0, periods, throttled, 0, 0, 0, 0)


def thr(ratio: float) -> ThrottleTransition:
    return ThrottleTransition("throttled", ratio)


def unthr(ratio: float) -> ThrottleTransition:
    return ThrottleTransition("unthrottled", ratio)


# --- parsers -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "text", "expected"),
    [
        pytest.param(
            1,
            v1_cpu_stat(1200, 31, 4_100_000_000, 7, 350_000_000),
            CpuStat(nr_periods=1200, nr_throttled=31, throttled_ns=4_100_000_000, nr_bursts=7, burst_ns=350_000_000),
            id="v1-ns-as-is",
        ),
        pytest.param(
            1,
            "nr_periods 5\nnr_throttled 2\nthrottled_time 900\n",
            CpuStat(nr_periods=5, nr_throttled=2, throttled_ns=900),
            id="v1-kernel-before-5.14-no-burst-fields",
        ),
        pytest.param(
            2,
            v2_cpu_stat(usage_us=9_000, periods=40, throttled=3, throttled_us=1_500, bursts=2, burst_us=250),
            CpuStat(nr_periods=40, nr_throttled=3, throttled_ns=1_500 * US, nr_bursts=2, burst_ns=250 * US),
            id="v2-us-to-ns",
        ),
        pytest.param(
            2,
            "usage_usec 10\nuser_usec 5\nsystem_usec 5\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n",
            CpuStat(nr_periods=4, nr_throttled=1, throttled_ns=7 * US),
            id="v2-kernel-before-5.14-no-burst-fields",
        ),
        pytest.param(
            1,
            "nr_periods 0\nnr_throttled 0\nthrottled_time 0\r\n",
            CpuStat(nr_periods=0, nr_throttled=0, throttled_ns=0),
            id="any-whitespace",
        ),
    ],
)
def test_parse_cpu_stat(version: Literal[1, 2], text: str, expected: CpuStat) -> None:
    assert parse_cpu_stat(version, text) == expected


@pytest.mark.parametrize(
    ("version", "text", "message"),
    [
        pytest.param(
            2, "usage_usec 1\nuser_usec 1\nsystem_usec 0\n", "no 'nr_periods'.*cpu controller", id="v2-no-cpu"
        ),
        pytest.param(1, v2_cpu_stat(), "no 'throttled_time'", id="v2-text-read-as-v1"),
        pytest.param(1, "nr_periods 1\nnr_throttled\n", "expected 'key value' lines", id="missing-value"),
        pytest.param(1, "nr_periods x\nnr_throttled 0\nthrottled_time 0\n", "nr_periods is 'x'", id="not-a-number"),
    ],
)
def test_parse_cpu_stat_rejects(version: Literal[1, 2], text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cpu_stat(version, text)


def test_parse_usage() -> None:
    assert parse_usage(1, "1045743037612\n") == 1_045_743_037_612
    assert parse_usage(2, v2_cpu_stat(usage_us=1_234)) == 1_234 * US
    with pytest.raises(ValueError, match="usage_usec"):
        parse_usage(2, "nr_periods 0\n")
    with pytest.raises(ValueError, match="not an integer"):
        parse_usage(1, "")


def test_parse_memory() -> None:
    assert parse_memory("1114017792\n") == 1_114_017_792
    with pytest.raises(ValueError, match="not an integer"):
        parse_memory("max\n")


# This machine's /proc/stat (2 CPUs), abridged; USER_HZ 100.
PROC_STAT = """cpu  93439 0 11084 820381 5880 0 1306 40 0 0
cpu0 50219 0 6836 404105 4720 0 433 20 0 0
cpu1 43220 0 4248 416276 1160 0 872 19 0 0
intr 1 2 3
ctxt 123
"""


@pytest.mark.parametrize(
    ("text", "user_hz", "busy_jiffies", "total_jiffies"),
    [
        pytest.param(PROC_STAT, 100, 932_130 - 820_381 - 5_880, 932_130, id="this-machine"),
        pytest.param("cpu  10 1 2 30 4 5 6 7 50 3\n", 100, 31, 65, id="guest-already-in-user-and-nice"),
        pytest.param("cpu  10 1 2 30\n", 100, 13, 43, id="old-kernel-four-fields"),
        pytest.param("cpu  10 1 2 30 4 5 6 7 0 0\n", 250, 31, 65, id="user-hz-250"),
    ],
)
def test_parse_proc_stat(text: str, user_hz: int, busy_jiffies: int, total_jiffies: int) -> None:
    ns = 1_000_000_000
    assert parse_proc_stat(text, user_hz) == (busy_jiffies * ns // user_hz, total_jiffies * ns // user_hz)


def test_parse_proc_stat_rejects() -> None:
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        parse_proc_stat("cpu0 1 2 3 4\n", 100)
    with pytest.raises(ValueError, match="at least 4"):
        parse_proc_stat("cpu  1 2 3\n", 100)
    with pytest.raises(ValueError, match="user_hz"):
        parse_proc_stat(PROC_STAT, 0)


counts = st.integers(0, 2**63 - 1)


@given(counts, counts, counts, counts, counts, st.integers(0, 2**40))
def test_cpu_stat_round_trips(periods: int, throttled: int, t: int, bursts: int, b: int, usage_us: int) -> None:
    assert parse_cpu_stat(1, v1_cpu_stat(periods, throttled, t, bursts, b)) == CpuStat(
        nr_periods=periods, nr_throttled=throttled, throttled_ns=t, nr_bursts=bursts, burst_ns=b
    )
    v2 = v2_cpu_stat(usage_us, periods, throttled, t, bursts, b)
    assert parse_cpu_stat(2, v2) == CpuStat(
        nr_periods=periods, nr_throttled=throttled, throttled_ns=t * US, nr_bursts=bursts, burst_ns=b * US
    )
    assert parse_usage(2, v2) == usage_us * US


@given(st.lists(st.integers(0, 2**40), min_size=4, max_size=10), st.sampled_from([100, 250, 300, 1000]))
def test_proc_stat_busy_within_total(jiffies: list[int], user_hz: int) -> None:
    busy, total = parse_proc_stat("cpu  " + " ".join(map(str, jiffies)) + "\n", user_hz)
    assert 0 <= busy <= total


def test_container_sample_v1_and_v2() -> None:
    v1 = container_sample(C1, 1, v1_cpu_stat(10, 4, 400, 1, 50), "777\n", "4096\n")
    assert v1 == ContainerSample(
        container_id=C1,
        usage_ns=777,
        nr_periods=10,
        nr_throttled=4,
        throttled_ns=400,
        nr_bursts=1,
        burst_ns=50,
        memory_bytes=4096,
    )
    text = v2_cpu_stat(usage_us=3, periods=10, throttled=4, throttled_us=2, bursts=1, burst_us=5)
    v2 = container_sample(C2, 2, text, text, "8192\n")
    assert v2 == ContainerSample(C2, 3 * US, 10, 4, 2 * US, 1, 5 * US, 8192)


def test_stats_sample() -> None:
    sweep = [sample(1, 0, C1), sample(2, 1, C2)]
    message = stats_sample("n1", 123, sweep, 40, 100)
    assert message == StatsSample(
        node="n1", at_ns=123, node_cpu_busy_ns=40, node_cpu_total_ns=100, containers=(sweep[0], sweep[1])
    )
    assert msgspec.json.decode(msgspec.json.encode(message), type=StatsSample) == message
    with pytest.raises(ValueError, match="DNS-1123"):
        stats_sample("N_1", 1, [], 0, 0)


# --- throttling detector: table ---------------------------------------------------------------------------------

STEP_CASES = [
    pytest.param({}, [(100, 100)], [None], id="first-sample-only-sets-the-baseline"),
    pytest.param({}, [(0, 0), (10, 5), (20, 10)], [None, None, thr(0.5)], id="two-high-ratios-enter"),
    pytest.param({}, [(0, 0), (10, 5), (20, 5), (30, 10)], [None] * 4, id="a-low-ratio-breaks-the-streak"),
    pytest.param({}, [(0, 0), (10, 1), (20, 2)], [None, None, thr(0.1)], id="exactly-enter-ratio-counts"),
    pytest.param({}, [(0, 0), (10, 0), (20, 1), (30, 2)], [None] * 3 + [thr(0.1)], id="just-below-then-at"),
    pytest.param({}, [(0, 0), (10, 1), (110, 51)], [None, None, thr(51 / 110)], id="ratio-over-the-window"),
    pytest.param(
        {}, [(0, 0), (10, 5), (10, 5), (10, 5), (20, 10)], [None] * 4 + [thr(0.5)], id="no-periods-no-data-streak-kept"
    ),
    pytest.param(
        {},
        [(0, 0), (10, 5), (20, 10), (30, 10), (40, 10), (50, 10)],
        [None, None, thr(0.5), None, None, unthr(0.0)],
        id="three-low-ratios-exit",
    ),
    pytest.param(
        {},
        [(0, 0), (10, 10), (20, 20), (120, 22), (220, 24), (320, 26)],
        [None, None, thr(1.0), None, None, unthr(0.02)],
        id="exactly-exit-ratio-counts",
    ),
    pytest.param(
        {},
        [(0, 0), (10, 10), (20, 20), (30, 20), (40, 20), (50, 21), (60, 21), (70, 21), (80, 21)],
        [None, None, thr(1.0), None, None, None, None, None, unthr(0.0)],
        id="a-ratio-above-exit-restarts-the-exit-streak",
    ),
    pytest.param(
        {},
        [(0, 0), (100, 5), (200, 10), (300, 15), (400, 20)],
        [None] * 5,
        id="dead-band-keeps-unthrottled",
    ),
    pytest.param(
        {},
        [(0, 0), (10, 10), (20, 20), (20, 20), (20, 20), (20, 20)],
        [None, None, thr(1.0), None, None, unthr(0.0)],
        id="a-throttled-container-that-goes-idle-is-unthrottled",
    ),
    pytest.param(
        {},
        [(0, 0), (10, 10), (20, 20), (20, 20), (30, 20), (30, 20)],
        [None, None, thr(1.0), None, None, unthr(0.0)],
        id="idle-and-unthrottled-samples-both-count-toward-leaving",
    ),
    pytest.param(
        {},
        [(0, 0), (10, 10), (10, 10), (10, 10), (20, 20)],
        [None, None, None, None, thr(1.0)],
        id="idle-while-unthrottled-is-no-data",
    ),
    pytest.param(
        {},
        [(0, 0), (10, 10), (20, 20), (120, 25), (220, 30), (320, 35), (420, 40)],
        [None, None, thr(1.0), None, None, None, None],
        id="dead-band-keeps-throttled",
    ),
    pytest.param(
        {},
        [(0, 0), (10, 5), (3, 0), (13, 5), (23, 10)],
        [None, None, None, None, thr(0.5)],
        id="counter-reset-restarts-baseline-and-streak",
    ),
    pytest.param(
        {},
        [(0, 0), (10, 10), (20, 20), (5, 5), (15, 5), (25, 5), (35, 5)],
        [None, None, thr(1.0), None, None, None, unthr(0.0)],
        id="counter-reset-keeps-the-throttled-flag",
    ),
    pytest.param(
        {"enter_samples": 1, "exit_samples": 1},
        [(0, 0), (10, 1), (20, 1)],
        [None, thr(0.1), unthr(0.0)],
        id="single-sample-hysteresis",
    ),
    pytest.param(
        {"enter_ratio": 0.5, "exit_ratio": 0.25},
        [(0, 0), (10, 4), (20, 8), (30, 13), (40, 18)],
        [None, None, None, None, thr(0.5)],
        id="custom-ratios",
    ),
]


@pytest.mark.parametrize(("hysteresis", "counters", "expected"), STEP_CASES)
def test_step(
    hysteresis: dict[str, float], counters: list[tuple[int, int]], expected: list[ThrottleTransition | None]
) -> None:
    h = Hysteresis(**hysteresis)  # type: ignore[arg-type]
    state = ThrottleState()
    got = []
    for periods, throttled in counters:
        state, transition = step(state, sample(periods, throttled), h)
        got.append(transition)
    assert got == expected


def test_step_keeps_state_without_data() -> None:
    state, _ = step(ThrottleState(), sample(10, 5))
    state, _ = step(state, sample(20, 10))
    assert state == ThrottleState(nr_periods=20, nr_throttled=10, streak=1, window_periods=10, window_throttled=5)
    assert step(state, sample(20, 10)) == (state, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"enter_ratio": 0.02, "exit_ratio": 0.02},
        {"enter_ratio": 0.1, "exit_ratio": -0.01},
        {"enter_ratio": 1.5},
        {"enter_samples": 0},
        {"exit_samples": 0},
    ],
)
def test_hysteresis_rejects(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        Hysteresis(**kwargs)  # type: ignore[arg-type]


def test_detector_over_sweeps() -> None:
    detector = ThrottleDetector()
    sweeps = [
        [sample(0, 0, C1), sample(0, 0, C2)],
        [sample(10, 10, C1), sample(10, 0, C2)],
        [sample(20, 20, C1), sample(20, 0, C2)],
    ]
    assert [detector.feed_all(s) for s in sweeps] == [{}, {}, {C1: thr(1.0)}]
    assert detector.throttled() == {C1}
    assert detector.state(C2) == ThrottleState(nr_periods=20, nr_throttled=0)
    detector.forget(C1)
    assert detector.state(C1) == ThrottleState()
    assert detector.throttled() == frozenset()
    assert detector.hysteresis == Hysteresis()


def test_throttle_event() -> None:
    assert throttle_event("n1", C1, thr(0.5)) == ContainerThrottled(container_id=C1, node="n1", throttled_ratio=0.5)
    assert throttle_event("n1", C1, unthr(0.0)) == ContainerUnthrottled(container_id=C1, node="n1", throttled_ratio=0)


# --- throttling detector: properties ----------------------------------------------------------------------------


@st.composite
def hystereses(draw: st.DrawFn) -> Hysteresis:
    exit_ratio = draw(st.floats(0, 0.5))
    enter_ratio = draw(st.floats(exit_ratio + 0.05, 1))
    return Hysteresis(
        enter_ratio=enter_ratio,
        exit_ratio=exit_ratio,
        enter_samples=draw(st.integers(1, 4)),
        exit_samples=draw(st.integers(1, 4)),
    )


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Cumulative (nr_periods, nr_throttled) with steps of no data, of every ratio, and counter resets."""
    periods = throttled = 0
    out = []
    for _ in range(draw(st.integers(0, 40))):
        move = draw(st.sampled_from(["advance"] * 8 + ["idle", "reset"]))
        if move == "advance":
            dp = draw(st.integers(1, 200))
            dt = draw(st.one_of(st.just(0), st.just(dp), st.integers(0, dp)))
            periods, throttled = periods + dp, throttled + dt
        elif move == "reset":
            periods = draw(st.integers(0, max(periods - 1, 0)))
            throttled = draw(st.integers(0, periods))
        out.append((periods, throttled))
    return out


def fold(
    h: Hysteresis, counters: list[tuple[int, int]]
) -> Iterator[tuple[ThrottleState, tuple[int, int], ThrottleState, ThrottleTransition | None]]:
    """(state before, counters, state after, transition) per sample."""
    state = ThrottleState()
    for periods, throttled in counters:
        before = state
        state, transition = step(state, sample(periods, throttled), h)
        yield before, (periods, throttled), state, transition


def transitions_of(h: Hysteresis, counters: list[tuple[int, int]]) -> list[ThrottleTransition]:
    return [t for _, _, _, t in fold(h, counters) if t is not None]


@given(hystereses(), histories())
def test_transitions_alternate_and_report_a_ratio_beyond_the_threshold(
    h: Hysteresis, counters: list[tuple[int, int]]
) -> None:
    transitions = transitions_of(h, counters)
    assert [t.kind for t in transitions] == ["throttled", "unthrottled"] * (len(transitions) // 2) + ["throttled"] * (
        len(transitions) % 2
    )
    for t in transitions:
        if t.kind == "throttled":
            assert t.ratio >= h.enter_ratio - 1e-9
        else:
            assert t.ratio <= h.exit_ratio + 1e-9


@given(hystereses(), histories())
def test_no_transition_without_data(h: Hysteresis, counters: list[tuple[int, int]]) -> None:
    for before, (periods, throttled), after, transition in fold(h, counters):
        baseline = before.nr_periods
        if baseline is None or periods < baseline or throttled < before.nr_throttled:  # first sample, or a reset
            assert transition is None
            assert after == ThrottleState(throttled=before.throttled, nr_periods=periods, nr_throttled=throttled)
        elif periods == baseline and not before.throttled:
            assert (after, transition) == (before, None)
        elif periods == baseline:  # idle while throttled: toward leaving, never toward entering
            assert transition is None or transition.kind == "unthrottled"
            assert (transition is not None) == (not after.throttled)
        else:  # edge-triggered: a transition exactly when the state flips
            assert (transition is not None) == (after.throttled != before.throttled)


@st.composite
def dead_band(draw: st.DrawFn) -> tuple[Hysteresis, int, int, list[int]]:
    """A hysteresis, a ratio dt/dp strictly inside its dead band, and step sizes (0: a step with no data)."""
    h = draw(hystereses())
    dp = draw(st.integers(100, 1000))
    low, high = int(h.exit_ratio * dp), int(h.enter_ratio * dp) + 1
    dt = draw(st.integers(low, high).filter(lambda t: h.exit_ratio < t / dp < h.enter_ratio))
    return h, dp, dt, draw(st.lists(st.integers(0, 20), max_size=30))


@given(dead_band(), st.booleans())
def test_a_constant_ratio_in_the_dead_band_never_flips(
    case: tuple[Hysteresis, int, int, list[int]], start_throttled: bool
) -> None:
    h, dp, dt, multiples = case
    counters = [(0, 0)]
    if start_throttled:  # every period throttled until it enters
        counters += [(dp * (i + 1), dp * (i + 1)) for i in range(h.enter_samples)]
    periods, throttled = counters[-1]
    for k in multiples if not start_throttled else [k for k in multiples if k]:  # idle leaves the throttled state
        periods, throttled = periods + k * dp, throttled + k * dt
        counters.append((periods, throttled))
    assert [t.kind for t in transitions_of(h, counters)] == (["throttled"] if start_throttled else [])


@given(histories(), histories())
def test_containers_are_independent(first: list[tuple[int, int]], second: list[tuple[int, int]]) -> None:
    """Interleaving two containers' samples in one detector gives each the transitions it gets alone."""
    h = Hysteresis()
    alone = {C1: [t for *_, t in fold(h, first)], C2: [t for *_, t in fold(h, second)]}
    detector = ThrottleDetector()
    together: dict[str, list[ThrottleTransition | None]] = {C1: [], C2: []}
    for i in range(max(len(first), len(second))):
        for container_id, counters in ((C1, first), (C2, second)):
            if i < len(counters):
                together[container_id].append(detector.feed(sample(*counters[i], container_id=container_id)))
    assert together == alone


# --- Sampler over real files --------------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cgroup_dir(root: Path, name: str, version: Literal[1, 2]) -> StatsPaths:
    """A directory with a cgroup's telemetry files, all zero."""
    d = root / name
    d.mkdir()
    if version == 1:
        (d / "cpu.stat").write_text(v1_cpu_stat())
        (d / "cpuacct.usage").write_text("0\n")
        (d / "memory.usage_in_bytes").write_text("0\n")
        return StatsPaths(
            version=1,
            cpu_stat=str(d / "cpu.stat"),
            cpu_usage=str(d / "cpuacct.usage"),
            memory_usage=str(d / "memory.usage_in_bytes"),
        )
    (d / "cpu.stat").write_text(v2_cpu_stat())
    (d / "memory.current").write_text("0\n")
    return StatsPaths(
        version=2, cpu_stat=str(d / "cpu.stat"), cpu_usage=str(d / "cpu.stat"), memory_usage=str(d / "memory.current")
    )


@pytest.fixture
def proc_stat(tmp_path: Path) -> Path:
    file = tmp_path / "proc-stat"
    file.write_text(PROC_STAT)
    return file


@pytest.fixture
def sampler(proc_stat: Path) -> Iterator[Sampler]:
    with Sampler(proc_stat=str(proc_stat), user_hz=100) as s:
        yield s


def test_sampler_reads_fresh_values_through_open_files(sampler: Sampler, tmp_path: Path) -> None:
    p1, p2 = cgroup_dir(tmp_path, "c1", 1), cgroup_dir(tmp_path, "c2", 2)
    sampler.add(C1, p1)
    sampler.add(C2, p2)
    assert sampler.sweep() == [ContainerSample(C1, 0, 0, 0, 0, 0, 0, 0), ContainerSample(C2, 0, 0, 0, 0, 0, 0, 0)]

    # Rewritten in place (same inode), as the kernel's values change under an open descriptor.
    Path(p1.cpu_stat).write_text(v1_cpu_stat(10, 3, 300, 1, 20))
    Path(p1.cpu_usage).write_text("5000\n")
    Path(p1.memory_usage).write_text("4096\n")
    Path(p2.cpu_stat).write_text(v2_cpu_stat(usage_us=7, periods=4, throttled=1, throttled_us=2))
    Path(p2.memory_usage).write_text("8192\n")
    assert sampler.sweep() == [
        ContainerSample(C1, 5000, 10, 3, 300, 1, 20, 4096),
        ContainerSample(C2, 7 * US, 4, 1, 2 * US, 0, 0, 8192),
    ]
    assert sampler.take_gone() == frozenset()


def test_sampler_file_descriptors(sampler: Sampler, tmp_path: Path) -> None:
    p1, p2 = cgroup_dir(tmp_path, "c1", 1), cgroup_dir(tmp_path, "c2", 2)
    before = open_fds()
    sampler.add(C1, p1)
    assert open_fds() == before + 3
    sampler.add(C2, p2)
    assert open_fds() == before + 5  # v2 reads usage from the cpu.stat it already has open
    sampler.add(C1, p1)  # re-adding replaces
    assert open_fds() == before + 5
    assert len(sampler) == 2
    assert C1 in sampler
    sampler.remove(C1)
    sampler.remove(C1)
    assert open_fds() == before + 2
    assert C1 not in sampler
    assert [s.container_id for s in sampler.sweep()] == [C2]


def test_sampler_add_of_missing_files_leaves_nothing_open(sampler: Sampler, tmp_path: Path) -> None:
    paths = cgroup_dir(tmp_path, "c1", 1)
    os.unlink(paths.memory_usage)
    before = open_fds()
    with pytest.raises(FileNotFoundError):
        sampler.add(C1, paths)
    assert open_fds() == before
    assert len(sampler) == 0


def test_sampler_node_cpu(sampler: Sampler, proc_stat: Path) -> None:
    assert sampler.node_cpu() == parse_proc_stat(PROC_STAT, 100)
    proc_stat.write_text(PROC_STAT.replace("cpu  93439", "cpu  93539"))
    busy, total = sampler.node_cpu()
    assert (busy, total) == tuple(n + 1_000_000_000 for n in parse_proc_stat(PROC_STAT, 100))


def test_sampler_close(proc_stat: Path, tmp_path: Path) -> None:
    before = open_fds()
    sampler = Sampler(proc_stat=str(proc_stat), user_hz=100)
    sampler.add(C1, cgroup_dir(tmp_path, "c1", 1))
    sampler.close()
    sampler.close()
    assert open_fds() == before
    assert sampler.sweep() == []
    with pytest.raises(ValueError, match="closed"):
        sampler.node_cpu()


def test_sampler_node_cpu_of_this_machine() -> None:
    with Sampler() as sampler:
        first = sampler.node_cpu()
        second = sampler.node_cpu()
    assert 0 < first[0] <= first[1]
    assert second[0] >= first[0]
    assert second[1] >= first[1]
