"""The chaos runner as CI runs it: one round of every fault type into a local cluster of its own (real
nats-server, control plane, nodelets and runc), judged from runc and cgroups. `make chaos` runs the long one."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import corral
from tests.runcenv import needs_runc

pytestmark = [needs_runc, pytest.mark.slow]


def test_a_round_of_every_fault_loses_doubles_and_strands_nothing(home: dict[str, str]) -> None:
    run = corral(home, "chaos", "--cycles", "8", "--seed", "1", timeout=900)
    print(run.stdout)
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("chaos: cycles=8 faults=8 "), run.stdout + run.stderr
    counts = dict(re.findall(r"(\w+)=([\d.]+)", last))
    assert {k: counts[k] for k in ("lost", "doubled", "stuck", "gaps", "overlaps")} == dict.fromkeys(
        ("lost", "doubled", "stuck", "gaps", "overlaps"), "0"
    ), run.stdout
    assert "(flaps): 0" in run.stdout
    assert run.returncode == 0, run.stdout + run.stderr
