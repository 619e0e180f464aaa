"""A small client of the admin API (DESIGN.md §3.3) for the command line: JSON in, JSON out.

It reads no environment (cli.py passes the URL and tokens) and never logs a token.

    Exception
      AdminAPIError             the API answered with an error: its status and message
    ConnectionError
      AdminConnectionError      no answer: refused, timed out, a bad URL, a broken connection
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

DEFAULT_URL = "http://127.0.0.1:9090"
# A rollback answers only when its last batch is done: a large job under a throttled account
# can take minutes, so the read timeout is generous; a gateway that does not even accept the
# connection is reported quickly.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=900)
# Enough of a non-JSON error body to say what answered (a proxy's page, another service).
MAX_SHOWN = 200


class AdminAPIError(Exception):
    """The admin API answered with an error (Graph-shaped `{"error": {"message", ...}}`)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


class AdminConnectionError(ConnectionError):
    """The admin API could not be reached (or the URL cannot name it)."""


def _segment(value: str) -> str:
    """*value* as one path segment: a job id can never reach another route."""
    return quote(value, safe="")


class AdminClient:
    """`get`/`post` one admin resource; `pages` follows `paging.next`."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self._call("GET", path, params=params)

    async def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self._call("POST", path, body=dict(body or {}))

    async def pages(
        self, path: str, params: Mapping[str, str] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every page of a listing, the first from *path*, then each `paging.next`."""
        page = await self.get(path, params)
        yield page
        while isinstance(following := (page.get("paging") or {}).get("next"), str):
            # `next` is the path and query as the gateway saw them: relative to the base URL,
            # which also keeps the prefix of a reverse proxy in front of the admin port.
            page = await self._call("GET", following)
            yield page

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.get(f"/admin/v1/jobs/{_segment(job_id)}")

    async def job_action(
        self, job_id: str, action: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST /admin/v1/jobs/{id}/{verify|repair|rollback}."""
        return await self.post(f"/admin/v1/jobs/{_segment(job_id)}/{action}", body)

    async def campaign_rollback(self, campaign_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.post(f"/admin/v1/campaigns/{_segment(campaign_id)}/rollback", body)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        # `encoded=True`: a paging.next cursor is already percent-encoded; encoding it again
        # would change it. Paths built here are quoted by _segment.
        url = URL(self._base + path, encoded=True)
        if params:
            url = url.update_query(params)
        try:
            async with self._session.request(method, url, json=body, headers=self._headers) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdminConnectionError(_why(exc)) from exc
        return _answer(status, text)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def _answer(status: int, text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    if status < 400 and isinstance(doc, dict):
        return doc
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        raise AdminAPIError(status, err["message"], doc)
    shown = " ".join(text.split())[:MAX_SHOWN] or "(empty body)"
    raise AdminAPIError(status, f"HTTP {status} that is not the admin API's JSON: {shown}", text)


@asynccontextmanager
async def admin_client(base_url: str, token: str | None) -> AsyncIterator[AdminClient]:
    """A client of the admin API at *base_url* (AdminConnectionError: it cannot name one)."""
    try:
        url = URL(base_url)
    except ValueError as exc:
        raise AdminConnectionError(f"{base_url!r} is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise AdminConnectionError(f"{base_url!r} is not an http(s):// URL of the admin port")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield AdminClient(session, base_url, token)
