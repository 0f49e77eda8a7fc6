"""corral bench burst's pure parts: the container it submits is a valid spec, and the summary line's figures."""

from __future__ import annotations

import msgspec
import pytest

from api.burstbench import SETTINGS, Run, spec, summary
from wire.spec import ContainerSpec, QoS


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_submitted_spec_is_valid_and_ls(setting: str) -> None:
    s = msgspec.convert(spec(setting, 2, 6.0, 2.0, "abc"), ContainerSpec)
    assert s.qos is QoS.LS
    assert (s.cpu_limit_millis is None) == (setting == "noquota")
    assert s.burst is None if setting == "noquota" else s.burst is not None and s.burst.policy == setting
    assert s.command[-1].count("/usr/bin/python3") == 2  # two workers, side by side


def run(setting: str, workers: int, p99: float, throttled: int) -> Run:
    return Run(setting, workers, [40.0] * 99 + [p99], 100, throttled, float(throttled))


def test_summary() -> None:
    runs = [
        run("noquota", 1, 60.0, 0),
        run("none", 1, 100.0, 20),
        run("cpuBurstOnly", 1, 63.0, 1),
        run("auto", 1, 61.0, 0),
        run("noquota", 2, 60.0, 0),
        run("none", 2, 220.0, 40),
        run("cpuBurstOnly", 2, 110.0, 8),
        run("auto", 2, 66.0, 2),
    ]
    s = summary(runs)
    assert s == pytest.approx({"reduction": 95.0, "over": 5.0, "auto_vs": -40.0})
