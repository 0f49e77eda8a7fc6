"""NATS subject names. A nodelet's credentials allow only the subjects of its own node."""

from __future__ import annotations

from wire.ids import is_dns1123_label

PREFIX = "corral"
REGISTER = f"{PREFIX}.register"  # nodelet → control plane, request/reply


def _node(node: str) -> str:
    if not is_dns1123_label(node):
        raise ValueError(f"node: {node!r} is not a DNS-1123 label")
    return node


def cmd(node: str) -> str:
    """Control plane → nodelet commands (request/reply)."""
    return f"{PREFIX}.cmd.{_node(node)}"


def evt(node: str) -> str:
    """Nodelet → control plane lifecycle and throttling events."""
    return f"{PREFIX}.evt.{_node(node)}"


def lease(node: str) -> str:
    """Nodelet → control plane heartbeats (not stored as events)."""
    return f"{PREFIX}.lease.{_node(node)}"


def stats(node: str) -> str:
    """Nodelet → control plane resource samples (a bounded telemetry table, not the event log)."""
    return f"{PREFIX}.stats.{_node(node)}"


def sync(node: str) -> str:
    """Nodelet → control plane "what should I be running?" (request/reply)."""
    return f"{PREFIX}.sync.{_node(node)}"


def node_subjects(node: str) -> dict[str, list[str]]:
    """What one nodelet may publish and subscribe to (for its NATS user's permissions)."""
    return {
        "publish": [evt(node), lease(node), stats(node), sync(node), REGISTER, "_INBOX.>"],
        "subscribe": [cmd(node), "_INBOX.>"],
    }
