"""The Ledger contract (gateway/ports.py), run unchanged against every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.errors import StoreConflict, StoreUnavailable
from gateway.model import (
    CreateSource,
    Discovered,
    EntityQuery,
    EntityRecord,
    EntityState,
    Intent,
    Outcome,
)
from gateway.ports import Ledger
from tests.contract.conftest import LedgerFactory

T0 = datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)


def intent(request_id: str = "req-1", op_index: int = 0, **fields: Any) -> Intent:
    values: dict[str, Any] = {
        "caller": "c0ffee",
        "account_id": "act_1",
        "entity_type": "adset",
        "source": CreateSource.SINGLE,
    }
    values.update(fields)
    return Intent(request_id=request_id, op_index=op_index, **values)


def discovered(request_id: str = "req-1", op_index: int = 1000, **fields: Any) -> Discovered:
    values: dict[str, Any] = {
        "caller": "c0ffee",
        "account_id": "act_1",
        "entity_type": "adset",
        "graph_id": f"g-{request_id}-{op_index}",
    }
    values.update(fields)
    return Discovered(request_id=request_id, op_index=op_index, **values)


async def all_rows(ledger: Ledger) -> list[EntityRecord]:
    page = await ledger.entities(EntityQuery(limit=10_000))
    assert page.next_before_id is None
    return list(page.items)


async def row(ledger: Ledger, entity_id: int) -> EntityRecord:
    (found,) = [r for r in await all_rows(ledger) if r.id == entity_id]
    return found


class TestWriteIntents:
    async def test_intents_come_back_as_sending_rows_with_ids_in_order(
        self, ledger: Ledger
    ) -> None:
        """Three intents get three increasing ids, in the order given, each row `sending`."""
        ids = await ledger.write_intents([intent(op_index=i) for i in range(3)], now=T0)
        assert ids == sorted(ids)
        assert len(set(ids)) == 3
        rows = {r.id: r for r in await all_rows(ledger)}
        assert [rows[i].op_index for i in ids] == [0, 1, 2]
        assert {r.state for r in rows.values()} == {EntityState.SENDING}

    async def test_every_field_of_an_intent_is_stored(self, ledger: Ledger) -> None:
        """A row holds what the intent said, no graph id or error yet, both timestamps = now."""
        (entity_id,) = await ledger.write_intents(
            [
                intent(
                    "req-9",
                    4,
                    caller="ab" * 16,
                    account_id="act_42",
                    entity_type="ad",
                    source=CreateSource.BATCH,
                    parent_id="2385",
                    name="Ad ünïcode 4",
                    job_id="job-7",
                    slot_no=12,
                    params={"path": "act_42/ads", "params": {"name": "Ad ünïcode 4", "n": 1}},
                )
            ],
            now=T0,
        )
        assert await row(ledger, entity_id) == EntityRecord(
            id=entity_id,
            request_id="req-9",
            op_index=4,
            caller="ab" * 16,
            account_id="act_42",
            entity_type="ad",
            source=CreateSource.BATCH,
            state=EntityState.SENDING,
            parent_id="2385",
            name="Ad ünïcode 4",
            job_id="job-7",
            graph_id=None,
            error=None,
            created_at=T0,
            updated_at=T0,
            slot_no=12,
            params={"path": "act_42/ads", "params": {"name": "Ad ünïcode 4", "n": 1}},
        )
        (plain,) = await ledger.write_intents([intent("req-10")], now=T0)
        assert (await row(ledger, plain)).params is None

    async def test_timestamps_come_back_in_utc_whatever_zone_they_were_given_in(
        self, ledger: Ledger
    ) -> None:
        """An aware `now` in another zone is stored as the same instant, returned in UTC."""
        paris = T0.astimezone(timezone(timedelta(hours=1)))
        (entity_id,) = await ledger.write_intents([intent()], now=paris)
        stored = await row(ledger, entity_id)
        assert stored.created_at == T0
        assert stored.created_at.utcoffset() == timedelta(0)

    async def test_a_copy_intent_may_have_no_account_yet(self, ledger: Ledger) -> None:
        """account_id None is accepted (a copy whose source account is unknown)."""
        (entity_id,) = await ledger.write_intents(
            [intent(account_id=None, entity_type="copy", source=CreateSource.COPY)], now=T0
        )
        assert (await row(ledger, entity_id)).account_id is None

    async def test_writing_the_same_request_and_op_twice_raises_conflict(
        self, ledger: Ledger
    ) -> None:
        """A second intent for one (request_id, op_index) is refused with StoreConflict."""
        await ledger.write_intents([intent()], now=T0)
        with pytest.raises(StoreConflict):
            await ledger.write_intents([intent(caller="someone-else")], now=T1)

    async def test_a_refused_call_writes_none_of_its_intents(self, ledger: Ledger) -> None:
        """A call whose last intent conflicts leaves no row of its first intents behind."""
        await ledger.write_intents([intent(op_index=5)], now=T0)
        with pytest.raises(StoreConflict):
            await ledger.write_intents([intent(op_index=i) for i in (3, 4, 5)], now=T1)
        assert [r.op_index for r in await all_rows(ledger)] == [5]

    async def test_duplicates_inside_one_call_raise_conflict(self, ledger: Ledger) -> None:
        """One call naming the same (request_id, op_index) twice is refused whole."""
        with pytest.raises(StoreConflict):
            await ledger.write_intents([intent(), intent()], now=T0)
        assert await all_rows(ledger) == []

    async def test_an_empty_list_writes_nothing(self, ledger: Ledger) -> None:
        """No intents, no ids, no rows."""
        assert await ledger.write_intents([], now=T0) == []
        assert await all_rows(ledger) == []

    async def test_a_naive_timestamp_is_refused(self, ledger: Ledger) -> None:
        """Instants must be timezone-aware: a naive `now` is a bug, refused with ValueError."""
        with pytest.raises(ValueError, match="timezone-aware"):
            await ledger.write_intents([intent()], now=T0.replace(tzinfo=None))


class TestSettle:
    async def test_settle_to_created_records_the_graph_id_and_moves_updated_at(
        self, ledger: Ledger
    ) -> None:
        """created + graph_id; updated_at becomes the settle time, created_at stays."""
        (entity_id,) = await ledger.write_intents([intent()], now=T0)
        await ledger.settle([Outcome(entity_id, EntityState.CREATED, "120330000")], now=T1)
        settled = await row(ledger, entity_id)
        assert (settled.state, settled.graph_id, settled.error) == (
            EntityState.CREATED,
            "120330000",
            None,
        )
        assert (settled.created_at, settled.updated_at) == (T0, T1)

    async def test_settle_to_failed_records_graphs_error(self, ledger: Ledger) -> None:
        """failed keeps Graph's error mapping as given (nested values included)."""
        error = {"status": 400, "code": 100, "error_subcode": 1487, "message": "Invalid", "x": [1]}
        (entity_id,) = await ledger.write_intents([intent()], now=T0)
        await ledger.settle([Outcome(entity_id, EntityState.FAILED, error=error)], now=T1)
        settled = await row(ledger, entity_id)
        assert (settled.state, settled.graph_id, settled.error) == (EntityState.FAILED, None, error)

    async def test_unknown_can_later_be_settled_as_created(self, ledger: Ledger) -> None:
        """unknown (no answer) then created (reconciliation found it): the error is cleared."""
        (entity_id,) = await ledger.write_intents([intent()], now=T0)
        await ledger.settle(
            [Outcome(entity_id, EntityState.UNKNOWN, error={"message": "timeout"})], now=T1
        )
        assert (await row(ledger, entity_id)).state is EntityState.UNKNOWN
        await ledger.settle([Outcome(entity_id, EntityState.CREATED, "77")], now=T2)
        settled = await row(ledger, entity_id)
        assert (settled.state, settled.graph_id, settled.error, settled.updated_at) == (
            EntityState.CREATED,
            "77",
            None,
            T2,
        )

    async def test_settling_again_with_the_same_outcome_is_a_no_op(self, ledger: Ledger) -> None:
        """The same outcome twice: the row, updated_at included, is as after the first."""
        (entity_id,) = await ledger.write_intents([intent()], now=T0)
        outcome = Outcome(entity_id, EntityState.FAILED, error={"code": 2, "message": "x"})
        await ledger.settle([outcome], now=T1)
        first = await row(ledger, entity_id)
        await ledger.settle([outcome], now=T2)
        assert await row(ledger, entity_id) == first

    async def test_an_unknown_row_id_is_ignored(self, ledger: Ledger) -> None:
        """Settling an id that names no row changes nothing and raises nothing."""
        (entity_id,) = await ledger.write_intents([intent()], now=T0)
        await ledger.settle(
            [
                Outcome(entity_id + 1000, EntityState.CREATED, "1"),
                Outcome(entity_id, EntityState.CREATED, "2"),
            ],
            now=T1,
        )
        assert [(r.id, r.graph_id) for r in await all_rows(ledger)] == [(entity_id, "2")]

    async def test_an_outcome_without_graph_id_keeps_the_known_one(self, ledger: Ledger) -> None:
        """graph_id / entity_type None mean "not said": a known id is never erased."""
        (entity_id,) = await ledger.write_intents([intent()], now=T0)
        await ledger.settle([Outcome(entity_id, EntityState.CREATED, "55")], now=T1)
        await ledger.settle([Outcome(entity_id, EntityState.UNKNOWN)], now=T2)
        settled = await row(ledger, entity_id)
        assert (settled.state, settled.graph_id, settled.entity_type) == (
            EntityState.UNKNOWN,
            "55",
            "adset",
        )

    async def test_a_copy_learns_its_entity_type_when_settled(self, ledger: Ledger) -> None:
        """An outcome's entity_type replaces the intent's (`copy` becomes `campaign`)."""
        (entity_id,) = await ledger.write_intents(
            [intent(entity_type="copy", source=CreateSource.COPY, parent_id="900")], now=T0
        )
        await ledger.settle(
            [Outcome(entity_id, EntityState.CREATED, "901", entity_type="campaign")], now=T1
        )
        assert (await row(ledger, entity_id)).entity_type == "campaign"

    async def test_several_rows_settle_in_one_call(self, ledger: Ledger) -> None:
        """One call settles a whole batch, each row to its own outcome."""
        ids = await ledger.write_intents([intent(op_index=i) for i in range(3)], now=T0)
        await ledger.settle(
            [
                Outcome(ids[0], EntityState.CREATED, "a"),
                Outcome(ids[1], EntityState.FAILED, error={"code": 100}),
                Outcome(ids[2], EntityState.UNKNOWN),
            ],
            now=T1,
        )
        states = {r.id: r.state for r in await all_rows(ledger)}
        assert [states[i] for i in ids] == [
            EntityState.CREATED,
            EntityState.FAILED,
            EntityState.UNKNOWN,
        ]

    async def test_settling_nothing_is_harmless(self, ledger: Ledger) -> None:
        """An empty list of outcomes is accepted."""
        await ledger.settle([], now=T0)


