"""The AuditStore contract (gateway/ports.py), run unchanged against every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.errors import StoreUnavailable
from gateway.model import AuditAction, AuditEntry, AuditOutcome, AuditRecord
from gateway.ports import AuditStore, Ledger
from tests.contract.conftest import LedgerFactory

T0 = datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
BACKUP = {
    "id": "120200000000000003",
    "name": "Spring — ad set ✓",
    "targeting": {"geo_locations": {"countries": ["US", "FR"]}, "age_min": 18},
    "daily_budget": "1000",
    "status": "PAUSED",
}


def step(graph_id: str | None = "g1", **fields: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "action": AuditAction.ROLLBACK_STEP,
        "outcome": AuditOutcome.OK,
        "job_id": "job-1",
        "campaign_id": "c1",
        "graph_id": graph_id,
        "reason": "account suspended, clean up",
        "detail": {"run": "r1", "batch": 1, "backup": BACKUP},
        "actor": "admin",
    }
    values.update(fields)
    return AuditEntry(**values)


async def everything(store: AuditStore, **filters: Any) -> list[AuditRecord]:
    page = await store.audit(limit=1000, **filters)
    return list(page.items)


class TestRecord:
    async def test_entries_read_back_newest_first_with_every_field(
        self, audit_store: AuditStore
    ) -> None:
        """Every field round-trips (nested JSON and non-ASCII text included), created_at is the
        call's `now` in UTC, and ids increase in the order the entries were given."""
        ids = await audit_store.record_audit([step("g1"), step("g2", outcome="failed")], now=T0)
        assert len(ids) == 2
        assert ids[0] < ids[1]
        rows = await everything(audit_store)
        assert [r.id for r in rows] == [ids[1], ids[0]]
        first = rows[1]
        assert first == AuditRecord(
            id=ids[0],
            action="rollback_step",
            outcome="ok",
            job_id="job-1",
            campaign_id="c1",
            graph_id="g1",
            reason="account suspended, clean up",
            detail={"run": "r1", "batch": 1, "backup": BACKUP},
            actor="admin",
            created_at=T0,
        )
        assert first.created_at.utcoffset() == timedelta(0)
        assert rows[0].outcome == "failed"

    async def test_optional_fields_may_be_absent(self, audit_store: AuditStore) -> None:
        """A row about no job, campaign or entity, with an empty reason and detail, is kept."""
        [row_id] = await audit_store.record_audit(
            [AuditEntry(action="cap_rejection", outcome="ok")], now=T0
        )
        [row] = await everything(audit_store)
        assert (row.id, row.job_id, row.campaign_id, row.graph_id) == (row_id, None, None, None)
        assert (row.reason, row.detail, row.actor) == ("", {}, "gateway")

    async def test_recording_nothing_writes_nothing(self, audit_store: AuditStore) -> None:
        """An empty call returns [] and leaves the trail as it was."""
        assert await audit_store.record_audit([], now=T0) == []
        assert await everything(audit_store) == []

    async def test_ids_keep_increasing_across_calls(self, audit_store: AuditStore) -> None:
        """A later call's rows always have larger ids (the keyset cursor relies on it)."""
        first = await audit_store.record_audit([step("a"), step("b")], now=T0)
        second = await audit_store.record_audit([step("c")], now=T1)
        assert max(first) < min(second)

    @pytest.mark.parametrize(
        "bad",
        [
            {"action": ""},
            {"action": "x" * 65},
            {"outcome": ""},
            {"outcome": "x" * 33},
            {"actor": ""},
            {"reason": "x" * 4097},
            {"job_id": ""},
            {"graph_id": "x" * 129},
        ],
    )
    async def test_a_value_the_schema_refuses_writes_none_of_the_call(
        self, audit_store: AuditStore, bad: dict[str, Any]
    ) -> None:
        """ValueError, and the call's other entries are not written either (one transaction)."""
        with pytest.raises(ValueError, match="refused"):
            await audit_store.record_audit(
                [step("ok-one"), step(**{"graph_id": "bad", **bad})], now=T0
            )
        assert await everything(audit_store) == []

    async def test_an_over_long_detail_is_refused(self, audit_store: AuditStore) -> None:
        """A detail past its size bound (1 MB of JSON) raises ValueError and writes nothing."""
        huge = step(detail={"backup": {"name": "x" * (1024 * 1024)}})
        with pytest.raises(ValueError, match="refused"):
            await audit_store.record_audit([huge], now=T0)
        assert await everything(audit_store) == []

    async def test_a_naive_now_is_a_bug(self, audit_store: AuditStore) -> None:
        """A timestamp without a zone raises ValueError and writes nothing."""
        with pytest.raises(ValueError, match="timezone"):
            await audit_store.record_audit([step()], now=datetime(2026, 11, 29, 10, 0))  # noqa: DTZ001 - the naive value under test
        assert await everything(audit_store) == []

    async def test_concurrent_calls_each_get_ids_of_their_own(
        self, audit_store: AuditStore
    ) -> None:
        """Twenty calls racing write forty rows with forty distinct ids."""
        calls = [
            audit_store.record_audit([step(f"g{n}a"), step(f"g{n}b")], now=T0) for n in range(20)
        ]
        got = await asyncio.gather(*calls)
        ids = [i for pair in got for i in pair]
        assert len(set(ids)) == 40
        assert all(a < b for a, b in got)
        assert len(await everything(audit_store)) == 40

    async def test_another_replica_sees_the_rows(self, ledger_factory: LedgerFactory) -> None:
        """Rows written through one store are read through another on the same database."""
        one, two = await ledger_factory(), await ledger_factory()
        writer: Any = one
        reader: Any = two
        [row_id] = await writer.record_audit([step()], now=T0)
        assert [r.id for r in await everything(reader)] == [row_id]


