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
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import GatewayHandle
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.metrics_merge import parse
from gateway.settings import load_settings, settings_environ
from gateway.testing import SimHandle
from gateway.workers import (
    WORKER_SCRAPE_SECONDS,
    WorkerStartError,
    metrics_note,
    metrics_port,
    running_workers,
)
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
# A scrape with a worker that never answers ends this soon after the parent gives up on it.
SCRAPE_SLACK_SECONDS = 1.5


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

    def worker_pid(self, worker_id: int) -> int:
        """The pid of worker *worker_id*'s latest process."""
        started = [e for e in self.events("worker_started") if e["worker_id"] == worker_id]
        return int(started[-1]["worker_pid"])

    async def scrape(self) -> Scrape:
        """One GET of the parent's /metrics, timed."""
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.get(self.admin_url + "/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            return Scrape(text, time.monotonic() - started)

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


@dataclass
class Scrape:
    """What one scrape of the parent's /metrics answered, and how long it took."""

    text: str
    seconds: float

    def values(self, sample: str) -> dict[str, float]:
        """worker label -> the sum of *sample*'s values with that label (over other labels)."""
        out: dict[str, float] = {}
        for family in parse(self.text):
            for s in family.samples:
                if s.name == sample:
                    out[s.labels["worker"]] = out.get(s.labels["worker"], 0.0) + s.value
        return out

    def up(self) -> dict[str, float]:
        return self.values("gateway_worker_scrape_up")

    def workers_seen(self) -> set[str]:
        """Every worker label on any sample but gateway_worker_scrape_up's."""
        return {
            s.labels["worker"]
            for family in parse(self.text)
            for s in family.samples
            if "worker" in s.labels and s.name != "gateway_worker_scrape_up"
        }

    def type_lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.startswith("# TYPE ")]


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


def logged_requests(pool: Pool, n: int) -> Callable[[], bool]:
    """Whether the processes have logged *n* `request` events (metrics counted as many)."""
    return lambda: len(pool.events("request")) == n


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


# --- metrics of several processes ------------------------------------------------------------


def test_a_worker_ready_line_names_its_metrics_port_and_an_older_one_names_none() -> None:
    """metrics_port() reads back what metrics_note() wrote in a ready line; none: None."""
    line = f"graph-gateway: proxy on http://0.0.0.0:8080, {metrics_note(41234)}\n"

    assert line.startswith("graph-gateway: proxy on ")
    assert metrics_port(line) == 41234
    assert metrics_port("graph-gateway: proxy on http://0.0.0.0:8080\n") is None
    assert metrics_port("graph-gateway: metrics on http://10.0.0.1:41234/metrics") is None


async def test_a_worker_without_a_metrics_listener_is_scraped_as_missing_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Workers whose ready line names no metrics port: every scrape says None for each at
    once, and `worker_scrape_failed` is logged once per worker, not once per scrape."""
    script = "import sys, time; print('graph-gateway: ready', flush=True); time.sleep(60)"
    command = [sys.executable, "-c", script]

    async with running_workers(command, clean_env(), 3, SystemClock()) as pool:
        for _ in range(3):
            assert await pool.scrape_metrics(WORKER_SCRAPE_SECONDS) == {1: None, 2: None}

    failed = [r for r in caplog.records if r.getMessage() == "worker_scrape_failed"]
    assert sorted(r.fields["worker_id"] for r in failed) == [1, 2]  # type: ignore[attr-defined]
    assert {r.fields["error"] for r in failed} == {  # type: ignore[attr-defined]
        "no metrics listener known (not ready yet, or its ready line named none)"
    }


async def test_one_process_metrics_have_no_worker_label_and_no_scrape_gauge(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """Without workers /metrics is the process's registry as it always was."""
    async with http.get(f"{gateway.url}/v25.0/me", params={"access_token": TOKEN}) as resp:
        assert resp.status == 200
    async with http.get(gateway.admin_url + "/metrics") as resp:
        text = await resp.text()

    assert 'gateway_requests_total{kind="passthrough",outcome="ok"} 1.0' in text
    assert 'worker="' not in text
    assert "gateway_worker_scrape_up" not in text
    assert text.encode() == gateway.gateway.metrics.render()


