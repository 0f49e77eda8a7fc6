"""``python -m api.serve``: the control-plane process — event log, scheduler, NATS wiring and the HTTP API in
one uvloop process (the single writer of the log)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn
import uvloop

from api import tokens as tokens_file
from api.app import create_app
from api.controlplane import ControlPlane
from api.tokens import Tokens

log = logging.getLogger("corral.serve")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__)
    p.add_argument("--data-dir", required=True, help="where the event log lives")
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    p.add_argument("--nats-nkey-seed", default=None, metavar="FILE", help="the control plane's NATS nkey seed")
    p.add_argument("--nats-user", default=None, help="NATS user (password in $CORRAL_NATS_PASSWORD, never an argument)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--tokens", required=True, help='a JSON file {"admin": [...], "read_only": [...]}')
    p.add_argument("--lease", type=float, default=2.5, help="seconds without a heartbeat before a node is lost")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def load_tokens(path: str) -> Tokens:
    return tokens_file.load(Path(path))


async def main(args: argparse.Namespace, tokens: Tokens) -> int:
    cp = ControlPlane(
        args.data_dir,
        args.nats,
        user=args.nats_user,
        password=os.environ.get("CORRAL_NATS_PASSWORD"),
        nkey_seed=args.nats_nkey_seed,
        lease_s=args.lease,
    )
    failures: list[BaseException] = []

    def failed(error: BaseException) -> None:
        log.error("stopping: %s", error)
        failures.append(error)
        server.should_exit = True

    # The app's lifespan starts the control plane before serving and stops it after (also when start fails).
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cp, tokens, on_failure=failed),
            host=args.host,
            port=args.port,
            lifespan="on",
            log_level="warning",
            timeout_graceful_shutdown=5,  # an open watch (GET /v1/events) never ends: it must not hold a stop
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    try:
        await server.serve()
    except SystemExit:  # uvicorn's way to say the lifespan failed: the control plane did not start
        return 1
    return 1 if failures or not server.started else 0


def run(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(uvloop.run(main(args, load_tokens(args.tokens))))


if __name__ == "__main__":
    run()
