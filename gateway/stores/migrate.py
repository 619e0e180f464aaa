"""Forward-only schema migrations: `migrations/<dialect>/NNNN_name.sql`, applied in order.

Each file runs in its own transaction together with its `schema_migrations` row, so a file is
applied entirely or not at all, and a rerun applies nothing. On PostgreSQL a transaction-level
advisory lock makes racing runners (several replicas starting at once) take turns; on SQLite
`BEGIN IMMEDIATE` does the same. There is no "down": a mistake is fixed by the next file.
"""

from __future__ import annotations

import importlib.resources
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from gateway.errors import ConfigError

Dialect = Literal["sqlite", "postgres"]
DIALECTS: tuple[Dialect, ...] = ("sqlite", "postgres")

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

# Key of the PostgreSQL advisory lock the runner holds while it applies a file. Any constant
# works as long as nothing else in the database uses it; this one is "GSGWMIGR" in ASCII.
ADVISORY_LOCK_KEY = 0x475347574D494752

_SCHEMA_MIGRATIONS_SQLITE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
) STRICT
"""

_SCHEMA_MIGRATIONS_POSTGRES = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS
    'Migration files applied to this schema (gateway/stores/migrate.py); one row per file.';
"""


@dataclass(frozen=True)
class Migration:
    """One numbered file: `version` is its 4-digit prefix, `name` the rest of its stem."""

    version: str
    name: str
    sql: str


def migrations_dir() -> Path:
    """The directory holding `sqlite/` and `postgres/`.

    An installed wheel ships top-level `migrations/` as the package `gateway.migrations`
    (pyproject.toml, package-dir); an editable install maps that package onto the checkout. A
    plain source tree without either falls back to `<repo>/migrations`.
    """
    try:
        shipped = importlib.resources.files("gateway.migrations")
    except ModuleNotFoundError:
        shipped = None
    if isinstance(shipped, Path) and (shipped / "sqlite").is_dir():
        return shipped
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(dialect: Dialect, directory: Path | None = None) -> tuple[Migration, ...]:
    """Every migration file of *dialect*, in version order.

    A `.sql` file whose name does not follow `NNNN_name.sql`, or two files with one version,
    is a `ConfigError`: a typo must not silently skip a schema change.
    """
    root = (directory or migrations_dir()) / dialect
    if not root.is_dir():
        raise ConfigError([f"migrations: no directory {root}"])
    problems: list[str] = []
    found: dict[str, Migration] = {}
    for path in sorted(root.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            problems.append(f"migrations: {path.name} is not named NNNN_name.sql")
            continue
        version = match["version"]
        if version in found:
            problems.append(f"migrations: version {version} appears twice in {root}")
            continue
        found[version] = Migration(version, match["name"], path.read_text(encoding="utf-8"))
    if problems:
        raise ConfigError(problems)
    return tuple(found[v] for v in sorted(found))


def split_statements(script: str) -> Iterator[str]:
    """The statements of a SQLite script, one at a time.

    `sqlite3.executescript` would commit the runner's open transaction first, so the runner
    executes statement by statement; SQLite's own tokenizer (`complete_statement`) decides where
    one ends, so semicolons inside strings, comments and trigger bodies are handled.
    """
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if _has_code(pending):
                yield pending.strip()
            pending = ""
    if _has_code(pending[:-1]):
        raise ConfigError([f"migrations: unterminated statement: {pending[:-1].strip()[:80]!r}"])


def _has_code(sql: str) -> bool:
    """Whether *sql* holds anything but whitespace, `--` comments and semicolons."""
    for line in sql.splitlines():
        code = line.split("--", 1)[0].strip().strip(";").strip()
        if code:
            return True
    return False


async def apply_sqlite(
    conn: aiosqlite.Connection, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """Apply the missing *migrations* (default: the shipped ones) to *conn*; return those applied.

    *conn* must be in autocommit mode (`isolation_level=None`): the runner issues its own
    `BEGIN IMMEDIATE`, which also makes a second process wait for the first (busy_timeout).
    """
    todo = load_migrations("sqlite") if migrations is None else migrations
    await conn.execute(_SCHEMA_MIGRATIONS_SQLITE)
    applied: list[Migration] = []
    for migration in todo:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Checked inside the write transaction: another runner may have applied it since.
            rows = list(
                await conn.execute_fetchall(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                )
            )
            if rows:
                await conn.execute("ROLLBACK")
                continue
            for statement in split_statements(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                (migration.version, migration.name),
            )
            await conn.execute("COMMIT")
        except BaseException:
            await _rollback_sqlite(conn)
            raise
        applied.append(migration)
    return applied


async def _rollback_sqlite(conn: aiosqlite.Connection) -> None:
    # The failure may have been SQLite ending the transaction itself (or the connection
    # closing), in which case there is nothing left to roll back.
    try:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
    except (sqlite3.Error, ValueError):
        pass


async def apply_postgres(
    conn: Any, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """Apply the missing *migrations* to the asyncpg connection *conn*; return those applied.

    The whole run holds a session-level `pg_advisory_lock`, so of two runners racing on one
    database the second waits until the first has applied everything, then applies nothing.
    Each file still goes in its own transaction with its `schema_migrations` row.
    """
    todo = load_migrations("postgres") if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        return await _apply_postgres_locked(conn, todo)
    finally:
        if not conn.is_closed():  # a lost connection has released the lock already
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def _apply_postgres_locked(conn: Any, todo: Sequence[Migration]) -> list[Migration]:
    async with conn.transaction():
        await conn.execute(_SCHEMA_MIGRATIONS_POSTGRES)
    applied: list[Migration] = []
    for migration in todo:
        async with conn.transaction():
            done = await conn.fetchval(
                "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
            )
            if done:
                continue
            # No arguments: asyncpg uses the simple query protocol, which runs a whole script.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        applied.append(migration)
    return applied
