"""Seccomp profiles for containers: pure data and functions.

``RuntimeDefault`` is default-deny: a syscall not on the allow-list fails with EPERM, and one newer than every
syscall the filter names fails with ENOSYS (runc adds that stub, so the C library's fallbacks for new syscalls
work). The allow-list follows the semantics Docker publishes for its default profile, for a container with
Docker's default capabilities minus NET_RAW and MKNOD, and is tighter where noted:

- left out as Docker does: kernel modules, kexec, reboot, swap, setting clocks, accounting, keyrings, quotas, mounts and
  the new mount API, namespaces (``unshare``, ``setns``, ``clone`` with a namespace flag), BPF, perf, tracing
  (``ptrace``, ``process_vm_*``, ``kcmp``, ``userfaultfd``, ``pidfd_getfd``), port I/O, NUMA policy changes
  (Docker allows these only with CAP_SYS_NICE), ``open_by_handle_at``, and the io_uring family (moby#46762:
  io_uring submissions bypass per-syscall filtering);
- ``socket`` only for the address families programs use — UNIX, INET, INET6, NETLINK, PACKET — each an exact
  match: never AF_VSOCK (vsock reaches the host past the network namespace). An allow-list, not "anything but
  40": the filter compares 64 bits and the kernel reads 32, so ``(1 << 32) | 40`` would pass a "not 40" rule
  and still make a vsock socket (Docker's profile has that hole). ``socketcall`` (the 32-bit multiplexer, which
  hides the family in memory) is not allowed;
- ``personality`` only for the Linux personalities (PER_LINUX, PER_LINUX32, with or without UNAME26) and the
  query (0xffffffff), as Docker;
- ``clone3`` answers ENOSYS: its flags sit in memory, where seccomp cannot read them, so the C library falls
  back to ``clone``, whose flags are checked;
- tighter than Docker: ``name_to_handle_at`` and ``ptrace`` are left out (Docker allows ptrace on kernels 4.8+).

``Unconfined`` runs without a filter (only where the node allows it); ``localhost/<name>`` is a profile file
installed on the node (``<dir>/<name>.json``, the OCI ``linux.seccomp`` format).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

from wire.spec import SECCOMP_LOCALHOST, SECCOMP_NAME, SECCOMP_RUNTIME_DEFAULT, SECCOMP_UNCONFINED

EPERM: Final = 1
ENOSYS: Final = 38
AF_VSOCK: Final = 40
SOCKET_FAMILIES: Final = (1, 2, 10, 16, 17)  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACE_FLAGS: Final = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
CLONE_NAMESPACE_MASK: Final = sum(CLONE_NAMESPACE_FLAGS)
# PER_LINUX, PER_LINUX32, UNAME26 | PER_LINUX, UNAME26 | PER_LINUX32, and the query that changes nothing
PERSONALITIES: Final = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
ARCHITECTURES: Final = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ALLOWED_SYSCALLS: Final = _words(
    """
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32 chroot
    clock_adjtime clock_adjtime64
    clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close
    close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
    epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group
    faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown
    fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat
    fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait
    futex_waitv futex_wake futimesat get_robust_list get_thread_area getcpu getcwd getdents getdents64 getegid
    getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
    getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit getrusage getsid
    getsockname getsockopt gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init
    inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup
    io_submit ioctl ioprio_get ioprio_set ipc kill landlock_add_rule landlock_create_ruleset
    landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek
    lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create mincore mkdir
    mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open
    mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget
    msgrcv msgsnd msync munlock munlockall munmap nanosleep newfstatat _newselect open openat openat2 pause
    pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl
    pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read
    readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
    removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
    rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
    sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr sched_getparam
    sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
    sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto set_robust_list set_thread_area
    set_tid_address setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer
    setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
    setrlimit setsid setsockopt setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd
    signalfd4 sigprocmask sigreturn socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
    sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime
    timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
    timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
    utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev arch_prctl
    modify_ldt arm_fadvise64_64 arm_sync_file_range breakpoint cacheflush set_tls sync_file_range2
    """
)
# Never on the allow-list, whatever changes above: each is an escape or a host-wide effect.
NEVER_ALLOWED: Final = _words(
    """
    acct add_key bpf clock_settime create_module delete_module finit_module fsconfig fsmount
    fsopen fspick get_kernel_syms get_mempolicy init_module io_uring_enter io_uring_register io_uring_setup
    ioperm iopl kcmp kexec_file_load kexec_load keyctl lookup_dcookie mbind mount mount_setattr move_mount
    move_pages name_to_handle_at nfsservctl open_by_handle_at open_tree perf_event_open pidfd_getfd pivot_root
    process_madvise process_vm_readv process_vm_writev ptrace query_module quotactl quotactl_fd reboot
    request_key set_mempolicy set_mempolicy_home_node setdomainname sethostname setns settimeofday socketcall
    stime swapoff swapon syslog _sysctl sysfs umount umount2 unshare uselib userfaultfd ustat vhangup vm86
    vm86old
    """
)

PROFILE_NAME: Final = re.compile(SECCOMP_NAME)


def runtime_default() -> dict[str, Any]:
    """The default profile (``linux.seccomp`` of the OCI runtime config)."""
    conditional = {"clone", "clone3", "personality", "socket"}
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES),
        "syscalls": [
            {"names": sorted(ALLOWED_SYSCALLS - conditional), "action": "SCMP_ACT_ALLOW"},
            # clone without any namespace flag: (flags & mask) == 0
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NAMESPACE_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            # one rule per value: rules are OR'ed, the comparisons within one rule AND'ed
            *(
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}],
                }
                for p in PERSONALITIES
            ),
            *(
                {
                    "names": ["socket"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": family, "op": "SCMP_CMP_EQ"}],
                }
                for family in SOCKET_FAMILIES
            ),
        ],
    }


# libseccomp's precedence when several rules match one call: the most restrictive action wins.
_PRECEDENCE: Final = ("SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
                      "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_LOG", "SCMP_ACT_ALLOW")  # fmt: skip


def _arg_matches(cond: dict[str, Any], args: tuple[int, ...]) -> bool:
    value, two = int(cond["value"]), int(cond.get("valueTwo", 0))
    arg = args[cond["index"]] if cond["index"] < len(args) else 0
    op = cond["op"]
    if op == "SCMP_CMP_MASKED_EQ":
        return arg & value == two
    return {
        "SCMP_CMP_EQ": arg == value,
        "SCMP_CMP_NE": arg != value,
        "SCMP_CMP_LT": arg < value,
        "SCMP_CMP_LE": arg <= value,
        "SCMP_CMP_GT": arg > value,
        "SCMP_CMP_GE": arg >= value,
    }[op]


def _rule_matches(rule: dict[str, Any], args: tuple[int, ...]) -> bool:
    """A rule's conditions are AND'ed — unless two name the same argument: libseccomp cannot say that, so runc
    adds each condition as a rule of its own, and they are OR'ed."""
    conds = rule.get("args", [])
    indexes = [c["index"] for c in conds]
    if len(set(indexes)) < len(indexes):
        return any(_arg_matches(c, args) for c in conds)
    return all(_arg_matches(c, args) for c in conds)


