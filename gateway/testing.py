"""Test support shipped with the package, and the pytest plugin that exposes it.

`running_simulator()` starts the Graph simulator on a free loopback port; `SimHandle` drives
its control API over real HTTP. `running_gateway()` starts the gateway in front of any
upstream. The `graph_sim` fixture gives each test a fresh simulator with the documented
defaults; `graph_sim_factory` starts one from a configuration of the test's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiohttp
import pytest
from aiohttp import web

from gateway.sim import SimConfig, create_sim_app, parse_config
from gateway.sim.server import AccessLogger

if TYPE_CHECKING:
    from gateway.context import Gateway
    from gateway.core.policy import PolicySet
    from gateway.ports import Ledger

try:  # pytest-asyncio comes with pytest-aiohttp (the dev extra); the plugin works without it
    import pytest_asyncio

    _fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - only without the dev extra
    _fixture = pytest.fixture

F = TypeVar("F", bound=Callable[..., Any])


def _async_fixture(fn: F) -> F:
    return cast(F, _fixture(fn))


class SimHandle:
    """A running simulator: its base URL and its control API (`/__sim/...`)."""

    def __init__(self, url: str, app: web.Application, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.app = app
        self._session = session

    async def _call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        params = {k: str(v) for k, v in query.items() if v is not None}
        async with self._session.request(
            method, f"{self.url}/__sim/{path}", json=body, params=params
        ) as resp:
            data = await resp.json()
            if resp.status >= 400:
                raise AssertionError(f"simulator control {method} {path}: {resp.status} {data}")
            return data

    async def state(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "state")
        return data

    async def objects(self, **filters: Any) -> list[dict[str, Any]]:
        """Ground truth, e.g. `objects(type="adset", campaign_id=cid, live=True)`."""
        if filters.get("live") is True:
            filters["live"] = "true"
        data = await self._call("GET", "objects", **filters)
        rows: list[dict[str, Any]] = data["objects"]
        return rows

    async def counts(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "counts")
        return data

    async def requests(self, *, log: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "requests", log=log)
        return data

    async def add_fault(self, **rule: Any) -> dict[str, Any]:
        data = await self._call("POST", "faults", rule)
        added: dict[str, Any] = data["faults"][0]
        return added

    async def faults(self) -> list[dict[str, Any]]:
        data = await self._call("GET", "faults")
        rules: list[dict[str, Any]] = data["faults"]
        return rules

    async def clear_faults(self) -> None:
        await self._call("DELETE", "faults")

    async def put_account(self, **fields: Any) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("POST", "accounts", fields)
        return data

    async def put_token(self, **fields: Any) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("POST", "tokens", fields)
        return data

    async def throttle(self, account: str, seconds: float) -> dict[str, Any]:
        data: dict[str, Any] = await self._call(
            "POST", f"accounts/{account}/throttle", {"seconds": seconds}
        )
        return data

    async def set_limits(
        self,
        *,
        object_limits: Mapping[str, Any] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = {"object_limits": dict(object_limits or {}), "rate_limits": dict(rate_limits or {})}
        data: dict[str, Any] = await self._call("POST", "limits", body)
        return data

    async def advance(self, seconds: float) -> float:
        """Move the simulator's clock forward (throttle blocks, usage decay, created_time)."""
        data = await self._call("POST", "clock", {"advance_seconds": seconds})
        return float(data["now"])

    async def reset(self, *, seed: int | None = None) -> None:
        await self._call("POST", "reset", {} if seed is None else {"seed": seed})


@asynccontextmanager
async def running_simulator(
    config: SimConfig | Mapping[str, Any] | None = None, *, host: str = "127.0.0.1"
) -> AsyncIterator[SimHandle]:
    """Start the simulator on a free port of *host*; stop it on exit."""
    if not isinstance(config, SimConfig):
        config = parse_config(config or {})
    app = create_sim_app(config)
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log_class=AccessLogger)
    await runner.setup()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = runner.addresses[0][1]
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield SimHandle(f"http://{host}:{port}", app, session)


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
) -> AsyncIterator[GatewayHandle]:
    """Start the proxy and admin ports on free ports of *host* in front of *upstream*."""
    # Imported here so the pytest plugin loads without the gateway's storage drivers.
    from gateway.admin import create_admin_app
    from gateway.app import create_proxy_app, open_gateway
    from gateway.settings import load_settings

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
        gw = await stack.enter_async_context(open_gateway(settings, policy=policy, ledger=ledger))
        urls = []
        for app in (create_proxy_app(gw), create_admin_app(gw)):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, host, 0).start()
            urls.append(f"http://{host}:{runner.addresses[0][1]}")
        yield GatewayHandle(urls[0], urls[1], gw)


SimFactory = Callable[..., Awaitable[SimHandle]]


@_async_fixture
async def graph_sim() -> AsyncIterator[SimHandle]:
    """A fresh simulator with the documented default accounts and tokens."""
    async with running_simulator() as sim:
        yield sim


@_async_fixture
async def graph_sim_factory() -> AsyncIterator[SimFactory]:
    """`await graph_sim_factory({...config...})` starts a simulator with that configuration."""
    async with AsyncExitStack() as stack:

        async def start(config: SimConfig | Mapping[str, Any] | None = None) -> SimHandle:
            return await stack.enter_async_context(running_simulator(config))

        yield start
