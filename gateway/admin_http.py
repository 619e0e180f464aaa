"""Shared pieces of the admin API's handlers: its error bodies and query parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.errors import ERROR_TABLE

# Every admin listing (jobs, entities, audit) pages the same way: `limit` 1..MAX_PAGE.
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def error(status: int, message: str, **extra: Any) -> web.Response:
    body = {"error": {"message": message, "type": "GatewayAdminError", "status": status, **extra}}
    return web.json_response(body, status=status)


def rejected(reason: str, message: str, **extra: Any) -> web.Response:
    """An error with a `gateway_reason` of DESIGN.md §3.2: its fixed code and transience too."""
    spec = ERROR_TABLE[reason]
    return error(
        spec.status,
        message,
        code=spec.code,
        is_transient=spec.transient,
        gateway_reason=reason,
        **extra,
    )


def since(raw: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except ValueError:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=UTC)


def page_limit(query: Any, problems: list[str]) -> int:
    """The listing's `limit` (DEFAULT_PAGE when absent); a problem noted when it is no integer
    from 1 to MAX_PAGE."""
    raw = query.get("limit", str(DEFAULT_PAGE))
    limit = int(raw) if raw.isdigit() else 0
    if 1 <= limit <= MAX_PAGE:
        return limit
    problems.append(f"limit: an integer from 1 to {MAX_PAGE}")
    return DEFAULT_PAGE
