"""`graph-gateway serve --workers N` (DESIGN.md §3.4): N processes on one proxy port, sharing
PostgreSQL and Redis; real subprocesses in front of the in-process simulator.

Each process's JSON log lines carry its `pid` and `worker` number: that is how these tests
see which process answered a request.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio

from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.settings import load_settings, settings_environ
from gateway.testing import SimHandle
from gateway.workers import WorkerStartError, running_workers
from tests.gateway.test_cli import (
    READY_PREFIX,
    REPO,
    STOP_SECONDS,
    clean_env,
    local_ports,
    run_gateway,
)
from tests.pgschema import scratch_schema
from tests.sim.test_cli import EXIT_TIMEOUT_SECONDS, START_TIMEOUT_SECONDS, free_port, gateway_cmd

TOKEN = "sim-token-alice"
WORKERS = 2
REQUESTS = 40
REDIS_PREFIX = "gateway:"
# How long a killed worker may take to be noticed and replaced (0.5 s back-off + start-up).
RESTART_SECONDS = 20.0


@dataclass
class Pool:
    """A running `serve --workers N`: the parent process and where it logs."""

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

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = self.stderr_path.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if name is None or e.get("event") == name]

    def worker_pids(self) -> set[int]:
        """The pids of every worker the parent started (and not the parent)."""
        return {e["worker_pid"] for e in self.events("worker_started")}

    def read_ready_line(self) -> str:
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline():
            if line.startswith(READY_PREFIX):
                return line
        return ""

    async def wait_ready(self) -> str:
        line = await asyncio.wait_for(
            asyncio.to_thread(self.read_ready_line), START_TIMEOUT_SECONDS
        )
        assert line, f"no ready line; stderr: {self.stderr_path.read_text()[-3000:]}"
        return line


def alive(pid: int) -> bool:
    """Whether *pid* is a live process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll *condition* (every 50 ms of real time) until it holds or *seconds* pass."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


@pytest.fixture
async def clean_redis(redis_url: str) -> AsyncIterator[str]:
    """*redis_url* without any key of the coordinator's default prefix before or after: the
    breaker keys never expire, and a breaker left forced open would hold other tests."""
    client = redis.asyncio.Redis.from_url(redis_url)

    async def wipe() -> None:
        keys = [key async for key in client.scan_iter(match=f"{REDIS_PREFIX}*")]
        if keys:
            await client.delete(*keys)

    await wipe()
    try:
        yield redis_url
    finally:
        await wipe()
        await client.aclose()


