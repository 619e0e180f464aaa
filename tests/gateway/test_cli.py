"""`graph-gateway migrate | check-policy | serve` as real subprocesses (DESIGN.md §3.4).

`serve` runs in front of an in-process simulator (the `graph_sim` fixture); its stdout is read
in a worker thread so the simulator keeps answering on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.testing import SimHandle
from tests.sim.test_cli import (
    EXIT_TIMEOUT_SECONDS,
    START_TIMEOUT_SECONDS,
    free_port,
    gateway_cmd,
    run_cli,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "sim-token-alice"
READY_PREFIX = "graph-gateway: proxy on "
# A SIGTERMed gateway closes its ports and ledger at once; "a few seconds" is the contract.
STOP_SECONDS = 5.0
# An unreachable database must be reported well before a supervisor's patience runs out.
UNREACHABLE_DB_SECONDS = 15.0
BAD_POLICY = """\
version = 1

[colours]
favourite = "blue"

[upstream]
connect_timeout_seconds = "fast"
retries_please = 3

[proxy]
max_body_bytes = "lots"
"""
# A type problem and a range problem in the same table: both must be reported.
TYPE_AND_RANGE_POLICY = """\
version = 1

[upstream]
connect_timeout_seconds = "fast"
deadline_seconds = -1
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any GATEWAY_* setting, so only the flags (and defaults) count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**env, **extra}


@dataclass
class Finished:
    result: subprocess.CompletedProcess[str]
    seconds: float

    @property
    def code(self) -> int:
        return self.result.returncode

    @property
    def stderr(self) -> str:
        return self.result.stderr


def local_ports() -> list[str]:
    """`serve` flags for a gateway nobody reaches: a dead upstream, free loopback ports."""
    return [
        "--upstream",
        "http://127.0.0.1:9",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--admin-listen",
        f"127.0.0.1:{free_port()}",
    ]


def run_gateway(*args: str, cwd: Path, timeout: float = START_TIMEOUT_SECONDS) -> Finished:
    """Run one `graph-gateway` command to the end, timing it."""
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603  # our own CLI with arguments from this file
        gateway_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=clean_env(),
        check=False,
    )
    return Finished(result, time.monotonic() - started)


def tables(db: Path) -> set[str]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def migrations_applied(db: Path) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.execute("SELECT * FROM schema_migrations ORDER BY 1").fetchall())


