"""`graph-gateway` command line: the entry point for every command in DESIGN.md §3.4.

Only this module and settings read the environment and print to the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from gateway import __version__
from gateway.sim import SimConfig, SimConfigError, create_sim_app, load_config
from gateway.sim.server import AccessLogger


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graph-gateway",
        description="Graph Safety Gateway: safe Facebook campaign creation at scale.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser(
        "sim",
        help="run the bundled Graph simulator",
        description="Run the fault-injecting Graph simulator (see README, 'The simulator').",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8090, help="port to bind (default 8090)")
    sim.add_argument("--config", type=Path, help="TOML file: accounts, tokens, limits, faults")
    sim.add_argument("--seed", type=int, help="seed for fault injection (overrides the file)")
    return parser


def banner(config: SimConfig, url: str) -> str:
    """What `graph-gateway sim` prints at start: where it listens, accounts, tokens."""
    lines = [f"Graph simulator listening on {url} (default API version {config.default_version})"]
    lines.append("Ad accounts:")
    lines.extend(
        f"  {account.id:<12} account_status={account.account_status:<3} {account.name}"
        for account in config.accounts
    )
    lines.append("Access tokens:")
    for token in config.tokens:
        scope = "all accounts" if token.accounts is None else ", ".join(token.accounts)
        lines.append(f"  {token.token:<22} {token.kind.value:<14} user {token.user_id} ({scope})")
    lines.append(f"Control API: {url}/__sim/state  (faults: POST {url}/__sim/faults)")
    return "\n".join(lines)


def _run_sim(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.seed is not None:
            config = SimConfig(**{**config.__dict__, "seed": args.seed})
        app = create_sim_app(config)  # validates the fault rules too
    except SimConfigError as exc:
        print("invalid simulator configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return asyncio.run(_serve(app, args.host, args.port, lambda url: banner(config, url)))


async def _serve(app: web.Application, host: str, port: int, announce: Callable[[str], str]) -> int:
    """Bind, then announce (so "listening" is true when printed), then serve until a signal."""
    runner = web.AppRunner(app, access_log_class=AccessLogger)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            print(f"cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
            return 1
        bound_port = runner.addresses[0][1]
        print(announce(f"http://{host}:{bound_port}"), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sim":
        return _run_sim(args)
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover
