"""wire.ids and wire.subjects: identifiers, UUIDv7, DNS-1123 labels, stream names and NATS subjects."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import checks, subjects
from wire.ids import (
    container_stream,
    is_dns1123_label,
    new_command_id,
    new_container_id,
    new_event_id,
    new_service_id,
    node_stream,
    service_stream,
    uuid7,
)

MAX_UUID7_MS = (1 << 48) - 1
HEX_ID = re.compile(r"[0-9a-f]{16}")

# Strategies are spelled out: hypothesis does not read msgspec.Meta bounds.
node_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
uuid7_now_ns = st.integers(min_value=0, max_value=MAX_UUID7_MS * 1_000_000 + 999_999)
uuid7_rand = st.binary(min_size=10, max_size=10)


# --- container and service ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("new_id", [new_container_id, new_service_id], ids=["container", "service"])
def test_new_ids_match_id_pattern(new_id: Callable[[], str]) -> None:
    ids = {new_id() for _ in range(64)}
    assert all(HEX_ID.fullmatch(i) for i in ids)
    assert len(ids) == 64


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        pytest.param("0123456789abcdef", True, id="hex16"),
        pytest.param("ffffffffffffffff", True, id="all-f"),
        pytest.param("0123456789ABCDEF", False, id="uppercase"),
        pytest.param("0123456789abcde", False, id="15-digits"),
        pytest.param("0123456789abcdef0", False, id="17-digits"),
        pytest.param("0123456789abcdeg", False, id="non-hex"),
        pytest.param("0123456789abcdef\n", False, id="trailing-newline"),
        pytest.param("../../etc/passwd", False, id="path-traversal"),
        pytest.param("", False, id="empty"),
    ],
)
def test_hex_id_check(value: str, valid: bool) -> None:
    if valid:
        checks.hex_id("container_id", value)
    else:
        with pytest.raises(ValueError, match=r"^container_id: .* is not an id"):
            checks.hex_id("container_id", value)


# --- DNS-1123 labels -----------------------------------------------------------------------------------------

LABELS = [
    pytest.param("a", True, id="one-letter"),
    pytest.param("0", True, id="one-digit"),
    pytest.param("n1", True, id="n1"),
    pytest.param("1n", True, id="leading-digit"),
    pytest.param("123", True, id="all-digits"),
    pytest.param("web-1", True, id="dash-inside"),
    pytest.param("a--b", True, id="double-dash-inside"),
    pytest.param("a" * 63, True, id="63-chars"),
    pytest.param("", False, id="empty"),
    pytest.param("a" * 64, False, id="64-chars"),
    pytest.param("A", False, id="uppercase"),
    pytest.param("Web", False, id="mixed-case"),
    pytest.param("a_b", False, id="underscore"),
    pytest.param("-a", False, id="leading-dash"),
    pytest.param("a-", False, id="trailing-dash"),
    pytest.param("a.b", False, id="dot"),
    pytest.param("a b", False, id="space"),
    pytest.param(" a", False, id="leading-space"),
    pytest.param("*", False, id="nats-star"),
    pytest.param(">", False, id="nats-gt"),
    pytest.param("n1.>", False, id="nats-tail-wildcard"),
    pytest.param("é", False, id="non-ascii"),
    pytest.param("n1\n", False, id="trailing-newline"),
    pytest.param("\nn1", False, id="leading-newline"),
]


@pytest.mark.parametrize(("value", "valid"), LABELS)
def test_is_dns1123_label(value: str, valid: bool) -> None:
    assert is_dns1123_label(value) is valid


@pytest.mark.parametrize(("value", "valid"), LABELS)
def test_dns1123_label_check_agrees_with_is_dns1123_label(value: str, valid: bool) -> None:
    if valid:
        checks.dns1123_label("node", value)
    else:
        with pytest.raises(ValueError, match=r"^node: .* is not a DNS-1123 label"):
            checks.dns1123_label("node", value)


@given(node_names)
def test_generated_labels_are_labels(name: str) -> None:
    assert is_dns1123_label(name)


# --- UUIDv7 --------------------------------------------------------------------------------------------------


@given(uuid7_now_ns, uuid7_rand)
def test_uuid7_layout(now_ns: int, rand: bytes) -> None:
    u = uuid7(now_ns, rand)
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert u.int >> 80 == now_ns // 1_000_000
    # Everything but the 4 version bits and 2 variant bits comes from rand.
    kept = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)
    assert u.int & kept == int.from_bytes(rand, "big") & kept


@given(uuid7_now_ns, uuid7_now_ns, uuid7_rand, uuid7_rand)
def test_uuid7_is_ordered_by_millisecond(a_ns: int, b_ns: int, a_rand: bytes, b_rand: bytes) -> None:
    a, b = uuid7(a_ns, a_rand), uuid7(b_ns, b_rand)
    if a_ns // 1_000_000 < b_ns // 1_000_000:
        assert a < b
        assert a.bytes < b.bytes
    elif a_ns // 1_000_000 > b_ns // 1_000_000:
        assert a > b


@given(st.lists(uuid7_now_ns, min_size=2, max_size=20, unique_by=lambda ns: ns // 1_000_000))
def test_uuid7_sorts_like_its_timestamps(times: list[int]) -> None:
    ids = [uuid7(ns) for ns in times]
    assert sorted(ids) == [uuid7_at for _, uuid7_at in sorted(zip(times, ids, strict=True))]


def test_uuid7_is_deterministic_given_time_and_randomness() -> None:
    assert uuid7(1_700_000_000_123_456_789, bytes(10)) == uuid7(1_700_000_000_123_999_999, bytes(10))
    assert uuid7(1_700_000_000_123_456_789, bytes(10)) == uuid.UUID("018bcfe5-687b-7000-8000-000000000000")


@pytest.mark.parametrize("new_id", [new_event_id, new_command_id], ids=["event", "command"])
def test_new_uuid_ids_are_version_7_and_distinct(new_id: Callable[[], uuid.UUID]) -> None:
    ids = {new_id() for _ in range(64)}
    assert len(ids) == 64
    assert {(u.version, u.variant) for u in ids} == {(7, uuid.RFC_4122)}


# --- stream names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "arg", "stream"),
    [
        pytest.param(container_stream, "0123456789abcdef", "container-0123456789abcdef", id="container"),
        pytest.param(node_stream, "n1", "node-n1", id="node"),
        pytest.param(service_stream, "fedcba9876543210", "service-fedcba9876543210", id="service"),
    ],
)
def test_stream_names(make: Callable[[str], str], arg: str, stream: str) -> None:
    assert make(arg) == stream


# --- NATS subjects -------------------------------------------------------------------------------------------

SUBJECT_FUNCTIONS = [
    pytest.param(subjects.cmd, "corral.cmd.n1", id="cmd"),
    pytest.param(subjects.evt, "corral.evt.n1", id="evt"),
    pytest.param(subjects.lease, "corral.lease.n1", id="lease"),
    pytest.param(subjects.stats, "corral.stats.n1", id="stats"),
    pytest.param(subjects.sync, "corral.sync.n1", id="sync"),
]

BAD_NODE_NAMES = [
    pytest.param("a.b", id="dot-adds-a-token"),
    pytest.param("*", id="star-wildcard"),
    pytest.param(">", id="gt-wildcard"),
    pytest.param("n1.*", id="embedded-star"),
    pytest.param("n1.>", id="embedded-gt"),
    pytest.param("", id="empty"),
    pytest.param("N1", id="uppercase"),
    pytest.param("n 1", id="space"),
    pytest.param("n1\r\nPUB x 1", id="protocol-injection-crlf"),
    pytest.param("n1\n", id="trailing-newline"),
    pytest.param("a" * 64, id="too-long"),
]


@pytest.mark.parametrize(("subject", "expected"), SUBJECT_FUNCTIONS)
def test_subject_for_node(subject: Callable[[str], str], expected: str) -> None:
    assert subject("n1") == expected


def test_register_and_inbox_are_per_node() -> None:
    assert subjects.register("n1") == "corral.register.n1"
    assert subjects.inbox_prefix("n1") == "_INBOX.corral.n1"


@pytest.mark.parametrize(("subject", "expected"), SUBJECT_FUNCTIONS)
@pytest.mark.parametrize("node", BAD_NODE_NAMES)
def test_subject_rejects_non_label_node(subject: Callable[[str], str], expected: str, node: str) -> None:
    with pytest.raises(ValueError, match=r"^node: .* is not a DNS-1123 label$"):
        subject(node)


@pytest.mark.parametrize("node", BAD_NODE_NAMES)
def test_node_permissions_reject_non_label_node(node: str) -> None:
    with pytest.raises(ValueError, match="is not a DNS-1123 label"):
        subjects.node_permissions(node)


def test_node_permissions_exact() -> None:
    assert subjects.node_permissions("n1") == {
        "publish": {
            "allow": ["corral.register.n1", "corral.evt.n1", "corral.lease.n1", "corral.stats.n1", "corral.sync.n1"]
        },
        "subscribe": {"allow": ["corral.cmd.n1", "_INBOX.corral.n1.>"]},
        "allow_responses": {"max": 1},
    }


def _granted(node: str) -> list[str]:
    perms = subjects.node_permissions(node)
    return perms["publish"]["allow"] + perms["subscribe"]["allow"]  # type: ignore[index,operator]


@given(node_names, node_names)
def test_node_permissions_grant_only_the_nodes_own_subjects(node: str, other: str) -> None:
    for subject in _granted(node):
        tokens = subject.split(".")
        assert "*" not in tokens
        if tokens[0] == "_INBOX":
            assert tokens == ["_INBOX", "corral", node, ">"]
        else:
            assert tokens[0] == "corral"
            assert tokens[2:] == [node]
            assert ">" not in tokens
    if other != node:
        assert not set(_granted(node)) & set(_granted(other))
