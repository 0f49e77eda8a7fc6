"""NATS subject names. A nodelet's credentials allow only the subjects of its own node."""

from __future__ import annotations

from wire.ids import is_dns1123_label

PREFIX = "corral"


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


def register(node: str) -> str:
    """Nodelet → control plane registration (request/reply); per node, so one node cannot register as another."""
    return f"{PREFIX}.register.{_node(node)}"


def inbox_prefix(node: str) -> str:
    """The reply-inbox prefix a nodelet connects with (nats-py ``inbox_prefix``), so it reads only its own replies."""
    return f"_INBOX.{PREFIX}.{_node(node)}"


CONTROL_INBOX = f"_INBOX.{PREFIX}-control"  # the control plane's reply-inbox prefix
NODE_REPORTS = ("register", "lease", "evt", "sync", "stats")  # what nodes send the control plane, per node


def control_subscriptions() -> tuple[str, ...]:
    """What the control plane listens to: every node's reports."""
    return tuple(f"{PREFIX}.{kind}.*" for kind in NODE_REPORTS)


def control_permissions() -> dict[str, object]:
    """The control plane's NATS user permissions: send commands to nodes, listen to their reports and its own
    replies, answer their requests — and nothing else (no other subject, no node's inbox)."""
    return {
        "publish": {"allow": [f"{PREFIX}.cmd.*"]},
        "subscribe": {"allow": [*control_subscriptions(), f"{CONTROL_INBOX}.>"]},
        "allow_responses": {"max": 1},
    }


def node_permissions(node: str) -> dict[str, object]:
    """One nodelet's NATS user permissions (nats-server config): publish to its own subjects, subscribe to its
    own commands and reply inbox, and answer requests sent to it (``allow_responses``)."""
    return {
        "publish": {"allow": [register(node), evt(node), lease(node), stats(node), sync(node)]},
        "subscribe": {"allow": [cmd(node), f"{inbox_prefix(node)}.>"]},
        "allow_responses": {"max": 1},
    }
