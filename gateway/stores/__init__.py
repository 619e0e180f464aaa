"""Storage adapters: they implement the ports in gateway/ports.py and translate driver errors.

`open_ledger(url)` picks the backend from the URL scheme; `migrate(url)` applies pending
schema migrations without opening a ledger (`graph-gateway migrate`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.errors import ConfigError
from gateway.ports import Ledger
from gateway.stores.migrate import Migration
from gateway.stores.postgres import migrate_postgres, open_postgres_ledger
from gateway.stores.sqlite import migrate_sqlite, open_sqlite_ledger

__all__ = ["migrate", "open_ledger", "sqlite_path"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_EXPECTED = "expected sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://..."


def _scheme(url: str) -> str:
    return url.partition(":")[0].lower() if ":" in url else ""


def sqlite_path(url: str) -> Path:
    """The file a `sqlite:` URL names: `sqlite:///rel/x.db` is relative, `sqlite:////abs/x.db`
    absolute (SQLAlchemy's convention). A host, a query or an in-memory database is refused:
    the ledger's writer and reader are two connections, which must see one file."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or not url.lower().startswith("sqlite:///"):
        raise ConfigError([f"database: {_EXPECTED}"])
    if parts.query or parts.fragment:
        raise ConfigError(["database: a sqlite URL takes no query or fragment"])
    path = unquote(url[len("sqlite:///") :])
    if not path or path == ":memory:" or path.endswith("/"):
        raise ConfigError(["database: a sqlite URL must name a file"])
    return Path(path)


async def open_ledger(url: str, *, pool_max_size: int = 50) -> Ledger:
    """The ledger *url* names, migrated and ready.

    Raises ConfigError for a URL it cannot use (never echoing it: it may hold a password) and
    StoreUnavailable when the database cannot be reached or written.
    """
    scheme = _scheme(url)
    if scheme == "sqlite":
        return await open_sqlite_ledger(sqlite_path(url))
    if scheme in _POSTGRES_SCHEMES:
        return await open_postgres_ledger(
            url, min_size=min(2, pool_max_size), max_size=pool_max_size
        )
    raise ConfigError([f"database: unsupported scheme {scheme!r}; {_EXPECTED}"])


async def migrate(url: str) -> list[Migration]:
    """Apply the pending migrations to the database *url* names; return the ones applied."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        return await migrate_sqlite(sqlite_path(url))
    if scheme in _POSTGRES_SCHEMES:
        return await migrate_postgres(url)
    raise ConfigError([f"database: unsupported scheme {scheme!r}; {_EXPECTED}"])
