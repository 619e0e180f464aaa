"""Calls the gateway does not need to touch go through byte for byte (DESIGN.md §2.1)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.app import load_policy
from gateway.core.policy import PolicySet
from gateway.testing import GatewayHandle, SimHandle, running_gateway

TOKEN = "sim-token-alice"


def _policy(**changes: dict[str, float | int]) -> PolicySet:
    policy = load_policy(None)
    for table, values in changes.items():
        policy = replace(policy, **{table: replace(getattr(policy, table), **values)})
    return policy


async def _echoed(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


class TestFidelity:
    async def test_raw_path_and_query_arrive_exactly_as_sent(
        self, http: aiohttp.ClientSession, echo_gateway: GatewayHandle
    ) -> None:
        """Odd but valid encodings in path and query are not re-encoded on the way."""
        raw = "/v25.0/act_1/campaigns?fields=name%2Cstatus&filtering=%5B%5D&x=a+b&y=%7e&empty="
        url = URL(echo_gateway.url + raw, encoded=True)
        async with http.get(url) as resp:
            seen = await _echoed(resp)
        assert seen["raw_path"] == raw
        assert seen["method"] == "GET"

    @pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def test_every_method_and_body_passes_through(
        self, http: aiohttp.ClientSession, echo_gateway: GatewayHandle, method: str
    ) -> None:
        """The method and the body bytes reach the upstream unchanged."""
        body = b"\x00\x01binary body\xff" * 100
        async with http.request(
            method,
            echo_gateway.url + "/v25.0/123/some_edge",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            seen = await _echoed(resp)
        assert seen["method"] == method
        assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()

    async def test_hop_by_hop_headers_are_dropped_and_forwarding_headers_added(
        self, http: aiohttp.ClientSession, echo_gateway: GatewayHandle, echo_url: str
    ) -> None:
        """Connection and the headers it names, TE, Proxy-Authorization stay on the first hop."""
        headers = {
            "Connection": "keep-alive, X-Private",
            "X-Private": "hop only",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Custom": "end to end",
            "User-Agent": "fbbizsdk-python-v26.0.3",
            "X-Forwarded-For": "10.0.0.7",
        }
        async with http.get(echo_gateway.url + "/me", headers=headers) as resp:
            seen = await _echoed(resp)
        got = {k.lower(): v for k, v in seen["headers"]}
        assert got["x-custom"] == "end to end"
        assert got["user-agent"] == "fbbizsdk-python-v26.0.3"
        for name in ("x-private", "te", "proxy-authorization"):
            assert name not in got
        assert got["x-forwarded-for"] == "10.0.0.7, 127.0.0.1"
        assert got["x-forwarded-proto"] == "http"
        assert got["host"] == echo_url.removeprefix("http://")

    async def test_host_header_never_changes_where_a_request_goes(
        self, http: aiohttp.ClientSession, echo_gateway: GatewayHandle, echo_url: str
    ) -> None:
        """A client-chosen Host reaches the configured upstream, with the upstream's Host."""
        async with http.get(echo_gateway.url + "/me", headers={"Host": "evil.example"}) as resp:
            seen = await _echoed(resp)
        assert {k.lower(): v for k, v in seen["headers"]}["host"] == echo_url[7:]

    async def test_response_headers_pass_without_hop_by_hop_ones(
        self, http: aiohttp.ClientSession, echo_gateway: GatewayHandle
    ) -> None:
        """Graph's headers come back; those its Connection header names do not."""
        async with http.get(echo_gateway.url + "/me") as resp:
            assert resp.headers["X-Upstream"] == "echo"
            assert "X-Hop" not in resp.headers
            assert len(resp.headers["X-Gateway-Request-Id"]) == 24

    async def test_compressed_answers_pass_through_compressed(
        self, echo_gateway: GatewayHandle
    ) -> None:
        """Content-Encoding and the compressed bytes are not touched."""
        async with (
            aiohttp.ClientSession(auto_decompress=False) as raw_http,
            raw_http.get(echo_gateway.url + "/gzip", headers={"Accept-Encoding": "gzip"}) as resp,
        ):
            body = await resp.read()
            assert resp.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(body))["data"][0] == "x" * 100

    async def test_large_uploads_and_downloads_stream_through(
        self, http: aiohttp.ClientSession, echo_gateway: GatewayHandle
    ) -> None:
        """A 24 MB upload and an 8 MB download pass whole (and are streamed, not buffered)."""
        blob = hashlib.sha256(b"seed").digest() * (24 * 1024 * 1024 // 32)

        async def chunks() -> AsyncIterator[bytes]:  # an unsized, chunked upload
            for i in range(0, len(blob), 1 << 20):
                yield blob[i : i + (1 << 20)]

        async with http.post(echo_gateway.url + "/upload", data=chunks()) as resp:
            seen = await _echoed(resp)
        assert seen["body_length"] == len(blob)
        assert seen["body_sha256"] == hashlib.sha256(blob).hexdigest()
        async with http.get(echo_gateway.url + "/big?size=8388608") as resp:
            assert resp.status == 200
            assert len(await resp.read()) == 8388608


class TestGraphThroughTheGateway:
    async def test_reads_match_direct_answers(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Status, body and Graph headers of a read are the same directly and through it."""
        path = f"/v25.0/act_1001?fields=name,account_status&access_token={TOKEN}"
        async with http.get(graph_sim.url + path) as direct:
            direct_body, direct_headers = await direct.read(), direct.headers
        async with http.get(gateway.url + path) as proxied:
            assert proxied.status == direct.status == 200
            assert await proxied.read() == direct_body
            for name in ("facebook-api-version", "Content-Type", "ETag", "Cache-Control"):
                assert proxied.headers[name] == direct_headers[name]
            assert "X-Gateway-Request-Id" in proxied.headers

    async def test_graph_errors_pass_through_unchanged(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """An expired token's 190/463 with WWW-Authenticate comes back as Graph sent it."""
        async with http.get(gateway.url + "/v25.0/me?access_token=sim-token-expired") as resp:
            body = await resp.json()
            assert resp.status == 400
            assert body["error"]["code"] == 190
            assert body["error"]["error_subcode"] == 463
            assert resp.headers["WWW-Authenticate"].startswith("OAuth")


class TestRefusals:
    async def test_bodies_over_the_limit_get_413_and_nothing_is_sent(
        self, http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
    ) -> None:
        """A form body past max_body_bytes is refused before anything reaches Graph."""
        policy = _policy(proxy={"max_body_bytes": 1024})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            data = {"name": "x" * 4000, "objective": "OUTCOME_TRAFFIC"}
            async with http.post(
                f"{gw.url}/v25.0/act_1001/campaigns?access_token={TOKEN}", data=data
            ) as resp:
                body = await resp.json()
                assert resp.status == 413
                assert body["error"]["gateway_reason"] == "bad_request"
                assert body["error"]["type"] == "GatewayException"
                assert body["error"]["fbtrace_id"] == resp.headers["X-Gateway-Request-Id"]
        assert (await graph_sim.requests())["http_requests"] == 0

    async def test_the_reserved_prefix_is_never_proxied(
        self, http: aiohttp.ClientSession, echo_gateway: GatewayHandle
    ) -> None:
        """/_gateway/ belongs to the gateway: unknown paths there are a Graph-shaped 404."""
        async with http.get(echo_gateway.url + "/_gateway/v1/nothing") as resp:
            body = await resp.json()
            assert resp.status == 404
            assert body["error"]["gateway_reason"] == "bad_request"

    @pytest.mark.parametrize(
        "request_line",
        [b"GET http://example.com/me HTTP/1.1", b"CONNECT example.com:443 HTTP/1.1"],
        ids=["absolute-form", "connect"],
    )
    async def test_it_is_not_an_open_proxy(
        self, echo_gateway: GatewayHandle, request_line: bytes
    ) -> None:
        """Absolute-form targets and CONNECT are refused, not forwarded anywhere."""
        host, port = echo_gateway.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request_line + b"\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.split()[1] in (b"400", b"405"), answer[:300]
        assert b"echo" not in answer

    async def test_a_read_that_gets_no_answer_is_a_graph_shaped_504(
        self, http: aiohttp.ClientSession, echo_url: str, sqlite_url: str
    ) -> None:
        """Past the per-try timeout the caller gets upstream_timeout with Retry-After."""
        policy = _policy(upstream={"per_try_timeout_seconds": 0.2, "deadline_seconds": 1.0})
        async with (
            running_gateway(echo_url, sqlite_url, policy=policy) as gw,
            http.get(gw.url + "/stall?seconds=5") as resp,
        ):
            body = await resp.json()
            assert resp.status == 504
            assert body["error"]["gateway_reason"] == "upstream_timeout"
            assert body["error"]["is_transient"] is True
            assert body["error"]["code"] == 9013
            assert resp.headers["Retry-After"] == "1"

    async def test_an_unreachable_graph_is_a_graph_shaped_502(
        self, http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """Connection refused: upstream_unavailable, transient, nothing was sent."""
        async with (
            running_gateway("http://127.0.0.1:9", f"sqlite:///{tmp_path / 'g.db'}") as gw,
            http.get(gw.url + "/v25.0/me") as resp,
        ):
            body = await resp.json()
            assert resp.status == 502
            assert body["error"]["gateway_reason"] == "upstream_unavailable"
            assert body["error"]["is_transient"] is True