@pytest.fixture
async def pg_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A DSN on a fresh, empty PostgreSQL schema, dropped afterwards."""
    async with scratch_schema(postgres_dsn) as dsn:
        yield dsn


def start_pool(tmp_path: Path, upstream: str, database: str, redis_url: str, workers: int) -> Pool:
    """Start `serve --workers N` on free ports (not yet ready)."""
    port, admin_port = free_port(), free_port()
    stderr_path = tmp_path / f"serve-{port}.stderr"
    # stderr goes to a file: an unread pipe could fill up and block the gateway.
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(  # noqa: S603  # our own CLI with arguments from this file
            gateway_cmd(
                "serve",
                "--workers",
                str(workers),
                "--upstream",
                upstream,
                "--listen",
                f"127.0.0.1:{port}",
                "--admin-listen",
                f"127.0.0.1:{admin_port}",
                "--database",
                database,
                "--redis",
                redis_url,
            ),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp_path,
            env=clean_env(),
        )
    return Pool(proc, port, admin_port, stderr_path)


def gone(pid: int) -> Callable[[], bool]:
    return lambda: not alive(pid)


@asynccontextmanager
async def serving(
    tmp_path: Path, upstream: str, database: str, redis_url: str, *, workers: int = WORKERS
) -> AsyncIterator[Pool]:
    """`serve --workers N`; killed (with its workers) on exit if still running."""
    pool = start_pool(tmp_path, upstream, database, redis_url, workers)
    try:
        yield pool
    finally:
        workers_seen = pool.worker_pids()
        if pool.proc.poll() is None:
            pool.proc.kill()
            await asyncio.to_thread(pool.proc.wait, EXIT_TIMEOUT_SECONDS)
        for pid in workers_seen:  # a worker outlives a killed parent by a moment at most
            if not await until(gone(pid), EXIT_TIMEOUT_SECONDS):
                os.kill(pid, signal.SIGKILL)
        if pool.proc.stdout is not None:
            pool.proc.stdout.close()


async def get_me(url: str, n: int) -> list[tuple[int, dict[str, Any]]]:
    """*n* reads, each on a new connection (SO_REUSEPORT spreads connections, not requests)."""
    results = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(n):
            async with http.get(f"{url}/v25.0/me", params={"access_token": TOKEN}) as resp:
                results.append((resp.status, await resp.json()))
    return results


def request_pids(pool: Pool) -> set[int]:
    return {e["pid"] for e in pool.events("request")}


# --- settings --------------------------------------------------------------------------------


def test_more_than_one_worker_needs_postgresql_and_redis() -> None:
    """--workers 2 on SQLite without Redis: two problems, each naming what is missing."""
    with pytest.raises(ConfigError) as info:
        load_settings({}, {"workers": 2, "database": "sqlite:///g.db"})

    problems = info.value.problems
    assert len(problems) == 2
    assert "PostgreSQL" in problems[0]
    assert "sqlite:///g.db" in problems[0]
    assert "Redis" in problems[1]
    assert "GATEWAY_REDIS_URL" in problems[1]


def test_more_than_one_worker_on_postgresql_and_redis_is_accepted() -> None:
    """PostgreSQL and Redis together allow N > 1; one of them alone does not."""
    flags = {"workers": 3, "database": "postgresql://gw@db/gateway", "redis": "redis://r:6379/0"}
    assert load_settings({}, flags).workers == 3
    with pytest.raises(ConfigError, match="Redis"):
        load_settings({}, {**flags, "redis": None})
    with pytest.raises(ConfigError, match="PostgreSQL"):
        load_settings({}, {**flags, "database": "sqlite:///g.db"})


def test_the_environment_handed_to_workers_gives_the_same_settings() -> None:
    """settings_environ() round-trips every setting (tokens included) without flags."""
    env = {"GATEWAY_ADMIN_TOKEN": "a", "GATEWAY_ROLLBACK_TOKEN": "r"}
    flags = {
        "upstream": "http://127.0.0.1:8090",
        "listen": "[::1]:7001",
        "admin_listen": "127.0.0.1:7002",
        "database": "postgresql://gw:pw@db/gateway",
        "redis": "redis://r:6379/1",
        "log_format": "text",
        "policy": str(REPO / "policies"),
    }
    settings = load_settings(env, flags)

    again = load_settings(settings_environ(settings))

    assert again == settings


# --- the command line ------------------------------------------------------------------------


def test_serve_with_two_workers_on_sqlite_exits_2_saying_why(tmp_path: Path) -> None:
    """`serve --workers 2` with the SQLite default and no Redis: exit 2, both needs named."""
    finished = run_gateway(
        "serve",
        *local_ports(),
        "--database",
        f"sqlite:///{tmp_path / 'g.db'}",
        "--workers",
        "2",
        cwd=tmp_path,
    )

    assert finished.code == 2
    assert "--workers 2 needs a PostgreSQL ledger" in finished.stderr
    assert "--workers 2 needs Redis" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_serve_with_an_unreachable_redis_exits_2_naming_it(tmp_path: Path) -> None:
    """--redis on a port nothing listens on: exit 2 at once, "redis" named, no traceback."""
    finished = run_gateway(
        "serve",
        *local_ports(),
        "--database",
        f"sqlite:///{tmp_path / 'g.db'}",
        "--redis",
        "redis://:secret@127.0.0.1:1/0",
        cwd=tmp_path,
    )

    assert finished.code == 2
    assert "redis: cannot reach redis://:***@127.0.0.1:1/0" in finished.stderr
    assert "secret" not in finished.stderr
    assert "Traceback" not in finished.stderr
    assert READY_PREFIX not in finished.result.stdout


# --- the worker pool ---------------------------------------------------------------------------


async def test_a_worker_that_exits_before_it_is_ready_fails_the_start() -> None:
    """A worker command that exits at once: WorkerStartError naming its exit code."""
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]

    with pytest.raises(WorkerStartError, match="exited with 3 before it was serving"):
        async with running_workers(command, clean_env(), 2, SystemClock()):
            pytest.fail("the pool must not start")


async def test_a_pool_waits_for_the_ready_line_and_stops_its_workers() -> None:
    """Workers that print the ready line are running inside the block and gone after it."""
    script = "import sys, time; print('graph-gateway: ready', flush=True); time.sleep(60)"
    command = [sys.executable, "-c", script]

    async with running_workers(command, clean_env(), 3, SystemClock()) as pool:
        pids = pool.pids()
        assert sorted(pids) == [1, 2]
        assert all(alive(pid) for pid in pids.values())

    assert not any(alive(pid) for pid in pids.values())
    assert pool.pids() == {}


# --- several processes -----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_workers_share_the_port_and_sigterm_stops_both(
    tmp_path: Path, graph_sim: SimHandle, pg_schema: str, clean_redis: str
) -> None:
    """40 reads on new connections all succeed, answered by both processes; SIGTERM to the
    parent stops it and its worker (exit 0, no process left)."""
    async with serving(tmp_path, graph_sim.url, pg_schema, clean_redis) as pool:
        ready = await pool.wait_ready()
        assert pool.url in ready
        assert pool.admin_url in ready
        assert f"{WORKERS} worker processes" in ready
        [worker] = pool.worker_pids()
        assert alive(worker)

        results = await get_me(pool.url, REQUESTS)

        assert [status for status, _ in results] == [200] * REQUESTS
        assert (await graph_sim.requests())["http_requests"] == REQUESTS
        assert await until(lambda: len(pool.events("request")) == REQUESTS, 5.0)
        assert request_pids(pool) == {pool.proc.pid, worker}
        async with aiohttp.ClientSession() as http, http.get(pool.admin_url + "/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == {"ledger": "ok", "coordinator": "ok"}

        pool.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(pool.proc.wait, STOP_SECONDS + 5)

        assert code == 0
        assert not alive(worker)
        assert "Traceback" not in pool.stderr_path.read_text()
        assert {e["pid"] for e in pool.events("gateway_stopping")} == {pool.proc.pid, worker}
        assert pool.events("worker_exited") == [], "a stopped worker is not a dead one"


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_breaker_forced_open_through_the_admin_port_holds_every_worker(
    tmp_path: Path, graph_sim: SimHandle, pg_schema: str, clean_redis: str
) -> None:
    """Forced open on the parent's admin port: all 40 reads, answered by both processes, get
    503 circuit_open and none reaches Graph; a reset lets every worker through again."""
    async with serving(tmp_path, graph_sim.url, pg_schema, clean_redis) as pool:
        await pool.wait_ready()
        [worker] = pool.worker_pids()
        async with aiohttp.ClientSession() as http:
            async with http.post(
                pool.admin_url + "/admin/v1/breakers/graph",
                json={"action": "open", "reason": "workers test"},
            ) as resp:
                assert resp.status == 200, await resp.text()

            results = await get_me(pool.url, REQUESTS)

            assert [status for status, _ in results] == [503] * REQUESTS
            assert {body["error"]["gateway_reason"] for _, body in results} == {"circuit_open"}
            assert (await graph_sim.requests())["http_requests"] == 0
            assert await until(lambda: len(pool.events("request")) == REQUESTS, 5.0)
            assert request_pids(pool) == {pool.proc.pid, worker}

            async with http.post(
                pool.admin_url + "/admin/v1/breakers/graph", json={"action": "reset"}
            ) as resp:
                assert resp.status == 200
            results = await get_me(pool.url, REQUESTS)
            assert [status for status, _ in results] == [200] * REQUESTS
            assert (await graph_sim.requests())["http_requests"] == REQUESTS


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_worker_that_dies_is_logged_and_replaced(
    tmp_path: Path, graph_sim: SimHandle, pg_schema: str, clean_redis: str
) -> None:
    """kill -9 of a worker: the parent logs `worker_exited` and starts a new one, which
    answers requests; the parent is unaffected."""
    async with serving(tmp_path, graph_sim.url, pg_schema, clean_redis) as pool:
        await pool.wait_ready()
        [first] = pool.worker_pids()

        os.kill(first, signal.SIGKILL)

        assert await until(lambda: len(pool.worker_pids()) == 2, RESTART_SECONDS)
        [exited] = pool.events("worker_exited")
        assert (exited["worker_pid"], exited["returncode"]) == (first, -signal.SIGKILL)
        [second] = pool.worker_pids() - {first}
        assert alive(second)
        assert pool.proc.poll() is None
        await get_me(pool.url, REQUESTS)
        assert await until(lambda: second in request_pids(pool), 5.0)


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_worker_stops_when_its_parent_is_killed(
    tmp_path: Path, graph_sim: SimHandle, pg_schema: str, clean_redis: str
) -> None:
    """kill -9 of the parent (no chance to stop its workers): the worker sees its stdin pipe
    close, logs `parent_gone` and exits; nothing is left serving."""
    async with serving(tmp_path, graph_sim.url, pg_schema, clean_redis) as pool:
        await pool.wait_ready()
        [worker] = pool.worker_pids()

        pool.proc.kill()
        await asyncio.to_thread(pool.proc.wait, EXIT_TIMEOUT_SECONDS)

        assert await until(gone(worker), EXIT_TIMEOUT_SECONDS)
        assert [e["pid"] for e in pool.events("parent_gone")] == [worker]


def test_helpers_see_this_process_alive() -> None:
    """alive() reads /proc: this test process is alive, a pid past pid_max is not."""
    assert alive(os.getpid())
    assert not alive(2**22 + 1)