class TestAddEntities:
    async def test_discovered_entities_are_recorded_as_created_copies(self, ledger: Ledger) -> None:
        """Each discovered entity gets a `created` row with its Graph id, source `copy`."""
        ids = await ledger.add_entities(
            [
                discovered(op_index=1000, graph_id="11", parent_id="10", job_id="job-1"),
                discovered(op_index=1001, graph_id="12", entity_type="ad"),
            ],
            now=T0,
        )
        rows = {r.id: r for r in await all_rows(ledger)}
        first, second = rows[ids[0]], rows[ids[1]]
        assert (first.state, first.graph_id, first.parent_id, first.job_id, first.source) == (
            EntityState.CREATED,
            "11",
            "10",
            "job-1",
            CreateSource.COPY,
        )
        assert (second.entity_type, second.graph_id, second.created_at) == ("ad", "12", T0)

    async def test_adding_the_same_entities_again_returns_the_same_ids(
        self, ledger: Ledger
    ) -> None:
        """A repeated call writes nothing new and returns the first call's ids, in order."""
        found = [discovered(op_index=1000 + i) for i in range(3)]
        first = await ledger.add_entities(found, now=T0)
        again = await ledger.add_entities(list(reversed(found)), now=T1)
        assert again == list(reversed(first))
        assert len(await all_rows(ledger)) == 3

    async def test_a_partly_known_list_returns_old_and_new_ids_in_order(
        self, ledger: Ledger
    ) -> None:
        """Known entities keep their ids, new ones get rows; ids follow the input order."""
        (known,) = await ledger.add_entities([discovered(op_index=1001)], now=T0)
        ids = await ledger.add_entities(
            [discovered(op_index=1000), discovered(op_index=1001), discovered(op_index=1002)],
            now=T1,
        )
        assert ids[1] == known
        assert len(set(ids)) == 3
        rows = {r.id: r for r in await all_rows(ledger)}
        assert [rows[i].op_index for i in ids] == [1000, 1001, 1002]

    async def test_an_entity_that_shares_an_intents_key_returns_the_intent_row(
        self, ledger: Ledger
    ) -> None:
        """(request_id, op_index) already taken by an intent: its id comes back, unchanged."""
        (intent_id,) = await ledger.write_intents([intent(op_index=1000)], now=T0)
        assert await ledger.add_entities([discovered(op_index=1000)], now=T1) == [intent_id]
        assert (await row(ledger, intent_id)).state is EntityState.SENDING

    async def test_adding_nothing_returns_no_ids(self, ledger: Ledger) -> None:
        """An empty list is accepted and returns an empty list."""
        assert await ledger.add_entities([], now=T0) == []


