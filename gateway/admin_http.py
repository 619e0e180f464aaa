"""Shared pieces of the admin API's handlers: its error bodies, query and body parsing.

Every parser here is total: whatever a caller sends (NUL bytes, huge or non-ASCII numbers,
times out of any calendar's range, deeply nested JSON, repeated keys) ends as a value or as a
problem for a 400, never as an exception out of a handler. gateway/openapi.py states the same
rules (it imports the patterns below), so the document and the server agree on what is valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.errors import ERROR_TABLE, GatewayError, GraphRefused, Throttled, UpstreamError

# Every admin listing (jobs, entities, audit) pages the same way: `limit` 1..MAX_PAGE.
DEFAULT_PAGE = 100
MAX_PAGE = 1000
# The integer cursors (entities, audit) are ledger row ids: BIGINT, so at most 2**63 - 1.
MAX_ROW_ID = 2**63 - 1

# Times a filter compares with are clamped to this range: nothing in the ledger is older than
# the epoch or newer than year 9999, so a `since` or a cursor past either end selects exactly
# what the bound does, and both stores can hold the bound (SQLite's text needs 4-digit years).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

# Text the ledger is asked about or stores holds no NUL (PostgreSQL's text cannot).
NO_NUL = "^[^\\x00]*$"
# ... and, where a value is required to say something, not only whitespace.
NOT_BLANK = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
# Unix seconds as JSON writes a number (no `inf`, `nan`, `1_000` or non-ASCII digits).
UNIX_SECONDS = "^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$"
_YEAR = "([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    f"({_YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    f"|02-(0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
_HOUR = "([01][0-9]|2[0-3])"
_TIME = f"T{_HOUR}:[0-5][0-9]:[0-5][0-9](\\.[0-9]{{1,6}})?(Z|[+-]{_HOUR}:[0-5][0-9])?"
# The jobs listing's keyset cursor as paging.next carries it: `<created_at>|<job id>`, the
# time in the form isoformat() writes (every calendar date valid, leap days included).
JOB_CURSOR = f"^{_DATE}{_TIME}\\|[^\\x00]+$"

_UNIX_SECONDS = re.compile(UNIX_SECONDS)
_JOB_CURSOR = re.compile(JOB_CURSOR)
_EPOCH_SECONDS = (EARLIEST.timestamp(), LATEST.timestamp())


def error(status: int, message: str, **extra: Any) -> web.Response:
    body = {"error": {"message": message, "type": "GatewayAdminError", "status": status, **extra}}
    return web.json_response(body, status=status)


def rejected(reason: str, message: str, *, status: int | None = None, **extra: Any) -> web.Response:
    """An error with a `gateway_reason` of DESIGN.md §3.2: its fixed code and transience too
    (*status* for the one reason with two: bad_request is 400, or 413 for a body too large)."""
    spec = ERROR_TABLE[reason]
    return error(
        status or spec.status,
        message,
        code=spec.code,
        is_transient=spec.transient,
        gateway_reason=reason,
        **extra,
    )


def bad_request(problems: list[str]) -> web.Response:
    """400 bad_request naming every problem."""
    return rejected("bad_request", "; ".join(problems), problems=problems)


def graph_unread(exc: GatewayError) -> web.Response:
    """Graph could not be read for an admin call. The gateway's own refusals keep their reason
    and status (a breaker open: 503 circuit_open; a throttled account: 429 throttled; no answer:
    504), with Retry-After where waiting helps; Graph answering with something unreadable, or
    an error where reads were expected, is a 502 with Graph's error; Graph refusing the token
    itself (190) is the caller's to fix: 400 bad_request."""
    message = f"Graph could not be read: {exc.message}"
    if isinstance(exc, GraphRefused):
        extra: dict[str, Any] = {"graph_error": exc.graph_error} if exc.graph_error else {}
        if exc.token_refused:
            hint = "give a valid access_token or set GATEWAY_ROLLBACK_TOKEN"
            return rejected(
                "bad_request", f"Graph refused the token: {exc.message}; {hint}", **extra
            )
        return error(502, message, **extra)
    if not isinstance(exc, UpstreamError | Throttled):
        return error(502, message)
    response = rejected(exc.reason, message, status=exc.status)
    if exc.spec.transient:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after or 1)))
    return response


