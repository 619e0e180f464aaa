"""Group commit for SQLite: one writer connection on its own thread; queued writes commit together.

A write is a plain function of a `sqlite3.Connection` (its SQL, nothing else). Callers queue
them; one writer task takes everything waiting and sends the whole group to the writer thread
in a single hop, where it runs as `BEGIN IMMEDIATE`, one SAVEPOINT per call, `COMMIT`. A call
that fails is rolled back to its savepoint and its exception goes to its caller alone; trouble
with the file or the connection fails the whole group. Futures resolve only after COMMIT.

Also owns the translation of sqlite3 errors (`translate`), shared with the reader side:

    sqlite3.IntegrityError (UNIQUE / PRIMARY KEY)       -> StoreConflict
    sqlite3.IntegrityError (CHECK, NOT NULL), DataError -> ValueError (a row the schema refuses)
    OperationalError ("database is locked", I/O, full disk), other DatabaseError,
    a closed connection                                 -> StoreUnavailable
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

from gateway.errors import StoreConflict, StoreUnavailable

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], T]

# Upper bound on the calls one group transaction takes. Far above the 50 callers a 50-op batch
# fans out to, so they share one fsync; low enough that one group stays a few milliseconds.
MAX_GROUP_CALLS = 256
_UNIQUE_ERRORS = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})


def translate(exc: BaseException) -> BaseException:
    """The gateway error for a driver exception; anything else is returned unchanged (a bug)."""
    if isinstance(exc, sqlite3.IntegrityError):
        if getattr(exc, "sqlite_errorname", None) in _UNIQUE_ERRORS:
            return StoreConflict(f"ledger row already exists: {exc}")
        return ValueError(f"the ledger refused a row: {exc}")
    if isinstance(exc, sqlite3.DataError):
        return ValueError(f"the ledger refused a value: {exc}")
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" not in str(exc):
        return exc  # wrong SQL or bindings: a bug
    if isinstance(exc, sqlite3.DatabaseError | sqlite3.ProgrammingError):
        return StoreUnavailable(f"SQLite ledger unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, ValueError) and str(exc) in ("Connection closed", "no active connection"):
        # aiosqlite's way of saying its connection is gone.
        return StoreUnavailable(f"SQLite ledger unavailable: {exc}")
    return exc


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise driver exceptions as gateway errors (see `translate`)."""
    try:
        yield
    except (sqlite3.Error, ValueError) as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc


@dataclass
class WriterStats:
    """Counters of the writer, for tests and the benchmark."""

    calls: int = 0  # write calls run (committed, or rolled back to their savepoint)
    commits: int = 0  # group transactions committed
    largest_group: int = 0


@dataclass
class _Call(Generic[T]):
    write: Write[T]
    future: asyncio.Future[T]


def _run_group(conn: sqlite3.Connection, writes: list[Write[Any]]) -> list[tuple[bool, Any]]:
    """On the writer thread: one transaction, one savepoint per write; (ok, value or error)."""
    results: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            conn.execute("SAVEPOINT call")
            try:
                value = write(conn)
            except Exception as exc:  # a refused row or a bug: handed to its caller alone
                if isinstance(translate(exc), StoreUnavailable):
                    raise  # the file or the connection is in trouble: the group is lost
                conn.execute("ROLLBACK TO call")
                conn.execute("RELEASE call")
                results.append((False, exc))
            else:
                conn.execute("RELEASE call")
                results.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have ended the transaction itself (e.g. on a full disk).
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        raise
    return results


def _connect(path: Path, pragmas: Iterable[str]) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module issues no BEGIN of its own; _run_group says
    # exactly where each transaction starts and ends.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in pragmas:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteWriter:
    """The single writer connection of one SQLite file; open it with `SqliteWriter.open`."""

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor, name: str) -> None:
        self.stats = WriterStats()
        self._conn = conn
        self._thread = thread
        self._queue: asyncio.Queue[_Call[Any] | None] = asyncio.Queue()
        self._closed = False
        # The writer task lives from open() to aclose(), which no `async with` block here
        # spans, so a TaskGroup does not fit; the task is created on the running loop and kept
        # on the object, and aclose() owns its end: it enqueues the stop marker and awaits
        # the task, so queued writes finish first and no exception is lost.
        self._task = asyncio.get_running_loop().create_task(
            self._drain(), name=f"sqlite-ledger-writer:{name}"
        )

    @classmethod
    async def open(cls, path: Path, pragmas: Iterable[str]) -> SqliteWriter:
        """Connect on a fresh thread (the connection is only ever used there)."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ledger-writer")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(thread, _connect, path, list(pragmas))
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(conn, thread, path.name)

    def submit(self, write: Write[T]) -> asyncio.Future[T]:
        """Queue *write*; the future gives its result once its group has committed.

        Nothing here awaits, so callers that start together (asyncio.gather) are all queued
        before the writer task wakes, and share one group.
        """
        if self._closed:
            raise StoreUnavailable("SQLite ledger unavailable: it is closed")
        if self._task.done():
            raise StoreUnavailable("SQLite ledger unavailable: its writer has stopped")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Call(write, future))
        return future

    @property
    def alive(self) -> bool:
        return not self._closed and not self._task.done()

    async def query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Run *sql* on the writer thread outside any group (for PRAGMAs at open)."""
        loop = asyncio.get_running_loop()
        with translated():
            return await loop.run_in_executor(
                self._thread, lambda: self._conn.execute(sql, tuple(params)).fetchall()
            )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self._task.done():
                self._queue.put_nowait(None)
            await self._task
        finally:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(self._thread, self._conn.close)
            self._thread.shutdown(wait=False)

    async def _drain(self) -> None:
        group: list[_Call[Any]] = []
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    return
                group = [first]
                stop = False
                while len(group) < MAX_GROUP_CALLS and not self._queue.empty():
                    nxt = self._queue.get_nowait()
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                await self._commit(group)
                group = []
                if stop:
                    return
        finally:
            # Stopped or cancelled (the loop shutting down): nobody may wait for ever.
            leftover = group + [c for c in _take_all(self._queue) if c is not None]
            _fail(leftover, StoreUnavailable("SQLite ledger unavailable: it is closed"))

    async def _commit(self, group: list[_Call[Any]]) -> None:
        # A caller cancelled before its group started has been told nothing: skip it. One
        # cancelled later is too late to skip; its rows commit and the completer finds them.
        live = [c for c in group if not c.future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        self.stats.calls += len(live)
        try:
            results = await loop.run_in_executor(
                self._thread, partial(_run_group, self._conn, [c.write for c in live])
            )
        except (sqlite3.Error, ValueError) as exc:
            _fail(live, exc)
            return
        self.stats.commits += 1
        self.stats.largest_group = max(self.stats.largest_group, len(live))
        for call, (ok, value) in zip(live, results, strict=True):
            if call.future.done():
                continue
            if ok:
                call.future.set_result(value)
            else:
                _fail([call], value)


def _take_all(queue: asyncio.Queue[T]) -> list[T]:
    items: list[T] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def _fail(calls: Iterable[_Call[Any]], exc: BaseException) -> None:
    for call in calls:
        if not call.future.done():
            mapped = translate(exc)
            if mapped is not exc:
                mapped.__cause__ = exc
            call.future.set_exception(mapped)