class TestEntities:
    async def _seed(self, ledger: Ledger) -> dict[str, int]:
        ids = await ledger.write_intents(
            [
                intent("a", 0, account_id="act_1", job_id="job-1"),
                intent("a", 1, account_id="act_1", job_id="job-2"),
                intent("b", 0, account_id="act_2", job_id="job-1"),
            ],
            now=T0,
        )
        (late,) = await ledger.write_intents([intent("c", 0, account_id="act_2")], now=T2)
        await ledger.settle([Outcome(ids[0], EntityState.CREATED, "g0")], now=T1)
        return {"a0": ids[0], "a1": ids[1], "b0": ids[2], "c0": late}

    async def test_rows_come_newest_first(self, ledger: Ledger) -> None:
        """Without filters every row is listed, highest id first."""
        ids = await self._seed(ledger)
        assert [r.id for r in await all_rows(ledger)] == sorted(ids.values(), reverse=True)

    async def test_filter_by_account(self, ledger: Ledger) -> None:
        """account_id keeps only that ad account's rows."""
        ids = await self._seed(ledger)
        page = await ledger.entities(EntityQuery(account_id="act_2"))
        assert [r.id for r in page.items] == [ids["c0"], ids["b0"]]

    async def test_filter_by_job(self, ledger: Ledger) -> None:
        """job_id keeps only that job's rows."""
        ids = await self._seed(ledger)
        page = await ledger.entities(EntityQuery(job_id="job-1"))
        assert [r.id for r in page.items] == [ids["b0"], ids["a0"]]

    async def test_filter_since_keeps_rows_created_at_or_after_it(self, ledger: Ledger) -> None:
        """since compares with created_at (inclusive), not updated_at."""
        ids = await self._seed(ledger)
        assert [r.id for r in (await ledger.entities(EntityQuery(since=T1))).items] == [ids["c0"]]
        assert [r.id for r in (await ledger.entities(EntityQuery(since=T2))).items] == [ids["c0"]]
        everything = await ledger.entities(EntityQuery(since=T0))
        assert len(everything.items) == 4

    async def test_filter_by_state(self, ledger: Ledger) -> None:
        """state keeps only rows in that state."""
        ids = await self._seed(ledger)
        page = await ledger.entities(EntityQuery(state=EntityState.CREATED))
        assert [r.id for r in page.items] == [ids["a0"]]

    async def test_filters_combine(self, ledger: Ledger) -> None:
        """Several filters must all hold."""
        ids = await self._seed(ledger)
        page = await ledger.entities(
            EntityQuery(account_id="act_1", job_id="job-1", state=EntityState.CREATED, since=T0)
        )
        assert [r.id for r in page.items] == [ids["a0"]]
        none = await ledger.entities(EntityQuery(account_id="act_2", state=EntityState.CREATED))
        assert none.items == ()
        assert none.next_before_id is None

    async def test_keyset_paging_walks_every_row_exactly_once_newest_first(
        self, ledger: Ledger
    ) -> None:
        """Pages of 7 over 30 rows: every id once, descending, the last page without a cursor."""
        ids = await ledger.write_intents([intent(op_index=i) for i in range(30)], now=T0)
        seen: list[int] = []
        pages = 0
        before: int | None = None
        while True:
            page = await ledger.entities(EntityQuery(before_id=before, limit=7))
            pages += 1
            assert len(page.items) <= 7
            seen.extend(r.id for r in page.items)
            if page.next_before_id is None:
                break
            assert page.next_before_id == page.items[-1].id
            before = page.next_before_id
        assert seen == sorted(ids, reverse=True)
        assert pages == 5

    async def test_paging_respects_the_filters(self, ledger: Ledger) -> None:
        """Paging with a filter walks only the matching rows."""
        ids = await ledger.write_intents(
            [intent(op_index=i, account_id=f"act_{i % 2}") for i in range(10)], now=T0
        )
        first = await ledger.entities(EntityQuery(account_id="act_1", limit=3))
        assert first.next_before_id is not None
        rest = await ledger.entities(
            EntityQuery(account_id="act_1", limit=3, before_id=first.next_before_id)
        )
        assert [r.id for r in first.items + rest.items] == sorted(ids[1::2], reverse=True)
        assert rest.next_before_id is None

    async def test_a_full_last_page_has_no_cursor(self, ledger: Ledger) -> None:
        """Exactly `limit` rows left: that page is the last one (no empty page follows)."""
        await ledger.write_intents([intent(op_index=i) for i in range(4)], now=T0)
        page = await ledger.entities(EntityQuery(limit=4))
        assert len(page.items) == 4
        assert page.next_before_id is None

    async def test_an_empty_ledger_gives_an_empty_page(self, ledger: Ledger) -> None:
        """No rows: no items and no cursor."""
        page = await ledger.entities(EntityQuery())
        assert page.items == ()
        assert page.next_before_id is None

    async def test_a_limit_below_one_is_refused(self, ledger: Ledger) -> None:
        """limit=0 is a caller bug, refused with ValueError."""
        with pytest.raises(ValueError, match="limit"):
            await ledger.entities(EntityQuery(limit=0))


