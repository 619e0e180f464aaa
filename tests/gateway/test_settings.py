"""Settings come from flags, then GATEWAY_* variables, then defaults; all problems at once."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.settings import Address, load_settings, parse_address


def test_defaults_are_the_documented_ones() -> None:
    """DESIGN.md §3.4 defaults with an empty environment."""
    s = load_settings({})
    assert s.upstream == "https://graph.facebook.com"
    assert s.listen == Address("127.0.0.1", 8080)
    assert s.admin_listen == Address("127.0.0.1", 9090)
    assert s.database_url == "sqlite:///gateway.db"
    assert s.redis_url is None
    assert s.policy_path is None
    assert s.admin_token is None
    assert s.log_format == "json"
    assert s.workers == 1


def test_flags_win_over_environment_variables() -> None:
    """--listen beats GATEWAY_LISTEN; variables fill in what flags leave out."""
    env = {
        "GATEWAY_LISTEN": "127.0.0.1:7000",
        "GATEWAY_UPSTREAM": "http://127.0.0.1:8090/",
        "GATEWAY_LOG_FORMAT": "text",
        "GATEWAY_ADMIN_TOKEN": "t",
        "GATEWAY_ROLLBACK_TOKEN": "r",
    }
    s = load_settings(env, {"listen": "[::1]:7001"})
    assert s.listen == Address("::1", 7001)
    assert s.upstream == "http://127.0.0.1:8090"
    assert s.log_format == "text"
    assert s.admin_token == "t"
    assert s.rollback_token == "r"


def test_every_problem_is_reported_at_once() -> None:
    """Bad upstream, listen address, database, log format and workers in one ConfigError."""
    env = {"GATEWAY_UPSTREAM": "ftp://x", "GATEWAY_DATABASE_URL": "mysql://db"}
    with pytest.raises(ConfigError) as info:
        load_settings(env, {"listen": "nowhere", "log_format": "xml", "workers": 0})
    text = "\n".join(info.value.problems)
    for name in ("upstream", "listen", "database", "log_format", "workers"):
        assert name in text


def test_a_non_loopback_admin_port_needs_a_token() -> None:
    """Binding the admin API beyond loopback without GATEWAY_ADMIN_TOKEN is refused."""
    with pytest.raises(ConfigError, match="admin_listen"):
        load_settings({"GATEWAY_ADMIN_LISTEN": "0.0.0.0:9090"})
    token = "x" * 16
    allowed = load_settings({"GATEWAY_ADMIN_LISTEN": "0.0.0.0:9090", "GATEWAY_ADMIN_TOKEN": token})
    assert allowed.admin_listen == Address("0.0.0.0", 9090)


def test_a_guessable_admin_token_is_refused_beyond_loopback_only() -> None:
    """Rollback deletes campaigns: on a network the token must be at least 16 characters; on
    loopback any token goes."""
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings({"GATEWAY_ADMIN_LISTEN": "0.0.0.0:9090", "GATEWAY_ADMIN_TOKEN": "x" * 15})
    assert load_settings({"GATEWAY_ADMIN_TOKEN": "t"}).admin_token == "t"


def test_tokens_and_passwords_never_show_in_the_repr() -> None:
    """Settings can be logged: the admin token and database password are hidden."""
    s = load_settings(
        {
            "GATEWAY_ADMIN_TOKEN": "supersecret",
            "GATEWAY_DATABASE_URL": "postgresql://gw:hunter2@db/gateway",
        }
    )
    assert "supersecret" not in repr(s)
    assert "hunter2" not in repr(s)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:80", Address("127.0.0.1", 80)),
        (":8080", Address("0.0.0.0", 8080)),
        ("[::1]:9", Address("::1", 9)),
        ("localhost:1", Address("localhost", 1)),
    ],
)
def test_listen_addresses_parse(raw: str, expected: Address) -> None:
    """HOST:PORT, :PORT and [v6]:PORT forms."""
    assert parse_address(raw) == expected
    assert expected.loopback == (expected.host != "0.0.0.0")


@pytest.mark.parametrize("raw", ["8080", "host:", "host:99999", "host:x"])
def test_bad_listen_addresses_are_refused(raw: str) -> None:
    """Anything but HOST:PORT with a valid port is an error."""
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(raw)
