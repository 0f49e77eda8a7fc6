"""The default-deny seccomp profile, judged by what it does with calls (``decide`` evaluates a profile as the
kernel's filter does), and the node's installed profiles."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelet.seccomp import (
    AF_VSOCK,
    ALLOWED_SYSCALLS,
    CLONE_NAMESPACE_FLAGS,
    ENOSYS,
    EPERM,
    NEVER_ALLOWED,
    RUNTIME_DEFAULT,
    SOCKET_FAMILIES,
    BadProfile,
    decide,
    load_profiles,
    profile_for,
)
from tests.builders import spec
from wire.spec import ContainerSpec

ALLOW = ("SCMP_ACT_ALLOW", None)
DENY = ("SCMP_ACT_ERRNO", EPERM)
AF_INET, AF_UNIX, AF_NETLINK = 2, 1, 16
CLONE_THREAD_FLAGS = 0x003D0F00  # what pthread_create passes: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|...


@pytest.mark.parametrize(
    ("name", "args", "want"),
    [
        # everyday calls
        ("read", (), ALLOW),
        ("execve", (), ALLOW),
        ("clone", (CLONE_THREAD_FLAGS,), ALLOW),
        ("clone", (0x11,), ALLOW),  # fork: SIGCHLD
        ("socket", (AF_INET,), ALLOW),
        ("socket", (AF_UNIX,), ALLOW),
        ("socket", (AF_NETLINK,), ALLOW),
        ("socket", (38,), DENY),  # AF_ALG: not on the list
        ("clock_adjtime", (0, 0), ALLOW),  # glibc's adjtimex and ntp_gettime; setting a clock needs CAP_SYS_TIME
        ("personality", (0x0,), ALLOW),  # PER_LINUX
        ("personality", (0x8,), ALLOW),  # PER_LINUX32
        ("personality", (0xFFFFFFFF,), ALLOW),  # the query
        ("arch_prctl", (), ALLOW),
        ("rseq", (), ALLOW),
        # what the issue measured getting through
        ("io_uring_setup", (), DENY),
        ("io_uring_enter", (), DENY),
        ("io_uring_register", (), DENY),
        ("socket", (AF_VSOCK,), DENY),
        # escapes and host-wide effects
        ("clone", (0x10000000 | 0x11,), DENY),  # CLONE_NEWUSER
        ("clone", (CLONE_THREAD_FLAGS | 0x40000000,), DENY),  # a thread in a new net namespace
        ("clone3", (), ("SCMP_ACT_ERRNO", ENOSYS)),  # the C library falls back to clone
        ("unshare", (0x10000000,), DENY),
        ("mount", (), DENY),
        ("ptrace", (), DENY),
        ("bpf", (), DENY),
        ("keyctl", (), DENY),
        ("socketcall", (), DENY),  # would hide the address family from the filter
        ("personality", (0x0040000,), DENY),  # ADDR_NO_RANDOMIZE
        ("personality", (0x0400000,), DENY),  # READ_IMPLIES_EXEC
        # anything the list does not name
        ("a_syscall_of_the_future", (), DENY),
    ],
)
def test_runtime_default(name: str, args: tuple[int, ...], want: tuple[str, int | None]) -> None:
    assert decide(RUNTIME_DEFAULT, name, args) == want


def test_the_default_denies() -> None:
    assert RUNTIME_DEFAULT["defaultAction"] == "SCMP_ACT_ERRNO"
    assert RUNTIME_DEFAULT["defaultErrnoRet"] == EPERM


def test_nothing_never_allowed_gets_through() -> None:
    assert not ALLOWED_SYSCALLS & NEVER_ALLOWED
    for name in NEVER_ALLOWED:
        assert decide(RUNTIME_DEFAULT, name, (0, 0, 0))[0] == "SCMP_ACT_ERRNO", name


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_clone_is_allowed_exactly_without_namespace_flags(flags: int) -> None:
    makes_namespace = any(flags & f for f in CLONE_NAMESPACE_FLAGS)
    assert decide(RUNTIME_DEFAULT, "clone", (flags,)) == (DENY if makes_namespace else ALLOW)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_socket_only_for_the_families_programs_use(family: int) -> None:
    """Exact 64-bit matches: a family with high bits set (which the kernel drops) is refused too."""
    assert decide(RUNTIME_DEFAULT, "socket", (family, 1, 0)) == (ALLOW if family in SOCKET_FAMILIES else DENY)


def test_a_vsock_family_hidden_in_the_high_bits_is_refused() -> None:
    assert decide(RUNTIME_DEFAULT, "socket", ((1 << 32) | AF_VSOCK, 1, 0)) == DENY
    assert decide(RUNTIME_DEFAULT, "socket", ((1 << 32) | AF_INET, 1, 0)) == DENY


def test_conditions_on_one_argument_are_ored_as_runc_adds_them() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}  # fmt: skip
    assert [decide(profile, "x", (v,))[0] for v in (1, 2, 3)] == ["SCMP_ACT_ALLOW", "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"]


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_personality_only_the_linux_ones(persona: int) -> None:
    linux = persona in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
    assert decide(RUNTIME_DEFAULT, "personality", (persona,)) == (ALLOW if linux else DENY)


def test_profile_for() -> None:
    installed = {"localhost/audit": {"defaultAction": "SCMP_ACT_LOG", "syscalls": []}}
    assert profile_for("RuntimeDefault", installed) is RUNTIME_DEFAULT
    assert profile_for("Unconfined", installed) is None
    assert profile_for("localhost/audit", installed) == installed["localhost/audit"]
    with pytest.raises(KeyError):
        profile_for("localhost/missing", installed)


def test_load_profiles(tmp_path: Path) -> None:
    (tmp_path / "audit.json").write_text(json.dumps({"defaultAction": "SCMP_ACT_LOG"}))
    (tmp_path / "notes.txt").write_text("not a profile, not looked at")
    assert load_profiles(tmp_path) == {"localhost/audit": {"defaultAction": "SCMP_ACT_LOG"}}


@pytest.mark.parametrize(
    ("file", "content", "why"),
    [
        ("Bad_Name.json", "{}", "not a profile name"),
        ("x.json", "[1]", "defaultAction"),
        ("x.json", "{", "Expecting"),
        ("x.json", '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}', "names"),
    ],
)
def test_a_broken_profile_stops_the_node_with_its_name(tmp_path: Path, file: str, content: str, why: str) -> None:
    (tmp_path / file).write_text(content)
    with pytest.raises(BadProfile, match=why) as e:
        load_profiles(tmp_path)
    assert file in str(e.value)


@pytest.mark.parametrize("name", ["RuntimeDefault", "Unconfined", "localhost/audit", "localhost/a.b-c_d"])
def test_spec_takes_the_profile_names(name: str) -> None:
    s = msgspec.json.decode(msgspec.json.encode(spec(seccomp_profile=name)), type=ContainerSpec)
    assert s.seccomp_profile == name


@pytest.mark.parametrize(
    "name", ["runtimedefault", "unconfined", "localhost/", "localhost/../etc/x", "localhost/A", "/etc/x.json", ""]
)
def test_spec_refuses_other_names(name: str) -> None:
    raw = msgspec.to_builtins(spec()) | {"seccomp_profile": name}
    with pytest.raises(msgspec.ValidationError, match="seccomp_profile"):
        msgspec.json.decode(msgspec.json.encode(raw), type=ContainerSpec)
