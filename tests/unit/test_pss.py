"""The Pod Security Standards, judged from a process's facts: each control passes or fails for its reason."""

from __future__ import annotations

import msgspec
import pytest

from nodelet.procfacts import parse_mountinfo, parse_status
from tests.builders import spec
from wire.pss import CAPS, Enforce, Mounted, ProcessFacts, Verdict, admission, judge
from wire.spec import Capabilities, ContainerSpec, Mount

DEFAULT_CAPS = sum(1 << CAPS[c] for c in (
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETFCAP", "SETGID",
    "SETPCAP", "SETUID", "SYS_CHROOT",
))  # fmt: skip
OWN = (
    Mounted("/", "overlay", "/", False),
    Mounted("/proc", "proc", "/", False),
    Mounted("/proc/kcore", "devtmpfs", "/null", True),  # masked with the host's /dev/null: not a host path
    Mounted("/proc/acpi", "tmpfs", "/", True),
    Mounted("/sys/fs/cgroup/cpu", "cgroup", "/", True),
)
CORRAL = ProcessFacts(
    pid=42, uid=0, gid=0, cap_effective=DEFAULT_CAPS, cap_bounding=DEFAULT_CAPS, no_new_privs=True,
    seccomp_mode=2, host_namespaces=(), mounts=OWN,
)  # fmt: skip


def failed(facts: ProcessFacts) -> dict[str, str]:
    return {v.control: v.detail for v in judge(facts) if not v.ok}


def test_corrals_defaults_meet_the_baseline_not_restricted() -> None:
    assert failed(CORRAL) == {
        "Running as Non-root": "uid 0",
        "Running as Non-root user": "uid 0, gid 0",
        "Capabilities (restricted)": "keeps AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETFCAP, SETGID, "
        "SETPCAP, SETUID, SYS_CHROOT",
    }
    assert all(v.ok for v in judge(CORRAL) if v.level == "baseline")


@pytest.mark.parametrize(
    ("change", "control", "detail"),
    [
        ({"host_namespaces": ("net", "uts")}, "Host Namespaces", "shares net with the node"),
        ({"host_namespaces": ("pid", "ipc")}, "Host Namespaces", "shares ipc, pid with the node"),
        ({"cap_bounding": DEFAULT_CAPS | 1 << CAPS["SYS_ADMIN"]}, "Privileged Containers", "has CAP_SYS_ADMIN"),
        ({"cap_effective": DEFAULT_CAPS | 1 << CAPS["NET_RAW"]}, "Capabilities", "beyond the baseline: NET_RAW"),
        ({"mounts": (*OWN, Mounted("/data", "ext4", "/srv/data", True))}, "HostPath Volumes",
         "mounts of the node's files: /srv/data at /data"),
        ({"mounts": (*OWN, Mounted("/data", "tmpfs", "/corral/shared", False))}, "HostPath Volumes",
         "mounts of the node's files: /corral/shared at /data"),  # a bind of the host's /run: a tmpfs, not own
        ({"host_namespaces": ("net",)}, "Host Ports", "shares the node's network"),
        ({"apparmor": "unconfined"}, "AppArmor", "profile 'unconfined'"),
        ({"mounts": OWN[:2]}, "/proc Mount Type", "/proc unmasked"),
        ({"seccomp_mode": 0}, "Seccomp", "no seccomp filter (Unconfined)"),
        ({"no_new_privs": False}, "Privilege Escalation", "may gain privileges (no_new_privs unset)"),
    ],
)  # fmt: skip
def test_each_control_fails_for_its_reason(change: dict[str, object], control: str, detail: str) -> None:
    assert failed(msgspec.structs.replace(CORRAL, **change))[control] == detail


def test_a_non_root_process_with_no_capabilities_meets_restricted() -> None:
    facts = msgspec.structs.replace(
        CORRAL, uid=1000, gid=1000, cap_effective=0, cap_bounding=1 << CAPS["NET_BIND_SERVICE"]
    )
    assert failed(facts) == {}
    assert {v.level for v in judge(facts)} == {"baseline", "restricted"}
    assert all(isinstance(v, Verdict) for v in judge(facts))


def test_mountinfo_and_status_parse() -> None:
    text = (
        "600 500 0:51 / / rw,relatime - overlay overlay rw,lowerdir=/a\n"
        "601 600 8:1 /srv/my\\040data /data ro,nosuid - ext4 /dev/sda1 rw\n"
        "602 600 0:5 /null /proc/kcore ro,nosuid master:1 - devtmpfs udev rw\n"
    )
    assert parse_mountinfo(text) == (
        Mounted("/", "overlay", "/", False),
        Mounted("/data", "ext4", "/srv/my data", True),
        Mounted("/proc/kcore", "devtmpfs", "/null", True),
    )
    status = parse_status("Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t00000000a80425fb\nSeccomp:\t2\n")
    assert (status["Uid"].split()[1], int(status["CapEff"], 16), status["Seccomp"]) == ("1000", 0xA80425FB, "2")


ROOT = "Running as Non-root: set run_as_non_root (and a user other than root)"
RESTRICTED_OK = {"run_as_non_root": True, "user": "1000", "capabilities": Capabilities(drop=("ALL",))}


@pytest.mark.parametrize(
    ("change", "level", "uid", "want"),
    [
        ({}, Enforce.PRIVILEGED, None, []),
        ({"seccomp_profile": "Unconfined"}, Enforce.PRIVILEGED, None, []),
        ({}, Enforce.BASELINE, None, []),
        ({"seccomp_profile": "Unconfined"}, Enforce.BASELINE, None, ["Seccomp: Unconfined"]),
        ({"mounts": (Mount(source="/srv", destination="/m"),)}, Enforce.BASELINE, None, ["HostPath Volumes: /srv"]),
        ({}, Enforce.RESTRICTED, None, [
            "Running as Non-root: set run_as_non_root (and a user other than root)",
            "Capabilities: drop ALL (NET_BIND_SERVICE may be added back)"]),
        (RESTRICTED_OK, Enforce.RESTRICTED, None, []),
        (RESTRICTED_OK | {"capabilities": Capabilities(drop=("ALL",), add=("NET_BIND_SERVICE",))},
         Enforce.RESTRICTED, 1000, []),
        (RESTRICTED_OK | {"capabilities": Capabilities(drop=("NET_RAW",))}, Enforce.RESTRICTED, None,
         ["Capabilities: drop ALL (NET_BIND_SERVICE may be added back)"]),
        (RESTRICTED_OK, Enforce.RESTRICTED, 0, [ROOT]),
        (RESTRICTED_OK | {"user": None}, Enforce.RESTRICTED, 4321, []),  # the image's user, known on the node
    ],
)  # fmt: skip
def test_admission(change: dict[str, object], level: Enforce, uid: int | None, want: list[str]) -> None:
    assert admission(msgspec.structs.replace(spec("t"), **change), level, uid) == want


@pytest.mark.parametrize(
    ("caps", "why"),
    [({"add": ["SYS_ADMIN"]}, "SYS_ADMIN may not be added"), ({"add": ["NET_RAW"]}, "NET_RAW may not be added"),
     ({"drop": ["SYS_ADMIN"]}, "not a capability a container has"), ({"add": ["cap_chown"]}, "add")],
)  # fmt: skip
def test_capabilities_beyond_the_baseline_are_refused(caps: dict[str, list[str]], why: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=why):
        msgspec.convert(msgspec.to_builtins(spec("t")) | {"capabilities": caps}, ContainerSpec)