class TestQuery:
    async def test_every_filter_given_must_hold(self, audit_store: AuditStore) -> None:
        """job, campaign, graph id and action filter; several filters combine with AND."""
        await audit_store.record_audit(
            [
                step("g1"),
                step("g2", job_id="job-2"),
                step("g3", job_id=None, campaign_id="c2"),
                step(None, action=AuditAction.ROLLBACK_PLAN),
                step("g1", action=AuditAction.VERIFICATION, campaign_id=None),
            ],
            now=T0,
        )

        def graph_ids(rows: list[AuditRecord]) -> list[str | None]:
            return sorted((r.graph_id for r in rows), key=str)

        assert graph_ids(await everything(audit_store, job_id="job-1")) == [None, "g1", "g1"]
        assert graph_ids(await everything(audit_store, campaign_id="c2")) == ["g3"]
        assert graph_ids(await everything(audit_store, graph_id="g1")) == ["g1", "g1"]
        plan = await everything(audit_store, action=AuditAction.ROLLBACK_PLAN)
        assert [r.action for r in plan] == ["rollback_plan"]
        both = await everything(audit_store, job_id="job-1", action="rollback_step")
        assert graph_ids(both) == ["g1"]
        assert await everything(audit_store, job_id="job-9") == []

    async def test_keyset_paging_visits_every_row_once(self, audit_store: AuditStore) -> None:
        """Pages of 2 over 5 rows, newest first; the last page has no next cursor."""
        ids = await audit_store.record_audit([step(f"g{n}") for n in range(5)], now=T0)
        seen: list[int] = []
        before = None
        pages = 0
        while True:
            page = await audit_store.audit(job_id="job-1", before_id=before, limit=2)
            seen.extend(r.id for r in page.items)
            pages += 1
            if page.next_before_id is None:
                break
            before = page.next_before_id
        assert seen == sorted(ids, reverse=True)
        assert pages == 3

    async def test_an_exactly_full_last_page_has_no_next_cursor(
        self, audit_store: AuditStore
    ) -> None:
        """Two rows, limit 2: one page, next_before_id None."""
        await audit_store.record_audit([step("a"), step("b")], now=T0)
        page = await audit_store.audit(limit=2)
        assert len(page.items) == 2
        assert page.next_before_id is None

    async def test_a_limit_below_one_is_refused(self, audit_store: AuditStore) -> None:
        """limit 0 raises ValueError (a caller bug), like Ledger.entities."""
        with pytest.raises(ValueError, match="limit"):
            await audit_store.audit(limit=0)


async def test_a_closed_store_is_unavailable(ledger: Ledger) -> None:
    """After aclose(), writing and reading the trail raise StoreUnavailable."""
    store: Any = ledger
    await ledger.aclose()
    with pytest.raises(StoreUnavailable):
        await store.record_audit([step()], now=T0)
    with pytest.raises(StoreUnavailable):
        await store.audit()