class TestRequestEntities:
    async def test_every_row_of_one_request_comes_back_by_op_index(self, ledger: Ledger) -> None:
        """Intents and discovered entities of one request, ordered by op_index; no others."""
        await ledger.write_intents([intent("req-1", 1), intent("req-1", 0)], now=T0)
        await ledger.write_intents([intent("req-2", 0)], now=T0)
        await ledger.add_entities([discovered("req-1", 1000)], now=T1)
        rows = await ledger.request_entities("req-1")
        assert [(r.request_id, r.op_index) for r in rows] == [
            ("req-1", 0),
            ("req-1", 1),
            ("req-1", 1000),
        ]

    async def test_an_unknown_request_has_no_rows(self, ledger: Ledger) -> None:
        """A request id never written gives an empty list."""
        assert await ledger.request_entities("nope") == []


class TestFindByGraphId:
    async def test_finds_the_row_with_that_graph_id(self, ledger: Ledger) -> None:
        """The row settled with a Graph id is found by it."""
        ids = await ledger.write_intents([intent(op_index=i) for i in range(2)], now=T0)
        await ledger.settle([Outcome(ids[1], EntityState.CREATED, "238")], now=T1)
        found = await ledger.find_by_graph_id("238")
        assert found is not None
        assert found.id == ids[1]
        assert found.account_id == "act_1"

    async def test_the_newest_row_wins_when_a_graph_id_repeats(self, ledger: Ledger) -> None:
        """Two rows naming one entity (adopted after reconciliation): the newest is returned."""
        (older,) = await ledger.add_entities([discovered(op_index=1000, graph_id="9")], now=T0)
        (newer,) = await ledger.add_entities([discovered("req-2", 1000, graph_id="9")], now=T1)
        found = await ledger.find_by_graph_id("9")
        assert found is not None
        assert found.id == newer
        assert newer > older

    async def test_an_unknown_graph_id_gives_none(self, ledger: Ledger) -> None:
        """No row with that id: None."""
        assert await ledger.find_by_graph_id("404") is None