# --- migrate -----------------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_safe_to_repeat(tmp_path: Path) -> None:
    """`migrate --database sqlite:///…` makes entities and schema_migrations; twice is fine."""
    db = tmp_path / "g.db"

    first = run_cli("migrate", "--database", f"sqlite:///{db}", cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert {"entities", "schema_migrations"} <= tables(db)
    applied = migrations_applied(db)
    assert applied, "schema_migrations records what was applied"
    second = run_cli("migrate", "--database", f"sqlite:///{db}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert migrations_applied(db) == applied, "nothing is applied twice"
    assert "Traceback" not in first.stderr + second.stderr


# --- check-policy ------------------------------------------------------------------------------


def test_check_policy_accepts_the_bundled_policies() -> None:
    """`check-policy policies` (the repository's directory) exits 0."""
    result = run_cli("check-policy", "policies", cwd=REPO)

    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_policy_lists_every_problem_of_a_bad_file(tmp_path: Path) -> None:
    """Unknown table, unknown key, values of the wrong type: exit 2, each one named."""
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_POLICY)

    result = run_cli("check-policy", str(bad), cwd=tmp_path)

    assert result.returncode == 2
    for needle in ("colours", "connect_timeout_seconds", "retries_please", "max_body_bytes"):
        assert needle in result.stderr, (needle, result.stderr)
    assert "Traceback" not in result.stderr


def test_check_policy_reports_a_range_problem_beside_a_type_problem(tmp_path: Path) -> None:
    """A wrong type does not hide an out-of-range value in the same table: both listed."""
    bad = tmp_path / "bad.toml"
    bad.write_text(TYPE_AND_RANGE_POLICY)

    result = run_cli("check-policy", str(bad), cwd=tmp_path)

    assert result.returncode == 2
    for needle in ("connect_timeout_seconds", "deadline_seconds"):
        assert needle in result.stderr, (needle, result.stderr)


def test_check_policy_of_a_missing_path_exits_2(tmp_path: Path) -> None:
    """A path that does not exist is reported by name, without a traceback."""
    result = run_cli("check-policy", str(tmp_path / "absent.toml"), cwd=tmp_path)

    assert result.returncode == 2
    assert "absent.toml" in result.stderr
    assert "Traceback" not in result.stderr


# --- serve -------------------------------------------------------------------------------------


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    admin_port: int
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def read_ready_line(self) -> str:
        """stdout up to the ready line (empty if the process ends first)."""
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline():
            if line.startswith(READY_PREFIX):
                return line
        return ""

    def stderr_lines(self) -> list[str]:
        return self.stderr_path.read_text().splitlines()


@pytest.fixture
def served(tmp_path: Path, graph_sim: SimHandle) -> Iterator[Served]:
    """`serve` in front of the test's simulator, on free ports, with a fresh SQLite ledger."""
    port, admin_port = free_port(), free_port()
    stderr_path = tmp_path / "serve.stderr"
    # stderr goes to a file: an unread pipe could fill up and block the gateway.
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(  # noqa: S603  # our own CLI with arguments from this file
            gateway_cmd(
                "serve",
                "--upstream",
                graph_sim.url,
                "--listen",
                f"127.0.0.1:{port}",
                "--admin-listen",
                f"127.0.0.1:{admin_port}",
                "--database",
                f"sqlite:///{tmp_path / 'g.db'}",
            ),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp_path,
            env=clean_env(),
        )
    try:
        yield Served(proc, port, admin_port, stderr_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(EXIT_TIMEOUT_SECONDS)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_serve_proxies_reports_and_stops_cleanly_on_sigterm(
    served: Served, graph_sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    """Ready line, a create through it, /healthz and entities on admin, SIGTERM → exit 0."""
    ready = await asyncio.wait_for(asyncio.to_thread(served.read_ready_line), START_TIMEOUT_SECONDS)
    assert ready, f"no ready line; stderr: {served.stderr_path.read_text()[-2000:]}"
    assert served.url in ready
    assert served.admin_url in ready

    async with http.post(
        f"{served.url}/v25.0/act_1001/campaigns",
        params={"access_token": TOKEN},
        data={"name": "Via CLI", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        request_id = resp.headers["X-Gateway-Request-Id"]
    campaign_id = body["id"]
    assert [o["id"] for o in await graph_sim.objects(type="campaign")] == [campaign_id]
    async with http.get(f"{served.admin_url}/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    async with http.get(f"{served.admin_url}/admin/v1/entities") as resp:
        assert resp.status == 200
        listing = await resp.json()
    assert [(e["graph_id"], e["state"]) for e in listing["data"]] == [(campaign_id, "created")]

    served.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(served.proc.wait, STOP_SECONDS)

    assert code == 0
    lines = served.stderr_lines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    [logged] = [e for e in events if e.get("event") == "request" and e["request_id"] == request_id]
    assert (logged["method"], logged["path"], logged["status"]) == (
        "POST",
        "/v25.0/act_1001/campaigns",
        200,
    )
    text = served.stderr_path.read_text()
    assert TOKEN not in text
    assert "access_token" not in text
    assert "Traceback" not in text


def test_serve_refuses_a_public_admin_port_without_a_token(tmp_path: Path) -> None:
    """--admin-listen 0.0.0.0:… with no GATEWAY_ADMIN_TOKEN: exit 2 naming admin_listen."""
    finished = run_gateway(
        "serve",
        "--upstream",
        "http://127.0.0.1:9",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--admin-listen",
        f"0.0.0.0:{free_port()}",
        "--database",
        f"sqlite:///{tmp_path / 'g.db'}",
        cwd=tmp_path,
    )

    assert finished.code == 2
    assert "admin_listen" in finished.stderr
    assert "GATEWAY_ADMIN_TOKEN" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_serve_with_an_unreachable_postgresql_fails_fast_and_clearly(tmp_path: Path) -> None:
    """postgresql://…@127.0.0.1:1: non-zero exit in < 15 s, a message, no traceback."""
    finished = run_gateway(
        "serve",
        *local_ports(),
        "--database",
        "postgresql://postgres@127.0.0.1:1/test",
        cwd=tmp_path,
        timeout=UNREACHABLE_DB_SECONDS + 5,
    )

    assert finished.code != 0
    assert finished.seconds < UNREACHABLE_DB_SECONDS
    assert "ledger" in finished.stderr
    assert "PostgreSQL" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert READY_PREFIX not in finished.result.stdout
