/* What a container's seccomp filter lets through: one line per call, "<name> ok" or "<name> <errno name>".
   Built static (gcc -static) so it runs in any root filesystem. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void say(const char *what, long r) {
    if (r >= 0) { printf("%s ok\n", what); return; }
    const char *e = errno == EPERM ? "EPERM" : errno == ENOSYS ? "ENOSYS" : errno == EAFNOSUPPORT ? "EAFNOSUPPORT"
                  : errno == EINVAL ? "EINVAL" : errno == EFAULT ? "EFAULT" : strerror(errno);
    printf("%s %s\n", what, e);
}

int main(void) {
    unsigned params[30];  /* struct io_uring_params: 120 bytes */
    memset(params, 0, sizeof params);
    long fd = syscall(425 /* io_uring_setup */, 4, params);
    say("io_uring_setup", fd);
    if (fd >= 0) close(fd);
    fd = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
    say("socket_vsock", fd);
    if (fd >= 0) close(fd);
    fd = syscall(__NR_socket, (1UL << 32) | 40UL, (long)SOCK_STREAM, 0L);  /* the kernel reads 32 bits */
    say("socket_vsock_high_bits", fd);
    if (fd >= 0) close(fd);
    say("syscall_1000", syscall(1000));                       /* beyond every table */
    say("add_key", syscall(__NR_add_key, "user", "k", "v", 1, -2 /* KEY_SPEC_PROCESS_KEYRING */));
    say("unshare_user", syscall(__NR_unshare, CLONE_NEWUSER));
    say("personality_linux", personality(PER_LINUX));
    say("personality_no_aslr", personality(ADDR_NO_RANDOMIZE));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    say("socket_inet", fd);
    if (fd >= 0) close(fd);
    say("getpid", getpid());
    return 0;
}
