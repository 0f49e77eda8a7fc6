"""Files that may hold secrets (tokens, keys, container specs with their environment): directories only their
owner may enter, files only their owner may read, made so when created rather than narrowed afterwards."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """A directory only its owner may enter (0700), made so from the start; an existing one is narrowed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write into a fresh 0600 file: created with that mode, never widened, never a followed link."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is 0600 (for a file another library then opens, as SQLite its database)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    os.chmod(path, 0o600)
    return path
