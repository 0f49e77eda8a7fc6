"""A node speaks only for itself, in its current epoch, about containers placed on it that have not ended: every
reportable event type, forged from another node's identity, from an older epoch, or about an ended container."""

from __future__ import annotations

import pytest

from api.controlplane import REPORTABLE, report_refusal
from store.projections import ClusterState, apply_all
from tests.builders import cid, registered, scheduled, submitted
from wire import events as ev


def world() -> ClusterState:
    """n1 (epoch 1) runs container 1; n2 (epoch 3) runs container 2; container 3 on n1 has exited; n3 is lost
    with container 4, which was lost with it."""
    state = ClusterState()
    events: list[ev.Event] = [
        registered("n1", epoch=1),
        registered("n2", epoch=3),
        registered("n3", epoch=1),
        *(submitted(n) for n in (1, 2, 3, 4)),
        scheduled(1, "n1"),
        scheduled(2, "n2"),
        scheduled(3, "n1"),
        scheduled(4, "n3"),
        ev.ContainerStarted(container_id=cid(1), node="n1", pid=10, started_ns=1),
        ev.ContainerStarted(container_id=cid(2), node="n2", pid=20, started_ns=1),
        ev.ContainerExited(container_id=cid(3), node="n1", exit_code=0, exited_ns=1),
        ev.NodeLost(node="n3", epoch=1),
        ev.ContainerLost(container_id=cid(4), node="n3"),
    ]
    apply_all(state, enumerate(events, start=1))
    return state


def report(kind: type, n: int, node: str) -> ev.Event:
    """An event of ``kind`` about container ``n``, as ``node`` would send it."""
    c = cid(n)
    return {
        ev.NodeImagesChanged: lambda: ev.NodeImagesChanged(node=node, images=("busybox:latest",)),
        ev.ImagePulled: lambda: ev.ImagePulled(node=node, image="a:1", image_id="sha256:" + "a" * 64, seconds=1.0),
        ev.ImagePullFailed: lambda: ev.ImagePullFailed(node=node, image="a:1", reason="manifest unknown"),
        ev.ImagePulling: lambda: ev.ImagePulling(node=node, image="a:1"),
        ev.ContainerWaiting: lambda: ev.ContainerWaiting(
            container_id=c, node=node, reason=ev.WaitReason.ERR_IMAGE_PULL, message="image pull failed: x"
        ),
        ev.ContainerStarted: lambda: ev.ContainerStarted(container_id=c, node=node, pid=1, started_ns=1),
        ev.ContainerExited: lambda: ev.ContainerExited(container_id=c, node=node, exit_code=0, exited_ns=1),
        ev.ContainerStopped: lambda: ev.ContainerStopped(container_id=c, node=node),
        ev.ContainerThrottled: lambda: ev.ContainerThrottled(container_id=c, node=node, throttled_ratio=0.5),
        ev.ContainerUnthrottled: lambda: ev.ContainerUnthrottled(container_id=c, node=node, throttled_ratio=0.0),
        ev.CpuBurstSet: lambda: ev.CpuBurstSet(container_id=c, node=node, burst_us=1000),
        ev.CfsQuotaScaled: lambda: ev.CfsQuotaScaled(container_id=c, node=node, from_us=1, to_us=2),
    }[kind]()


NODE_KINDS = (ev.NodeImagesChanged, ev.ImagePulling, ev.ImagePulled, ev.ImagePullFailed)  # about the node itself
CONTAINER_KINDS = [k for k in REPORTABLE if k not in NODE_KINDS]


@pytest.mark.parametrize("kind", CONTAINER_KINDS, ids=lambda k: k.__name__)
def test_a_node_reports_on_its_own_live_container(kind: type) -> None:
    assert report_refusal(world(), "n1", 1, report(kind, 1, "n1")) is None


@pytest.mark.parametrize("kind", CONTAINER_KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize(
    ("sender", "epoch", "n", "event_node", "why"),
    [
        pytest.param("n1", 1, 2, "n1", "not_placed_here", id="another-nodes-container"),
        pytest.param("n1", 1, 2, "n2", "other_node", id="naming-the-other-node"),
        pytest.param("n2", 2, 2, "n2", "stale_epoch", id="an-older-epoch"),
        pytest.param("n1", 1, 3, "n1", "ended", id="an-ended-container"),
        pytest.param("n3", 1, 4, "n3", "stale_epoch", id="a-lost-node"),
        pytest.param("n9", 1, 1, "n9", "unknown_node", id="an-unknown-node"),
        pytest.param("n1", 1, 99, "n1", "not_placed_here", id="an-unknown-container"),
    ],
)
def test_forged_or_stale_reports_are_refused(
    kind: type, sender: str, epoch: int, n: int, event_node: str, why: str
) -> None:
    state = world()
    refusal = report_refusal(state, sender, epoch, report(kind, n, event_node))
    assert refusal is not None and refusal[0] == why, refusal
    assert state == world()  # judging changes nothing


def test_node_level_reports_only_for_the_sender_itself() -> None:
    assert report_refusal(world(), "n1", 1, report(ev.NodeImagesChanged, 0, "n1")) is None
    refusal = report_refusal(world(), "n1", 1, report(ev.NodeImagesChanged, 0, "n2"))
    assert refusal is not None and refusal[0] == "other_node"


@pytest.mark.parametrize("kind", NODE_KINDS, ids=lambda k: k.__name__)
def test_a_node_speaks_of_its_own_images_only(kind: type) -> None:
    assert report_refusal(world(), "n1", 1, report(kind, 1, "n1")) is None
    assert report_refusal(world(), "n1", 1, report(kind, 1, "n2")) == ("other_node", "the event names node n2")
    refusal = report_refusal(world(), "n2", 2, report(kind, 1, "n2"))
    assert refusal is not None and refusal[0] == "stale_epoch"