def decide(profile: dict[str, Any] | None, name: str, args: tuple[int, ...] = ()) -> tuple[str, int | None]:
    """What ``profile`` does with the call ``name(args)``: (action, errno), as the kernel's filter would for a
    syscall the filter's libseccomp knows (a syscall newer than all it names gets ENOSYS from runc's stub)."""
    if profile is None:
        return "SCMP_ACT_ALLOW", None
    matched = [r for r in profile.get("syscalls", []) if name in r["names"] and _rule_matches(r, args)]
    if not matched:
        action = profile["defaultAction"]
        return action, profile.get("defaultErrnoRet", EPERM) if action == "SCMP_ACT_ERRNO" else None
    rule = min(matched, key=lambda r: _PRECEDENCE.index(r["action"]))
    return rule["action"], rule.get("errnoRet", EPERM) if rule["action"] == "SCMP_ACT_ERRNO" else None


class BadProfile(ValueError):
    pass


def validate_profile(raw: Any) -> dict[str, Any]:
    """A profile file's content, checked enough that runc will take it: an object with a defaultAction and a
    list of syscall rules, each with names and an action."""
    if not isinstance(raw, dict) or not isinstance(raw.get("defaultAction"), str):
        raise BadProfile("not an OCI seccomp profile: an object with a defaultAction is needed")
    rules = raw.get("syscalls", [])
    if not isinstance(rules, list) or not all(
        isinstance(r, dict) and isinstance(r.get("names"), list) and isinstance(r.get("action"), str) for r in rules
    ):
        raise BadProfile("syscalls: each rule needs names (a list) and an action")
    return raw


def load_profiles(directory: Path) -> dict[str, dict[str, Any]]:
    """The node's installed profiles, ``localhost/<name>`` → profile, from ``<directory>/<name>.json``. A file
    that is not a profile is an error naming it (the node does not start with a broken profile)."""
    profiles: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        name = path.name.removesuffix(".json")
        if not PROFILE_NAME.fullmatch(name):
            raise BadProfile(f"{path}: {name!r} is not a profile name (a-z, 0-9, '.', '_', '-')")
        try:
            profiles[SECCOMP_LOCALHOST + name] = validate_profile(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise BadProfile(f"{path}: {e}") from None
    return profiles


def profile_for(name: str, installed: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The ``linux.seccomp`` for a container asking for profile ``name`` (None: no filter). KeyError for a
    ``localhost/`` profile the node does not hold."""
    if name == SECCOMP_RUNTIME_DEFAULT:
        return RUNTIME_DEFAULT
    if name == SECCOMP_UNCONFINED:
        return None
    return installed[name]


RUNTIME_DEFAULT: Final = runtime_default()  # built once: read-only by convention (json.dumps only)
