"""Rankers: they only score feasible nodes; higher is better."""

from __future__ import annotations

import enum

from scheduler.feasible import Request
from scheduler.snapshot import NodeSnap

SPREAD_PENALTY = 1.0  # per replica of the same service already on the node: more than any utilisation score
# Kubernetes' ImageLocality: a node that holds the image already starts it sooner. A tenth of the utilisation
# range: it breaks near-ties, never outweighs spread (a replica costs 1.0), and fit is decided before any score.
IMAGE_LOCALITY = 0.1


class Scoring(enum.StrEnum):
    MOST_ALLOCATED = "MostAllocated"  # bin-pack
    LEAST_ALLOCATED = "LeastAllocated"  # spread


def utilisation_after(node: NodeSnap, req: Request) -> float:
    """Mean of CPU and memory utilisation if the container were placed here, in [0, 1]."""
    cpu_cap = len(node.cpus) * 1000 or 1
    cpu_used = node.cpu_millis_used + (req.exclusive_cpus * 1000 if req.qos.exclusive else req.cpu_millis)
    mem_cap = node.capacity.memory_bytes or 1
    return (min(cpu_used / cpu_cap, 1.0) + min((node.memory + req.memory) / mem_cap, 1.0)) / 2


def score(node: NodeSnap, req: Request, scoring: Scoring) -> float:
    """Utilisation (packed or spread), minus a penalty per replica of the same service already there (a soft
    anti-affinity: replicas spread over nodes when they can, and still place when they cannot), plus a small
    bonus where the image is already (ImageLocality)."""
    u = utilisation_after(node, req)
    base = u if scoring is Scoring.MOST_ALLOCATED else 1.0 - u
    if req.service_id is not None:
        base -= SPREAD_PENALTY * node.services.get(req.service_id, 0)
    if holds_image(node, req):
        base += IMAGE_LOCALITY
    return base


def holds_image(node: NodeSnap, req: Request) -> bool:
    """The node said it holds the image (one that did not say gets no bonus)."""
    return bool(req.image) and node.images is not None and req.image in node.images