@pytest.mark.postgres
@pytest.mark.redis
async def test_one_scrape_of_the_parent_counts_the_requests_of_every_worker(
    tmp_path: Path, graph_sim: SimHandle, pg_schema: str, clean_redis: str
) -> None:
    """Reads on new connections until each of 3 processes answered some, then one scrape of
    the parent's /metrics: each process's gateway_requests_total under its worker label, as
    many as it logged, summing to the reads sent; every family's TYPE once; all 3 up."""
    async with serving(tmp_path, graph_sim.url, pg_schema, clean_redis, workers=3) as pool:
        await pool.wait_ready()
        pids = {pool.proc.pid, *pool.worker_pids()}
        assert len(pids) == 3
        sent = 0
        while request_pids(pool) != pids and sent < 20 * REQUESTS:
            results = await get_me(pool.url, 10)
            assert [status for status, _ in results] == [200] * 10
            sent += 10
            assert await until(logged_requests(pool, sent), 5.0)
        assert request_pids(pool) == pids, "SO_REUSEPORT never reached every process"

        scrape = await pool.scrape()

    logged: dict[str, float] = {}
    for event in pool.events("request"):
        logged[str(event["worker"])] = logged.get(str(event["worker"]), 0.0) + 1
    counted = scrape.values("gateway_requests_total")
    assert counted == logged
    assert sum(counted.values()) == sent
    assert sorted(w for w, n in counted.items() if n > 0) == ["0", "1", "2"]
    assert scrape.up() == {"0": 1.0, "1": 1.0, "2": 1.0}
    types = scrape.type_lines()
    assert len(types) == len(set(types))
    assert "# TYPE gateway_requests_total counter" in types
    assert "# TYPE gateway_upstream_latency_seconds histogram" in types
    assert sum(scrape.values("gateway_upstream_latency_seconds_count").values()) == sent
    # The breaker's state is Redis's, the same for all: once, without a worker label.
    breaker = [line for line in scrape.text.splitlines() if line.startswith("gateway_breaker_st")]
    assert breaker == ['gateway_breaker_state{name="graph"} 0.0']


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_stopped_worker_is_reported_missing_and_the_scrape_still_answers(
    tmp_path: Path, graph_sim: SimHandle, pg_schema: str, clean_redis: str
) -> None:
    """SIGSTOP of worker 1 of 3: each scrape answers within the scrape timeout (plus a
    little), gateway_worker_scrape_up says 0 for worker 1 only and none of its samples are
    there; `worker_scrape_failed` is logged once for the streak. After SIGCONT it is back
    (`worker_scrape_recovered`)."""
    async with serving(tmp_path, graph_sim.url, pg_schema, clean_redis, workers=3) as pool:
        await pool.wait_ready()
        assert (await pool.scrape()).up() == {"0": 1.0, "1": 1.0, "2": 1.0}
        stopped = pool.worker_pid(1)

        os.kill(stopped, signal.SIGSTOP)
        try:
            scrapes = [await pool.scrape(), await pool.scrape()]
        finally:
            os.kill(stopped, signal.SIGCONT)

        for scrape in scrapes:
            assert scrape.seconds < WORKER_SCRAPE_SECONDS + SCRAPE_SLACK_SECONDS
            assert scrape.up() == {"0": 1.0, "1": 0.0, "2": 1.0}
            assert scrape.workers_seen() == {"0", "2"}
        [failed] = pool.events("worker_scrape_failed")
        assert (failed["worker_id"], failed["worker_pid"]) == (1, stopped)
        assert failed["error"] == f"no answer within {WORKER_SCRAPE_SECONDS:g} s"

        again = await pool.scrape()

        assert again.up() == {"0": 1.0, "1": 1.0, "2": 1.0}
        assert again.workers_seen() == {"0", "1", "2"}
        assert [e["worker_id"] for e in pool.events("worker_scrape_recovered")] == [1]
        assert pool.events("worker_exited") == [], "a stopped worker was not restarted"


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_killed_worker_is_missing_at_once_and_its_replacement_is_scraped(
    tmp_path: Path, graph_sim: SimHandle, pg_schema: str, clean_redis: str
) -> None:
    """kill -9 of the worker: the next scrape answers at once with it missing (nothing
    listens on its metrics port); its replacement, on a new port, is scraped again."""
    async with serving(tmp_path, graph_sim.url, pg_schema, clean_redis) as pool:
        await pool.wait_ready()
        first = pool.worker_pid(1)
        await get_me(pool.url, REQUESTS)

        os.kill(first, signal.SIGKILL)
        assert await until(gone(first), EXIT_TIMEOUT_SECONDS)
        missing = await pool.scrape()

        assert missing.seconds < SCRAPE_SLACK_SECONDS
        assert missing.up() == {"0": 1.0, "1": 0.0}
        assert missing.workers_seen() == {"0"}
        assert await until(lambda: len(pool.worker_pids()) == 2, RESTART_SECONDS)
        back = await pool.scrape()
        assert back.up() == {"0": 1.0, "1": 1.0}
        # A new process: its counters start again from nothing.
        assert back.values("gateway_requests_total").get("1", 0.0) == 0.0


