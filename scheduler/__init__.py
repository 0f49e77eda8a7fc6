"""Corral's scheduler.

Will own: the pure placement core (feasibility, scoring, cpuset picking, NUMA policies) over an immutable
cluster snapshot, the plan check run by the single writer, the reconciler (lost nodes, replicas) and the async
service loop that publishes commands.

May import: ``wire``, ``store``. Must not import: ``nodelet``, ``api``.
"""
