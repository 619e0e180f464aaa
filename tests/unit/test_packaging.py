"""The wheel ships every package of gateway/, plus migrations/ and policies/ as data packages."""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict[str, object]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    table: dict[str, object] = doc["tool"]["setuptools"]
    return table


def test_every_package_under_gateway_is_listed_in_pyproject() -> None:
    """Packages are listed by hand (package-dir rules out `find`): a new one must be added."""
    packages = _setuptools()["packages"]
    assert isinstance(packages, list)
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "gateway").rglob("__init__.py")
    }
    assert sorted(found - set(packages)) == []


def test_migrations_and_policies_ship_inside_the_gateway_package() -> None:
    """Top-level migrations/ and policies/ become gateway.migrations and gateway.policies."""
    assert _setuptools()["package-dir"] == {
        "gateway.migrations": "migrations",
        "gateway.policies": "policies",
    }
    migrations = importlib.resources.files("gateway.migrations")
    assert migrations.joinpath("sqlite").is_dir()
    assert migrations.joinpath("postgres").is_dir()
    assert importlib.resources.files("gateway.policies").is_dir()
