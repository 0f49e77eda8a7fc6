"""Hypothesis strategies for events over a small world (few nodes, containers, services), so that random
sequences hit the same entities often. Strategies are explicit: hypothesis ignores msgspec.Meta bounds."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.builders import cid, lsr, registered, spec
from wire import events as ev
from wire.burst import BurstConfig, BurstStrategy
from wire.resources import Resources
from wire.spec import BurstPolicy, QoS, ServiceSpec

nodes = st.sampled_from(["n1", "n2", "n3"])
containers = st.integers(1, 6).map(cid)
services = st.integers(100, 102).map(cid)
cpusets = st.lists(st.integers(0, 7), max_size=3, unique=True).map(lambda c: tuple(sorted(c)))
codes = st.none() | st.integers(0, 255)
ns = st.integers(0, 2**62)
ratios = st.floats(0, 1, allow_nan=False)
specs = st.sampled_from([spec("a"), spec("b", cpu_request_millis=500), lsr("c", 2)])

events: st.SearchStrategy[ev.Event] = st.one_of(
    st.builds(lambda n, e: registered(n, epoch=e), nodes, st.integers(1, 3)),
    st.builds(lambda n, e: ev.NodeLost(node=n, epoch=e), nodes, st.integers(1, 3)),
    st.builds(lambda n, e: ev.NodeRecovered(node=n, epoch=e), nodes, st.integers(1, 3)),
    st.builds(lambda n: ev.NodeCordoned(node=n), nodes),
    st.builds(lambda n: ev.NodeUncordoned(node=n), nodes),
    st.builds(lambda n: ev.NodeDrained(node=n), nodes),
    st.builds(
        lambda c, s, svc: ev.ContainerSubmitted(container_id=c, spec=s, service_id=svc),
        containers,
        specs,
        st.none() | services,
    ),
    st.builds(
        lambda c, n, cs: ev.ContainerScheduled(
            container_id=c,
            node=n,
            epoch=1,
            qos=QoS.LSR if cs else QoS.LS,
            cpuset=cs,
            resources=Resources(1000 * max(1, len(cs)), 1 << 20),
        ),
        containers,
        nodes,
        cpusets,
    ),
    st.builds(lambda c: ev.ContainerUnschedulable(container_id=c, nodes_total=3, reasons={"cpu": 3}), containers),
    st.builds(lambda c, n, t: ev.ContainerStarted(container_id=c, node=n, pid=42, started_ns=t), containers, nodes, ns),
    st.builds(
        lambda c, n, x, t: ev.ContainerExited(container_id=c, node=n, exit_code=x, exited_ns=t),
        containers,
        nodes,
        codes,
        ns,
    ),
    st.builds(lambda c: ev.ContainerStopRequested(container_id=c), containers),
    st.builds(lambda c, n, x: ev.ContainerStopped(container_id=c, node=n, exit_code=x), containers, nodes, codes),
    st.builds(lambda c, n: ev.ContainerLost(container_id=c, node=n), containers, nodes),
    st.builds(
        lambda c, n, r: ev.ContainerThrottled(container_id=c, node=n, throttled_ratio=r), containers, nodes, ratios
    ),
    st.builds(
        lambda c, n, r: ev.ContainerUnthrottled(container_id=c, node=n, throttled_ratio=r), containers, nodes, ratios
    ),
    st.builds(
        lambda c, n, b: ev.CpuBurstSet(container_id=c, node=n, burst_us=b), containers, nodes, st.integers(0, 10**6)
    ),
    st.builds(
        lambda c, n: ev.CfsQuotaScaled(container_id=c, node=n, from_us=100_000, to_us=120_000), containers, nodes
    ),
    st.builds(
        lambda p: ev.BurstPolicyChanged(config=BurstConfig(cluster=BurstStrategy(policy=p))),
        st.sampled_from(BurstPolicy),
    ),
    st.builds(
        lambda s, r: ev.ServiceCreated(service_id=s, spec=ServiceSpec(name="svc", replicas=r, template=spec("t"))),
        services,
        st.integers(0, 5),
    ),
    st.builds(lambda s, r: ev.ServiceScaled(service_id=s, replicas_from=0, replicas_to=r), services, st.integers(0, 9)),
    st.builds(lambda s: ev.ServiceDeleted(service_id=s), services),
)
