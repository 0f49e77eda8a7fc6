"""The lease table: table-driven histories of registrations, heartbeats, ticks and outages, and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.leases import LeaseTable
from wire.commands import LeaseStatus as Beat

S = 10**9
LEASE = 3 * S


def run(steps: list[tuple[Any, ...]]) -> list[Any]:
    """Apply ``steps`` to a table that hears from 0; return what each step answered (None for void steps)."""
    table = LeaseTable(LEASE)
    table.hear(0)
    out: list[Any] = []
    for op, *args in steps:
        if op == "tick":
            out.append(table.expire(args[0] * S // 10))  # ticks in tenths of a second
        elif op == "reg":
            node, epoch, t = args
            out.append(table.registered(node, epoch, t * S // 10))
        elif op == "beat":  # the node last heard the control plane ``unanswered`` tenths before the beat
            node, epoch, t, *unanswered = args
            out.append(table.heartbeat(node, epoch, t * S // 10, sum(unanswered) * S // 10))
        elif op == "load":
            node, epoch, lost, t = args
            out.append(table.load(node, epoch, lost, t * S // 10))
        elif op == "deaf":
            out.append(table.deaf())
        elif op == "hear":
            out.append(table.hear(args[0] * S // 10, reconnected=True))
    return out


def ticks(start: int, stop: int) -> list[tuple[Any, ...]]:
    """A tick every 0.25 s (as the control plane's loop), in tenths: rounded, never a gap that deafens."""
    return [("tick", t) for t in range(start, stop + 1, 2)]


def expired_in(answers: list[Any]) -> list[tuple[str, int]]:
    return [x for a in answers if isinstance(a, list) for x in a]


CASES = [
    pytest.param(
        [("reg", "n1", 1, 0), *ticks(0, 29)],
        [],
        id="renewed-by-registration-holds-for-a-lease",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), *ticks(0, 32)],
        [("n1", 1)],
        id="silent-past-the-lease-is-lost",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), *ticks(0, 20), ("beat", "n1", 1, 20), *ticks(22, 48)],
        [],
        id="a-heartbeat-renews",
    ),
    pytest.param(
        [("reg", "n1", 2, 0), *ticks(0, 20), ("beat", "n1", 1, 20), *ticks(22, 32)],
        [("n1", 2)],
        id="a-heartbeat-of-an-older-epoch-renews-nothing",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), *ticks(0, 80)],
        [("n1", 1)],
        id="lost-once-not-at-every-tick",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), *ticks(0, 10), ("deaf",), *ticks(12, 100), ("hear", 100), *ticks(100, 128)],
        [],
        id="an-outage-judges-nothing-and-a-reconnect-gives-a-full-lease",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), *ticks(0, 10), ("deaf",), *ticks(12, 100), ("hear", 100), *ticks(100, 132)],
        [("n1", 1)],
        id="silent-for-a-lease-after-a-reconnect-is-lost",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), *ticks(0, 10), ("tick", 60), *ticks(62, 88)],
        [],
        id="a-stall-of-the-control-plane-restarts-the-clock",
    ),
    pytest.param(
        [("load", "n1", 4, False, 0), ("load", "n2", 2, True, 0), *ticks(0, 29)],
        [],
        id="loaded-at-start-a-live-node-gets-a-full-lease",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), ("reg", "n2", 1, 0), *ticks(0, 20), ("beat", "n2", 1, 20), *ticks(22, 40)],
        [("n1", 1)],
        id="only-the-silent-node",
    ),
    pytest.param(
        [
            ("reg", "n1", 1, 0),
            ("beat", "n1", 1, 10, 5),
            ("beat", "n1", 1, 20, 15),
            ("beat", "n1", 1, 30, 25),
            *ticks(0, 36),
        ],
        [("n1", 1)],
        id="beats-that-hear-nothing-back-renew-nothing-past-the-last-round-trip",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), ("beat", "n1", 1, 10, 5), ("beat", "n1", 1, 20, 15), *ticks(0, 34)],
        [],
        id="renewed-back-to-the-last-round-trip-and-held-for-a-lease",
    ),
    pytest.param(
        [("reg", "n1", 1, 0), ("beat", "n1", 1, 20, 2), ("beat", "n1", 1, 21, 21), *ticks(0, 46)],
        [],
        id="a-late-beat-never-moves-the-renewal-back",
    ),
    pytest.param(
        [
            ("reg", "n1", 1, 0),
            *ticks(0, 10),
            ("deaf",),
            *ticks(12, 100),
            ("hear", 100),
            ("beat", "n1", 1, 101, 91),
            *ticks(102, 128),
        ],
        [],
        id="after-a-reconnect-a-beat-that-heard-nothing-back-keeps-the-grace",
    ),
]


