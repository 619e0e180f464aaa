"""A running simulator and its control API, for tests, the demo and scripts.

`running_simulator()` starts the simulator on a free port; `SimHandle` drives `/__sim/` over
real HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from gateway.sim.config import SimConfig, parse_config
from gateway.sim.server import AccessLogger, create_sim_app


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
