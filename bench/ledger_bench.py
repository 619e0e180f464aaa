"""Ledger latency by hand (not run in CI): one create's ledger work = write_intents + settle.

    python bench/ledger_bench.py [--postgres-dsn DSN] [--dir DIR] [--ops N]

Each configuration runs 1 caller and 50 concurrent callers; a caller loops over
`write_intents([one intent])` then `settle([its outcome])`, the two ledger calls the create path
makes. Reports p50/p99 of that pair and the pairs per second. SQLite runs with synchronous=FULL
(the default: every commit fsynced) and NORMAL; its file goes in --dir, which must be on a real
disk (a tmpfs makes fsync free and the comparison meaningless). PostgreSQL uses a throw-away
schema in the DSN's database and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from gateway.model import CreateSource, EntityState, Intent, Outcome
from gateway.ports import Ledger
from gateway.stores.postgres import open_postgres_ledger
from gateway.stores.sqlite import SqliteLedger, open_sqlite_ledger

CONCURRENCY = (1, 50)


async def one_create(ledger: Ledger, request_id: str) -> float:
    started = time.perf_counter()
    now = datetime.now(UTC)
    intent = Intent(request_id, 0, "bench", "act_1", "adset", CreateSource.SINGLE, name="x")
    (entity_id,) = await ledger.write_intents([intent], now=now)
    await ledger.settle([Outcome(entity_id, EntityState.CREATED, f"g{entity_id}")], now=now)
    return time.perf_counter() - started


async def run(ledger: Ledger, callers: int, total_ops: int) -> tuple[list[float], float]:
    per_caller = max(1, total_ops // callers)
    latencies: list[float] = []

    async def caller() -> None:
        for _ in range(per_caller):
            latency = await one_create(ledger, uuid.uuid4().hex)
            latencies.append(latency)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies, time.perf_counter() - started


def report(label: str, callers: int, latencies: list[float], elapsed: float) -> None:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"{label:<16} callers={callers:<3} n={len(latencies):<5} "
        f"p50={cuts[49] * 1000:7.2f} ms  p99={cuts[98] * 1000:7.2f} ms  "
        f"{len(latencies) / elapsed:8.0f} creates/s"
    )


async def bench(label: str, open_one: Callable[[], Awaitable[Ledger]], ops: int) -> None:
    for callers in CONCURRENCY:
        ledger = await open_one()
        try:
            await run(ledger, callers, max(callers, ops // 10))  # warm-up
            latencies, elapsed = await run(ledger, callers, ops)
            report(label, callers, latencies, elapsed)
            if isinstance(ledger, SqliteLedger):
                stats = ledger.stats
                print(
                    f"{'':<16} {stats.calls} write calls in {stats.commits} commits "
                    f"(largest group {stats.largest_group})"
                )
        finally:
            await ledger.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where SQLite files go")
    parser.add_argument("--ops", type=int, default=1000, help="creates per configuration")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ledger-bench-") as tmp:
        for sync in ("FULL", "NORMAL"):
            path = Path(tmp) / f"{sync.lower()}-{uuid.uuid4().hex[:6]}.db"

            async def open_sqlite(path: Path = path, sync: str = sync) -> Ledger:
                return await open_sqlite_ledger(path, synchronous=sync)  # type: ignore[arg-type]

            await bench(f"sqlite {sync}", open_sqlite, args.ops)

    if args.no_postgres:
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.postgres_dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in args.postgres_dsn else "?"
    dsn = f"{args.postgres_dsn}{sep}search_path={schema}"
    try:

        async def open_postgres() -> Ledger:
            return await open_postgres_ledger(dsn, min_size=2, max_size=50)

        await bench("postgres", open_postgres, args.ops)
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
