"""SIGKILL an appending process at a random moment: every acknowledged append survives, no batch is half
written, positions stay contiguous, and the log reopens and takes appends again."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(db: Path, seed: int, after_s: float) -> dict[bytes, int]:
    """Start the child, read its acks for ``after_s`` seconds, SIGKILL it, return the acks it printed."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.crash_child", str(db), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n", child.stderr.read() if child.stderr else b""
        acks: dict[bytes, int] = {}
        deadline = time.monotonic() + after_s
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line.endswith(b"\n"):
                break
            for pair in line.split()[1:]:
                event_id, position = pair.split(b"=")
                acks[bytes.fromhex(event_id.decode())] = int(position)
        child.send_signal(signal.SIGKILL)
        # Whatever the child printed before it died was acknowledged too.
        rest = child.communicate(timeout=10)[0]
        for line in rest.split(b"\n"):
            if line.startswith(b"ack "):
                for pair in line.split()[1:]:
                    event_id, position = pair.split(b"=")
                    acks[bytes.fromhex(event_id.decode())] = int(position)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return acks


def check_log(db: Path, acked: dict[bytes, int]) -> int:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, event_id, stream, version, payload FROM events ORDER BY seq").fetchall()
    positions = [r[0] for r in rows]
    assert positions == list(range(1, len(rows) + 1)), "positions must be contiguous"
    stored = {r[1]: r[0] for r in rows}
    missing = {k.hex(): v for k, v in acked.items() if stored.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged events lost or moved"
    by_request: dict[str, list[int]] = defaultdict(list)
    counts: dict[str, int] = {}
    for _, _, _, _, payload in rows:
        request, index, count = payload.decode().split(":")
        by_request[request].append(int(index))
        counts[request] = int(count)
    partial = [r for r, idx in by_request.items() if sorted(idx) != list(range(counts[r]))]
    assert not partial, f"half-written appends: {partial[:5]}"
    versions: dict[str, list[int]] = defaultdict(list)
    for _, _, stream, version, _ in rows:
        versions[stream].append(version)
    for stream, vs in versions.items():
        assert vs == list(range(len(vs))), f"stream {stream} versions not contiguous"
    return len(rows)


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_append(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random()
    acked: dict[bytes, int] = {}
    total = 0
    for round_ in range(3):  # each round reopens the log the previous one crashed
        acked |= run_and_kill(db, seed=round_, after_s=rng.uniform(0.3, 1.5))
        total = check_log(db, acked)
    assert len(acked) > 100, "the child acknowledged too little to prove anything"
    assert total >= len(acked)