def since(raw: str) -> datetime:
    """A time given as unix seconds or ISO 8601 (naive: UTC), clamped to EARLIEST..LATEST;
    ValueError for anything else."""
    if _UNIX_SECONDS.fullmatch(raw):
        seconds = float(raw)  # the pattern admits no nan; a huge one is ±inf, clamped here
        if seconds <= _EPOCH_SECONDS[0]:
            return EARLIEST
        if seconds >= _EPOCH_SECONDS[1]:
            return LATEST
        return datetime.fromtimestamp(seconds, UTC)
    if "\x00" in raw:
        raise ValueError("NUL in a time")
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        at = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before datetime.min in UTC
        return EARLIEST if value.year == 1 else LATEST
    return min(max(at, EARLIEST), LATEST)


def job_cursor(raw: str) -> tuple[datetime, str]:
    """The jobs listing's `before` cursor; ValueError unless it is as JOB_CURSOR says."""
    if not _JOB_CURSOR.fullmatch(raw):
        raise ValueError("before: a cursor as paging.next carries it")
    at, _, job_id = raw.partition("|")
    return since(at), job_id


def row_cursor(query: Mapping[str, str], problems: list[str]) -> int | None:
    """An integer `before` cursor (a row id, 1..MAX_ROW_ID), None when absent; a problem noted
    when it is anything else."""
    raw = query.get("before")
    if raw is None:
        return None
    value = int(raw) if re.fullmatch("[0-9]{1,19}", raw) else 0
    if 1 <= value <= MAX_ROW_ID:
        return value
    problems.append("before: the integer cursor from paging.next")
    return None


def page_limit(query: Mapping[str, str], problems: list[str]) -> int:
    """The listing's `limit` (DEFAULT_PAGE when absent); a problem noted when it is no integer
    from 1 to MAX_PAGE (ASCII digits only: int() also reads Arabic-Indic digits and '1_0')."""
    raw = query.get("limit", str(DEFAULT_PAGE))
    limit = int(raw) if re.fullmatch("[0-9]{1,9}", raw) else 0
    if 1 <= limit <= MAX_PAGE:
        return limit
    problems.append(f"limit: an integer from 1 to {MAX_PAGE}")
    return DEFAULT_PAGE


def input_problems(request: web.Request) -> list[str]:
    """What no admin endpoint accepts in a query string or a path: a query parameter given
    more than once (which one was meant?) and NUL characters (the ledger cannot hold them)."""
    problems = []
    for key in dict.fromkeys(request.query):
        values = request.query.getall(key)
        if len(values) > 1:
            problems.append(f"{key}: given {len(values)} times, at most once")
        if "\x00" in key or any("\x00" in v for v in values):
            problems.append(f"{key.replace(chr(0), '?')}: NUL characters are not accepted")
    for key, value in request.match_info.items():
        if "\x00" in value:
            problems.append(f"{key}: NUL characters are not accepted")
    return problems


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _DuplicateKey(key)
        doc[key] = value
    return doc


async def json_object(
    request: web.Request, shape: str, *, allowed: frozenset[str]
) -> tuple[dict[str, Any], list[str]]:
    """The request's JSON object body ({} when there is none) and every problem with it: not an
    object (*shape* shows one), a key given twice (a destructive call must not guess which one
    counts), a key not in *allowed*, or a NUL in a key or a string value."""
    raw = await request.read()
    try:
        doc = json.loads(raw, object_pairs_hook=_unique_keys) if raw.strip() else {}
    except _DuplicateKey as exc:
        return {}, [f"{exc.args[0]}: given more than once in the body"]
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can read
        doc = None
    if not isinstance(doc, dict):
        return {}, [f"body: a JSON object {shape}"]
    problems = [f"{key}: not a parameter here" for key in sorted(set(doc) - allowed)]
    for key, value in doc.items():
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            problems.append(f"{key.replace(chr(0), '?')}: NUL characters are not accepted")
    return doc, problems


def listing(request: web.Request, data: list[Any], next_before: str | None) -> web.Response:
    """A page of an admin listing, shaped like Graph's: `{"data": [...], "paging": {"next"}}`,
    `next` being this request's path and query with `before` set to *next_before* (absent on
    the last page)."""
    paging = (
        {}
        if next_before is None
        else {"next": str(request.rel_url.update_query(before=next_before))}
    )
    return web.json_response({"data": data, "paging": paging})
