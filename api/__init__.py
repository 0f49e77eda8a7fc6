"""Corral's HTTP API, the ``corral`` CLI and the process entry points.

Will own: the Litestar app and its routes, auth, the CLI (a thin HTTP client), the control-plane entry point
and the local-cluster launcher.

May import: ``wire``, ``store``, ``scheduler``. Nothing imports ``api``.
"""
