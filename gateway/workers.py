"""`serve --workers N` (DESIGN.md §3.4): the first process starts and watches N-1 more.

The parent has applied the migrations, reached Redis and bound the proxy port with
SO_REUSEPORT before it starts a worker; each worker runs `graph-gateway serve --worker-id I`
with the parent's settings in its environment and binds the same port, and the kernel spreads
new connections over every process. Workers share no memory: the PostgreSQL ledger and the
Redis coordinator (breakers, throttle gates, retry budget) make them act as one gateway.

A worker stops on SIGTERM, and also when its parent is gone (its stdin, a pipe from the
parent, reaches end of file), so a parent killed with -9 leaves no worker behind. A worker
that dies is logged and started again after a back-off.

Prometheus metrics live in each process's memory. A worker serves its own on a listener of its
own (127.0.0.1, a port the kernel picks, GET /metrics and nothing else) and names that port in
its ready line; the parent's /metrics fetches them all (`WorkerPool.scrape_metrics`) and
merges them into one answer (gateway.metrics_merge).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.metrics_core import Metric

from gateway import logs, metrics_merge
from gateway.clock import Clock

# What a worker prints on stdout once its proxy port is bound (cli's ready line).
READY_PREFIX = "graph-gateway: "
# Where a worker serves its metrics to the parent: loopback only (they are the gateway's
# internals, and the admin port's token does not guard them), on a port the kernel picks.
METRICS_HOST = "127.0.0.1"
# How a worker's ready line names that port (`metrics_note`): a suffix after its proxy
# address, so a parent that knows nothing of it still sees a ready line.
_METRICS_NOTE = re.compile(rf"metrics on http://{re.escape(METRICS_HOST)}:(\d+)/metrics")
# With --workers N, /metrics (and /admin/v1/accounts) wait this long for the workers' answers
# (asked all at once): well inside Prometheus's default 10 s scrape timeout, and a worker's
# answer takes milliseconds, so one that has not answered by then is stopped or wedged and is
# reported missing instead.
WORKER_SCRAPE_SECONDS = 2.0
# A worker that has not bound its port this long after it was started fails the start (or the
# restart): importing and opening the ledger and Redis take about a second here.
WORKER_READY_SECONDS = 30.0
# After SIGTERM a worker finishes the requests it is answering; past this it is killed.
STOP_GRACE_SECONDS = 10.0
# A dead worker is started again after this delay, doubled (up to the cap) while it keeps
# dying within STABLE_SECONDS of its start, so a worker that cannot run does not spin.
RESTART_DELAY_SECONDS = 0.5
RESTART_MAX_DELAY_SECONDS = 30.0
STABLE_SECONDS = 60.0

Process = asyncio.subprocess.Process


class WorkerStartError(Exception):
    """A worker process exited, or did not get ready, before it was serving."""


class ProcessTag(logging.Filter):
    """Adds this process's `pid` and `worker` number to every JSON event: with several
    processes writing to one stderr, a line must say which one wrote it."""

    def __init__(self, worker_id: int) -> None:
        super().__init__()
        self._tag = {"pid": os.getpid(), "worker": worker_id}

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            fields.update(self._tag)
        return True


def metrics_note(port: int) -> str:
    """The words a worker adds to its ready line to say where its metrics listener is."""
    return f"metrics on http://{METRICS_HOST}:{port}/metrics"


def metrics_port(ready_line: str) -> int | None:
    """The metrics port a worker's ready line names (`metrics_note`), None if it names none."""
    found = _METRICS_NOTE.search(ready_line)
    return int(found.group(1)) if found else None


