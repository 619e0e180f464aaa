"""SqliteLedger behaviour beyond the Ledger contract: WAL, durability, group commit, bad files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from gateway.errors import ConfigError, StoreUnavailable
from gateway.model import EntityQuery, EntityState, JobSpec, Outcome, Reserved, SlotWant
from gateway.stores import open_ledger, sqlite_path
from gateway.stores.sqlite import SqliteLedger, open_sqlite_ledger
from tests.contract.test_ledger import intent

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.fixture
async def sqlite_ledger(tmp_path: Path) -> AsyncIterator[SqliteLedger]:
    ledger = await open_sqlite_ledger(tmp_path / "ledger.db")
    yield ledger
    await ledger.aclose()


async def test_the_file_is_in_wal_mode_and_every_commit_is_fsynced(
    sqlite_ledger: SqliteLedger,
) -> None:
    """journal_mode=WAL is recorded in the file; the writer runs synchronous=FULL."""
    assert sqlite_ledger.synchronous == "FULL"
    async with aiosqlite.connect(sqlite_ledger.path) as conn:
        rows = list(await conn.execute_fetchall("PRAGMA journal_mode"))
    assert rows[0][0] == "wal"


async def test_synchronous_normal_can_be_chosen_for_throwaway_databases(tmp_path: Path) -> None:
    """open_sqlite_ledger(synchronous="NORMAL") trades power-cut durability for speed."""
    async with await open_sqlite_ledger(tmp_path / "x.db", synchronous="NORMAL") as ledger:
        assert ledger.synchronous == "NORMAL"


async def test_rows_and_key_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    """What one ledger committed, the next one opened on the file sees, key included."""
    path = tmp_path / "ledger.db"
    async with await open_sqlite_ledger(path) as first:
        ids = await first.write_intents([intent(op_index=i) for i in range(3)], now=T0)
        await first.settle([Outcome(ids[0], EntityState.CREATED, "42")], now=T0)
        key = await first.token_key()
    async with await open_sqlite_ledger(path) as second:
        page = await second.entities(EntityQuery())
        assert [r.id for r in page.items] == sorted(ids, reverse=True)
        assert page.items[-1].graph_id == "42"
        assert await second.token_key() == key


async def test_concurrent_writes_share_one_group_commit(sqlite_ledger: SqliteLedger) -> None:
    """50 callers at once are committed in fewer transactions than calls (one fsync each)."""
    before = sqlite_ledger.stats.commits
    ids = await asyncio.gather(
        *(sqlite_ledger.write_intents([intent(f"r{n}")], now=T0) for n in range(50))
    )
    assert len({i for (i,) in ids}) == 50
    intents_commits = sqlite_ledger.stats.commits - before
    await asyncio.gather(
        *(sqlite_ledger.settle([Outcome(i, EntityState.CREATED, f"g{i}")], now=T0) for (i,) in ids)
    )
    settle_commits = sqlite_ledger.stats.commits - before - intents_commits
    assert 1 <= intents_commits < 50
    assert 1 <= settle_commits < 50
    assert sqlite_ledger.stats.largest_group > 1


async def test_reservations_in_one_group_commit_see_each_others_slots(
    sqlite_ledger: SqliteLedger,
) -> None:
    """80 reservations queued at once share group commits, yet each reads the slots the calls
    before it in the group took (one connection, one transaction): 50 distinct slots."""
    await sqlite_ledger.create_job(
        JobSpec("c0ffee", "act_1", "BF", {"adset": 50}), job_id="job-1", verification={}, now=T0
    )
    before = sqlite_ledger.stats.commits
    results = await asyncio.gather(
        *(
            sqlite_ledger.reserve_slots("job-1", [SlotWant("adset")], request_id=f"r{n}", now=T0)
            for n in range(80)
        )
    )
    assert sqlite_ledger.stats.commits - before < 80
    assert sqlite_ledger.stats.largest_group > 1
    taken = sorted(r.slot_no for (r,) in results if isinstance(r, Reserved))
    assert taken == list(range(1, 51))


async def test_a_refused_reservation_call_is_rolled_back_alone(
    sqlite_ledger: SqliteLedger,
) -> None:
    """A call whose request id the schema refuses raises ValueError and takes no slot; the
    calls grouped with it still commit."""
    await sqlite_ledger.create_job(
        JobSpec("c0ffee", "act_1", "BF", {"adset": 3}), job_id="job-1", verification={}, now=T0
    )
    results = await asyncio.gather(
        sqlite_ledger.reserve_slots("job-1", [SlotWant("adset")], request_id="ok-1", now=T0),
        sqlite_ledger.reserve_slots(
            "job-1", [SlotWant("adset"), SlotWant("adset")], request_id="x" * 200, now=T0
        ),
        sqlite_ledger.reserve_slots("job-1", [SlotWant("adset")], request_id="ok-2", now=T0),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert results[0] == [Reserved(1)]
    assert results[2] == [Reserved(2)]
    holders = [s.request_id for s in await sqlite_ledger.slots("job-1")]
    assert holders == ["ok-1", "ok-2", None]


async def test_a_lock_held_by_another_process_fails_writes_but_not_reads(
    tmp_path: Path,
) -> None:
    """While someone else holds the write lock past busy_timeout, writes raise
    StoreUnavailable ("database is locked") and reads go on; afterwards writes work again."""
    path = tmp_path / "ledger.db"
    async with await open_sqlite_ledger(path, busy_timeout_ms=0) as ledger:
        (first,) = await ledger.write_intents([intent("before")], now=T0)
        async with aiosqlite.connect(path, isolation_level=None) as other:
            await other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="locked"):
                await ledger.write_intents([intent("during")], now=T0)
            assert [r.id for r in (await ledger.entities(EntityQuery())).items] == [first]
            await other.execute("ROLLBACK")
        await ledger.write_intents([intent("after")], now=T0)
        await ledger.check()
        names = [r.request_id for r in (await ledger.entities(EntityQuery())).items]
        assert names == ["after", "before"]


async def test_a_path_in_a_missing_directory_raises_store_unavailable(tmp_path: Path) -> None:
    """The ledger does not create directories: a missing one is an unusable store."""
    with pytest.raises(StoreUnavailable):
        await open_sqlite_ledger(tmp_path / "missing" / "ledger.db")


async def test_an_unwritable_path_raises_store_unavailable(tmp_path: Path) -> None:
    """A path under a regular file cannot be created (even by root): StoreUnavailable."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable):
        await open_sqlite_ledger(blocker / "ledger.db")