@pytest.mark.parametrize(("steps", "lost"), CASES)
def test_leases(steps: list[tuple[Any, ...]], lost: list[tuple[str, int]]) -> None:
    assert expired_in(run(steps)) == lost


BEATS = [
    pytest.param([("beat", "n1", 1, 1)], Beat.UNKNOWN, id="never-registered"),
    pytest.param([("reg", "n1", 1, 0), ("beat", "n1", 1, 1)], Beat.RENEWED, id="current-epoch"),
    pytest.param([("reg", "n1", 3, 0), ("beat", "n1", 2, 1)], Beat.STALE, id="older-epoch"),
    pytest.param([("reg", "n1", 3, 0), ("beat", "n1", 4, 1)], Beat.UNKNOWN, id="newer-epoch-than-known"),
    pytest.param([("reg", "n1", 1, 0), *ticks(0, 40), ("beat", "n1", 1, 41)], Beat.LOST, id="after-it-was-lost"),
    pytest.param([("load", "n1", 2, True, 0), ("beat", "n1", 2, 1)], Beat.LOST, id="lost-in-the-log-at-start"),
    pytest.param(
        [("reg", "n1", 1, 0), *ticks(0, 40), ("reg", "n1", 2, 41), ("beat", "n1", 2, 42)],
        Beat.RENEWED,
        id="re-registered-after-lost",
    ),
]


