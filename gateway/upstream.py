"""The connection to Graph: one shared aiohttp ClientSession and the translation of its errors.

No aiohttp client exception leaves this module: `map_errors()` turns them into
`UpstreamUnavailable` (nothing was sent), `UpstreamTimeout` (a read got no answer) or
`OutcomeUnknown` (a create was sent and got no answer).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.core.policy import ProxyPolicy, UpstreamPolicy
from gateway.errors import (
    GatewayError,
    OutcomeUnknown,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

# RFC 9110 §7.6.1 hop-by-hop headers, plus what aiohttp sets itself for each side.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def open_session(proxy: ProxyPolicy) -> aiohttp.ClientSession:
    """The one session every request to Graph shares (its pool is the keep-alive pool)."""
    connector = aiohttp.TCPConnector(
        limit=proxy.upstream_pool_size,
        limit_per_host=proxy.upstream_pool_per_host,
        keepalive_timeout=proxy.upstream_keepalive_seconds,
        ttl_dns_cache=300,
    )
    # Bodies pass through as Graph sent them: compressed stays compressed.
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def timeout_for(policy: UpstreamPolicy) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=policy.deadline_seconds,
        sock_connect=policy.connect_timeout_seconds,
        sock_read=policy.per_try_timeout_seconds,
    )


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Headers named in `Connection:` are hop-by-hop too."""
    return {
        t.strip().lower()
        for value in headers.getall("Connection", [])
        for t in value.split(",")
        if t.strip()
    }


def forward_headers(
    headers: CIMultiDictProxy[str], *, remote: str | None, scheme: str
) -> CIMultiDict[str]:
    """The client's headers for Graph: hop-by-hop dropped, Host left to aiohttp (the upstream's),
    `X-Forwarded-For` / `-Proto` added."""
    drop = HOP_BY_HOP | _connection_tokens(headers) | {"host"}
    out: CIMultiDict[str] = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)
    if remote:
        prior = out.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
    out["X-Forwarded-Proto"] = scheme
    return out


def response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Graph's headers for the client: hop-by-hop and Content-Length dropped (aiohttp sets it)."""
    drop = HOP_BY_HOP | _connection_tokens(headers) | {"content-length"}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def _tagged(exc: UpstreamError, transport: str) -> UpstreamError:
    exc.transport = transport
    return exc


@contextmanager
def map_errors(*, create: bool) -> Iterator[None]:
    """Translate aiohttp client failures; *create* says whether an unanswered request may have
    created something (then it is `OutcomeUnknown`, never retried blindly). Each error carries
    its `transport` (connect, timeout, reset) for the retry classification."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise _tagged(
            UpstreamUnavailable(f"Graph could not be reached: {exc.strerror or exc}"), "connect"
        ) from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise _tagged(
            UpstreamUnavailable("Graph could not be reached in time (connect)"), "connect"
        ) from exc
    except TimeoutError as exc:
        if create:
            raise _tagged(
                OutcomeUnknown(
                    "Graph did not answer in time; the create may or may not have happened"
                ),
                "timeout",
            ) from exc
        raise _tagged(UpstreamTimeout("Graph did not answer in time"), "timeout") from exc
    except aiohttp.ClientError as exc:
        # aiohttp wraps an error raised by the request body (an upload past its limit) in a
        # connection error: that one is the caller's, and nothing whole was sent.
        if isinstance(exc.__cause__, GatewayError):
            raise exc.__cause__ from exc
        if create:
            raise _tagged(
                OutcomeUnknown(
                    "The connection to Graph was lost before its answer; the create may or may "
                    "not have happened"
                ),
                "reset",
            ) from exc
        raise _tagged(
            UpstreamUnavailable("The connection to Graph was lost before its answer"), "reset"
        ) from exc


_DECODABLE = ("gzip", "deflate")


def accept_encoding(client_value: str | None) -> str:
    """What the gateway asks Graph for when it must read the answer: only codings it can read."""
    offered = {p.split(";")[0].strip().lower() for p in (client_value or "").split(",")}
    usable = [c for c in _DECODABLE if c in offered]
    return ", ".join(usable) if usable else "identity"


def decode_body(raw: bytes, coding: str | None) -> bytes:
    """*raw* with its Content-Encoding undone (gzip, deflate); b"" if it cannot be."""
    coding = (coding or "identity").strip().lower()
    try:
        if coding == "gzip":
            return gzip.decompress(raw)
        if coding == "deflate":
            try:
                return zlib.decompress(raw)
            except zlib.error:
                return zlib.decompress(raw, -zlib.MAX_WBITS)
        if coding not in ("identity", ""):
            return b""  # a coding the gateway cannot read (br, zstd): no body to judge
    except (OSError, EOFError, zlib.error):
        return b""
    return raw