async def test_a_file_that_is_not_a_database_raises_store_unavailable(tmp_path: Path) -> None:
    """Opening something that is not SQLite fails as an unavailable store, not a crash."""
    path = tmp_path / "ledger.db"
    path.write_bytes(b"definitely not sqlite " * 100)
    with pytest.raises(StoreUnavailable):
        await open_sqlite_ledger(path)


async def test_relative_and_absolute_sqlite_urls_open_the_named_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///rel.db is relative to the working directory, sqlite:////abs.db absolute."""
    monkeypatch.chdir(tmp_path)
    relative = await open_ledger("sqlite:///rel.db")
    await relative.aclose()
    assert (tmp_path / "rel.db").is_file()
    absolute = await open_ledger(f"sqlite:///{tmp_path}/abs.db")
    await absolute.aclose()
    assert (tmp_path / "abs.db").is_file()
    assert sqlite_path("sqlite:////var/lib/gw/x.db") == Path("/var/lib/gw/x.db")
    assert sqlite_path("sqlite:///data/x%20y.db") == Path("data/x y.db")


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user@host/db",
        "gateway.db",
        "sqlite://host/x.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///x.db?mode=ro",
    ],
)
async def test_an_unusable_database_url_is_a_config_error(url: str) -> None:
    """Unknown schemes, hosts, queries and in-memory SQLite are refused before opening."""
    with pytest.raises(ConfigError):
        await open_ledger(url)
