"""The lease table: which nodes are alive, judged from their heartbeats. Pure: time is an argument, nothing here
does I/O; the control plane's NATS shell feeds it and appends the transitions it returns.

- A node holds a lease from its registration; each heartbeat of its current epoch renews it, back to the moment
  the node last heard the control plane (the beat says how long ago): a lease is renewed by a round trip, so a
  node whose beats still arrive but that hears nothing (a one-way partition) is lost as fast as a silent one.
- A lease that is not renewed for ``lease_ns`` expires: the node is lost (``expire`` returns it once).
- Time counts only while the control plane could hear: from its start, and again from each reconnect to NATS
  or wake from a stall of its own (each restarts every lease's clock), never while it was disconnected. Its own
  restart or a NATS outage therefore never makes a node lost. Until a node is heard again it gets a lease, or
  after a NATS outage the grace (nodes reconnect each at its own pace); its first beat after that renews its
  lease from that beat (no answer could reach it meanwhile, so what it says it missed proves nothing), and
  round trips from then on (a node that fails just after a reconnect is found as fast as any other).
- A heartbeat that cannot renew says why, so the node knows to register again: its node was declared lost (it
  re-registers with a new epoch, kills what it no longer owns and is recovered), it comes from an older
  incarnation, or the node is unknown here.
"""

from __future__ import annotations

import msgspec

from wire.commands import LeaseStatus


class Lease(msgspec.Struct, frozen=True, gc=False):
    epoch: int
    renewed_ns: int  # the last round trip known: registration, or a heartbeat less the node's wait for an answer
    fresh: bool = False  # not heard since the control plane (re)connected
    lost: bool = False


class LeaseTable:
    def __init__(self, lease_ns: int, *, stall_ns: int | None = None, grace_ns: int | None = None) -> None:
        self.lease_ns = lease_ns
        # After the control plane reconnects to NATS, nodes reconnect each at its own pace: each gets this long
        # to be heard. After its own start or stall they are connected already: a lease is enough.
        self.grace_ns = grace_ns if grace_ns is not None else lease_ns
        self._grace_now = lease_ns
        self.stall_ns = stall_ns if stall_ns is not None else lease_ns // 2  # a gap between ticks that deafens
        self.leases: dict[str, Lease] = {}
        self.hearing_since: int | None = None  # None: disconnected, nothing can be judged
        self._last_tick: int | None = None

    # --- what the control plane could hear ------------------------------------------------------------------

    def hear(self, now: int, *, reconnected: bool = False) -> None:
        """Hearing from now (at start, after a stall of its own, or ``reconnected`` to NATS after an outage):
        every lease counts from now; no node is heard yet."""
        self._grace_now = max(self.lease_ns, self.grace_ns) if reconnected else self.lease_ns
        self.hearing_since = now
        self._last_tick = now
        for node, lease in self.leases.items():
            if not lease.fresh:
                self.leases[node] = msgspec.structs.replace(lease, fresh=True)

    def deaf(self) -> None:
        """Disconnected from NATS: no lease expires until ``hear``."""
        self.hearing_since = None

    # --- nodes ------------------------------------------------------------------------------------------------

    def load(self, node: str, epoch: int, lost: bool, now: int) -> None:
        """A node as the log knows it (at start): a live one gets a full lease from now."""
        self.leases[node] = Lease(epoch, now, fresh=True, lost=lost)  # not heard since this start: the grace first

    def registered(self, node: str, epoch: int, now: int) -> None:
        self.leases[node] = Lease(epoch, now)  # a registration is a round trip

    def heartbeat(self, node: str, epoch: int, now: int, unanswered_ns: int = 0) -> LeaseStatus:
        """A beat heard at ``now`` from a node that last heard this control plane ``unanswered_ns`` before it."""
        lease = self.leases.get(node)
        if lease is None or epoch > lease.epoch:
            return LeaseStatus.UNKNOWN
        if epoch < lease.epoch:
            return LeaseStatus.STALE
        if lease.lost:
            return LeaseStatus.LOST
        # Its first beat since the control plane (re)connected renews from now: no answer could reach it meanwhile,
        # so what it says it missed proves nothing. Round trips count from then on.
        renewed = now if lease.fresh else max(lease.renewed_ns, now - max(0, unanswered_ns))
        self.leases[node] = Lease(epoch, renewed)
        return LeaseStatus.RENEWED

    def unlose(self, node: str) -> None:
        """The loss could not be recorded: the next ``expire`` judges the node again."""
        lease = self.leases.get(node)
        if lease is not None:
            self.leases[node] = msgspec.structs.replace(lease, lost=False)

    def forget(self, node: str) -> None:
        self.leases.pop(node, None)

    def expire(self, now: int) -> list[tuple[str, int]]:
        """The nodes (with their epochs) whose lease ran out as of ``now``, each returned once and marked lost.
        Nothing expires while deaf, nor in the tick after a stall of the caller (it could not have listened)."""
        if self.hearing_since is None:
            return []
        if self._last_tick is not None and now - self._last_tick > self.stall_ns:
            self.hear(now)  # the control plane itself stood still: heartbeats may sit unread
            return []
        self._last_tick = now
        since = self.hearing_since
        expired = [
            (node, lease.epoch)
            for node, lease in self.leases.items()
            if not lease.lost
            and now - max(lease.renewed_ns, since) > self.lease_ns
            and (not lease.fresh or now - since > self._grace_now)
        ]
        for node, _ in expired:
            self.leases[node] = msgspec.structs.replace(self.leases[node], lost=True)
        return expired

    def is_lost(self, node: str) -> bool:
        lease = self.leases.get(node)
        return lease is not None and lease.lost
