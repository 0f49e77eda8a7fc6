"""store.recorder.plan_batch and validate_append: the pure decisions every recorder's append rests on.

Each case of the table gives the stored state (stream versions, stored event ids, head) and a batch of
requests, and the whole BatchPlan expected back: the rows to write, one result per request (positions, or
the error that request fails with) and the changed stream versions.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.errors import DuplicateEventId, InvalidAppend, PayloadTooLarge, StoreError, WrongExpectedVersion
from store.recorder import (
    ANY,
    MAX_EVENTS_PER_APPEND,
    MAX_PAYLOAD_BYTES,
    NO_STREAM,
    STREAM_EXISTS,
    AppendRequest,
    BatchPlan,
    Existing,
    NewEvent,
    StoredEvent,
    plan_batch,
    validate_append,
)

OCCURRED_NS = 1_700_000_000_000_000_000
RECORDED_NS = 1_700_000_000_123_456_789


# --- builders ------------------------------------------------------------------------------------------------


def eid(name: str) -> bytes:
    """A readable 16-byte event id: ``eid("a") == b"a_______________"``."""
    return name.encode().ljust(16, b"_")


def new(name: str, **kw: Any) -> NewEvent:
    """The event called ``name``: its id and payload derive from the name."""
    return NewEvent(eid(name), f"T{name}", name.encode(), kw.pop("occurred_ns", OCCURRED_NS), **kw)


def req(stream: str, names: str, expected: int) -> AppendRequest:
    """``req("s", "ab", ANY)``: append events a and b to stream s."""
    return AppendRequest(stream, [new(n) for n in names], expected)


def row(position: int, name: str, stream: str, version: int) -> StoredEvent:
    """The row ``new(name)`` becomes."""
    e = new(name)
    return StoredEvent(
        position, e.event_id, stream, version, e.type, e.schema, e.occurred_ns, RECORDED_NS, None, None, e.payload
    )


def stored(**where: tuple[int, str, int]) -> dict[bytes, Existing]:
    """``stored(a=(3, "s", 0))``: event a is stored at position 3, as version 0 of stream s."""
    return {eid(name): Existing(*at) for name, at in where.items()}


class Wrong(NamedTuple):
    stream: str
    expected: int
    current: int


class Dup(NamedTuple):
    stream: str
    event: str  # the name of the event id the error names
    detail: str


Expected = list[int] | Wrong | Dup

PARTIAL = "is stored, but the rest of this append is not"
DIFFERENT = "is stored as part of a different append"


def describe(result: list[int] | StoreError) -> tuple[Any, ...] | list[int]:
    """A result in a comparable form: exceptions compare by identity, so compare type, fields and message."""
    if isinstance(result, WrongExpectedVersion):
        return ("WrongExpectedVersion", result.stream, result.expected, result.current, str(result))
    if isinstance(result, DuplicateEventId):
        return ("DuplicateEventId", result.stream, result.event_id, str(result))
    assert isinstance(result, list), f"unexpected result {result!r}"
    return result


def expected_result(e: Expected) -> tuple[Any, ...] | list[int]:
    if isinstance(e, Wrong):
        return describe(WrongExpectedVersion(*e))
    if isinstance(e, Dup):
        return describe(DuplicateEventId(e.stream, eid(e.event), e.detail))
    return e


class Case(NamedTuple):
    requests: list[AppendRequest]
    rows: list[StoredEvent]
    results: list[Expected]
    versions: dict[str, int]  # the changed versions the plan reports
    current: dict[str, int] = {}  # stored stream versions (absent: -1)
    existing: dict[bytes, Existing] = {}
    head: int = 0


def check(case: Case) -> None:
    plan = plan_batch(case.requests, case.current, case.existing, case.head, RECORDED_NS)
    assert isinstance(plan, BatchPlan)
    assert plan.rows == case.rows
    assert [describe(r) for r in plan.results] == [expected_result(r) for r in case.results]
    assert plan.versions == case.versions


# --- expected versions ---------------------------------------------------------------------------------------

EXPECTED_VERSION_CASES = [
    pytest.param(
        Case([req("s", "ab", ANY)], [row(1, "a", "s", 0), row(2, "b", "s", 1)], [[1, 2]], {"s": 1}),
        id="any-new-stream",
    ),
    pytest.param(
        Case([req("s", "a", ANY)], [row(11, "a", "s", 5)], [[11]], {"s": 5}, current={"s": 4}, head=10),
        id="any-existing-stream",
    ),
    pytest.param(
        Case([req("s", "a", NO_STREAM)], [row(1, "a", "s", 0)], [[1]], {"s": 0}),
        id="no-stream-absent",
    ),
    pytest.param(
        Case([req("s", "a", NO_STREAM)], [row(4, "a", "s", 0)], [[4]], {"s": 0}, current={"s": -1}, head=3),
        id="no-stream-given-as-minus-one",
    ),
    pytest.param(
        Case([req("s", "a", NO_STREAM)], [], [Wrong("s", NO_STREAM, 0)], {}, current={"s": 0}, head=1),
        id="no-stream-but-it-exists",
    ),
    pytest.param(
        Case([req("s", "a", STREAM_EXISTS)], [], [Wrong("s", STREAM_EXISTS, -1)], {}),
        id="stream-exists-but-absent",
    ),
    pytest.param(
        Case([req("s", "a", STREAM_EXISTS)], [row(4, "a", "s", 3)], [[4]], {"s": 3}, current={"s": 2}, head=3),
        id="stream-exists-and-it-does",
    ),
    pytest.param(
        Case([req("s", "a", STREAM_EXISTS)], [row(2, "a", "s", 1)], [[2]], {"s": 1}, current={"s": 0}, head=1),
        id="stream-exists-at-version-0",
    ),
    pytest.param(
        Case([req("s", "ab", 2)], [row(8, "a", "s", 3), row(9, "b", "s", 4)], [[8, 9]], {"s": 4}, {"s": 2}, head=7),
        id="exact-version-matches",
    ),
    pytest.param(
        Case([req("s", "a", 1)], [], [Wrong("s", 1, 2)], {}, current={"s": 2}, head=7),
        id="exact-version-stale",
    ),
    pytest.param(
        Case([req("s", "a", 5)], [], [Wrong("s", 5, 2)], {}, current={"s": 2}, head=7),
        id="exact-version-ahead",
    ),
    pytest.param(
        Case([req("s", "a", 0)], [], [Wrong("s", 0, -1)], {}),
        id="exact-version-0-on-absent-stream",
    ),
]


@pytest.mark.parametrize("case", EXPECTED_VERSION_CASES)
def test_expected_versions(case: Case) -> None:
    check(case)


# --- several requests in one batch ---------------------------------------------------------------------------

BATCH_CASES = [
    pytest.param(
        Case(
            [req("s", "a", NO_STREAM), req("s", "b", 0)],
            [row(1, "a", "s", 0), row(2, "b", "s", 1)],
            [[1], [2]],
            {"s": 1},
        ),
        id="second-request-sees-the-first-ones-version",
    ),
    pytest.param(
        Case(
            [req("s", "ab", ANY), req("s", "c", STREAM_EXISTS), req("s", "d", 2)],
            [row(6, "a", "s", 0), row(7, "b", "s", 1), row(8, "c", "s", 2), row(9, "d", "s", 3)],
            [[6, 7], [8], [9]],
            {"s": 3},
            head=5,
        ),
        id="three-requests-chain-on-one-stream",
    ),
    pytest.param(
        Case(
            [req("s", "a", NO_STREAM), req("s", "b", NO_STREAM)],
            [row(1, "a", "s", 0)],
            [[1], Wrong("s", NO_STREAM, 0)],
            {"s": 0},
        ),
        id="second-no-stream-loses-the-race",
    ),
    pytest.param(
        Case(
            [req("x", "a", ANY), req("s", "b", NO_STREAM), req("y", "c", ANY)],
            [row(4, "a", "x", 0), row(5, "c", "y", 0)],
            [[4], Wrong("s", NO_STREAM, 2), [5]],
            {"x": 0, "y": 0},
            current={"s": 2},
            head=3,
        ),
        id="stale-request-between-two-good-ones",
    ),
    pytest.param(
        Case(
            [req("s", "a", 3), req("t", "b", NO_STREAM), req("s", "c", 4), req("t", "d", 0)],
            [row(11, "a", "s", 4), row(12, "b", "t", 0), row(13, "c", "s", 5), row(14, "d", "t", 1)],
            [[11], [12], [13], [14]],
            {"s": 5, "t": 1},
            current={"s": 3},
            head=10,
        ),
        id="interleaved-streams-keep-their-own-versions",
    ),
    pytest.param(
        Case(
            [req("s", "a", 7), req("s", "b", NO_STREAM)],
            [row(1, "b", "s", 0)],
            [Wrong("s", 7, -1), [1]],
            {"s": 0},
        ),
        id="a-failed-request-does-not-move-the-version",
    ),
]


@pytest.mark.parametrize("case", BATCH_CASES)
def test_batches(case: Case) -> None:
    check(case)


# --- idempotency by event id -----------------------------------------------------------------------------------

IDEMPOTENCY_CASES = [
    pytest.param(
        Case([req("s", "ab", ANY)], [], [[3, 4]], {}, {"s": 1}, stored(a=(3, "s", 0), b=(4, "s", 1)), head=4),
        id="retry-of-a-stored-append",
    ),
    pytest.param(
        Case([req("s", "ab", NO_STREAM)], [], [[3, 4]], {}, {"s": 5}, stored(a=(3, "s", 0), b=(4, "s", 1)), head=9),
        id="retry-with-a-stale-expected-version-still-matches",
    ),
    pytest.param(
        Case(
            [req("s", "ab", NO_STREAM), req("s", "ab", NO_STREAM)],
            [row(1, "a", "s", 0), row(2, "b", "s", 1)],
            [[1, 2], [1, 2]],
            {"s": 1},
        ),
        id="retry-of-an-append-earlier-in-the-batch",
    ),
    pytest.param(
        Case(
            [req("s", "a", ANY), req("t", "b", ANY), req("s", "a", ANY)],
            [row(1, "a", "s", 0), row(2, "b", "t", 0)],
            [[1], [2], [1]],
            {"s": 0, "t": 0},
        ),
        id="retry-in-the-batch-after-another-stream",
    ),
    pytest.param(
        Case(
            [req("s", "bc", ANY)],
            [],
            [[5, 6]],
            {},
            {"s": 2},
            stored(a=(4, "s", 0), b=(5, "s", 1), c=(6, "s", 2)),
            head=6,
        ),
        # The documented rule: same stream, consecutive versions, same order.
        id="tail-of-a-stored-append-is-a-retry",
    ),
    pytest.param(
        Case([req("s", "ab", ANY)], [], [Dup("s", "a", PARTIAL)], {}, {"s": 0}, stored(a=(1, "s", 0)), head=1),
        id="partial-overlap-stored-first",
    ),
    pytest.param(
        Case(
            [req("s", "a", ANY), req("s", "ab", ANY)],
            [row(1, "a", "s", 0)],
            [[1], Dup("s", "a", PARTIAL)],
            {"s": 0},
        ),
        id="partial-overlap-with-an-append-earlier-in-the-batch",
    ),
    pytest.param(
        Case(
            [req("t", "a", NO_STREAM)],
            [],
            [Dup("t", "a", "is stored in stream 's'")],
            {},
            {"t": -1},
            stored(a=(1, "s", 0)),
            head=1,
        ),
        id="same-id-in-another-stream",
    ),
    pytest.param(
        Case(
            [req("s", "a", ANY), req("t", "a", ANY)],
            [row(1, "a", "s", 0)],
            [[1], Dup("t", "a", "is stored in stream 's'")],
            {"s": 0},
        ),
        id="same-id-in-another-stream-earlier-in-the-batch",
    ),
    pytest.param(
        Case(
            [req("s", "ba", NO_STREAM)],
            [],
            [Dup("s", "a", DIFFERENT)],
            {},
            {"s": 1},
            stored(a=(1, "s", 0), b=(2, "s", 1)),
            head=2,
        ),
        id="reordered-retry",
    ),
    pytest.param(
        Case(
            [req("s", "ac", ANY)],
            [],
            [Dup("s", "c", DIFFERENT)],
            {},
            {"s": 2},
            stored(a=(1, "s", 0), c=(3, "s", 2)),
            head=3,
        ),
        id="ids-stored-with-a-gap-between-them",
    ),
    pytest.param(
        Case(
            [req("s", "a", NO_STREAM), req("t", "a", NO_STREAM)],
            [row(5, "a", "t", 0)],
            [Wrong("s", NO_STREAM, 0), [5]],
            {"t": 0},
            current={"s": 0},
            head=4,
        ),
        id="ids-of-a-rejected-request-stay-free",
    ),
    pytest.param(
        Case(
            [req("x", "c", ANY), req("s", "ab", ANY), req("y", "d", ANY)],
            [row(3, "c", "x", 0), row(4, "d", "y", 0)],
            [[3], [1, 2], [4]],
            {"x": 0, "y": 0},
            {"s": 1},
            stored(a=(1, "s", 0), b=(2, "s", 1)),
            head=2,
        ),
        id="a-retry-between-new-appends-takes-no-positions",
    ),
]


@pytest.mark.parametrize("case", IDEMPOTENCY_CASES)
def test_idempotency(case: Case) -> None:
    check(case)


def test_partial_overlap_stored_last_names_the_stored_id() -> None:
    # b is new, a is stored: the error must name a ("event id a... is stored"), not b, which is not stored.
    check(Case([req("s", "ba", ANY)], [], [Dup("s", "a", PARTIAL)], {}, {"s": 0}, stored(a=(1, "s", 0)), head=1))


# --- rows carry each event's envelope, stamped with one recorded_ns ----------------------------------------------


def test_rows_carry_the_envelope_and_the_batch_recorded_ns() -> None:
    a = new("a", occurred_ns=11, correlation=b"c" * 16, causation=b"d" * 16, schema=3)
    b = new("b", occurred_ns=12)
    plan = plan_batch([AppendRequest("s", [a], ANY), AppendRequest("t", [b], ANY)], {}, {}, 0, 99)
    assert plan.rows == [
        StoredEvent(1, a.event_id, "s", 0, "Ta", 3, 11, 99, b"c" * 16, b"d" * 16, b"a"),
        StoredEvent(2, b.event_id, "t", 0, "Tb", 1, 12, 99, None, None, b"b"),
    ]


def test_an_empty_batch_plans_nothing() -> None:
    assert plan_batch([], {"s": 3}, {}, 10, RECORDED_NS) == BatchPlan([], [], {})


# --- validate_append -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "events", "expected"),
    [
        pytest.param("s", [new("a")], ANY, id="simplest"),
        pytest.param("a" * 200, [new("a")], ANY, id="stream-200-chars"),
        pytest.param("Node-1.x_y:z/w", [new("a")], ANY, id="stream-every-allowed-character"),
        pytest.param("9", [new("a")], ANY, id="stream-starting-with-a-digit"),
        pytest.param("s", [new("a")], STREAM_EXISTS, id="stream-exists"),
        pytest.param("s", [new("a")], NO_STREAM, id="no-stream"),
        pytest.param("s", [new("a")], 0, id="version-0"),
        pytest.param("s", [new("a")], 10**9, id="large-version"),
        pytest.param("s", [new(str(i)) for i in range(MAX_EVENTS_PER_APPEND)], ANY, id="max-events"),
        pytest.param("s", [NewEvent(eid("a"), "T", b"x" * MAX_PAYLOAD_BYTES, 1)], ANY, id="max-payload"),
        pytest.param("s", [NewEvent(eid("a"), "", b"", 0)], ANY, id="empty-type-and-payload"),
    ],
)
def test_validate_append_accepts(stream: str, events: list[NewEvent], expected: int) -> None:
    validate_append(stream, events, expected)


@pytest.mark.parametrize(
    ("stream", "events", "expected", "match"),
    [
        pytest.param("", [new("a")], ANY, "stream: '' is not a stream name", id="empty-stream"),
        pytest.param("a" * 201, [new("a")], ANY, "is not a stream name", id="stream-201-chars"),
        pytest.param("-s", [new("a")], ANY, "is not a stream name", id="stream-starting-with-dash"),
        pytest.param(".s", [new("a")], ANY, "is not a stream name", id="stream-starting-with-dot"),
        pytest.param("has space", [new("a")], ANY, "is not a stream name", id="stream-with-space"),
        pytest.param("caf\u00e9", [new("a")], ANY, "is not a stream name", id="stream-non-ascii"),
        pytest.param("\ns", [new("a")], ANY, "is not a stream name", id="stream-leading-newline"),
        pytest.param("s", [], ANY, "stream 's': an append needs at least one event", id="no-events"),
        pytest.param(
            "s",
            [new(str(i)) for i in range(MAX_EVENTS_PER_APPEND + 1)],
            ANY,
            f"{MAX_EVENTS_PER_APPEND + 1} events is over {MAX_EVENTS_PER_APPEND}",
            id="too-many-events",
        ),
        pytest.param("s", [new("a")], STREAM_EXISTS - 1, "expected_version: -4", id="version-below-stream-exists"),
        pytest.param("s", [NewEvent(b"x" * 15, "T", b"", 1)], ANY, "16 bytes, got 15", id="event-id-15-bytes"),
        pytest.param("s", [NewEvent(b"x" * 17, "T", b"", 1)], ANY, "16 bytes, got 17", id="event-id-17-bytes"),
        pytest.param("s", [NewEvent(b"", "T", b"", 1)], ANY, "16 bytes, got 0", id="event-id-empty"),
        pytest.param("s", [new("a"), new("b"), new("a")], ANY, "appears twice in one append", id="duplicate-ids"),
    ],
)
def test_validate_append_rejects(stream: str, events: list[NewEvent], expected: int, match: str) -> None:
    with pytest.raises(InvalidAppend, match=match):
        validate_append(stream, events, expected)


def test_validate_append_rejects_a_trailing_newline() -> None:
    with pytest.raises(InvalidAppend, match="is not a stream name"):
        validate_append("s\n", [new("a")], ANY)


def test_validate_append_reports_an_oversized_payload() -> None:
    big = NewEvent(eid("b"), "T", b"x" * (MAX_PAYLOAD_BYTES + 1), 1)
    with pytest.raises(PayloadTooLarge) as err:
        validate_append("s", [new("a"), big], ANY)
    assert (err.value.size, err.value.limit) == (MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES)


# --- properties ------------------------------------------------------------------------------------------------

STREAMS = ["a", "b", "c"]
ID_POOL = [bytes([i]) * 16 for i in range(12)]  # a small pool, so that batches reuse ids and hit retries

requests_strategy = st.lists(
    st.builds(
        lambda stream, ids, expected: AppendRequest(stream, [NewEvent(i, "T", b"", 1) for i in ids], expected),
        st.sampled_from(STREAMS),
        st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=4, unique=True),
        st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS, 0, 1, 2, 3]),
    ),
    max_size=8,
)
versions_strategy = st.dictionaries(st.sampled_from(STREAMS), st.integers(-1, 3))
existing_strategy = st.dictionaries(
    st.sampled_from(ID_POOL),
    st.builds(Existing, st.integers(1, 20), st.sampled_from(STREAMS), st.integers(0, 3)),
    max_size=6,
)
heads = st.integers(20, 10**6)  # stored positions (1..20) are at or before the head


@given(requests_strategy, versions_strategy, existing_strategy, heads)
def test_rows_take_the_positions_after_the_head_contiguously(
    requests: list[AppendRequest], versions: dict[str, int], existing: dict[bytes, Existing], head: int
) -> None:
    plan = plan_batch(requests, versions, existing, head, RECORDED_NS)
    assert [r.position for r in plan.rows] == list(range(head + 1, head + 1 + len(plan.rows)))
    assert all(r.recorded_ns == RECORDED_NS for r in plan.rows)


@given(requests_strategy, versions_strategy, existing_strategy, heads)
def test_stream_versions_continue_from_the_current_version(
    requests: list[AppendRequest], versions: dict[str, int], existing: dict[bytes, Existing], head: int
) -> None:
    plan = plan_batch(requests, versions, existing, head, RECORDED_NS)
    written = {r.stream for r in plan.rows}
    assert set(plan.versions) == written
    for stream in written:
        start = versions.get(stream, -1) + 1
        got = [r.version for r in plan.rows if r.stream == stream]
        assert got == list(range(start, start + len(got)))
        assert plan.versions[stream] == got[-1]


@given(requests_strategy, versions_strategy, existing_strategy, heads)
def test_one_result_per_request_and_every_row_is_some_requests_result(
    requests: list[AppendRequest], versions: dict[str, int], existing: dict[bytes, Existing], head: int
) -> None:
    plan = plan_batch(requests, versions, existing, head, RECORDED_NS)
    assert len(plan.results) == len(requests)
    for request, result in zip(requests, plan.results, strict=True):
        assert isinstance(result, list | WrongExpectedVersion | DuplicateEventId)
        if isinstance(result, list):
            assert len(result) == len(request.events)
    new_positions = [p for r in plan.results if isinstance(r, list) for p in r if p > head]
    assert sorted(set(new_positions)) == [r.position for r in plan.rows]
    assert len({r.event_id for r in plan.rows}) == len(plan.rows)


@given(requests_strategy, versions_strategy, existing_strategy, heads)
def test_inputs_are_not_mutated(
    requests: list[AppendRequest], versions: dict[str, int], existing: dict[bytes, Existing], head: int
) -> None:
    before = copy.deepcopy((requests, versions, existing))
    plan_batch(requests, versions, existing, head, RECORDED_NS)
    assert (requests, versions, existing) == before
