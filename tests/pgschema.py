"""A throw-away PostgreSQL schema per test: the DSN's search_path points at it.

asyncpg passes unknown DSN query parameters to the server as settings, so
`...?search_path=t_1234` makes every unqualified table (migrations included) live in that
schema; dropping it afterwards removes everything the test made.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg


def with_query(dsn: str, **params: str) -> str:
    """*dsn* with *params* added to its query string."""
    parts = urlsplit(dsn)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


@asynccontextmanager
async def scratch_schema(dsn: str) -> AsyncIterator[str]:
    """A DSN whose search_path is a brand-new, empty schema, dropped on exit."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield with_query(dsn, search_path=schema)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
