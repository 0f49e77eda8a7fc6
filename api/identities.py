"""Identities for a cluster: one NATS nkey per process (the server's config holds only public keys, each seed is
a 0600 file only its process reads) and the API's bearer tokens. Used by the local cluster, and by the compose demo
(``python -m api.identities DIR --nodes 3``), whose one-shot ``keys`` service writes each role's files into that
role's own volume.
"""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]

from api import tokens
from wire import subjects
from wire.files import private_dir, write_private


def new_nkey(seed_file: Path) -> str:
    """Make a user nkey, write its seed to ``seed_file`` (0600) and return its public key."""
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    write_private(seed_file, seed)
    pair = nkeys.from_seed(bytearray(seed))
    try:
        return str(pair.public_key.decode())
    finally:
        pair.wipe()


def nats_config(
    control_seed: Path,
    node_seeds: dict[str, Path],
    *,
    host: str,
    port: int,
    monitor_port: int | None = None,
) -> dict[str, Any]:
    """Make the nkeys (seeds written to the paths given) and the nats-server config that admits them: the control
    plane, and each node limited to its own subjects."""
    users: list[dict[str, Any]] = [{"nkey": new_nkey(control_seed), "permissions": subjects.control_permissions()}]
    users += [{"nkey": new_nkey(seed), "permissions": subjects.node_permissions(n)} for n, seed in node_seeds.items()]
    conf: dict[str, Any] = {"host": host, "port": port, "authorization": {"users": users}}
    if monitor_port is not None:
        conf["http"] = f"{host}:{monitor_port}"  # /healthz for a health check; holds no secret
    return conf


def write_tokens(path: Path) -> tuple[str, str]:
    """A new admin and a new read-only token (principals ``admin`` and ``reader``): the control plane's
    ``--tokens`` file (0600) holds their hashes; the tokens themselves are returned, for their users."""
    admin, reader = tokens.new_token(), tokens.new_token()
    tokens.write(path, [("admin", tokens.Role.ADMIN, admin), ("reader", tokens.Role.READ_ONLY, reader)])
    return admin, reader


def write_compose_identities(root: Path, nodes: list[str]) -> bool:
    """The compose demo's files, one directory per role (each the mount point of that role's volume):
    ``nats/nats.conf``; ``control/{nats.nk,tokens.json,admin-token,read-only-token}``; ``<node>/nats.nk``.
    Keeps what a previous run made (False), so identities and tokens survive ``down``/``up``."""
    conf_file = root / "nats" / "nats.conf"
    if conf_file.exists():
        return False
    control = private_dir(root / "control")
    conf = nats_config(
        control / "nats.nk",
        {n: private_dir(root / n) / "nats.nk" for n in nodes},
        host="0.0.0.0",  # the compose network only: the demo publishes no NATS port
        port=4222,
        monitor_port=8222,
    )
    admin, reader = write_tokens(control / "tokens.json")
    write_private(control / "admin-token", admin.encode())
    write_private(control / "read-only-token", reader.encode())
    private_dir(conf_file.parent)
    write_private(conf_file, json.dumps(conf).encode())  # last: its presence says the rest is there
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m api.identities", description=__doc__)
    p.add_argument("root", type=Path, help="one subdirectory per role is written under it")
    p.add_argument("--nodes", type=int, default=3)
    args = p.parse_args(argv)
    made = write_compose_identities(args.root, [f"node-{i + 1}" for i in range(args.nodes)])
    print("identities made" if made else "identities kept from the previous run")


if __name__ == "__main__":
    main()
