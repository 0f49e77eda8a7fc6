"""API tokens kept as hashes: who a token speaks for, files old and new, refusals."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from api import tokens
from api.tokens import Principal, Role, Tokens


def test_who() -> None:
    t = Tokens.plain(["a1", "a2"], ["r1"])
    assert t.who("a1") == Principal("admin-1", Role.ADMIN)
    assert t.who("a2") == Principal("admin-2", Role.ADMIN)
    assert t.who("r1") == Principal("read-only-1", Role.READ_ONLY)
    for nobody in ("", "a", "a1 ", "A1", "r1\n"):
        assert t.who(nobody) is None


def test_written_file_holds_hashes_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    tokens.write(path, [("alice", Role.ADMIN, "secret-a"), ("ci", Role.READ_ONLY, "secret-c")])
    text = path.read_text()
    assert "secret-a" not in text and "secret-c" not in text
    assert hashlib.sha256(b"secret-a").hexdigest() in text
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = tokens.load(path)
    assert loaded.who("secret-a") == Principal("alice", Role.ADMIN)
    assert loaded.who("secret-c") == Principal("ci", Role.READ_ONLY)


def test_the_older_plaintext_file_still_loads_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        t = tokens.parse(json.dumps({"admin": ["a", "a"], "read_only": ["r", "a"]}).encode())
    assert t.who("a") == Principal("admin-1", Role.ADMIN)  # listed twice, and as a reader: admin, as it was
    assert t.who("r") == Principal("read-only-1", Role.READ_ONLY)
    assert "plaintext" in caplog.text


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ({"tokens": [{"name": "x", "role": "root", "sha256": "0" * 64}]}, "role"),
        ({"tokens": [{"name": "x", "role": "admin", "sha256": "short"}]}, "sha256"),
        ({"tokens": [{"name": "Bad Name", "role": "admin", "sha256": "0" * 64}]}, "name"),
        ({"tokens": [{"name": "x", "role": "admin", "sha256": "0" * 64, "token": "plain"}]}, "token"),
        ({"tokens": [{"name": "x", "role": "admin", "sha256": "0" * 64}] * 2}, "twice"),
        ({"tokens": [{"name": "x", "role": "admin", "sha256": "0" * 64},
                     {"name": "y", "role": "read_only", "sha256": "0" * 64}]}, "twice"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_saying_why(content: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        tokens.parse(json.dumps(content).encode(), "tokens.json")


def test_corral_token_add(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    path = tmp_path / "tokens.json"
    run = CliRunner().invoke
    first = run(app, ["token", "add", "alice", "--file", str(path)])
    second = run(app, ["token", "add", "ci", "--read-only", "--file", str(path)])
    assert (first.exit_code, second.exit_code) == (0, 0), first.output + second.output
    loaded = tokens.load(path)
    assert loaded.who(first.output.strip()) == Principal("alice", Role.ADMIN)
    assert loaded.who(second.output.strip()) == Principal("ci", Role.READ_ONLY)
    again = run(app, ["token", "add", "alice", "--file", str(path)])
    assert again.exit_code == 1 and "twice" in again.output
    bad = run(app, ["token", "add", "Bad Name", "--file", str(path)])
    assert bad.exit_code == 1 and "[a-z0-9]" in bad.output  # the pattern shown as it is, not eaten as markup
    assert tokens.load(path).who(first.output.strip()) == Principal("alice", Role.ADMIN)  # the file unharmed