def test_helpers_see_this_process_alive() -> None:
    """alive() reads /proc: this test process is alive, a pid past pid_max is not."""
    assert alive(os.getpid())
    assert not alive(2**22 + 1)


@pytest.mark.postgres
@pytest.mark.redis
async def test_accounts_on_the_parent_counts_the_calls_queued_in_every_worker(
    tmp_path: Path, graph_sim: SimHandle, pg_schema: str, clean_redis: str
) -> None:
    """Graph blocks act_1001 for 8 s; 12 reads on new connections spread over 3 processes and
    each waits at its own process's queue. One GET of the parent's /admin/v1/accounts shows
    all 12 (the queues are per process, the gate is Redis's), and says every process answered.
    (The block is short: the calls still waiting when the test ends hold their workers' exit.)"""
    await graph_sim.throttle("act_1001", 8)
    async with serving(tmp_path, graph_sim.url, pg_schema, clean_redis, workers=3) as pool:
        await pool.wait_ready()
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def read() -> None:
                url = f"{pool.url}/v25.0/act_1001/campaigns"
                async with http.get(url, params={"access_token": TOKEN}) as resp:
                    await resp.read()

            async def accounts() -> dict[str, Any]:
                async with http.get(pool.admin_url + "/admin/v1/accounts") as resp:
                    assert resp.status == 200
                    body: dict[str, Any] = await resp.json()
                    return body

            waiting = [asyncio.ensure_future(read()) for _ in range(12)]
            try:
                body: dict[str, Any] = {}
                for _ in range(100):  # 10 s at most
                    body = await accounts()
                    if body["accounts"].get("act_1001", {}).get("queue_depth") == 12:
                        break
                    await asyncio.sleep(0.1)
                assert body["accounts"]["act_1001"]["queue_depth"] == 12, body
                assert body["accounts"]["act_1001"]["wait_seconds"] > 0
                assert body["processes"] == {"0": "ok", "1": "ok", "2": "ok"}
                scrape = await pool.scrape()
                depth = scrape.values("gateway_throttle_queue_depth")
                assert sum(depth.values()) == 12
                assert sum(1 for n in depth.values() if n > 0) > 1, "queued in one process only"
            finally:
                for task in waiting:
                    task.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
