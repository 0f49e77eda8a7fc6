"""Identifiers and stream names.

Event and command ids are UUIDv7 (time-ordered), which keeps the event log's unique index append-friendly.
Container and service ids are 16 hex digits, like a Docker short id but longer.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Annotated

import msgspec

from wire.checks import DNS1123_LABEL, HEX_ID, schema_pattern

# Lengths are checked on decode; patterns by the containing Struct's __post_init__ (see wire.checks).
_HEX = msgspec.Meta(
    min_length=16, max_length=16, description="16 lowercase hex digits", extra_json_schema=schema_pattern(HEX_ID)
)
ContainerId = Annotated[str, _HEX]
ServiceId = Annotated[str, _HEX]
Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=63,
        description="a DNS-1123 label: lowercase letters, digits and '-', at most 63, alphanumeric at both ends",
        extra_json_schema=schema_pattern(DNS1123_LABEL),
    ),
]
NodeName = Name


def uuid7(now_ns: int | None = None, rand: bytes | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits."""
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    r = os.urandom(10) if rand is None else rand
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(r, "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def new_event_id() -> uuid.UUID:
    return uuid7()


def new_command_id() -> uuid.UUID:
    return uuid7()


def command_id(container_id: str, epoch: int, operation: str) -> uuid.UUID:
    """A command's id derived from what it does (container, the node's epoch, operation): sent again, by a sync
    or a retry, it is the same command, and the node answers it once."""
    return uuid.uuid5(uuid.NAMESPACE_OID, f"corral/{container_id}/{epoch}/{operation}")


def new_container_id() -> str:
    return os.urandom(8).hex()


def new_service_id() -> str:
    return os.urandom(8).hex()


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and DNS1123_LABEL.fullmatch(value) is not None


def container_stream(container_id: str) -> str:
    return f"container-{container_id}"


def node_stream(node: str) -> str:
    return f"node-{node}"


def service_stream(service_id: str) -> str:
    return f"service-{service_id}"


BURST_POLICY_STREAM = "cluster-burst-policy"  # the cluster's CPU Burst configuration, one event per change
