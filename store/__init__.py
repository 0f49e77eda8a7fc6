"""Corral's event log.

Owns: recorders (SQLite with group commit, in-memory), the event log service (encode, append with expected
version, idempotent by event id, read, subscribe), projections (pure folds) with checkpoints and snapshots.

May import: ``wire``. Must not import: ``scheduler``, ``nodelet``, ``api``. Recorders see bytes and rows; the
domain types stay in ``wire``.
"""
