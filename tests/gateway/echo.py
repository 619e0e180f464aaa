"""A tiny upstream that reports what it received, for checking what the gateway forwards."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from aiohttp import web

STOP = web.AppKey("stop", asyncio.Event)


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_length": len(body),
        },
        headers={"X-Upstream": "echo", "Connection": "keep-alive, X-Hop", "X-Hop": "1"},
    )


async def _gzip(request: web.Request) -> web.StreamResponse:
    payload = gzip.compress(json.dumps({"data": ["x" * 100] * 10}).encode())
    return web.Response(
        body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )


async def _upload(request: web.Request) -> web.StreamResponse:
    """Counts a streamed body chunk by chunk (never holds it whole)."""
    size, digest = 0, hashlib.sha256()
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        digest.update(chunk)
    return web.json_response({"body_length": size, "body_sha256": digest.hexdigest()})


async def _big(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", "1048576"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    block = b"g" * 65536
    sent = 0
    while sent < size:
        chunk = block[: min(len(block), size - sent)]
        await response.write(chunk)
        sent += len(chunk)
    await response.write_eof()
    return response


async def _stall(request: web.Request) -> web.StreamResponse:
    with suppress(TimeoutError):
        await asyncio.wait_for(request.app[STOP].wait(), float(request.query.get("seconds", "5")))
    return web.json_response({"late": True})


@asynccontextmanager
async def running_echo() -> AsyncIterator[str]:
    app = web.Application(client_max_size=1024**3)
    app[STOP] = asyncio.Event()

    async def stop(app: web.Application) -> None:
        app[STOP].set()

    app.on_shutdown.append(stop)
    app.router.add_route("*", "/gzip", _gzip)
    app.router.add_route("*", "/upload", _upload)
    app.router.add_route("*", "/big", _big)
    app.router.add_route("*", "/stall", _stall)
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
