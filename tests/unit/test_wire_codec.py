"""wire.codec with wire.events and wire.commands: msgpack/JSON round trips, unknown types, schema evolution."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import cid, lsr, registered, scheduled, service, spec, submitted
from wire import commands as cmd
from wire import events as ev
from wire.burst import BurstConfig, BurstStrategy, NodeBurstStrategy
from wire.codec import (
    UnknownEventType,
    command_decoder,
    decode_event,
    decode_events,
    encode,
    encode_json,
    event_type,
    node_message_decoder,
    reply_decoder,
)
from wire.resources import MAX_CPU_MILLIS, Resources
from wire.spec import BurstPolicy, QoS
from wire.topology import Topology

GI = 2**30
COMMAND_ID = uuid.UUID("0190a5c4-1f2e-7a3b-8c4d-5e6f708192a3")

# One instance of every event type, with every field away from its default where that is possible.
EVENTS: list[ev.Event] = [
    registered("n1", cpus=8, epoch=3),
    ev.NodeRegistered(
        node="test-node",
        topology=Topology.uniform(1, 2, 2, 2),
        capacity=Resources(8000, 4 * GI),
        epoch=1,
        labels={"zone": "a", "corral.io/ssd": "true"},
        cpu_map={0: 0, 1: 1, 4: 0, 5: 1},
        images=("busybox:latest", "app:1", "sha256:" + "a" * 64),
        host_mounts=("/srv/data",),
    ),
    ev.NodeImagesChanged(node="n1", images=("busybox:latest",)),
    ev.ImagePulling(node="n1", image="127.0.0.1:5000/demo:1"),
    ev.ImagePulled(
        node="n1", image="127.0.0.1:5000/demo:1", image_id="sha256:" + "a" * 64, seconds=0.8, size_bytes=2_000_000
    ),
    ev.ImagePullFailed(node="n1", image="127.0.0.1:5000/demo:2", reason="manifest unknown"),
    ev.NodeLost(node="n1", epoch=3, last_seen_ns=1_700_000_000_000_000_000),
    ev.NodeRecovered(node="n1", epoch=4),
    ev.NodeCordoned(node="n1", reason="kernel upgrade"),
    ev.NodeUncordoned(node="n1"),
    ev.NodeDrained(node="n1"),
    submitted(1),
    ev.ContainerSubmitted(container_id=cid(2), spec=lsr("db", cpus=4), service_id=cid(99), idempotency_key="req-42"),
    scheduled(1),
    scheduled(2, node="n2", cpuset=(0, 1, 32, 33)),
    ev.ContainerScheduled(
        container_id=cid(3),
        node="n1",
        epoch=2,
        qos=QoS.LSE,
        cpuset=(4, 5),
        numa_nodes=(0,),
        resources=Resources(2000, GI),
        score=0.875,
        reason="least allocated",
    ),
    ev.ContainerResized(
        container_id=cid(1), node="n1", cpu_request_millis=700, cpu_limit_millis=1500, resources=Resources(700, GI)
    ),
    ev.ContainerUnschedulable(
        container_id=cid(4), nodes_total=3, reasons={"insufficient cpu": 2, "cordoned": 1}, message="0/3 nodes"
    ),
    ev.ContainerStarted(container_id=cid(1), node="n1", pid=4242, started_ns=1_700_000_000_000_000_001),
    ev.ContainerExited(container_id=cid(1), node="n1", exit_code=137, exited_ns=5, signal=9, oom_killed=True),
    ev.ContainerExited(container_id=cid(1), node="n1", exit_code=None, exited_ns=5),
    ev.ContainerWaiting(
        container_id=cid(1), node="n1", reason=ev.WaitReason.IMAGE_PULL_BACK_OFF, message="back-off 20 s pulling image"
    ),
    ev.ContainerStopRequested(container_id=cid(1), grace_s=2.5, reason="user"),
    ev.ContainerStopped(container_id=cid(1), node="n1", exit_code=0, stopped_ns=7),
    ev.ContainerLost(container_id=cid(1), node="n1", reason="node lost"),
    ev.ContainerRemoved(container_id=cid(1)),
    service("api", replicas=3),
    ev.ServiceScaled(service_id=cid(99), replicas_from=3, replicas_to=5),
    ev.ServiceDeleted(service_id=cid(99)),
    ev.ContainerThrottled(container_id=cid(1), node="n1", throttled_ratio=0.25),
    ev.ContainerUnthrottled(container_id=cid(1), node="n1", throttled_ratio=0.01),
    ev.CpuBurstSet(container_id=cid(1), node="n1", burst_us=50_000),
    ev.CfsQuotaScaled(container_id=cid(1), node="n1", from_us=100_000, to_us=150_000, reason="throttled"),
    ev.BurstPolicyChanged(
        config=BurstConfig(
            cluster=BurstStrategy(policy=BurstPolicy.AUTO, cpu_burst_percent=300),
            nodes=(
                NodeBurstStrategy(selector={"pool": "web"}, strategy=BurstStrategy(share_pool_threshold_percent=70)),
            ),
        )
    ),
]


def _id(event: ev.Event) -> str:
    return event_type(event)


# --- events --------------------------------------------------------------------------------------------------


def test_catalog_covers_every_event_type() -> None:
    assert {event_type(e) for e in EVENTS} == set(ev.EVENT_TYPES)


def test_event_types_are_keyed_by_class_name() -> None:
    assert all(name == cls.__name__ for name, cls in ev.EVENT_TYPES.items())
    assert len(ev.EVENT_TYPES) == len(ev.Event.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_event_msgpack_round_trip(event: ev.Event) -> None:
    payload = encode(event)
    assert msgspec.msgpack.decode(payload)["type"] == event_type(event)
    assert decode_event(payload) == event


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_event_json_round_trip(event: ev.Event) -> None:
    assert msgspec.json.decode(encode_json(event), type=ev.Event) == event


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_event_type_is_the_class_name(event: ev.Event) -> None:
    assert event_type(event) == type(event).__name__
    assert ev.EVENT_TYPES[event_type(event)] is type(event)


@pytest.mark.parametrize(
    "type_name",
    [
        pytest.param("NodeExploded", id="unknown"),
        pytest.param("nodelost", id="wrong-case"),
        pytest.param("_Event", id="base-class"),
        pytest.param("StartContainer", id="a-command-not-an-event"),
        pytest.param("", id="empty"),
    ],
)
def test_unknown_event_type(type_name: str) -> None:
    with pytest.raises(UnknownEventType) as info:
        decode_event(encode({"type": type_name, "node": "n1"}))
    assert info.value.type_name == type_name
    assert str(info.value) == f"unknown event type {type_name!r}"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        pytest.param({"type": "NodeLost", "node": "n1"}, "missing required field `epoch`", id="missing-field"),
        pytest.param({"type": "NodeLost", "node": "n1", "epoch": -1}, "`$.epoch`", id="negative-epoch"),
        pytest.param({"type": "NodeLost", "node": "n1", "epoch": "1"}, "got `str` - at `$.epoch`", id="wrong-type"),
        pytest.param({"type": "NodeDrained", "node": ""}, "`$.node`", id="empty-node"),
        pytest.param([1, 2], "Expected `object`, got `array`", id="not-a-map"),
    ],
)
def test_invalid_event_payload_is_a_validation_error(payload: Any, error: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        decode_event(encode(payload))
    assert not isinstance(info.value, UnknownEventType)
    assert error in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"node": "n1"}, id="no-type"),
        pytest.param({"type": None, "node": "n1"}, id="null-type"),
        pytest.param({"type": 5, "node": "n1"}, id="int-type"),
        pytest.param({"type": ["NodeLost"], "node": "n1"}, id="array-type-raises-TypeError"),
        pytest.param({"type": {"a": 1}, "node": "n1"}, id="map-type-raises-TypeError"),
    ],
)
def test_payload_without_a_string_type_is_a_validation_error(payload: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(encode(payload))


def test_malformed_msgpack_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event(b"\xc1")


# --- schema evolution ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old_payload", "event"),
    [
        pytest.param(
            {"type": "NodeLost", "node": "n1", "epoch": 3},
            ev.NodeLost(node="n1", epoch=3, last_seen_ns=0),
            id="NodeLost-last_seen_ns",
        ),
        pytest.param({"type": "NodeCordoned", "node": "n1"}, ev.NodeCordoned(node="n1", reason=""), id="reason"),
        pytest.param(
            {"type": "ContainerSubmitted", "container_id": cid(1), "spec": {"name": "web", "image": "busybox"}},
            ev.ContainerSubmitted(container_id=cid(1), spec=spec("web"), service_id=None, idempotency_key=None),
            id="ContainerSubmitted-optional-ids",
        ),
        pytest.param(
            {"type": "ContainerScheduled", "container_id": cid(1), "node": "n1", "epoch": 1, "qos": "LS"},
            ev.ContainerScheduled(
                container_id=cid(1),
                node="n1",
                epoch=1,
                qos=QoS.LS,
                cpuset=(),
                numa_nodes=(),
                resources=Resources(0, 0),
                score=0.0,
                reason="",
            ),
            id="ContainerScheduled-placement-details",
        ),
        pytest.param(
            {"type": "ContainerExited", "container_id": cid(1), "node": "n1", "exit_code": 1, "exited_ns": 9},
            ev.ContainerExited(container_id=cid(1), node="n1", exit_code=1, exited_ns=9, signal=None, oom_killed=False),
            id="ContainerExited-signal-oom",
        ),
        pytest.param(
            {"type": "BurstPolicyChanged", "config": {}},
            ev.BurstPolicyChanged(config=BurstConfig()),
            id="BurstPolicyChanged-defaults",
        ),
        pytest.param(
            {"type": "CpuBurstSet", "container_id": cid(1), "node": "n1", "burst_us": 5},
            ev.CpuBurstSet(container_id=cid(1), node="n1", burst_us=5, reason=""),
            id="CpuBurstSet-reason",
        ),
        pytest.param(
            {
                "type": "NodeRegistered",
                "node": "n1",
                "topology": msgspec.to_builtins(Topology.uniform()),
                "capacity": {"cpu_millis": 1000},
                "epoch": 1,
            },
            ev.NodeRegistered(
                node="n1", topology=Topology.uniform(), capacity=Resources(1000, 0), epoch=1, labels={}, cpu_map={}
            ),
            id="NodeRegistered-labels-cpu_map",
        ),
    ],
)
def test_payload_without_a_defaulted_field_decodes_with_the_default(
    old_payload: dict[str, Any], event: ev.Event
) -> None:
    assert decode_event(encode(old_payload)) == event


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_payload_with_an_unknown_field_still_decodes(event: ev.Event) -> None:
    newer = {**msgspec.to_builtins(event), "added_in_a_later_version": {"any": [1, "thing"]}}
    assert decode_event(encode(newer)) == event


def test_field_order_does_not_matter() -> None:
    assert decode_event(encode({"epoch": 2, "node": "n1", "type": "NodeRecovered"})) == ev.NodeRecovered(
        node="n1", epoch=2
    )


# --- hypothesis: events built from explicit strategies -------------------------------------------------------

node_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
container_ids = st.integers(min_value=0, max_value=2**64 - 1).map(lambda n: f"{n:016x}")
epochs = st.integers(min_value=0, max_value=2**63 - 1)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
uint64s = st.integers(min_value=0, max_value=2**64 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=50)
cpusets = st.lists(st.integers(min_value=0, max_value=65535), max_size=16).map(tuple)
resources = st.builds(
    Resources,
    cpu_millis=st.integers(min_value=0, max_value=MAX_CPU_MILLIS),
    memory_bytes=st.integers(min_value=0, max_value=64 * 2**40),
)
topologies = st.builds(
    Topology.uniform,
    st.integers(min_value=1, max_value=2),
    st.integers(min_value=1, max_value=2),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=2),
    st.integers(min_value=0, max_value=2**40),
)

events = st.one_of(
    st.builds(
        ev.NodeRegistered,
        node=node_names,
        topology=topologies,
        capacity=resources,
        epoch=epochs,
        labels=st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=3),
        cpu_map=st.dictionaries(st.integers(0, 65535), st.integers(0, 65535), max_size=4),
    ),
    st.builds(ev.NodeLost, node=node_names, epoch=epochs, last_seen_ns=int64s),
    st.builds(ev.NodeCordoned, node=node_names, reason=text),
    st.builds(
        ev.ContainerScheduled,
        container_id=container_ids,
        node=node_names,
        epoch=epochs,
        qos=st.sampled_from(QoS),
        cpuset=cpusets,
        numa_nodes=st.lists(st.integers(0, 1023), max_size=4).map(tuple),
        resources=resources,
        score=finite,
        reason=text,
    ),
    st.builds(
        ev.ContainerUnschedulable,
        container_id=container_ids,
        nodes_total=st.integers(0, 10_000),
        reasons=st.dictionaries(text, st.integers(0, 10_000), max_size=4),
        message=text,
    ),
    st.builds(
        ev.ContainerExited,
        container_id=container_ids,
        node=node_names,
        exit_code=st.none() | st.integers(-255, 255),
        exited_ns=int64s,
        signal=st.none() | st.integers(1, 64),
        oom_killed=st.booleans(),
    ),
    st.builds(ev.ContainerStopRequested, container_id=container_ids, grace_s=st.floats(0, 3600), reason=text),
    st.builds(
        ev.ServiceScaled,
        service_id=container_ids,
        replicas_from=st.integers(0, 10_000),
        replicas_to=st.integers(0, 10_000),
    ),
    st.builds(ev.ContainerThrottled, container_id=container_ids, node=node_names, throttled_ratio=finite),
    st.builds(
        ev.CfsQuotaScaled, container_id=container_ids, node=node_names, from_us=uint64s, to_us=uint64s, reason=text
    ),
)


@given(events)
def test_generated_events_round_trip(event: ev.Event) -> None:
    assert decode_event(encode(event)) == event
    assert msgspec.json.decode(encode_json(event), type=ev.Event) == event


# --- commands, replies and node messages ---------------------------------------------------------------------

COMMANDS: list[cmd.Command] = [
    cmd.StartContainer(command_id=COMMAND_ID, epoch=3, container_id=cid(1), spec=spec("web")),
    cmd.StartContainer(
        command_id=COMMAND_ID, epoch=3, container_id=cid(2), spec=lsr("db"), cpuset=(2, 3), numa_nodes=(0,)
    ),
    cmd.StopContainer(command_id=COMMAND_ID, epoch=3, container_id=cid(1)),
    cmd.StopContainer(command_id=COMMAND_ID, epoch=3, container_id=cid(1), grace_s=0.0),
    cmd.UpdateResources(command_id=COMMAND_ID, epoch=3, container_id=cid(1)),
    cmd.UpdateResources(
        command_id=COMMAND_ID, epoch=3, container_id=cid(1), cpu_limit_millis=1500, cpuset=(0, 1), burst_us=0
    ),
    cmd.GetLogs(command_id=COMMAND_ID, container_id=cid(1)),
    cmd.GetLogs(command_id=COMMAND_ID, container_id=cid(1), tail=100),
]

REPLIES: list[cmd.Reply] = [
    cmd.CommandAccepted(command_id=COMMAND_ID),
    cmd.CommandAccepted(command_id=COMMAND_ID, duplicate=True),
    cmd.CommandRejected(command_id=COMMAND_ID, code="stale_epoch", message="epoch 2 < 3"),
    cmd.CommandRejected(command_id=None, code="invalid_spec", message="could not decode"),
    cmd.LogsReply(command_id=COMMAND_ID),
    cmd.LogsReply(command_id=COMMAND_ID, lines=("hello", "world"), truncated=True),
]

NODE_MESSAGES: list[cmd.NodeMessage] = [
    cmd.Register(node="n1", topology=Topology.uniform(1, 1, 4, 2), capacity=Resources(8000, 8 * GI)),
    cmd.Register(
        node="n1",
        topology=Topology.uniform(1, 1, 2, 2),
        capacity=Resources(4000, GI),
        labels={"zone": "a"},
        cpu_map={0: 0, 1: 0, 2: 0, 3: 0},
    ),
    cmd.Heartbeat(node="n1", epoch=3, seq=17, sent_ns=1_700_000_000_000_000_000),
    cmd.SyncRequest(node="n1", epoch=3),
    cmd.SyncRequest(node="n1", epoch=3, running=(cid(1), cid(2))),
    cmd.StatsSample(node="n1", at_ns=1, node_cpu_busy_ns=2, node_cpu_total_ns=3),
    cmd.StatsSample(
        node="n1",
        at_ns=1,
        node_cpu_busy_ns=2,
        node_cpu_total_ns=3,
        containers=(cmd.ContainerSample(cid(1), 10, 20, 3, 400, 1, 50, 64 << 20),),
    ),
]


def _name(message: msgspec.Struct) -> str:
    return type(message).__name__


@pytest.mark.parametrize("command", COMMANDS, ids=_name)
def test_command_round_trip(command: cmd.Command) -> None:
    assert command_decoder.decode(encode(command)) == command


@pytest.mark.parametrize("reply", REPLIES, ids=_name)
def test_reply_round_trip(reply: cmd.Reply) -> None:
    assert reply_decoder.decode(encode(reply)) == reply


@pytest.mark.parametrize("message", NODE_MESSAGES, ids=_name)
def test_node_message_round_trip(message: cmd.NodeMessage) -> None:
    assert node_message_decoder.decode(encode(message)) == message


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(cmd.Registered(node="n1", epoch=4, lease_s=10.0), id="Registered"),
        pytest.param(cmd.SyncReply(node="n1", epoch=4), id="SyncReply-empty"),
        pytest.param(cmd.SyncReply(node="n1", epoch=4, desired=(COMMANDS[0], COMMANDS[1])), id="SyncReply"),
    ],
)
def test_control_plane_replies_round_trip(message: cmd.Registered | cmd.SyncReply) -> None:
    assert msgspec.msgpack.decode(encode(message), type=type(message)) == message


@pytest.mark.parametrize(
    ("decoder", "message"),
    [
        pytest.param(command_decoder, REPLIES[0], id="reply-to-command-decoder"),
        pytest.param(reply_decoder, COMMANDS[0], id="command-to-reply-decoder"),
        pytest.param(command_decoder, NODE_MESSAGES[2], id="heartbeat-to-command-decoder"),
        pytest.param(node_message_decoder, COMMANDS[2], id="command-to-node-decoder"),
    ],
)
def test_decoders_reject_other_message_kinds(decoder: msgspec.msgpack.Decoder[Any], message: msgspec.Struct) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"Invalid value '{_name(message)}' - at `\\$.type`"):
        decoder.decode(encode(message))


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        pytest.param(
            {"type": "StopContainer", "command_id": str(COMMAND_ID), "epoch": 1, "container_id": cid(1), "grace_s": -1},
            "`$.grace_s`",
            id="grace-negative",
        ),
        pytest.param(
            {
                "type": "StopContainer",
                "command_id": str(COMMAND_ID),
                "epoch": 1,
                "container_id": cid(1),
                "grace_s": 3601,
            },
            "`$.grace_s`",
            id="grace-over-an-hour",
        ),
        pytest.param(
            {"type": "StopContainer", "command_id": str(COMMAND_ID), "epoch": -1, "container_id": cid(1)},
            "`$.epoch`",
            id="epoch-negative",
        ),
        pytest.param(
            {"type": "StopContainer", "command_id": "not-a-uuid", "epoch": 1, "container_id": cid(1)},
            "`$.command_id`",
            id="bad-uuid",
        ),
        pytest.param(
            {"type": "StopContainer", "command_id": str(COMMAND_ID), "epoch": 1, "container_id": "../../etc/passwd"},
            "container_id",
            id="container-id-path",
        ),
        pytest.param(
            {"type": "StopContainer", "command_id": str(COMMAND_ID), "epoch": 1, "container_id": "0123456789ABCDEF"},
            "container_id: '0123456789ABCDEF' is not an id",
            id="container-id-uppercase",
        ),
        pytest.param(
            {"type": "GetLogs", "command_id": str(COMMAND_ID), "container_id": cid(1), "tail": 100_001},
            "`$.tail`",
            id="tail-too-long",
        ),
        pytest.param(
            {
                "type": "UpdateResources",
                "command_id": str(COMMAND_ID),
                "epoch": 1,
                "container_id": cid(1),
                "burst_us": -1,
            },
            "`$.burst_us`",
            id="burst-negative",
        ),
        pytest.param({"type": "Reboot", "command_id": str(COMMAND_ID)}, "Invalid value 'Reboot'", id="unknown-type"),
    ],
)
def test_invalid_commands(payload: dict[str, Any], error: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        command_decoder.decode(encode(payload))
    assert error in str(info.value)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        pytest.param(
            {"type": "Heartbeat", "node": "n1.*", "epoch": 1, "seq": 1, "sent_ns": 1}, "node: ", id="node-wild"
        ),
        pytest.param({"type": "Heartbeat", "node": ">", "epoch": 1, "seq": 1, "sent_ns": 1}, "node: ", id="node-gt"),
        pytest.param({"type": "SyncRequest", "node": "N1", "epoch": 1}, "node: 'N1'", id="node-uppercase"),
    ],
)
def test_invalid_node_messages(payload: dict[str, Any], error: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        node_message_decoder.decode(encode(payload))
    assert error in str(info.value)


@pytest.mark.parametrize("running_id", ["../../etc/passw", "0123456789ABCDEF", "x" * 16], ids=["path", "upper", "x"])
def test_sync_request_running_ids_are_checked(running_id: str) -> None:
    payload = {"type": "SyncRequest", "node": "n1", "epoch": 1, "running": [running_id.ljust(16, "d")]}
    with pytest.raises(msgspec.ValidationError):
        node_message_decoder.decode(encode(payload))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            {"type": "ContainerStarted", "container_id": "../../etc/passwd", "node": "n1", "pid": 1, "started_ns": 1},
            id="container-id-path",
        ),
        pytest.param(
            {"type": "ContainerStarted", "container_id": cid(1), "node": "n1.>", "pid": 1, "started_ns": 1},
            id="node-wildcard",
        ),
        pytest.param({"type": "NodeDrained", "node": "N1"}, id="node-uppercase"),
    ],
)
def test_untrusted_event_ids_are_checked(payload: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(encode(payload))


def test_commands_tolerate_unknown_fields() -> None:
    newer = {**msgspec.to_builtins(COMMANDS[2]), "priority": "high"}
    assert command_decoder.decode(encode(newer)) == COMMANDS[2]


# --- UUIDs in msgpack ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(cmd.CommandAccepted(command_id=COMMAND_ID), id="CommandAccepted"),
        pytest.param(COMMANDS[0], id="StartContainer"),
        pytest.param(cmd.GetLogs(command_id=COMMAND_ID, container_id=cid(1)), id="GetLogs"),
    ],
)
def test_uuids_travel_as_16_raw_bytes_in_msgpack(message: msgspec.Struct) -> None:
    raw = encode(message)
    assert msgspec.msgpack.decode(raw)["command_id"] == COMMAND_ID.bytes
    assert b"\xc4\x10" + COMMAND_ID.bytes in raw  # msgpack bin 8, length 16
    assert str(COMMAND_ID).encode() not in raw


def test_uuids_travel_as_strings_in_json() -> None:
    raw = encode_json(cmd.CommandAccepted(command_id=COMMAND_ID))
    assert msgspec.json.decode(raw) == {"type": "CommandAccepted", "command_id": str(COMMAND_ID), "duplicate": False}


def test_a_uuid_sent_as_a_string_still_decodes() -> None:
    raw = encode({"type": "CommandAccepted", "command_id": str(COMMAND_ID)})
    assert reply_decoder.decode(raw) == cmd.CommandAccepted(command_id=COMMAND_ID)


@given(st.uuids())
def test_any_uuid_round_trips(command_id: uuid.UUID) -> None:
    reply = cmd.CommandAccepted(command_id=command_id)
    raw = encode(reply)
    assert msgspec.msgpack.decode(raw)["command_id"] == command_id.bytes
    assert reply_decoder.decode(raw) == reply


def test_container_samples_are_array_like() -> None:
    sample = cmd.ContainerSample(cid(1), 10, 20, 3, 400, 1, 50, 64 << 20)
    assert msgspec.msgpack.decode(encode(sample)) == [cid(1), 10, 20, 3, 400, 1, 50, 64 << 20]


# --- batch decoding ----------------------------------------------------------------------------------------------


@given(st.lists(events, max_size=20))
def test_decode_events_equals_one_by_one(batch: list[ev.Event]) -> None:
    payloads = [encode(e) for e in batch]
    assert decode_events(payloads) == [decode_event(p) for p in payloads] == batch


def test_decode_events_names_an_unknown_type_in_the_middle() -> None:
    good = encode(ev.NodeDrained(node="n1"))
    with pytest.raises(UnknownEventType, match="FromTheFuture"):
        decode_events([good, msgspec.msgpack.encode({"type": "FromTheFuture"}), good])


def test_decode_events_of_garbage_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_events([encode(ev.NodeDrained(node="n1")), b"\xc1"])
