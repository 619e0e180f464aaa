"""Helpers for tests that need real backing services (PostgreSQL, Redis).

Locally, a service that cannot be reached means its tests are *skipped* with the reason.
With ``GATEWAY_TEST_REQUIRE=postgres,redis`` (as ``.ci/run`` sets it) they *fail* instead,
so a green CI run cannot hide an untested backend.
"""

from __future__ import annotations

from typing import Literal

KNOWN_SERVICES = frozenset({"postgres", "redis"})


def required_services(env_value: str | None) -> frozenset[str]:
    """Parse a ``GATEWAY_TEST_REQUIRE`` value (comma-separated, case-insensitive).

    Unset or blank means nothing is required. An unknown name raises ``ValueError``: a typo
    such as ``postgress`` must not silently turn a required service back into a skip.
    """
    if not env_value:
        return frozenset()
    names = frozenset(part.strip().lower() for part in env_value.split(",") if part.strip())
    unknown = names - KNOWN_SERVICES
    if unknown:
        raise ValueError(
            f"GATEWAY_TEST_REQUIRE names unknown service(s) {sorted(unknown)}; "
            f"known: {sorted(KNOWN_SERVICES)}"
        )
    return names


def when_unavailable(service: str, required: frozenset[str]) -> Literal["fail", "skip"]:
    """What a test needing *service* does when the service cannot be reached."""
    return "fail" if service in required else "skip"
