"""`graph-gateway` command line: the entry point for every command in DESIGN.md §3.4.

Only this module and settings read the environment and print to the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from gateway import __version__, cli_jobs, logs, workers
from gateway.admin_client import DEFAULT_URL as DEFAULT_ADMIN_URL
from gateway.app import load_policy, serve
from gateway.demo import run_demo
from gateway.errors import ConfigError, StoreUnavailable
from gateway.settings import Settings, load_settings, settings_environ
from gateway.sim import SimConfig, SimConfigError, create_sim_app, load_config
from gateway.sim.server import AccessLogger
from gateway.stores import open_ledger


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

    serve = commands.add_parser("serve", help="run the gateway (proxy and admin ports)")
    _gateway_flags(serve)
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (N>1 needs PostgreSQL and Redis)"
    )
    # Internal: how `serve --workers N` starts its workers 1..N-1 (gateway.workers); a worker
    # binds the proxy port only (SO_REUSEPORT) and stops when its parent is gone.
    serve.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    migrate = commands.add_parser("migrate", help="apply migrations/ to the configured database")
    migrate.add_argument("--database", help="GATEWAY_DATABASE_URL (default sqlite:///gateway.db)")
    demo = commands.add_parser(
        "demo", help="simulator + gateway + a faulty 1-50-1 build, with a summary"
    )
    demo.add_argument("--seed", type=int, default=7, help="fault seed (default 7)")
    demo.add_argument("--database", help="ledger URL (default: a temporary SQLite file)")
    demo.add_argument(
        "--linger", type=float, default=0.0, help="keep serving this many seconds afterwards"
    )
    check = commands.add_parser("check-policy", help="validate a policy file or directory")
    check.add_argument("file", type=Path, help="a policy TOML file, or a directory of them")
    _jobs_parser(commands)
    return parser


def _jobs_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`jobs list|show|verify|repair|rollback` (gateway/cli_jobs.py runs them)."""
    admin = argparse.ArgumentParser(add_help=False)
    admin.add_argument(
        "--admin-url",
        help=f"the admin port (GATEWAY_ADMIN_URL, default {DEFAULT_ADMIN_URL}); "
        "the admin token is read from GATEWAY_ADMIN_TOKEN",
    )
    admin.add_argument("--json", action="store_true", help="print the API's JSON, for scripts")
    graph = argparse.ArgumentParser(add_help=False)
    graph.add_argument(
        "--access-token",
        help="Graph token for the gateway's Graph calls (prefer env GATEWAY_ROLLBACK_TOKEN: "
        "a flag shows in `ps`); unset: the gateway's own",
    )
    jobs = commands.add_parser(
        "jobs",
        help="list, show, verify, repair or roll back jobs over the admin API",
        description="The admin API from a terminal. Exit codes: 0 done; 1 the API answered an "
        "error (or a rollback left failed steps); 2 a usage error or no admin API to reach.",
    )
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", parents=[admin], help="jobs, newest first")
    listing.add_argument("--status", help="only jobs in this status (e.g. failed)")
    listing.add_argument("--account", help="only this ad account (act_...)")
    listing.add_argument("--since", help="created at or after: ISO 8601 or unix seconds")
    listing.add_argument("--limit", type=int, help="jobs per page (default 100, at most 500)")
    listing.add_argument("--all", action="store_true", help="follow paging to the last job")
    show = sub.add_parser("show", parents=[admin], help="a job: slots, entities, audit")
    show.add_argument("job_id", metavar="JOB_ID")
    for action, what in (
        ("verify", "compare what Graph holds with the ledger (post-creation verification)"),
        ("repair", "verify, then free missing slots and adopt untracked entities"),
    ):
        cmd = sub.add_parser(action, parents=[admin, graph], help=what)
        cmd.add_argument("job_id", metavar="JOB_ID")
    rollback = sub.add_parser(
        "rollback",
        parents=[admin, graph],
        help="show the rollback plan, ask, then delete the job's entities",
        description="Prints the dry-run plan, asks before deleting unless --yes, then prints "
        "the report. With --json, stdout carries one document: the report when executed, "
        "else the plan.",
    )
    rollback.add_argument("id", metavar="ID", help="a job id (a campaign id with --campaign)")
    rollback.add_argument("--campaign", action="store_true", help="ID is a campaign's Graph id")
    rollback.add_argument("--reason", help="why (required to execute; kept in every audit row)")
    rollback.add_argument("--yes", action="store_true", help="do not ask before deleting")
    rollback.add_argument("--dry-run", action="store_true", help="only show the plan")


