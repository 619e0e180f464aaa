"""Schema migrations: dialect parity, one transaction per file, reruns and races apply nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from gateway.errors import ConfigError
from gateway.stores.migrate import (
    DIALECTS,
    apply_postgres,
    apply_sqlite,
    load_migrations,
    migrations_dir,
    split_statements,
)
from tests.pgschema import scratch_schema

Schema = dict[str, list[tuple[str, bool]]]


@pytest.fixture
async def sqlite_conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    async with aiosqlite.connect(tmp_path / "m.db", isolation_level=None) as conn:
        yield conn


@pytest.fixture
async def pg_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A DSN on a fresh, empty schema of the test database."""
    async with scratch_schema(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture
async def pg_conn(pg_schema: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(pg_schema)
    yield conn
    await conn.close()


async def sqlite_schema(conn: aiosqlite.Connection) -> tuple[Schema, set[str]]:
    tables = [
        r[0]
        for r in await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    schema: Schema = {}
    for table in tables:
        info = await conn.execute_fetchall(f"PRAGMA table_info({table})")
        # cid, name, type, notnull, default, pk: a primary key is never NULL in either dialect.
        schema[table] = [(r[1], bool(r[3] or r[5])) for r in info]
    indexes = {
        r[0]
        for r in await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    return schema, indexes


async def postgres_schema(conn: Any) -> tuple[Schema, set[str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, is_nullable FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    schema: Schema = {}
    for r in rows:
        schema.setdefault(r["table_name"], []).append((r["column_name"], r["is_nullable"] == "NO"))
    indexes = {
        r["indexname"]
        for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint"
            "  WHERE connamespace = current_schema()::regnamespace)"
        )
    }
    return schema, indexes


async def sqlite_versions(conn: aiosqlite.Connection) -> list[tuple[str, str]]:
    rows = await conn.execute_fetchall("SELECT version, name FROM schema_migrations ORDER BY 1")
    return [(r[0], r[1]) for r in rows]


async def postgres_versions(conn: Any) -> list[tuple[str, str]]:
    rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
    return [(r["version"], r["name"]) for r in rows]


def write_migrations(root: Path, dialect: str, files: dict[str, str]) -> Path:
    (root / dialect).mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (root / dialect / name).write_text(sql, encoding="utf-8")
    return root


def test_both_dialects_have_the_same_numbered_files() -> None:
    """sqlite/ and postgres/ hold the same NNNN_name.sql files, numbered from 0001 without gaps."""
    names = {d: [(m.version, m.name) for m in load_migrations(d)] for d in DIALECTS}
    assert names["sqlite"] == names["postgres"]
    versions = [int(v) for v, _ in names["sqlite"]]
    assert versions == list(range(1, len(versions) + 1))


def test_migrations_dir_finds_the_shipped_files() -> None:
    """migrations_dir() (package gateway.migrations, or the checkout) holds both dialects."""
    root = migrations_dir()
    assert (root / "sqlite" / "0001_entities.sql").is_file()
    assert (root / "postgres" / "0001_entities.sql").is_file()


def test_a_misnamed_or_duplicate_file_is_refused(tmp_path: Path) -> None:
    """A .sql file not named NNNN_name.sql, or a version used twice, is a ConfigError."""
    write_migrations(tmp_path, "sqlite", {"0001_a.sql": "", "1_b.sql": "", "0001_c.sql": ""})
    with pytest.raises(ConfigError) as caught:
        load_migrations("sqlite", tmp_path)
    assert len(caught.value.problems) == 2


def test_the_statement_splitter_respects_strings_comments_and_triggers() -> None:
    """Semicolons inside strings, comments and trigger bodies do not end a statement."""
    script = """
        -- a comment; with a semicolon
        CREATE TABLE t (x TEXT DEFAULT 'a;b');
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 'c;'; END;
        INSERT INTO t VALUES ('d'); -- trailing; comment
    """
    statements = list(split_statements(script))
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")


@pytest.mark.postgres
async def test_sqlite_and_postgres_reach_the_same_tables_and_columns(
    sqlite_conn: aiosqlite.Connection, pg_conn: Any
) -> None:
    """Applied to empty databases, both dialects have the same tables, columns (in order),
    NOT NULLs and index names."""
    await apply_sqlite(sqlite_conn)
    await apply_postgres(pg_conn)
    lite, lite_indexes = await sqlite_schema(sqlite_conn)
    pg, pg_indexes = await postgres_schema(pg_conn)
    assert lite == pg
    assert set(lite) == {
        "job_notifications",
        "entities",
        "gateway_keys",
        "jobs",
        "slots",
        "pre_creation_verifications",
        "idempotency_keys",
        "audit",
        "schema_migrations",
    }
    assert ("slot_no", False) in lite["entities"]
    assert lite_indexes == pg_indexes
    assert {
        "jobs_caller_external_ref_key",
        "slots_state_idx",
        "idempotency_keys_retain_until_idx",
        "jobs_status_idx",
        "audit_job_id_idx",
    } <= lite_indexes


@pytest.mark.postgres
async def test_every_postgres_table_has_a_comment(pg_conn: Any) -> None:
    """COMMENT ON TABLE documents each table the migrations create."""
    await apply_postgres(pg_conn)
    rows = await pg_conn.fetch(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
    )
    assert rows
    assert [r["relname"] for r in rows if not r["comment"]] == []


async def test_upgrading_a_0001_sqlite_database_keeps_its_rows(
    sqlite_conn: aiosqlite.Connection,
) -> None:
    """0002 applied to a database already holding entities keeps them, with no slot_no."""
    first, *rest = load_migrations("sqlite")
    await apply_sqlite(sqlite_conn, [first])
    await sqlite_conn.execute(
        "INSERT INTO entities (request_id, op_index, caller, entity_type, source, state,"
        " created_at, updated_at) VALUES ('r', 0, 'c', 'ad', 'single', 'sending', ?, ?)",
        ("2026-11-29T10:00:00.000000Z", "2026-11-29T10:00:00.000000Z"),
    )
    assert len(await apply_sqlite(sqlite_conn)) == len(rest)
    rows = list(await sqlite_conn.execute_fetchall("SELECT request_id, slot_no FROM entities"))
    assert [tuple(r) for r in rows] == [("r", None)]


@pytest.mark.postgres
async def test_upgrading_a_0001_postgres_database_keeps_its_rows(pg_conn: Any) -> None:
    """0002 applied to a database already holding entities keeps them, with no slot_no."""
    first, *rest = load_migrations("postgres")
    await apply_postgres(pg_conn, [first])
    await pg_conn.execute(
        "INSERT INTO entities (request_id, op_index, caller, entity_type, source, state,"
        " created_at, updated_at) VALUES ('r', 0, 'c', 'ad', 'single', 'sending', now(), now())"
    )
    assert len(await apply_postgres(pg_conn)) == len(rest)
    rows = await pg_conn.fetch("SELECT request_id, slot_no FROM entities")
    assert [tuple(r) for r in rows] == [("r", None)]


T = "2026-11-29T10:00:00.000000Z"


async def test_upgrading_a_0002_sqlite_database_keeps_jobs_and_slots_and_their_link(
    sqlite_conn: aiosqlite.Connection,
) -> None:
    """0003 rebuilds jobs (SQLite cannot change a CHECK in place) and slots with it: their rows
    survive, partially_rolled_back is allowed, and slots still cascade with their job."""
    migrations = load_migrations("sqlite")
    await apply_sqlite(sqlite_conn, migrations[:2])
    await sqlite_conn.execute(
        "INSERT INTO jobs VALUES ('j', 'c', 'act_1', 'n', 'ref', '{}', 'completed', '{}', ?, ?)",
        (T, T),
    )
    await sqlite_conn.execute(
        "INSERT INTO slots (job_id, entity_type, slot_no, state, request_id, graph_id,"
        " updated_at) VALUES ('j', 'adset', 1, 'created', 'r', 'g1', ?)",
        (T,),
    )
    assert [m.version for m in await apply_sqlite(sqlite_conn)] == ["0003", "0004", "0005"]
    rows = await sqlite_conn.execute_fetchall("SELECT job_id, external_ref, status FROM jobs")
    assert [tuple(r) for r in rows] == [("j", "ref", "completed")]
    rows = await sqlite_conn.execute_fetchall("SELECT job_id, state, graph_id FROM slots")
    assert [tuple(r) for r in rows] == [("j", "created", "g1")]
    await sqlite_conn.execute("UPDATE jobs SET status = 'partially_rolled_back'")
    with pytest.raises(sqlite3.IntegrityError):
        await sqlite_conn.execute("UPDATE jobs SET status = 'odd'")
    await sqlite_conn.execute("PRAGMA foreign_keys = ON")
    assert list(await sqlite_conn.execute_fetchall("PRAGMA foreign_key_check")) == []
    await sqlite_conn.execute("DELETE FROM jobs")
    assert list(await sqlite_conn.execute_fetchall("SELECT * FROM slots")) == []


@pytest.mark.postgres
async def test_upgrading_a_0002_postgres_database_allows_partially_rolled_back(
    pg_conn: Any,
) -> None:
    """0003 replaces the jobs status CHECK: old rows stay, the new status is allowed, an
    unknown one is still refused."""
    migrations = load_migrations("postgres")
    await apply_postgres(pg_conn, migrations[:2])
    await pg_conn.execute(
        "INSERT INTO jobs VALUES ('j', 'c', 'act_1', 'n', NULL, '{}', 'completed', '{}',"
        " now(), now())"
    )
    assert [m.version for m in await apply_postgres(pg_conn)] == ["0003", "0004", "0005"]
    await pg_conn.execute("UPDATE jobs SET status = 'partially_rolled_back'")
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_conn.execute("UPDATE jobs SET status = 'odd'")
    assert await pg_conn.fetchval("SELECT status FROM jobs") == "partially_rolled_back"


async def test_rerunning_on_sqlite_is_a_no_op(sqlite_conn: aiosqlite.Connection) -> None:
    """The first run applies every file and records it; the second applies nothing."""
    first = await apply_sqlite(sqlite_conn)
    assert [m.version for m in first] == [m.version for m in load_migrations("sqlite")]
    before = await sqlite_schema(sqlite_conn)
    assert await apply_sqlite(sqlite_conn) == []
    assert await sqlite_schema(sqlite_conn) == before
    assert await sqlite_versions(sqlite_conn) == [(m.version, m.name) for m in first]


@pytest.mark.postgres
async def test_rerunning_on_postgres_is_a_no_op(pg_conn: Any) -> None:
    """The first run applies every file and records it; the second applies nothing."""
    first = await apply_postgres(pg_conn)
    assert [m.version for m in first] == [m.version for m in load_migrations("postgres")]
    before = await postgres_schema(pg_conn)
    assert await apply_postgres(pg_conn) == []
    assert await postgres_schema(pg_conn) == before
    rows = await pg_conn.fetch("SELECT applied_at FROM schema_migrations")
    assert all(r["applied_at"].tzinfo is not None for r in rows)
    assert await postgres_versions(pg_conn) == [(m.version, m.name) for m in first]


@pytest.mark.postgres
async def test_two_runners_racing_on_postgres_apply_each_file_once(pg_schema: str) -> None:
    """Two replicas migrating at once: the advisory lock lets one apply, the other none."""
    conns = [await asyncpg.connect(pg_schema) for _ in range(2)]
    try:
        results = await asyncio.gather(*(apply_postgres(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, len(load_migrations("postgres"))]
        assert len(await postgres_versions(conns[0])) == len(load_migrations("postgres"))
    finally:
        for conn in conns:
            await conn.close()


async def test_two_runners_racing_on_sqlite_apply_each_file_once(tmp_path: Path) -> None:
    """Two connections migrating one file at once: BEGIN IMMEDIATE lets one apply each file."""
    conns = [await aiosqlite.connect(tmp_path / "race.db", isolation_level=None) for _ in range(2)]
    try:
        results = await asyncio.gather(*(apply_sqlite(c) for c in conns))
        assert sum(len(r) for r in results) == len(load_migrations("sqlite"))
        assert len(await sqlite_versions(conns[0])) == len(load_migrations("sqlite"))
    finally:
        for conn in conns:
            await conn.close()


async def test_a_failing_sqlite_migration_leaves_nothing_of_itself(
    tmp_path: Path, sqlite_conn: aiosqlite.Connection
) -> None:
    """A file that fails halfway is rolled back whole; the files before it stay applied."""
    root = write_migrations(
        tmp_path / "m",
        "sqlite",
        {
            "0001_good.sql": "CREATE TABLE a (x INTEGER);",
            "0002_bad.sql": "CREATE TABLE b (x INTEGER);\nINSERT INTO missing VALUES (1);",
        },
    )
    with pytest.raises(sqlite3.OperationalError, match="missing"):
        await apply_sqlite(sqlite_conn, load_migrations("sqlite", root))
    schema, _ = await sqlite_schema(sqlite_conn)
    assert "a" in schema
    assert "b" not in schema
    assert await sqlite_versions(sqlite_conn) == [("0001", "good")]


@pytest.mark.postgres
async def test_a_failing_postgres_migration_leaves_nothing_of_itself(
    tmp_path: Path, pg_conn: Any
) -> None:
    """A file that fails halfway is rolled back whole; the files before it stay applied."""
    root = write_migrations(
        tmp_path / "m",
        "postgres",
        {
            "0001_good.sql": "CREATE TABLE a (x int);",
            "0002_bad.sql": "CREATE TABLE b (x int);\nINSERT INTO missing VALUES (1);",
        },
    )
    with pytest.raises(asyncpg.UndefinedTableError):
        await apply_postgres(pg_conn, load_migrations("postgres", root))
    schema, _ = await postgres_schema(pg_conn)
    assert "a" in schema
    assert "b" not in schema
    assert await postgres_versions(pg_conn) == [("0001", "good")]
