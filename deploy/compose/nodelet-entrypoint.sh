#!/bin/sh
# A nodelet in a container runs runc nested: it needs its own cgroups writable (Docker mounts them read-only).
# Its cgroups live under the container's own, so nodelets do not collide and Docker removes them with it.
set -eu
fail() { echo "corral-nodelet: $*" >&2; exit 1; }
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2 (a private cgroup namespace): processes may sit only in leaves, so move them into one and
  # hand every controller down to the containers' cgroups.
  mount -o remount,rw /sys/fs/cgroup 2>/dev/null || fail "cannot remount /sys/fs/cgroup read-write (needs CAP_SYS_ADMIN)"
  mkdir -p /sys/fs/cgroup/init
  while read -r pid; do echo "$pid" > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true; done < /sys/fs/cgroup/cgroup.procs
  for c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control; done
else
  # cgroup v1: each hierarchy is its own mount; a plain remount,rw is EBUSY, a bind remount is not.
  for d in /sys/fs/cgroup/*/; do
    d=${d%/}
    [ -L "$d" ] && continue  # cpu -> cpu,cpuacct: the same mount
    mount -o remount,bind,rw "$d" 2>/dev/null || fail "cannot remount $d read-write (needs CAP_SYS_ADMIN: cap_add ALL or privileged)"
  done
fi
exec python -m nodelet "$@"
