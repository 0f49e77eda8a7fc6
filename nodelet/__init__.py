"""Corral's node agent.

Will own: the container lifecycle state machine, the runc runtime adapter and per-container monitor, the cgroup
writer and CPU Burst controller, telemetry sampling, topology discovery, the NATS agent, and a clearly named
hollow runtime for scale tests.

May import: ``wire``. Must not import: ``store``, ``scheduler``, ``api``.
"""