def test_after_a_reconnect_every_node_gets_the_grace_first() -> None:
    table = LeaseTable(LEASE, grace_ns=2 * LEASE)
    table.hear(0)
    table.registered("n1", 1, 0)
    table.deaf()
    table.hear(10 * S, reconnected=True)  # silent since 0, yet not lost before the grace after the reconnect
    assert [x for t in range(102, 162, 2) for x in table.expire(t * S // 10)] == []
    assert table.expire(int(16.2 * S)) == [("n1", 1)]


def test_a_node_heard_after_a_reconnect_has_its_own_lease_not_the_grace() -> None:
    table = LeaseTable(LEASE, grace_ns=2 * LEASE)
    table.hear(0)
    table.registered("n1", 1, 0)
    table.registered("n2", 1, 0)
    table.deaf()
    table.hear(10 * S, reconnected=True)
    table.heartbeat("n1", 1, 11 * S)  # heard again at 11 s, then silent (it failed just after the reconnect)
    lost = {t: table.expire(t * S // 10) for t in range(102, 162, 2)}
    assert [(t, x) for t, xs in lost.items() for x in xs] == [(142, ("n1", 1))]  # 11 s + its lease, not 16 s
    assert table.expire(int(16.2 * S)) == [("n2", 1)]  # never heard again: the grace, then lost


def test_a_node_heard_after_a_reconnect_with_no_round_trip_yet_has_a_lease_from_the_reconnect() -> None:
    """Its beats arrive, but they were sent before any answer could reach it (the control plane was away or
    stalled): its last round trip is older than the reconnect. It fails at once: lost a lease after the
    reconnect, not after the grace (chaos measured 4.5 s when a node was killed just after a control-plane
    restart)."""
    table = LeaseTable(LEASE, grace_ns=2 * LEASE)
    table.hear(0)
    table.registered("n1", 1, 0)
    table.registered("n2", 1, 0)
    table.deaf()
    table.hear(10 * S, reconnected=True)
    table.heartbeat("n1", 1, 10 * S + S // 10, 5 * S)  # heard, last answered 5 s before (the outage), then dead
    lost = {t: table.expire(t * S // 10) for t in range(102, 162, 2)}
    assert [(t, x) for t, xs in lost.items() for x in xs] == [(132, ("n1", 1))]  # 3 s after, not 6 s
    assert table.expire(int(16.2 * S)) == [("n2", 1)]  # never heard: the grace


def test_a_node_that_reconnects_late_keeps_its_grace_and_then_has_a_lease_from_its_first_beat() -> None:
    """Grace twice the lease: a node first heard 3 s after the reconnect (later than a lease, within the grace),
    its beat saying it heard nothing for 20 s (the outage), is renewed by that beat, not lost at once; silent
    from then, it is lost a lease after that beat."""
    table = LeaseTable(LEASE, grace_ns=2 * LEASE)
    table.hear(0)
    table.registered("n1", 1, 0)
    table.deaf()
    table.hear(10 * S, reconnected=True)
    assert [x for t in range(102, 130, 2) for x in table.expire(t * S // 10)] == []
    assert table.heartbeat("n1", 1, 13 * S, 20 * S) is Beat.RENEWED
    lost = {t: table.expire(t * S // 10) for t in range(130, 170, 2)}
    assert [(t, x) for t, xs in lost.items() for x in xs] == [(162, ("n1", 1))]  # 13 s + 3 s, not at once


def test_nodes_loaded_at_start_get_a_lease_not_the_grace() -> None:
    """At its own start the control plane finds the nodes connected to NATS already (their beats arrive within
    one): a lease is enough, and a node that died meanwhile is found a lease after the start."""
    table = LeaseTable(LEASE, grace_ns=2 * LEASE)
    table.hear(5 * S)
    table.load("n1", 1, False, 5 * S)  # as the control plane starts: loaded with the same now
    assert [x for t in range(52, 80, 2) for x in table.expire(t * S // 10)] == []
    assert table.expire(int(8.2 * S)) == [("n1", 1)]


@pytest.mark.parametrize(("steps", "answer"), BEATS)
def test_heartbeat_answers(steps: list[tuple[Any, ...]], answer: Beat) -> None:
    last = run(steps)[-1]
    assert last == answer
    assert last.reregister == (answer is not Beat.RENEWED)


def test_a_lost_node_stays_lost_until_it_registers_again() -> None:
    table = LeaseTable(LEASE)
    table.hear(0)
    table.registered("n1", 1, 0)
    assert table.expire(4 * S) == []  # the first tick after 4 s: a stall of its own, not the node's silence
    assert [x for t in range(42, 74, 2) for x in table.expire(t * S // 10)] == [("n1", 1)]  # a lease later
    assert table.is_lost("n1")
    assert table.heartbeat("n1", 1, int(7.25 * S)) is Beat.LOST
    table.registered("n1", 2, int(7.3 * S))
    assert not table.is_lost("n1")
    assert table.expire(int(7.4 * S)) == []


@given(
    beats=st.lists(st.integers(min_value=0, max_value=200), max_size=40),
    outages=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 60)), max_size=4),
)
def test_property_a_node_heard_within_every_lease_while_listening_is_never_lost(
    beats: list[int], outages: list[tuple[int, int]]
) -> None:
    """Ticks every 0.2 s over 20 s; heartbeats at ``beats`` (tenths) plus every 2.9 s; random outages (the
    control plane deaf, then hearing again). A node is lost only if, within time the control plane could hear,
    3 s passed without a heartbeat."""
    table = LeaseTable(LEASE)
    table.hear(0)
    table.registered("n1", 1, 0)
    regular = set(range(0, 201, 29)) | set(beats)
    deaf_at = {start: start + length for start, length in outages}
    deaf_until = -1
    for t in range(0, 201, 2):
        now = t * S // 10
        if t in deaf_at or t + 1 in deaf_at:
            table.deaf()
            deaf_until = max(deaf_until, deaf_at.get(t, deaf_at.get(t + 1, 0)))
        if deaf_until >= 0 and t >= deaf_until:
            table.hear(now)
            deaf_until = -1
        for b in (t, t + 1):
            if b in regular:
                table.heartbeat("n1", 1, b * S // 10)
        assert table.expire(now) == [], t


@given(
    answers=st.lists(st.integers(min_value=0, max_value=200), max_size=40),
    beat_every=st.integers(min_value=1, max_value=10),
)
def test_property_lost_exactly_when_no_round_trip_within_a_lease(answers: list[int], beat_every: int) -> None:
    """A node beats every ``beat_every`` tenths over 20 s and hears the control plane only at ``answers`` (and its
    registration at 0). It is lost exactly when, at a tick, more than 3 s passed since the last round trip the
    control plane knows of (what the latest beat said) -- however many of its beats arrived."""
    table = LeaseTable(LEASE)
    table.hear(0)
    table.registered("n1", 1, 0)
    heard = sorted({0, *answers})
    known = 0  # the last round trip the control plane knows of, in tenths
    lost_at = None
    for t in range(0, 201):
        if t % beat_every == 0 and lost_at is None:
            last = max(a for a in heard if a <= t)
            table.heartbeat("n1", 1, t * S // 10, (t - last) * S // 10)
            known = max(known, last)
        if t % 2 == 0:
            expired = table.expire(t * S // 10)
            should = lost_at is None and (t - known) * S // 10 > LEASE
            assert (expired == [("n1", 1)]) == should, (t, known)
            if expired:
                lost_at = t
