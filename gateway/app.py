"""Wiring: policy files, the shared parts (`Gateway`), the proxy and admin applications.

`open_gateway()` owns every resource (ledger, Redis coordinator, upstream session) for its
lifetime; `serve()` runs both ports (and the worker processes of `--workers N`) until
SIGINT/SIGTERM. Tests open the same gateway with overrides (clock, ledger).
"""

from __future__ import annotations

import asyncio
import signal
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import jobs, logs, workers
from gateway.admin import create_admin_app, create_worker_metrics_app
from gateway.attempt import BreakerWatch
from gateway.breaker import BreakerRegistry, MemoryBreakerStore
from gateway.budget import RetryBudget
from gateway.clock import Clock, SystemClock
from gateway.context import GATEWAY, Gateway
from gateway.core import policy as policy_core
from gateway.core.policy import PolicySet
from gateway.errors import ConfigError, StoreUnavailable
from gateway.metrics import Metrics
from gateway.ports import Ledger
from gateway.proxy import handle, open_proxy_guard
from gateway.ratequeue import ThrottleGate
from gateway.recovery import recovery_worker
from gateway.settings import Settings, load_settings, redact_url
from gateway.stores import open_ledger
from gateway.stores.redis_coord import RedisCoordinator, open_coordinator
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


# A gate's Redis key outlives the longest block the policy allows by this factor, so a blocked
# account is never forgotten mid-block (RedisGateStore's TTL counts from the last write).
GATE_TTL_FACTOR = 2


async def _open_coordinator(url: str, policy: PolicySet) -> RedisCoordinator:
    """The Redis coordinator for *url*, having answered a PING; ConfigError if unreachable.

    Its CAS back-off sleeps on the real clock: it is a store's internal jitter, not gateway
    time a test would want to drive.
    """
    ttl = max(7200, int(policy.throttle.max_block_seconds * GATE_TTL_FACTOR))
    try:
        return await open_coordinator(url, gate_ttl_seconds=ttl)
    except StoreUnavailable as exc:
        raise ConfigError([f"redis: cannot reach {redact_url(url)}: {exc.message}"]) from exc


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    *,
    policy: PolicySet | None = None,
    clock: Clock | None = None,
    ledger: Ledger | None = None,
    recovery: bool = True,
) -> AsyncIterator[Gateway]:
    """Open the ledger (applying migrations), the Redis coordinator when `redis_url` is set and
    the upstream session, start the recovery worker; stop and close them all on exit."""
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
        coordinator = None
        if settings.redis_url:
            coordinator = await _open_coordinator(settings.redis_url, policy)
            stack.push_async_callback(coordinator.aclose)
            # While Redis is down, admission runs on a process-local breaker (it keeps
            # protecting Graph); the gates and the budget fail closed with StoreError.
            breakers = BreakerRegistry(
                policy.breaker,
                clock=clock,
                store=coordinator.breakers,
                fallback=MemoryBreakerStore(),
                listeners=[BreakerWatch(metrics)],
            )
            gate = ThrottleGate(policy.throttle, clock, store=coordinator.gates)
            budget = RetryBudget(policy.retry, clock, store=coordinator.budget)
        else:
            breakers = BreakerRegistry(
                policy.breaker, clock=clock, listeners=[BreakerWatch(metrics)]
            )
            gate = ThrottleGate(policy.throttle, clock)
            budget = RetryBudget(policy.retry, clock)
        gw = Gateway(
            settings=settings,
            policy=policy,
            ledger=ledger,
            jobs=ledger,  # type: ignore[arg-type]  # both stores implement every port
            idempotency=ledger,  # type: ignore[arg-type]  # both stores implement every port
            audit=ledger,  # type: ignore[arg-type]  # both stores implement every port
            session=session,
            verifier=Verifier(policy.verification, clock),
            metrics=metrics,
            gate=gate,
            breakers=breakers,
            budget=budget,
            coordinator=coordinator,
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


async def serve(
    settings: Settings,
    *,
    ready: Callable[[str], None] | None = None,
    worker_id: int = 0,
    worker_command: Sequence[str] = (),
    worker_env: Mapping[str, str] | None = None,
) -> None:
    """Run the proxy and admin ports until SIGINT or SIGTERM.

    With `settings.workers` N > 1 this process is worker 0, the parent: it opens the gateway
    (migrations run here, once), binds both ports, then starts workers 1..N-1 as
    `worker_command --worker-id I` with *worker_env* and waits until they serve. A worker
    (*worker_id* > 0) binds the proxy port only, and also stops when its parent is gone.
    """
    parent = worker_id == 0
    # SO_REUSEPORT only when processes are meant to share the port: on a single process it
    # would let a second gateway started by mistake on the same port silently take half of
    # the connections instead of failing with "address in use".
    shared = settings.workers > 1 or not parent
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(open_gateway(settings))
        host = settings.listen.host
        # How this process reaches its own proxy port (a repair re-creates through it).
        loopback = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
        gw.self_url = f"http://{loopback}:{settings.listen.port}"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        proxy = gw.policy.proxy
        apps = [(create_proxy_app(gw), settings.listen, shared)]
        # The admin port is the parent's alone (on a shared port a scrape would land on a
        # random process). Prometheus metrics live in each process's memory: a worker serves
        # its own on a loopback listener, named in its ready line, and the parent's /metrics
        # gathers them all. The breakers, gates and budget the admin API shows and forces are
        # in Redis, shared by every worker; only the queue depths and in-flight counts of
        # /admin/v1/accounts are the parent's own.
        pool = None
        if parent and settings.workers > 1:
            pool = workers.WorkerPool(worker_command, worker_env or {}, settings.workers, gw.clock)
        if parent:
            apps.append((create_admin_app(gw, pool=pool), settings.admin_listen, False))
        for app, address, reuse_port in apps:
            runner = web.AppRunner(
                app, access_log=None, keepalive_timeout=proxy.client_keepalive_seconds
            )
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(
                runner,
                address.host,
                address.port,
                backlog=proxy.backlog,
                reuse_port=reuse_port or None,
            )
            await site.start()
        metrics_port = None
        if not parent:
            metrics_port = await stack.enter_async_context(
                workers.metrics_listener(create_worker_metrics_app(gw))
            )
            await stack.enter_async_context(workers.watching_parent(stop))
        elif pool is not None:
            await stack.enter_async_context(workers.running_pool(pool))
        logs.event(
            "gateway_started",
            listen=str(settings.listen),
            admin_listen=str(settings.admin_listen) if parent else None,
            upstream=settings.upstream,
            database=settings.database_url.split("@")[-1],
            redis=redact_url(settings.redis_url) if settings.redis_url else None,
            workers=settings.workers if parent else None,
        )
        if ready is not None:
            where = f"proxy on http://{settings.listen}"
            if parent:
                where += f", admin on http://{settings.admin_listen}"
            if settings.workers > 1:
                where += f", {settings.workers} worker processes"
            if metrics_port is not None:
                where += f", {workers.metrics_note(metrics_port)}"
            ready(where)
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
    clock: Clock | None = None,
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
            open_gateway(settings, policy=policy, ledger=ledger, recovery=recovery, clock=clock)
        )
        urls = []
        for app in (create_proxy_app(gw), create_admin_app(gw)):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, host, 0).start()
            urls.append(f"http://{host}:{runner.addresses[0][1]}")
        gw.self_url = urls[0]
        yield GatewayHandle(urls[0], urls[1], gw)
