"""Wiring: policy files, the shared parts (`Gateway`), the proxy and admin applications.

`open_gateway()` owns every resource (ledger, upstream session) for its lifetime; `serve()` runs
both ports until SIGINT/SIGTERM. Tests open the same gateway with overrides (clock, ledger).
"""

from __future__ import annotations

import asyncio
import signal
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import jobs, logs
from gateway.admin import create_admin_app
from gateway.attempt import BreakerWatch
from gateway.breaker import BreakerRegistry
from gateway.budget import RetryBudget
from gateway.clock import Clock, SystemClock
from gateway.context import GATEWAY, Gateway
from gateway.core import policy as policy_core
from gateway.core.policy import PolicySet
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.ports import Ledger
from gateway.proxy import handle, open_proxy_guard
from gateway.ratequeue import ThrottleGate
from gateway.recovery import recovery_worker
from gateway.settings import Settings, load_settings
from gateway.stores import open_ledger
from gateway.upstream import open_session, timeout_for
from gateway.verification import Verifier


def bundled_policy_dir() -> Path:
    """The policies shipped with the package (a checkout's top-level policies/ otherwise)."""
    try:
        shipped = resources.files("gateway.policies")
        if shipped.is_dir():
            return Path(str(shipped))
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "policies"


def load_policy(path: Path | None) -> PolicySet:
    """Parse a policy file, or every `*.toml` in a directory (default: the bundled ones)."""
    path = path or bundled_policy_dir()
    files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
    documents: dict[str, Any] = {}
    problems = []
    for file in files:
        try:
            with file.open("rb") as fh:
                documents[file.name] = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{file}: {exc}")
    if problems:
        raise ConfigError(problems)
    return policy_core.parse(documents)


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    *,
    policy: PolicySet | None = None,
    clock: Clock | None = None,
    ledger: Ledger | None = None,
    recovery: bool = True,
) -> AsyncIterator[Gateway]:
    """Open the ledger (applying migrations) and the upstream session, start the recovery
    worker; stop and close them all on exit."""
    policy = policy or load_policy(settings.policy_path)
    async with AsyncExitStack() as stack:
        if ledger is None:
            ledger = await open_ledger(
                settings.database_url, pool_max_size=policy.ledger.pool_max_size
            )
            stack.push_async_callback(ledger.aclose)
        session = open_session(policy.proxy)
        stack.push_async_callback(session.close)
        clock = clock or SystemClock()
        timeout = timeout_for(policy.upstream)
        metrics = Metrics()
        breakers = BreakerRegistry(policy.breaker, clock=clock, listeners=[BreakerWatch(metrics)])
        gw = Gateway(
            settings=settings,
            policy=policy,
            ledger=ledger,
            jobs=ledger,  # type: ignore[arg-type]  # both stores implement every port
            idempotency=ledger,  # type: ignore[arg-type]  # both stores implement every port
            session=session,
            verifier=Verifier(session, settings.upstream, policy.verification, clock, timeout),
            metrics=metrics,
            gate=ThrottleGate(policy.throttle, clock),
            breakers=breakers,
            budget=RetryBudget(policy.retry, clock),
            clock=clock,
            token_key=await ledger.token_key(),
            rules=policy.classification.rules(),
            timeout=timeout,
            started_at=clock.now(),
        )
        if recovery:
            await stack.enter_async_context(recovery_worker(gw))
        yield gw


def create_proxy_app(gw: Gateway) -> web.Application:
    # client_max_size bounds the bodies the proxy reads whole; streamed uploads count their own.
    app = web.Application(
        client_max_size=gw.policy.proxy.max_body_bytes, middlewares=[open_proxy_guard]
    )
    app[GATEWAY] = gw
    jobs.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(settings: Settings, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the proxy and admin ports until SIGINT or SIGTERM."""
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(open_gateway(settings))
        proxy = gw.policy.proxy
        runners = []
        for app, address in (
            (create_proxy_app(gw), settings.listen),
            (create_admin_app(gw), settings.admin_listen),
        ):
            runner = web.AppRunner(
                app, access_log=None, keepalive_timeout=proxy.client_keepalive_seconds
            )
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, address.host, address.port, backlog=proxy.backlog)
            await site.start()
            runners.append(runner)
        logs.event(
            "gateway_started",
            listen=str(settings.listen),
            admin_listen=str(settings.admin_listen),
            upstream=settings.upstream,
            database=settings.database_url.split("@")[-1],
        )
        if ready is not None:
            ready(f"proxy on http://{settings.listen}, admin on http://{settings.admin_listen}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logs.event("gateway_stopping")


@dataclass
class GatewayHandle:
    """A running gateway: its proxy and admin base URLs and its shared parts."""

    url: str
    admin_url: str
    gateway: Gateway


@asynccontextmanager
async def running_gateway(
    upstream: str,
    database_url: str,
    *,
    policy: PolicySet | None = None,
    ledger: Ledger | None = None,
    environ: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    recovery: bool = True,
) -> AsyncIterator[GatewayHandle]:
    """Start the proxy and admin ports on free ports of *host* in front of *upstream*."""
    settings = load_settings(
        environ or {},
        {
            "upstream": upstream,
            "database": database_url,
            "listen": f"{host}:1",
            "admin_listen": f"{host}:1",
        },
    )
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(
            open_gateway(settings, policy=policy, ledger=ledger, recovery=recovery)
        )
        urls = []
        for app in (create_proxy_app(gw), create_admin_app(gw)):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, host, 0).start()
            urls.append(f"http://{host}:{runner.addresses[0][1]}")
        yield GatewayHandle(urls[0], urls[1], gw)
