"""API bearer tokens, kept as hashes: the control plane's tokens file holds, per principal, its name, its role and
the SHA-256 of its token — never the token. A token is 24 random bytes (192 bits), so a fast hash is enough: no
dictionary can reach it. Whoever holds the file can check tokens, not use them.

    {"tokens": [{"name": "admin", "role": "admin", "sha256": "<hex>"}, {"name": "ci", "role": "read_only", ...}]}

The older file of plaintext lists (``{"admin": [...], "read_only": [...]}``) still loads, with a warning.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import msgspec

from wire.files import write_private

log = logging.getLogger("corral.tokens")
PrincipalName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([a-z0-9._@-]{0,62}[a-z0-9])?$")]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class Role(enum.StrEnum):
    ADMIN = "admin"  # anything
    READ_ONLY = "read_only"  # reads, environment values redacted


class Principal(msgspec.Struct, frozen=True):
    """Who a token speaks for: what events it causes record (``actor``), and what it may do."""

    name: PrincipalName
    role: Role


class Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: PrincipalName
    role: Role
    sha256: Sha256


class TokensFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tokens: list[Entry]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The principals the API knows, by token hash."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._by_hash: dict[str, Principal] = {}
        names: set[str] = set()
        for e in entries:
            if e.name in names or e.sha256 in self._by_hash:
                raise ValueError(f"tokens: {e.name!r} is there twice (by name or by token)")
            names.add(e.name)
            self._by_hash[e.sha256] = Principal(e.name, e.role)

    @classmethod
    def plain(cls, admin: Iterable[str], read_only: Iterable[str] = ()) -> Tokens:
        """From plaintext tokens (tests; the older file): principals ``admin-N`` and ``read-only-N``."""
        admins = list(dict.fromkeys(admin))
        readers = [t for t in dict.fromkeys(read_only) if t not in admins]  # listed in both: admin, as it was
        entries = [Entry(f"admin-{i}", Role.ADMIN, token_hash(t)) for i, t in enumerate(admins, 1)]
        entries += [Entry(f"read-only-{i}", Role.READ_ONLY, token_hash(t)) for i, t in enumerate(readers, 1)]
        return cls(entries)

    def who(self, token: str) -> Principal | None:
        return self._by_hash.get(token_hash(token)) if token else None


def parse(raw: bytes, source: str = "tokens file") -> Tokens:
    """A tokens file's content; ValueError naming what is wrong."""
    data: Any = json.loads(raw)
    if isinstance(data, dict) and "tokens" not in data and "admin" in data:
        log.warning("%s holds plaintext tokens: write it again with hashes (corral token hash)", source)
        return Tokens.plain(data["admin"], data.get("read_only", []))
    try:
        return Tokens(msgspec.convert(data, TokensFile).tokens)
    except msgspec.ValidationError as e:
        raise ValueError(f"{source}: {e}") from None


def load(path: Path) -> Tokens:
    return parse(path.read_bytes(), str(path))


def new_token() -> str:
    return secrets.token_urlsafe(24)


def write(path: Path, principals: Iterable[tuple[str, Role, str]]) -> None:
    """A tokens file (0600) for (name, role, token) — hashes only."""
    write_entries(path, [Entry(name, role, token_hash(token)) for name, role, token in principals])


def read_entries(path: Path) -> list[Entry]:
    """A tokens file's entries (the older plaintext file has none to keep: write it anew)."""
    return msgspec.json.decode(path.read_bytes(), type=TokensFile).tokens


def write_entries(path: Path, entries: list[Entry]) -> None:
    """Replace the file with ``entries`` (checked as the control plane will: a name or token twice is refused)."""
    checked = msgspec.convert(msgspec.to_builtins(TokensFile(entries)), TokensFile)  # names and hashes valid
    Tokens(checked.tokens)
    write_private(path, msgspec.json.encode(checked))
