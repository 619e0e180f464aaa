"""The real backing services that CI provides can be used from tests."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
import redis.asyncio


@pytest.mark.postgres
async def test_postgres_round_trips_a_row(postgres_dsn: str) -> None:
    """A row inserted into a temporary table reads back unchanged."""
    conn = await asyncpg.connect(postgres_dsn, timeout=5)
    try:
        await conn.execute(
            "CREATE TEMPORARY TABLE round_trip (id integer PRIMARY KEY, body text NOT NULL)"
        )
        await conn.execute("INSERT INTO round_trip (id, body) VALUES ($1, $2)", 7, "héllo")
        row = await conn.fetchrow("SELECT id, body FROM round_trip WHERE id = $1", 7)
    finally:
        await conn.close()

    assert row is not None
    assert (row["id"], row["body"]) == (7, "héllo")


@pytest.mark.redis
async def test_redis_sets_reads_and_deletes_a_key_with_a_ttl(redis_url: str) -> None:
    """A key SET with a TTL reads back, carries the TTL, and is gone after DEL."""
    client = redis.asyncio.Redis.from_url(redis_url)
    key = f"gateway-test:{uuid.uuid4().hex}"
    try:
        assert await client.set(key, b"value", ex=60)
        assert await client.get(key) == b"value"
        assert 0 < await client.ttl(key) <= 60
        assert await client.delete(key) == 1
        assert await client.get(key) is None
    finally:
        await client.delete(key)
        await client.aclose()