def _gateway_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", help="GATEWAY_UPSTREAM (default https://graph.facebook.com)")
    parser.add_argument("--listen", help="GATEWAY_LISTEN (default 127.0.0.1:8080)")
    parser.add_argument("--admin-listen", help="GATEWAY_ADMIN_LISTEN (default 127.0.0.1:9090)")
    parser.add_argument("--database", help="GATEWAY_DATABASE_URL (default sqlite:///gateway.db)")
    parser.add_argument("--redis", help="GATEWAY_REDIS_URL (default: in-process coordination)")
    parser.add_argument("--policy", help="GATEWAY_POLICY: a policy file or directory")
    parser.add_argument("--log-format", choices=("json", "text"), help="GATEWAY_LOG_FORMAT")


def _settings(args: argparse.Namespace) -> Settings:
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "worker_id")}
    return load_settings(os.environ, flags)


def _problems(title: str, problems: list[str]) -> int:
    print(title, file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return 2


def _run_serve(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        load_policy(settings.policy_path)
    except ConfigError as exc:
        return _problems("invalid gateway configuration:", exc.problems)
    if args.worker_id < 0:
        return _problems("invalid gateway configuration:", ["--worker-id: internal, >= 0"])
    logs.configure(settings.log_format)
    if settings.workers > 1 or args.worker_id:
        workers.tag_logs(args.worker_id)
    # A worker gets the parent's resolved settings through its environment (flags win over
    # GATEWAY_* variables, so it is given none): a database password never shows in `ps`.
    worker_env = {**os.environ, **settings_environ(settings)}
    # Every proxied request allocates many short-lived objects; the default generation-0
    # threshold (700) runs the collector thousands of times a second. Measured with
    # bench/proxy_bench.py on this machine: -17 % CPU per pass-through request, +29 %
    # saturated throughput. Objects alive at start never need scanning again (freeze).
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        asyncio.run(
            serve(
                settings,
                ready=lambda where: print(f"{workers.READY_PREFIX}{where}", flush=True),
                worker_id=args.worker_id,
                worker_command=[sys.executable, "-m", "gateway", "serve"],
                worker_env=worker_env,
            )
        )
    except StoreUnavailable as exc:
        return _problems("cannot open the ledger:", [exc.message])
    except ConfigError as exc:
        return _problems("cannot start the gateway:", exc.problems)
    except workers.WorkerStartError as exc:
        return _problems("cannot start the worker processes:", [str(exc)])
    except OSError as exc:
        return _problems("cannot listen:", [str(exc)])
    return 0


def _run_migrate(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(os.environ, {"database": args.database})
    except ConfigError as exc:
        return _problems("invalid configuration:", exc.problems)

    async def run() -> None:
        ledger = await open_ledger(settings.database_url)  # applies what is missing
        await ledger.aclose()

    try:
        asyncio.run(run())
    except StoreUnavailable as exc:
        return _problems("cannot migrate:", [exc.message])
    print(f"migrations applied to {settings.database_url.split('@')[-1]}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        print(text, end="" if text.startswith("\r") or text == "\n" else "\n", flush=True)

    return asyncio.run(
        run_demo(seed=args.seed, database_url=args.database, say=say, linger=args.linger)
    )


def _run_jobs(args: argparse.Namespace) -> int:
    access = cli_jobs.Access(
        admin_url=args.admin_url or os.environ.get("GATEWAY_ADMIN_URL") or DEFAULT_ADMIN_URL,
        admin_token=os.environ.get("GATEWAY_ADMIN_TOKEN") or None,
        graph_token=getattr(args, "access_token", None)
        or os.environ.get("GATEWAY_ROLLBACK_TOKEN")
        or None,
    )
    term = cli_jobs.Terminal(out=sys.stdout, err=sys.stderr, stdin=sys.stdin)
    try:
        return asyncio.run(cli_jobs.run(args, access, term))
    except KeyboardInterrupt:
        # At the rollback question nothing was sent; during a call, the gateway finishes what
        # it started (a rollback is resumable: run it again to see where it stands).
        print("\ninterrupted", file=sys.stderr)
        return 130


def _run_check_policy(args: argparse.Namespace) -> int:
    if not args.file.exists():
        return _problems("invalid policy:", [f"{args.file}: no such file or directory"])
    try:
        load_policy(args.file)
    except ConfigError as exc:
        return _problems(f"{args.file}: invalid policy", exc.problems)
    print(f"{args.file}: ok")
    return 0


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
    handlers = {
        "sim": _run_sim,
        "serve": _run_serve,
        "migrate": _run_migrate,
        "demo": _run_demo,
        "check-policy": _run_check_policy,
        "jobs": _run_jobs,
    }
    if args.command in handlers:
        return handlers[args.command](args)
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover
