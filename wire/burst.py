"""CPU Burst configuration of the cluster and its nodes, with Koordinator's field names and defaults
(../shared/reference/cpu-burst.md); a container's own settings are ``wire.spec.BurstSettings``.

A cluster strategy, overridden by the first node strategy whose label selector matches the node, overridden
field by field by a container's own settings (all but the share-pool threshold, which is node-level only).
Fields left out (None) inherit from the level below; ``resolve`` gives the settings that apply.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from wire import checks
from wire.spec import BurstPolicy, BurstSettings, Labels, ThresholdPercent


class BurstStrategy(BurstSettings, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A cluster or node strategy: a container's fields plus the node-level share-pool threshold."""

    share_pool_threshold_percent: ThresholdPercent | None = None


class NodeBurstStrategy(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Applies to the nodes whose labels include every pair of ``selector`` (an empty selector: every node)."""

    selector: Labels = {}
    strategy: BurstStrategy = BurstStrategy()

    def __post_init__(self) -> None:
        checks.labels("selector", self.selector)


class BurstConfig(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration: the cluster strategy and the node strategies, first match wins."""

    cluster: BurstStrategy = BurstStrategy()
    nodes: Annotated[tuple[NodeBurstStrategy, ...], msgspec.Meta(max_length=256)] = ()


class Resolved(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The settings that apply to one container on one node: every field set."""

    policy: BurstPolicy = BurstPolicy.NONE
    cpu_burst_percent: int = 1000
    cfs_quota_burst_percent: int = 300
    cfs_quota_burst_period_seconds: int = -1
    share_pool_threshold_percent: int = 50


DEFAULTS = Resolved()


def node_strategy(config: BurstConfig, labels: dict[str, str]) -> BurstStrategy | None:
    """The first node strategy whose selector the node's labels satisfy."""
    for n in config.nodes:
        if all(labels.get(k) == v for k, v in n.selector.items()):
            return n.strategy
    return None


def resolve(config: BurstConfig, labels: dict[str, str], container: BurstSettings | None = None) -> Resolved:
    """Koordinator's defaults ← the cluster strategy ← the first matching node strategy ← the container's own
    settings (never its threshold: a container cannot say when its node is overloaded)."""
    fields: dict[str, object] = {}
    for level in (config.cluster, node_strategy(config, labels)):
        if level is not None:
            fields |= {k: v for k, v in msgspec.structs.asdict(level).items() if v is not None}
    if container is not None:
        fields |= {
            k: v
            for k, v in msgspec.structs.asdict(container).items()
            if v is not None and k != "share_pool_threshold_percent"
        }
    return msgspec.structs.replace(DEFAULTS, **fields)
