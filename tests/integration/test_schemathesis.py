"""Schemathesis with every check against a real local cluster (``corral up``: nats-server, control plane, two
nodelets): the OpenAPI document describes what the API does — no failure of any kind, not only no 5xx."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, corral
from tests.natsserver import free_port
from tests.runcenv import needs_runc

pytestmark = [needs_runc, pytest.mark.slow]
ST = Path(ROOT / ".venv/bin/st")


@pytest.mark.timeout(900)
def test_schemathesis_finds_nothing(home: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    up = corral(home, "up", "--nodes", "2", "--port", str(port), "--nats-port", str(free_port()))
    assert up.returncode == 0, up.stdout + up.stderr
    token = re.search(r"CORRAL_TOKEN=(\S+)", corral(home, "env").stdout)
    assert token is not None
    run = subprocess.run(
        [
            str(ST) if ST.exists() else "st",
            "--config-file",
            str(ROOT / "tests/schemathesis/schemathesis.toml"),
            "--no-color",
            "run",
            f"http://127.0.0.1:{port}/schema/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "-H",
            f"Authorization: Bearer {token.group(1)}",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=home,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = run.stdout[run.stdout.find("SUMMARY") :][:4000]
    failures = run.stdout[run.stdout.find("FAILURES") :][:6000] if "FAILURES" in run.stdout else ""
    assert run.returncode == 0, failures + summary or run.stdout[-4000:] + run.stderr[-2000:]
    assert "Failures:" not in summary and "Errors:" not in summary, summary
