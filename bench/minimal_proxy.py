"""A minimal aiohttp pass-through proxy: the pure-Python reference of bench/proxy_bench.py.

    python bench/minimal_proxy.py --listen 127.0.0.1:18300 --upstream http://127.0.0.1:18101

One shared ClientSession (unlimited keep-alive pool), bodies read whole, hop-by-hop headers
dropped both ways, answers passed back unchanged. No logging, no metrics, no classification:
what any aiohttp proxy costs at least. `--uvloop` runs it on uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

# RFC 9110 hop-by-hop headers, plus what aiohttp sets itself on each side (Host, length).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization"})
HOP_BY_HOP |= {"te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _strip(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


async def handle(request: web.Request) -> web.Response:
    url = URL(request.app[UPSTREAM] + request.raw_path, encoded=True)
    body = await request.read() if request.body_exists else None
    try:
        async with request.app[SESSION].request(
            request.method, url, headers=_strip(request.headers), data=body, allow_redirects=False
        ) as upstream:
            raw = await upstream.read()
            return web.Response(status=upstream.status, body=raw, headers=_strip(upstream.headers))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return web.Response(status=502, text=f"upstream error: {exc!r}")


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    app[SESSION] = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=60),
    )
    yield
    await app[SESSION].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:18300", help="HOST:PORT")
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    host, _, port = args.listen.rpartition(":")
    web.run_app(app, host=host, port=int(port), access_log=None, backlog=4096, print=None)


if __name__ == "__main__":
    main()
