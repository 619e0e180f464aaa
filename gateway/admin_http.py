"""Shared pieces of the admin API's handlers: its error bodies and query parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.errors import ERROR_TABLE


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
