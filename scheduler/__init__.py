"""Corral's scheduler: NUMA- and cpuset-aware placement (see README.md for the pipeline and a glossary).

Owns: the pure placement core (``snapshot``, ``feasible``, ``rank``, ``cpuset``, ``stack``), plans and their check
by the single writer (``plan``), the reconciler (``reconcile``), and the async service loop (``service``).

May import: ``wire``, ``store``. Must not import: ``nodelet``, ``api``.
"""
