"""Settings: the only reader of the environment (DESIGN.md §3.4). Flags override env vars.

`load_settings(environ, flags)` validates everything and raises one `ConfigError` listing
every problem.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError

# The shortest admin token accepted on an address beyond loopback.
MIN_EXPOSED_TOKEN = 16
DEFAULTS = {
    "upstream": "https://graph.facebook.com",
    "listen": "127.0.0.1:8080",
    "admin_listen": "127.0.0.1:9090",
    "database": "sqlite:///gateway.db",
    "log_format": "json",
}
# (setting, env var): flags of the same name win over these.
ENV = {
    "upstream": "GATEWAY_UPSTREAM",
    "listen": "GATEWAY_LISTEN",
    "admin_listen": "GATEWAY_ADMIN_LISTEN",
    "database": "GATEWAY_DATABASE_URL",
    "redis": "GATEWAY_REDIS_URL",
    "policy": "GATEWAY_POLICY",
    "log_format": "GATEWAY_LOG_FORMAT",
}


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    upstream: str
    listen: Address
    admin_listen: Address
    database_url: str
    redis_url: str | None
    policy_path: Path | None  # None: the bundled policies
    admin_token: str | None
    rollback_token: str | None
    log_format: str
    workers: int = 1

    def __repr__(self) -> str:  # never print the tokens
        return (
            f"Settings(upstream={self.upstream!r}, listen={self.listen}, "
            f"admin_listen={self.admin_listen}, database_url={redact_url(self.database_url)!r}, "
            f"redis_url={redact_url(self.redis_url or '')!r}, policy_path={self.policy_path}, "
            f"admin_token={'set' if self.admin_token else 'unset'}, log_format={self.log_format!r},"
            f" workers={self.workers})"
        )


def redact_url(url: str) -> str:
    """*url* with its password (if any) replaced by ***, fit for a log or an error message."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def parse_address(raw: str) -> Address:
    """`host:port`, `[v6]:port` or `:port` (all interfaces)."""
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {raw!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104  # an explicit ':PORT' asks for every interface
    return Address(host, int(port))


def load_settings(environ: Mapping[str, str], flags: Mapping[str, Any] | None = None) -> Settings:
    """Settings from *flags* (CLI), then *environ*, then the defaults."""
    flags = flags or {}
    problems: list[str] = []

    def pick(name: str) -> str | None:
        value = flags.get(name)
        if value is None and name in ENV:
            value = environ.get(ENV[name]) or None
        if value is None:
            value = DEFAULTS.get(name)
        return None if value is None else str(value)

    upstream = (pick("upstream") or "").rstrip("/")
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        problems.append(
            f"upstream: expected an http(s) URL (https://graph.facebook.com), got {upstream!r}"
        )
    addresses: dict[str, Address] = {}
    for name in ("listen", "admin_listen"):
        try:
            addresses[name] = parse_address(pick(name) or "")
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    database = pick("database") or ""
    if urlsplit(database).scheme not in ("sqlite", "postgresql", "postgres"):
        problems.append(
            f"database: expected sqlite:///PATH or postgresql://..., got {redact_url(database)!r}"
        )
    redis = pick("redis")
    if redis is not None and urlsplit(redis).scheme not in ("redis", "rediss", "unix"):
        problems.append(f"redis: expected redis://HOST:PORT/DB, got {redact_url(redis)!r}")
    policy = pick("policy")
    policy_path = Path(policy) if policy else None
    if policy_path is not None and not policy_path.exists():
        problems.append(f"policy: {policy_path} does not exist")
    log_format = pick("log_format") or "json"
    if log_format not in ("json", "text"):
        problems.append(f"log_format: 'json' or 'text', got {log_format!r}")
    admin_token = environ.get("GATEWAY_ADMIN_TOKEN") or None
    admin = addresses.get("admin_listen")
    if admin is not None and not admin.loopback and not admin_token:
        problems.append(
            f"admin_listen: {admin} is not a loopback address; set GATEWAY_ADMIN_TOKEN to expose "
            "the admin API beyond this host"
        )
    elif admin is not None and not admin.loopback and len(admin_token or "") < MIN_EXPOSED_TOKEN:
        # Rollback deletes campaigns: a token that can be guessed must not guard it on a network.
        problems.append(
            f"GATEWAY_ADMIN_TOKEN: at least {MIN_EXPOSED_TOKEN} characters to expose the admin "
            f"API on {admin} (e.g. `openssl rand -hex 32`)"
        )
    workers = flags.get("workers")
    workers = 1 if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        problems.append(f"workers: expected a positive integer, got {workers!r}")
    elif workers > 1:
        # Every worker process must see the same ledger rows and the same breakers, throttle
        # gates and retry budget: SQLite is one process's database, and without Redis each
        # process would keep its own coordination state (DESIGN.md §3.4, §5).
        if urlsplit(database).scheme not in ("postgresql", "postgres"):
            problems.append(
                f"workers: --workers {workers} needs a PostgreSQL ledger that every worker "
                f"process shares (--database / GATEWAY_DATABASE_URL = postgresql://...), got "
                f"{redact_url(database)!r}"
            )
        if redis is None:
            problems.append(
                f"workers: --workers {workers} needs Redis for the breakers, throttle gates and "
                "retry budget every worker process shares (--redis / GATEWAY_REDIS_URL = "
                "redis://HOST:PORT/DB)"
            )
    if problems:
        raise ConfigError(problems)
    return Settings(
        upstream=upstream,
        listen=addresses["listen"],
        admin_listen=addresses["admin_listen"],
        database_url=database,
        redis_url=redis,
        policy_path=policy_path,
        admin_token=admin_token,
        rollback_token=environ.get("GATEWAY_ROLLBACK_TOKEN") or None,
        log_format=log_format,
        workers=int(workers),
    )


def settings_environ(settings: Settings) -> dict[str, str]:
    """The GATEWAY_* variables that make `load_settings` give *settings* back (with no flags):
    how `serve --workers N` hands its resolved settings to its worker processes."""
    values = {
        "upstream": settings.upstream,
        "listen": str(settings.listen),
        "admin_listen": str(settings.admin_listen),
        "database": settings.database_url,
        "redis": settings.redis_url,
        "policy": str(settings.policy_path) if settings.policy_path else None,
        "log_format": settings.log_format,
    }
    secrets = {
        "GATEWAY_ADMIN_TOKEN": settings.admin_token,
        "GATEWAY_ROLLBACK_TOKEN": settings.rollback_token,
    }
    env = {ENV[name]: value for name, value in values.items() if value is not None}
    env.update({name: value for name, value in secrets.items() if value is not None})
    return env
