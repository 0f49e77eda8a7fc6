"""``python -m api.serve``: the control-plane process — event log, scheduler, NATS wiring and the HTTP API in
one uvloop process (the single writer of the log)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

import uvicorn
import uvloop

from api.app import Tokens, create_app
from api.controlplane import ControlPlane


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__)
    p.add_argument("--data-dir", required=True, help="where the event log lives")
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    p.add_argument("--nats-user", default=None)
    p.add_argument("--nats-password", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--tokens", required=True, help='a JSON file {"admin": [...], "read_only": [...]}')
    p.add_argument("--lease", type=float, default=3.0, help="seconds without a heartbeat before a node is lost")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def load_tokens(path: str) -> Tokens:
    raw = json.loads(Path(path).read_text())
    return Tokens(admin=frozenset(raw["admin"]), read_only=frozenset(raw.get("read_only", [])))


async def main(args: argparse.Namespace, tokens: Tokens) -> None:
    cp = ControlPlane(args.data_dir, args.nats, user=args.nats_user, password=args.nats_password, lease_s=args.lease)
    await cp.start()
    server = uvicorn.Server(
        uvicorn.Config(create_app(cp, tokens), host=args.host, port=args.port, lifespan="off", log_level="warning")
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    try:
        await server.serve()
    finally:
        await cp.stop()


def run(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvloop.run(main(args, load_tokens(args.tokens)))


if __name__ == "__main__":
    run()