@asynccontextmanager
async def metrics_listener(app: web.Application) -> AsyncIterator[int]:
    """Serve *app* on METRICS_HOST, on a port the kernel picks (yielded) until the exit."""
    # A scrape takes milliseconds and the parent closes its connections after each one, so
    # there is nothing worth waiting for at shutdown.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, METRICS_HOST, 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def tag_logs(worker_id: int) -> None:
    """Tag the events of every installed log handler with this process (see ProcessTag)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(ProcessTag(worker_id))


class WorkerPool:
    """Workers 1..count-1, each started with `command + ["--worker-id", I]` and *env*."""

    def __init__(
        self, command: Sequence[str], env: Mapping[str, str], count: int, clock: Clock
    ) -> None:
        self._command = list(command)
        self._env = dict(env)
        self._ids = range(1, count)
        self._clock = clock
        self._procs: dict[int, Process] = {}
        self._stopping = asyncio.Event()
        self._metrics_urls: dict[int, str] = {}  # from each worker's latest ready line
        self._scrape_failing: set[int] = set()  # workers whose last scrape failed

    def pids(self) -> dict[int, int]:
        """Worker number -> pid of the processes alive now."""
        return {i: p.pid for i, p in self._procs.items() if p.returncode is None}

    async def scrape_metrics(self, seconds: float) -> dict[int, list[Metric] | None]:
        """Worker number -> its metrics families, for every worker 1..count-1; None for one
        that is not running or did not answer (a 200 exposition) within *seconds*.

        All are asked at once, so this returns in about *seconds* at most. The first failure
        of each worker's streak is logged (`worker_scrape_failed`), and its first success
        after one (`worker_scrape_recovered`), not every scrape in between.
        """
        async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as group:
            tasks = {i: group.create_task(self._scrape_one(http, i, seconds)) for i in self._ids}
        return {i: task.result() for i, task in tasks.items()}

    async def fetch_json(self, path: str, seconds: float) -> dict[int, Any]:
        """Worker number -> the JSON its loopback listener answers at *path* (e.g. "/lanes"),
        None for one that is not running or did not answer within *seconds* (all asked at
        once). Failures are not logged here: the metrics scrape logs each worker's streak."""
        async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as group:
            tasks = {
                i: group.create_task(self._json_one(http, i, path, seconds)) for i in self._ids
            }
        return {i: task.result() for i, task in tasks.items()}

    async def _json_one(
        self, http: aiohttp.ClientSession, worker_id: int, path: str, seconds: float
    ) -> Any:
        proc = self._procs.get(worker_id)
        url = self._metrics_urls.get(worker_id)
        if proc is None or proc.returncode is not None or url is None:
            return None
        try:
            async with (
                asyncio.timeout(seconds),
                http.get(url.removesuffix("/metrics") + path) as resp,
            ):
                resp.raise_for_status()
                return await resp.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None

    async def _scrape_one(
        self, http: aiohttp.ClientSession, worker_id: int, seconds: float
    ) -> list[Metric] | None:
        proc = self._procs.get(worker_id)
        url = self._metrics_urls.get(worker_id)
        if proc is None or proc.returncode is not None:
            problem = "not running"
        elif url is None:
            problem = "no metrics listener known (not ready yet, or its ready line named none)"
        else:
            try:
                async with asyncio.timeout(seconds):
                    async with http.get(url) as resp:
                        resp.raise_for_status()
                        text = await resp.text()
                families = metrics_merge.parse(text)
            except TimeoutError:
                problem = f"no answer within {seconds:g} s"
            except aiohttp.ClientError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except ValueError as exc:  # includes a body that is not UTF-8
                problem = f"not a Prometheus exposition: {exc}"
            else:
                if worker_id in self._scrape_failing:
                    self._scrape_failing.discard(worker_id)
                    logs.event("worker_scrape_recovered", worker_id=worker_id, worker_pid=proc.pid)
                return families
        if worker_id not in self._scrape_failing:
            self._scrape_failing.add(worker_id)
            logs.event(
                "worker_scrape_failed",
                worker_id=worker_id,
                worker_pid=proc.pid if proc is not None else None,
                error=problem,
                level=logging.WARNING,
            )
        return None

    async def start(self) -> dict[int, Process]:
        """Start every worker at once and wait until each is serving; WorkerStartError (and
        every started worker stopped by `stop()`) if one is not."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {i: group.create_task(self._spawn(i)) for i in self._ids}
        except ExceptionGroup as failed:
            first = failed.exceptions[0]
            if isinstance(first, WorkerStartError):
                raise first from None
            raise
        return {i: task.result() for i, task in tasks.items()}

    async def supervise(self, worker_id: int, proc: Process | None) -> None:
        """Until `stop()`: wait for the worker to end; log it and start it again."""
        delay = RESTART_DELAY_SECONDS
        while True:
            if proc is not None:
                started = self._clock.monotonic()
                code = await self._until_exit(proc)
                if self._stopping.is_set():
                    return
                lived = self._clock.monotonic() - started
                if lived >= STABLE_SECONDS:
                    delay = RESTART_DELAY_SECONDS
                logs.event(
                    "worker_exited",
                    worker_id=worker_id,
                    worker_pid=proc.pid,
                    returncode=code,
                    lived_seconds=round(lived, 3),
                    restart_in_seconds=delay,
                    level=logging.ERROR,
                )
            if await self._stopped_within(delay):
                return
            delay = min(delay * 2, RESTART_MAX_DELAY_SECONDS)
            try:
                proc = await self._spawn(worker_id)
            except WorkerStartError as exc:
                if self._stopping.is_set():
                    return
                logs.event(
                    "worker_restart_failed",
                    worker_id=worker_id,
                    error=str(exc),
                    level=logging.ERROR,
                )
                proc = None

    async def stop(self) -> None:
        """SIGTERM every worker, wait STOP_GRACE_SECONDS for them, then SIGKILL the rest."""
        self._stopping.set()
        live = [p for p in self._procs.values() if p.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                for proc in live:
                    await proc.wait()
        except TimeoutError:
            for proc in live:
                if proc.returncode is None:
                    logs.event("worker_killed", worker_pid=proc.pid, level=logging.WARNING)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            for proc in live:
                await proc.wait()

    async def _spawn(self, worker_id: int) -> Process:
        proc = await asyncio.create_subprocess_exec(
            *self._command,
            "--worker-id",
            str(worker_id),
            env=self._env,
            stdin=asyncio.subprocess.PIPE,  # never written: its end of file tells of our death
            stdout=asyncio.subprocess.PIPE,  # the ready line
            stderr=None,  # the worker's JSON log lines go where ours go
        )
        self._procs[worker_id] = proc
        # Until its ready line names its new port, the old one may be anybody's.
        self._metrics_urls.pop(worker_id, None)
        if self._stopping.is_set():  # stop() came while it was being started
            proc.terminate()
            await proc.wait()
            raise WorkerStartError(f"worker {worker_id}: the gateway is stopping")
        stdout = _pipe(proc)
        try:
            async with asyncio.timeout(WORKER_READY_SECONDS):
                while not (line := await stdout.readline()).startswith(READY_PREFIX.encode()):
                    if not line:
                        code = await proc.wait()
                        raise WorkerStartError(
                            f"worker {worker_id} (pid {proc.pid}) exited with {code} before it "
                            "was serving; its log lines above say why"
                        )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise WorkerStartError(
                f"worker {worker_id} (pid {proc.pid}) was not serving after "
                f"{WORKER_READY_SECONDS:g} s"
            ) from None
        port = metrics_port(line.decode(errors="replace"))
        if port is not None:
            self._metrics_urls[worker_id] = f"http://{METRICS_HOST}:{port}/metrics"
        logs.event("worker_started", worker_id=worker_id, worker_pid=proc.pid)
        return proc

    async def _until_exit(self, proc: Process) -> int:
        """Read (and drop) what the worker prints, so a full pipe never blocks it; its code."""
        stdout = _pipe(proc)
        while await stdout.read(4096):
            pass
        return await proc.wait()

    async def _stopped_within(self, seconds: float) -> bool:
        """Whether `stop()` came within *seconds* (returns as soon as it does)."""
        async with asyncio.TaskGroup() as group:
            timer = group.create_task(self._clock.sleep(seconds))
            waker = group.create_task(self._stopping.wait())
            timer.add_done_callback(lambda _: waker.cancel())
            waker.add_done_callback(lambda _: timer.cancel())
        return self._stopping.is_set()


def _pipe(proc: Process) -> asyncio.StreamReader:
    if proc.stdout is None:  # pragma: no cover - _spawn always asks for stdout=PIPE
        raise RuntimeError("a worker's stdout is not a pipe")
    return proc.stdout


# Where the admin app of `serve --workers N`'s parent finds its workers.
WORKER_POOL = web.AppKey("worker_pool", WorkerPool)


@asynccontextmanager
async def running_workers(
    command: Sequence[str], env: Mapping[str, str], count: int, clock: Clock
) -> AsyncIterator[WorkerPool]:
    """Workers 1..count-1 serving (each watched and restarted) until the context exits."""
    async with running_pool(WorkerPool(command, env, count, clock)) as pool:
        yield pool


@asynccontextmanager
async def running_pool(pool: WorkerPool) -> AsyncIterator[WorkerPool]:
    """*pool*'s workers serving (each watched and restarted) until the context exits; the
    pool may be made earlier, e.g. for the admin port to scrape once they run."""
    try:
        async with asyncio.TaskGroup() as group:
            try:
                procs = await pool.start()
                for worker_id, proc in procs.items():
                    group.create_task(pool.supervise(worker_id, proc))
                yield pool
            finally:
                await pool.stop()
    except ExceptionGroup as failed:
        # Unwrap what the body (or a supervisor) raised, so callers see the real error.
        if len(failed.exceptions) == 1:
            raise failed.exceptions[0] from None
        raise


class _ParentWatch(asyncio.Protocol):
    """Sets *stop* when the pipe from this worker's parent closes: the parent is gone."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._stop.is_set():
            logs.event("parent_gone", level=logging.WARNING)
            self._stop.set()


@asynccontextmanager
async def watching_parent(stop: asyncio.Event) -> AsyncIterator[None]:
    """In a worker: set *stop* when the parent's end of our stdin pipe closes. Nothing is
    watched when stdin is no pipe (a worker started by hand)."""
    if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        yield
        return
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: _ParentWatch(stop), sys.stdin)
    try:
        yield
    finally:
        stop.set()  # closing the transport below is no news of the parent
        transport.close()
