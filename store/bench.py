"""Event-log benchmark: ``python -m store.bench [--quick]``.

1. Durable appends/s (``synchronous=FULL``) with 100 concurrent appenders through the group-commit writer,
   beside a raw ``sqlite3`` executemany baseline on the same schema and durability, measured in the same run.
2. Replay of a realistic log (nodes registering; containers submitted, scheduled, started, throttled, exited)
   from SQLite into the cluster projection: read, check, decode and fold, beside a raw read + decode of the
   same rows in the same round.

Ratios are medians of each round's own ratio. The last line reads ``store: appends_per_s=N baseline_per_s=N
ratio=R replay_per_s=N replay_baseline_per_s=N replay_ratio=R``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import uvloop

from store.projections import ClusterState
from store.projector import catch_up
from store.recorder import NO_STREAM, NewEvent, StoredEvent
from store.sqlite import INSERT_EVENT, SCHEMA, UPSERT_STREAM, SqliteRecorder, checksum, read_only_uri
from wire import events as ev
from wire.checks import trusted
from wire.codec import decode_events, encode, event_type
from wire.ids import container_stream, new_event_id, node_stream
from wire.resources import Resources
from wire.spec import ContainerSpec, QoS
from wire.topology import Topology


def _event(payload: bytes = b"\x81\xa4type\xa1T") -> NewEvent:
    """An event as EventLog makes them: a UUIDv7 id (time-ordered, as Corral's event ids are)."""
    return NewEvent(new_event_id().bytes, "T", payload, time.time_ns())


async def bench_appends(path: Path, total: int, appenders: int) -> tuple[float, list[float], int]:
    recorder = await SqliteRecorder.open(path, synchronous="FULL")
    latencies: list[float] = []
    per = total // appenders

    async def appender(i: int) -> None:
        version = NO_STREAM
        for _ in range(per):
            t = time.perf_counter()
            await recorder.append(f"bench-{i}", [_event()], version)
            latencies.append(time.perf_counter() - t)
            version += 1

    start = time.perf_counter()
    await asyncio.gather(*(appender(i) for i in range(appenders)))
    elapsed = time.perf_counter() - start
    batches = recorder.batches
    await recorder.close()
    return per * appenders / elapsed, latencies, batches


def bench_baseline(path: Path, total: int, batch: int) -> float:
    """Raw sqlite3, same schema, synchronous=FULL, one executemany + commit per ``batch`` events."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    seq = 0
    start = time.perf_counter()
    for b in range(total // batch):
        rows = []
        for i in range(batch):
            seq += 1
            e = _event()
            rows.append(
                (seq, e.event_id, f"bench-{i}", b, e.type, 1, e.occurred_ns, e.occurred_ns, None, None, e.payload, 0)
            )
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_EVENT, rows)
        conn.executemany(UPSERT_STREAM, [(f"bench-{i}", b) for i in range(batch)])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return seq / elapsed


def realistic_log(n_events: int, seed: int = 7) -> list[tuple[str, ev.Event]]:
    """A cluster's life: 100 nodes register, then containers go submitted → scheduled → started →
    (sometimes throttled/unthrottled) → exited."""
    rng = random.Random(seed)
    topo = Topology.uniform(2, 2, 8, 2, memory_per_numa=64 << 30)
    out: list[tuple[str, ev.Event]] = []
    nodes = [f"node-{i}" for i in range(100)]
    for n in nodes:
        out.append(
            (node_stream(n), ev.NodeRegistered(node=n, topology=topo, capacity=Resources(64_000, 256 << 30), epoch=1))
        )
    specs = [
        ContainerSpec(
            name="web",
            image="busybox",
            command=("httpd", "-f"),
            cpu_request_millis=500,
            cpu_limit_millis=1000,
            memory_limit_bytes=256 << 20,
            labels={"app": "web"},
        ),
        ContainerSpec(
            name="db", image="busybox", cpu_request_millis=2000, cpu_limit_millis=2000, memory_limit_bytes=1 << 30
        ),
        ContainerSpec(name="batch", image="busybox", command=("sh", "-c", "work")),
    ]
    i = 0
    while len(out) < n_events:
        i += 1
        cid = f"{i:016x}"
        stream = container_stream(cid)
        spec = specs[i % 3]
        node = rng.choice(nodes)
        cpuset = (i % 32, i % 32 + 32) if spec.qos is QoS.LSR else ()
        out.append((stream, ev.ContainerSubmitted(container_id=cid, spec=spec)))
        out.append(
            (
                stream,
                ev.ContainerScheduled(
                    container_id=cid,
                    node=node,
                    epoch=1,
                    qos=spec.qos or QoS.LS,
                    cpuset=cpuset,
                    resources=Resources(spec.cpu_request_millis, spec.memory_limit_bytes or 0),
                    score=0.8,
                    reason="most allocated",
                ),
            )
        )
        out.append((stream, ev.ContainerStarted(container_id=cid, node=node, pid=1000 + i, started_ns=i)))
        if i % 4 == 0:
            out.append((stream, ev.ContainerThrottled(container_id=cid, node=node, throttled_ratio=0.4)))
            out.append((stream, ev.ContainerUnthrottled(container_id=cid, node=node, throttled_ratio=0.01)))
        out.append((stream, ev.ContainerExited(container_id=cid, node=node, exit_code=0, exited_ns=i + 5)))
    return out[:n_events]


def write_log(path: Path, events: list[tuple[str, ev.Event]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(SCHEMA)
    versions: dict[str, int] = {}
    rows = []
    for seq, (stream, e) in enumerate(events, start=1):
        version = versions[stream] = versions.get(stream, -1) + 1
        row = StoredEvent(seq, os.urandom(16), stream, version, event_type(e), 1, seq, seq, None, None, encode(e))
        rows.append((*msgspec.structs.astuple(row), checksum(row)))
    conn.execute("BEGIN")
    conn.executemany(INSERT_EVENT, rows)
    conn.executemany(UPSERT_STREAM, list(versions.items()))
    conn.execute("COMMIT")
    conn.close()


def bench_decode_baseline(path: Path, batch: int = 10_000) -> float:
    """Raw sqlite3 read of every payload in position order plus msgspec's decode of them: what a replay cannot
    beat (its fold and its checks come on top)."""
    conn = sqlite3.connect(read_only_uri(str(path)), uri=True, isolation_level=None)
    start, n, first = time.perf_counter(), 0, 1
    while True:
        sql = "SELECT payload FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq"
        payloads = [p for (p,) in conn.execute(sql, (first, first + batch - 1))]
        if not payloads:
            break
        with trusted():
            n += len(decode_events(payloads))
        first += batch
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


async def bench_replay(path: Path) -> tuple[float, ClusterState]:
    recorder = await SqliteRecorder.open(path)
    start = time.perf_counter()
    state = await catch_up(recorder, ClusterState())
    elapsed = time.perf_counter() - start
    await recorder.close()
    return state.position / elapsed, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs; finishes within 30 s")
    parser.add_argument("--appenders", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=None, help="append/baseline rounds (median is reported)")
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: a temporary directory)")
    args = parser.parse_args()
    appends = 20_000 if args.quick else 100_000
    replay_events = 200_000 if args.quick else 1_000_000
    rounds = args.rounds or (3 if args.quick else 5)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        print(
            f"durable appends: {appends} events, {args.appenders} concurrent appenders, synchronous=FULL, "
            f"{rounds} rounds (baseline: raw sqlite3 executemany, {args.appenders} events per transaction)"
        )
        rates, baselines, ratios, p50s, p99s = [], [], [], [], []
        for r in range(rounds):
            rate, lat, batches = uvloop.run(bench_appends(d / f"append-{r}.db", appends, args.appenders))
            base = bench_baseline(d / f"baseline-{r}.db", appends, args.appenders)
            lat.sort()
            p50, p99 = lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3
            rates.append(rate)
            baselines.append(base)
            ratios.append(rate / base)
            p50s.append(p50)
            p99s.append(p99)
            print(
                f"  round {r + 1}: corral {rate:,.0f}/s (p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                f"{appends / batches:.0f} events/transaction)   baseline {base:,.0f}/s   ratio {rate / base:.2f}"
            )
        rate, base = statistics.median(rates), statistics.median(baselines)
        print(
            f"  median: corral {rate:,.0f}/s, p50 {statistics.median(p50s):.2f} ms, "
            f"p99 {statistics.median(p99s):.2f} ms; baseline {base:,.0f}/s"
        )

        print(f"replay: generating {replay_events:,} events ...", flush=True)
        log = realistic_log(replay_events)
        write_log(d / "replay.db", log)
        del log
        replay_rates, decode_rates, replay_ratios = [], [], []
        for r in range(rounds):  # paired: each round's replay against its own raw read + decode
            rate_r, state = uvloop.run(bench_replay(d / "replay.db"))
            rate_d = bench_decode_baseline(d / "replay.db")
            replay_rates.append(rate_r)
            decode_rates.append(rate_d)
            replay_ratios.append(rate_r / rate_d)
            print(
                f"  round {r + 1}: {rate_r:,.0f} events/s   raw read + decode {rate_d:,.0f}/s   "
                f"ratio {rate_r / rate_d:.2f}"
            )
        replay_rate, decode_rate = statistics.median(replay_rates), statistics.median(decode_rates)
        print(
            f"  median: replayed into projections at {replay_rate:,.0f} events/s "
            f"(read, check, decode, fold; {len(state.nodes)} nodes, {len(state.containers):,} containers); "
            f"raw read + decode {decode_rate:,.0f}/s"
        )
    print(
        f"store: appends_per_s={rate:.0f} baseline_per_s={base:.0f} ratio={statistics.median(ratios):.2f} "
        f"replay_per_s={replay_rate:.0f} replay_baseline_per_s={decode_rate:.0f} "
        f"replay_ratio={statistics.median(replay_ratios):.2f}"
    )


if __name__ == "__main__":
    main()