class TestTokenKey:
    async def test_token_key_is_32_random_bytes_stable_across_calls(self, ledger: Ledger) -> None:
        """The first call creates the key; later calls return the same bytes."""
        key = await ledger.token_key()
        assert isinstance(key, bytes)
        assert len(key) == 32
        assert await ledger.token_key() == key

    async def test_two_ledgers_on_one_database_share_the_key(
        self, ledger_factory: LedgerFactory
    ) -> None:
        """Replicas on one database derive caller ids with the same key."""
        first, second = await ledger_factory(), await ledger_factory()
        keys = await asyncio.gather(
            *(ledger.token_key() for ledger in (first, second) for _ in range(5))
        )
        assert len(set(keys)) == 1
        third = await ledger_factory()
        assert await third.token_key() == keys[0]


class TestCheckAndClose:
    async def test_check_passes_on_an_open_ledger(self, ledger: Ledger) -> None:
        """A reachable store answers check() without raising."""
        await ledger.check()

    async def test_a_closed_ledger_raises_store_unavailable_everywhere(
        self, ledger: Ledger
    ) -> None:
        """After aclose(), check and every read and write raise StoreUnavailable."""
        await ledger.aclose()
        calls = [
            ledger.check(),
            ledger.write_intents([intent()], now=T0),
            ledger.settle([Outcome(1, EntityState.CREATED, "1")], now=T0),
            ledger.add_entities([discovered()], now=T0),
            ledger.entities(EntityQuery()),
            ledger.find_by_graph_id("1"),
            ledger.token_key(),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await call

    async def test_aclose_twice_is_harmless(self, ledger: Ledger) -> None:
        """A second aclose() returns quietly."""
        await ledger.aclose()
        await ledger.aclose()


class TestConcurrency:
    async def test_fifty_concurrent_writers_each_land_exactly_once(self, ledger: Ledger) -> None:
        """50 callers writing and settling at once: 50 distinct rows, each settled as told."""

        async def one(n: int) -> int:
            (entity_id,) = await ledger.write_intents([intent(f"req-{n}", 0)], now=T0)
            await ledger.settle([Outcome(entity_id, EntityState.CREATED, f"g{n}")], now=T1)
            return entity_id

        ids = await asyncio.gather(*(one(n) for n in range(50)))
        assert len(set(ids)) == 50
        rows = await all_rows(ledger)
        assert len(rows) == 50
        assert {(r.request_id, r.graph_id) for r in rows} == {
            (f"req-{n}", f"g{n}") for n in range(50)
        }
        assert {r.state for r in rows} == {EntityState.CREATED}

    async def test_a_failing_call_does_not_take_concurrent_calls_down_with_it(
        self, ledger: Ledger
    ) -> None:
        """Of calls started together, the duplicate alone fails; the others commit."""
        await ledger.write_intents([intent("dup", 0)], now=T0)
        results = await asyncio.gather(
            ledger.write_intents([intent("ok-1", 0)], now=T1),
            ledger.write_intents([intent("ok-2", 0), intent("dup", 0)], now=T1),
            ledger.write_intents([intent("ok-3", 0)], now=T1),
            return_exceptions=True,
        )
        assert isinstance(results[1], StoreConflict)
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
        assert sorted(r.request_id for r in await all_rows(ledger)) == ["dup", "ok-1", "ok-3"]

    async def test_concurrent_adds_of_the_same_entities_make_one_row_each(
        self, ledger_factory: LedgerFactory
    ) -> None:
        """Two replicas recording the same copy answer at once agree on one row per entity."""
        first, second = await ledger_factory(), await ledger_factory()
        found = [discovered(op_index=1000 + i) for i in range(10)]
        results = await asyncio.gather(
            *(ledger.add_entities(found, now=T0) for ledger in (first, second) for _ in range(5))
        )
        assert all(r == results[0] for r in results)
        assert len(await all_rows(first)) == 10
