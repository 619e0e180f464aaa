"""`serve --workers N` (DESIGN.md §3.4): the first process starts and watches N-1 more.

The parent has applied the migrations, reached Redis and bound the proxy port with
SO_REUSEPORT before it starts a worker; each worker runs `graph-gateway serve --worker-id I`
with the parent's settings in its environment and binds the same port, and the kernel spreads
new connections over every process. Workers share no memory: the PostgreSQL ledger and the
Redis coordinator (breakers, throttle gates, retry budget) make them act as one gateway.

A worker stops on SIGTERM, and also when its parent is gone (its stdin, a pipe from the
parent, reaches end of file), so a parent killed with -9 leaves no worker behind. A worker
that dies is logged and started again after a back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from gateway import logs
from gateway.clock import Clock

# What a worker prints on stdout once its proxy port is bound (cli's ready line).
READY_PREFIX = "graph-gateway: "
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

    def pids(self) -> dict[int, int]:
        """Worker number -> pid of the processes alive now."""
        return {i: p.pid for i, p in self._procs.items() if p.returncode is None}

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


@asynccontextmanager
async def running_workers(
    command: Sequence[str], env: Mapping[str, str], count: int, clock: Clock
) -> AsyncIterator[WorkerPool]:
    """Workers 1..count-1 serving (each watched and restarted) until the context exits."""
    pool = WorkerPool(command, env, count, clock)
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
