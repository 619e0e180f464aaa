"""The JobStore contract (gateway/ports.py), run unchanged against every backend."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from gateway.errors import StoreConflict, StoreUnavailable
from gateway.model import (
    AlreadyCreated,
    CheckResult,
    JobQuery,
    JobRecord,
    JobSpec,
    JobStatus,
    NoCapacity,
    Reservation,
    Reserved,
    SlotBusy,
    SlotOutcome,
    SlotRecord,
    SlotState,
    SlotWant,
)
from gateway.ports import JobStore, Ledger
from tests.contract.conftest import JobStoreFactory

T0 = datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)
T3 = T0 + timedelta(seconds=3)
VERIFICATION = {"passed": True, "checks": [{"name": "token", "status": "passed"}]}


def spec(expect: dict[str, int] | None = None, **fields: Any) -> JobSpec:
    values: dict[str, Any] = {
        "caller": "c0ffee",
        "account_id": "act_1",
        "campaign_name": "Black Friday",
        "expect": {"campaign": 1, "adset": 3} if expect is None else expect,
    }
    values.update(fields)
    return JobSpec(**values)


async def new_job(
    store: JobStore, expect: dict[str, int] | None = None, job_id: str = "job-1", **fields: Any
) -> JobRecord:
    record, created = await store.create_job(
        spec(expect, **fields), job_id=job_id, verification=VERIFICATION, now=T0
    )
    assert created
    return record


async def reserve(
    store: JobStore, *wants: SlotWant, request_id: str = "req-a", job_id: str = "job-1"
) -> list[Reservation]:
    return await store.reserve_slots(job_id, wants, request_id=request_id, now=T1)


def adset(slot_no: int | None = None) -> SlotWant:
    return SlotWant("adset", slot_no)


def outcome(
    slot_no: int,
    state: SlotState,
    graph_id: str | None = None,
    request_id: str = "req-a",
    entity_type: str = "adset",
) -> SlotOutcome:
    return SlotOutcome("job-1", entity_type, slot_no, request_id, state, graph_id)


async def slot(store: JobStore, slot_no: int, entity_type: str = "adset") -> SlotRecord:
    (found,) = [
        s
        for s in await store.slots("job-1")
        if s.entity_type == entity_type and s.slot_no == slot_no
    ]
    return found


async def status(store: JobStore, job_id: str = "job-1") -> JobStatus:
    record = await store.job(job_id)
    assert record is not None
    return record.status


class TestCreateJob:
    async def test_a_new_job_is_pending_with_one_free_slot_per_expected_entity(
        self, job_store: JobStore
    ) -> None:
        """create_job stores the declaration as given and one FREE slot per expected entity."""
        record, created = await job_store.create_job(
            spec({"campaign": 1, "adset": 3, "ad": 2}, external_ref="ref-1"),
            job_id="job-1",
            verification=VERIFICATION,
            now=T0,
        )
        assert created
        assert record == JobRecord(
            job_id="job-1",
            caller="c0ffee",
            account_id="act_1",
            campaign_name="Black Friday",
            expect={"campaign": 1, "adset": 3, "ad": 2},
            external_ref="ref-1",
            status=JobStatus.PENDING,
            verification=VERIFICATION,
            created_at=T0,
            updated_at=T0,
        )
        assert await job_store.slots("job-1") == [
            SlotRecord("job-1", t, n, SlotState.FREE, None, None, T0)
            for t, n in [
                ("ad", 1),
                ("ad", 2),
                ("adset", 1),
                ("adset", 2),
                ("adset", 3),
                ("campaign", 1),
            ]
        ]

    async def test_job_reads_back_what_create_job_returned(self, job_store: JobStore) -> None:
        """job(id) returns the same record create_job did."""
        record = await new_job(job_store)
        assert await job_store.job("job-1") == record

    async def test_an_unknown_job_is_none_and_has_no_slots(self, job_store: JobStore) -> None:
        """job() of an id never declared is None; slots() is empty."""
        assert await job_store.job("nope") is None
        assert await job_store.slots("nope") == []

    async def test_the_same_external_ref_from_the_same_caller_returns_the_first_job(
        self, job_store: JobStore
    ) -> None:
        """Declaring again with the caller's external_ref inserts nothing: (first job, False)."""
        first = await new_job(job_store, external_ref="ref-1")
        again, created = await job_store.create_job(
            spec({"adset": 50}, external_ref="ref-1"),
            job_id="job-2",
            verification={},
            now=T1,
        )
        assert (again, created) == (first, False)
        assert await job_store.job("job-2") is None
        assert await job_store.slots("job-2") == []

    async def test_another_caller_with_the_same_external_ref_gets_a_new_job(
        self, job_store: JobStore
    ) -> None:
        """external_ref is per caller: another caller's identical ref declares its own job."""
        await new_job(job_store, external_ref="ref-1")
        other = await new_job(job_store, job_id="job-2", caller="beef", external_ref="ref-1")
        assert other.job_id == "job-2"
        assert len(await job_store.slots("job-2")) == 4

    async def test_jobs_without_external_ref_are_never_merged(self, job_store: JobStore) -> None:
        """Two declarations without a ref are two jobs, even when everything else is equal."""
        await new_job(job_store)
        second = await new_job(job_store, job_id="job-2")
        assert second.job_id == "job-2"

    async def test_reusing_a_job_id_raises_conflict(self, job_store: JobStore) -> None:
        """A job id is unique: declaring another job under it raises StoreConflict."""
        await new_job(job_store)
        with pytest.raises(StoreConflict):
            await new_job(job_store, caller="beef")

    @pytest.mark.parametrize("expect", [{"adset": -1}, {"adset": 1.5}, {"ad": 10_001}])
    async def test_an_impossible_expectation_is_refused(
        self, job_store: JobStore, expect: dict[str, Any]
    ) -> None:
        """A negative, fractional or absurdly large count raises ValueError; nothing is kept."""
        with pytest.raises(ValueError, match="expect"):
            await new_job(job_store, expect)
        assert await job_store.job("job-1") is None

    async def test_an_over_long_external_ref_is_refused(self, job_store: JobStore) -> None:
        """external_ref is bounded by the schema (255 characters): ValueError beyond."""
        with pytest.raises(ValueError, match="refused"):
            await new_job(job_store, external_ref="r" * 256)

    async def test_concurrent_declarations_with_one_external_ref_make_one_job(
        self, job_store_factory: JobStoreFactory
    ) -> None:
        """Ten declarations with one ref at once, on two replicas: one job, all told its id."""
        stores = [await job_store_factory(), await job_store_factory()]
        results = await asyncio.gather(
            *(
                stores[n % 2].create_job(
                    spec(external_ref="ref-1"), job_id=f"job-{n}", verification={}, now=T0
                )
                for n in range(10)
            )
        )
        assert sum(created for _, created in results) == 1
        assert len({record.job_id for record, _ in results}) == 1
        (winner,) = [record.job_id for record, created in results if created]
        assert len(await stores[0].slots(winner)) == 4


class TestReserveUnnamed:
    async def test_unnamed_wants_take_the_lowest_free_slots_in_order(
        self, job_store: JobStore
    ) -> None:
        """Three wants of one type get slots 1, 2, 3, held by the request."""
        await new_job(job_store)
        assert await reserve(job_store, adset(), adset(), adset()) == [
            Reserved(1),
            Reserved(2),
            Reserved(3),
        ]
        held = await slot(job_store, 2)
        assert (held.state, held.request_id, held.updated_at) == (SlotState.RESERVED, "req-a", T1)

    async def test_each_type_has_slots_of_its_own(self, job_store: JobStore) -> None:
        """A campaign want and an adset want each take slot 1 of their own type."""
        await new_job(job_store)
        got = await reserve(job_store, SlotWant("campaign"), adset(), adset())
        assert got == [Reserved(1), Reserved(1), Reserved(2)]

    async def test_past_the_last_free_slot_a_want_gets_no_capacity(
        self, job_store: JobStore
    ) -> None:
        """Three wants on a job expecting two: the third is NoCapacity, counting the other two."""
        await new_job(job_store, {"adset": 2})
        assert await reserve(job_store, adset(), adset(), adset()) == [
            Reserved(1),
            Reserved(2),
            NoCapacity("adset", expected=2, created=0, in_flight=2),
        ]

    async def test_no_capacity_counts_created_and_in_flight_slots(
        self, job_store: JobStore
    ) -> None:
        """Created, unknown and reserved slots all count against the cap (invariant 4)."""
        await new_job(job_store)
        await reserve(job_store, adset(), adset(), adset())
        await job_store.complete_slots(
            [outcome(1, SlotState.CREATED, "g1"), outcome(2, SlotState.UNKNOWN)], now=T2
        )
        assert await reserve(job_store, adset(), request_id="req-b") == [
            NoCapacity("adset", expected=3, created=1, in_flight=2)
        ]

    async def test_a_type_the_job_did_not_expect_has_no_capacity(self, job_store: JobStore) -> None:
        """A job that declared no ads caps ads at zero."""
        await new_job(job_store)
        assert await reserve(job_store, SlotWant("ad")) == [NoCapacity("ad", 0, 0, 0)]

    async def test_an_unknown_job_has_no_capacity(self, job_store: JobStore) -> None:
        """Reserving on a job id never declared takes nothing."""
        assert await reserve(job_store, adset(), job_id="nope") == [NoCapacity("adset", 0, 0, 0)]

    async def test_a_retry_reuses_its_slot(self, job_store: JobStore) -> None:
        """A FREE outcome releases the slot; the next reservation takes that same number."""
        await new_job(job_store)
        await reserve(job_store, adset(), adset(), adset())
        await job_store.complete_slots([outcome(2, SlotState.FREE)], now=T2)
        released = await slot(job_store, 2)
        assert (released.state, released.request_id) == (SlotState.FREE, None)
        assert await reserve(job_store, adset(), request_id="req-b") == [Reserved(2)]

    async def test_reserving_nothing_returns_nothing(self, job_store: JobStore) -> None:
        """An empty list of wants reserves nothing and leaves the job pending."""
        await new_job(job_store)
        assert await reserve(job_store) == []
        assert await status(job_store) is JobStatus.PENDING


class TestReserveNamed:
    async def test_a_named_free_slot_is_reserved(self, job_store: JobStore) -> None:
        """Naming slot 3 reserves slot 3; an unnamed want after it still gets the lowest, 1."""
        await new_job(job_store)
        assert await reserve(job_store, adset(3)) == [Reserved(3)]
        assert await reserve(job_store, adset(), request_id="req-b") == [Reserved(1)]

    async def test_a_named_created_slot_replays_its_entity(self, job_store: JobStore) -> None:
        """A slot already created answers AlreadyCreated with its Graph id, reserving nothing."""
        await new_job(job_store)
        await reserve(job_store, adset(), adset())
        await job_store.complete_slots([outcome(2, SlotState.CREATED, "g2")], now=T2)
        assert await reserve(job_store, adset(2), request_id="req-b") == [AlreadyCreated(2, "g2")]
        assert (await slot(job_store, 2)).request_id == "req-a"

    async def test_a_named_slot_held_by_another_request_is_busy(self, job_store: JobStore) -> None:
        """A reserved slot named by another request: SlotBusy naming the holder."""
        await new_job(job_store)
        await reserve(job_store, adset())
        assert await reserve(job_store, adset(1), request_id="req-b") == [SlotBusy(1, "req-a")]

    async def test_a_named_slot_held_by_the_same_request_is_busy_too(
        self, job_store: JobStore
    ) -> None:
        """Naming a slot the request already holds is SlotBusy as well (never a second hold)."""
        await new_job(job_store)
        await reserve(job_store, adset())
        assert await reserve(job_store, adset(1)) == [SlotBusy(1, "req-a")]

    async def test_a_named_unknown_slot_is_busy(self, job_store: JobStore) -> None:
        """A slot whose create has no answer yet is in flight: SlotBusy, not a new create."""
        await new_job(job_store)
        await reserve(job_store, adset())
        await job_store.complete_slots([outcome(1, SlotState.UNKNOWN)], now=T2)
        assert await reserve(job_store, adset(1), request_id="req-b") == [SlotBusy(1, "req-a")]

    @pytest.mark.parametrize("slot_no", [0, -1, 4, 10**12])
    async def test_a_named_slot_out_of_range_has_no_capacity(
        self, job_store: JobStore, slot_no: int
    ) -> None:
        """Slot numbers run 1..expected: any other number is NoCapacity."""
        await new_job(job_store)
        assert await reserve(job_store, adset(slot_no)) == [NoCapacity("adset", 3, 0, 0)]

    async def test_wants_of_one_call_see_each_other(self, job_store: JobStore) -> None:
        """Wants apply in order: a named slot taken earlier in the call is busy, and unnamed
        wants skip a slot named before them."""
        await new_job(job_store)
        assert await reserve(job_store, adset(2), adset(), adset(), adset(2)) == [
            Reserved(2),
            Reserved(1),
            Reserved(3),
            SlotBusy(2, "req-a"),
        ]


class TestJobStatus:
    async def test_reserving_moves_a_pending_job_to_in_progress(self, job_store: JobStore) -> None:
        """The first reservation makes a pending job in_progress (updated_at moves)."""
        await new_job(job_store)
        await reserve(job_store, adset())
        record = await job_store.job("job-1")
        assert record is not None
        assert (record.status, record.updated_at) == (JobStatus.IN_PROGRESS, T1)

    async def test_a_call_that_reserves_nothing_leaves_the_job_pending(
        self, job_store: JobStore
    ) -> None:
        """NoCapacity answers alone change nothing about the job."""
        await new_job(job_store)
        await reserve(job_store, SlotWant("ad"), adset(9))
        assert await status(job_store) is JobStatus.PENDING

    async def test_the_job_completes_when_its_last_slot_is_created(
        self, job_store: JobStore
    ) -> None:
        """pending → in_progress → completed, the last step when every slot holds an entity."""
        await new_job(job_store, {"campaign": 1, "adset": 2})
        await reserve(job_store, SlotWant("campaign"), adset(), adset())
        await job_store.complete_slots(
            [
                outcome(1, SlotState.CREATED, "c1", entity_type="campaign"),
                outcome(1, SlotState.CREATED, "a1"),
            ],
            now=T2,
        )
        assert await status(job_store) is JobStatus.IN_PROGRESS
        await job_store.complete_slots([outcome(2, SlotState.CREATED, "a2")], now=T3)
        record = await job_store.job("job-1")
        assert record is not None
        assert (record.status, record.updated_at) == (JobStatus.COMPLETED, T3)

    async def test_set_job_status_closes_a_job(self, job_store: JobStore) -> None:
        """set_job_status records the new status and moves updated_at; repeating it is a no-op."""
        await new_job(job_store)
        await job_store.set_job_status("job-1", JobStatus.FAILED, now=T1)
        await job_store.set_job_status("job-1", JobStatus.FAILED, now=T2)
        record = await job_store.job("job-1")
        assert record is not None
        assert (record.status, record.updated_at) == (JobStatus.FAILED, T1)

    @pytest.mark.parametrize(
        "closed", [JobStatus.ROLLED_BACK, JobStatus.PARTIALLY_ROLLED_BACK, JobStatus.FAILED]
    )
    async def test_every_closed_status_is_stored_and_read_back(
        self, job_store: JobStore, closed: JobStatus
    ) -> None:
        """Every status a rollback or a failure leaves (migration 0003 allows
        partially_rolled_back) is stored; moving between them works both ways."""
        await new_job(job_store)
        await job_store.set_job_status("job-1", closed, now=T1)
        assert await status(job_store) is closed
        await job_store.set_job_status("job-1", JobStatus.PARTIALLY_ROLLED_BACK, now=T2)
        await job_store.set_job_status("job-1", JobStatus.ROLLED_BACK, now=T3)
        assert await status(job_store) is JobStatus.ROLLED_BACK

    async def test_a_closed_job_never_becomes_completed(self, job_store: JobStore) -> None:
        """A job marked failed mid-way stays failed even once its in-flight slots are created."""
        await new_job(job_store, {"adset": 1})
        await reserve(job_store, adset())
        await job_store.set_job_status("job-1", JobStatus.FAILED, now=T2)
        await job_store.complete_slots([outcome(1, SlotState.CREATED, "g1")], now=T3)
        assert await status(job_store) is JobStatus.FAILED


class TestCompleteSlots:
    async def test_created_stores_the_graph_id_for_good(self, job_store: JobStore) -> None:
        """A created slot keeps its Graph id and creator; a later FREE from it is ignored."""
        await new_job(job_store)
        await reserve(job_store, adset())
        await job_store.complete_slots([outcome(1, SlotState.CREATED, "g1")], now=T2)
        await job_store.complete_slots([outcome(1, SlotState.FREE)], now=T3)
        assert await slot(job_store, 1) == SlotRecord(
            "job-1", "adset", 1, SlotState.CREATED, "req-a", "g1", T2
        )

    async def test_unknown_keeps_the_slot_in_flight_until_its_holder_reports(
        self, job_store: JobStore
    ) -> None:
        """An UNKNOWN slot is not handed out again; its holder can still settle it later."""
        await new_job(job_store, {"adset": 1})
        await reserve(job_store, adset())
        await job_store.complete_slots([outcome(1, SlotState.UNKNOWN)], now=T2)
        assert await reserve(job_store, adset(), request_id="req-b") == [
            NoCapacity("adset", 1, 0, 1)
        ]
        await job_store.complete_slots([outcome(1, SlotState.CREATED, "g1")], now=T3)
        assert (await slot(job_store, 1)).state is SlotState.CREATED

    async def test_an_outcome_from_a_request_not_holding_the_slot_is_ignored(
        self, job_store: JobStore
    ) -> None:
        """Outcomes from another request, or for a free slot, change nothing."""
        await new_job(job_store)
        await reserve(job_store, adset())
        await job_store.complete_slots(
            [
                outcome(1, SlotState.CREATED, "stolen", request_id="req-b"),
                outcome(1, SlotState.FREE, request_id="req-b"),
                outcome(2, SlotState.CREATED, "g2"),
            ],
            now=T2,
        )
        assert await job_store.slots("job-1") == [
            SlotRecord("job-1", "adset", 1, SlotState.RESERVED, "req-a", None, T1),
            SlotRecord("job-1", "adset", 2, SlotState.FREE, None, None, T0),
            SlotRecord("job-1", "adset", 3, SlotState.FREE, None, None, T0),
            SlotRecord("job-1", "campaign", 1, SlotState.FREE, None, None, T0),
        ]

    async def test_a_released_slot_ignores_its_former_holder(self, job_store: JobStore) -> None:
        """Once released and taken by another request, the first holder's outcome is ignored."""
        await new_job(job_store)
        await reserve(job_store, adset())
        await job_store.complete_slots([outcome(1, SlotState.FREE)], now=T2)
        await reserve(job_store, adset(), request_id="req-b")
        await job_store.complete_slots([outcome(1, SlotState.CREATED, "late")], now=T3)
        held = await slot(job_store, 1)
        assert (held.state, held.request_id, held.graph_id) == (SlotState.RESERVED, "req-b", None)

    async def test_outcomes_for_one_slot_in_one_call_apply_in_order(
        self, job_store: JobStore
    ) -> None:
        """UNKNOWN then CREATED then FREE for one slot: created (FREE came after the hold ended)."""
        await new_job(job_store)
        await reserve(job_store, adset())
        await job_store.complete_slots(
            [
                outcome(1, SlotState.UNKNOWN),
                outcome(1, SlotState.CREATED, "g1"),
                outcome(1, SlotState.FREE),
            ],
            now=T2,
        )
        held = await slot(job_store, 1)
        assert (held.state, held.graph_id) == (SlotState.CREATED, "g1")

    async def test_a_created_outcome_without_graph_id_is_refused(self, job_store: JobStore) -> None:
        """CREATED needs the entity's Graph id: ValueError, and the slot stays reserved."""
        await new_job(job_store)
        await reserve(job_store, adset())
        with pytest.raises(ValueError, match="graph_id"):
            await job_store.complete_slots([outcome(1, SlotState.CREATED)], now=T2)
        assert (await slot(job_store, 1)).state is SlotState.RESERVED

    async def test_completing_nothing_is_harmless(self, job_store: JobStore) -> None:
        """An empty list of outcomes changes nothing."""
        await job_store.complete_slots([], now=T0)


class TestResolveSlot:
    async def test_an_unknown_slot_resolves_to_created_and_can_complete_the_job(
        self, job_store: JobStore
    ) -> None:
        """Reconciliation found the entity: the slot is created and a finished job completes."""
        await new_job(job_store, {"adset": 1})
        await reserve(job_store, adset())
        await job_store.complete_slots([outcome(1, SlotState.UNKNOWN)], now=T2)
        await job_store.resolve_slot("job-1", "adset", 1, graph_id="g1", now=T3)
        assert await slot(job_store, 1) == SlotRecord(
            "job-1", "adset", 1, SlotState.CREATED, "req-a", "g1", T3
        )
        assert await status(job_store) is JobStatus.COMPLETED

    async def test_an_unknown_slot_resolves_to_free_for_a_retry(self, job_store: JobStore) -> None:
        """Reconciliation found nothing: the slot is free again and the next create reuses it."""
        await new_job(job_store)
        await reserve(job_store, adset(), adset())
        await job_store.complete_slots([outcome(1, SlotState.UNKNOWN)], now=T2)
        await job_store.resolve_slot("job-1", "adset", 1, graph_id=None, now=T3)
        assert await slot(job_store, 1) == SlotRecord(
            "job-1", "adset", 1, SlotState.FREE, None, None, T3
        )
        assert await reserve(job_store, adset(), request_id="req-b") == [Reserved(1)]

    async def test_a_reserved_slot_can_be_resolved(self, job_store: JobStore) -> None:
        """A slot left reserved by a crashed request is resolved like an unknown one."""
        await new_job(job_store)
        await reserve(job_store, adset())
        await job_store.resolve_slot("job-1", "adset", 1, graph_id="g1", now=T2)
        assert (await slot(job_store, 1)).graph_id == "g1"

    async def test_resolving_a_free_or_created_slot_changes_nothing(
        self, job_store: JobStore
    ) -> None:
        """Only held slots are resolved: a created one keeps its id, a free one stays free."""
        await new_job(job_store)
        await reserve(job_store, adset())
        await job_store.complete_slots([outcome(1, SlotState.CREATED, "g1")], now=T2)
        before = await job_store.slots("job-1")
        await job_store.resolve_slot("job-1", "adset", 1, graph_id=None, now=T3)
        await job_store.resolve_slot("job-1", "adset", 2, graph_id="g2", now=T3)
        assert await job_store.slots("job-1") == before


class RecordedChecks(Protocol):
    """A read-back both backends offer beyond JobStore (the admin API will need one)."""

    async def checks(self, job_id: str) -> list[CheckResult]: ...


class TestRecordChecks:
    async def test_every_check_is_kept_with_its_data(self, job_store: JobStore) -> None:
        """record_checks keeps each check (name, status, detail, duration, data) in order."""
        checks = [
            CheckResult("token", "passed", "valid", 12.5),
            CheckResult("account", "passed", "active", 30.0, {"account_status": 1}),
            CheckResult("campaign_name", "warning", "exists", 8.25, {"ids": ["1", "2"]}),
            CheckResult("object_limits", "error", "timed out", 2000.0),
        ]
        await new_job(job_store)
        await job_store.record_checks(
            checks, caller="c0ffee", account_id="act_1", job_id="job-1", now=T0
        )
        reader: RecordedChecks = job_store
        assert await reader.checks("job-1") == checks

    async def test_checks_of_a_refused_job_are_kept_without_a_job(
        self, job_store: JobStore
    ) -> None:
        """A refused declaration's checks are recorded with no job id, under no job."""
        await job_store.record_checks(
            [CheckResult("account", "failed", "disabled", 5.0)],
            caller="c0ffee",
            account_id="act_1",
            job_id=None,
            now=T0,
        )
        await job_store.record_checks([], caller="c0ffee", account_id="act_1", job_id=None, now=T0)
        reader: RecordedChecks = job_store
        assert await reader.checks("job-1") == []

    async def test_an_unknown_check_status_is_refused(self, job_store: JobStore) -> None:
        """Status is passed | failed | warning | error; anything else raises ValueError."""
        with pytest.raises(ValueError, match="refused"):
            await job_store.record_checks(
                [CheckResult("token", "ok", "", 1.0)],
                caller="c0ffee",
                account_id="act_1",
                job_id=None,
                now=T0,
            )


class TestConcurrency:
    async def test_eighty_concurrent_reservations_fill_fifty_slots_exactly_once(
        self, job_store: JobStore
    ) -> None:
        """80 requests racing for the 50 ad sets of a job: 50 get slots 1..50 once each, 30
        get NoCapacity."""
        await new_job(job_store, {"adset": 50})
        results = await asyncio.gather(
            *(reserve(job_store, adset(), request_id=f"req-{n}") for n in range(80))
        )
        got = [r for (r,) in results]
        reserved = sorted(r.slot_no for r in got if isinstance(r, Reserved))
        assert reserved == list(range(1, 51))
        assert sum(isinstance(r, NoCapacity) for r in got) == 30
        holders = {s.slot_no: s.request_id for s in await job_store.slots("job-1")}
        assert len(set(holders.values())) == 50

    async def test_reservations_on_two_replicas_never_share_a_slot(
        self, job_store_factory: JobStoreFactory
    ) -> None:
        """Two replicas of one database, 40 requests each, 50 slots: each slot goes once."""
        first, second = await job_store_factory(), await job_store_factory()
        await new_job(first, {"adset": 50})
        results = await asyncio.gather(
            *(
                reserve(store, adset(), request_id=f"req-{n}-{i}")
                for n, store in enumerate((first, second))
                for i in range(40)
            )
        )
        got = [r for (r,) in results]
        reserved = sorted(r.slot_no for r in got if isinstance(r, Reserved))
        assert reserved == list(range(1, 51))
        assert sum(isinstance(r, NoCapacity) for r in got) == 30

    async def test_releases_and_reservations_racing_never_exceed_the_cap(
        self, job_store: JobStore
    ) -> None:
        """30 requests reserving, then creating or releasing, all at once on a 10-slot job:
        a slot is never held twice and created + held never passes 10."""
        cap = 10
        await new_job(job_store, {"adset": cap})
        rng = random.Random(7)
        held: set[int] = set()
        created: dict[int, str] = {}
        peak = 0

        async def worker(n: int) -> None:
            nonlocal peak
            for attempt in range(6):
                request_id = f"req-{n}-{attempt}"
                (got,) = await reserve(job_store, adset(), request_id=request_id)
                if not isinstance(got, Reserved):
                    continue
                assert got.slot_no not in held
                assert got.slot_no not in created
                held.add(got.slot_no)
                peak = max(peak, len(held) + len(created))
                assert len(held) + len(created) <= cap
                mine = await slot(job_store, got.slot_no)
                assert (mine.state, mine.request_id) == (SlotState.RESERVED, request_id)
                # Bookkeeping changes before the store's: once the outcome commits, another
                # request may get the slot, and its check above must not see it still held.
                held.discard(got.slot_no)
                if rng.random() < 0.2:
                    created[got.slot_no] = request_id
                    state, graph_id = SlotState.CREATED, f"g-{request_id}"
                else:
                    state, graph_id = SlotState.FREE, None
                await job_store.complete_slots(
                    [SlotOutcome("job-1", "adset", got.slot_no, request_id, state, graph_id)],
                    now=T2,
                )

        await asyncio.gather(*(worker(n) for n in range(30)))
        assert peak <= cap
        slots = await job_store.slots("job-1")
        assert {s.slot_no: s.request_id for s in slots if s.state is SlotState.CREATED} == created
        assert Counter(s.state for s in slots)[SlotState.RESERVED] == 0

    async def test_a_job_completes_when_its_last_slots_are_created_at_once(
        self, job_store: JobStore
    ) -> None:
        """20 requests creating the 20 slots of a job in concurrent calls: the job ends
        completed (no call may miss another's slot while asking "is every slot created?")."""
        await new_job(job_store, {"adset": 20})
        for n in range(20):
            assert await reserve(job_store, adset(), request_id=f"req-{n}") == [Reserved(n + 1)]
        await asyncio.gather(
            *(
                job_store.complete_slots(
                    [outcome(n + 1, SlotState.CREATED, f"g{n}", request_id=f"req-{n}")], now=T2
                )
                for n in range(20)
            )
        )
        assert await status(job_store) is JobStatus.COMPLETED


class TestClosed:
    async def test_a_closed_store_raises_store_unavailable_everywhere(
        self, ledger: Ledger, job_store: JobStore
    ) -> None:
        """After the ledger's aclose(), every JobStore read and write raises StoreUnavailable."""
        await ledger.aclose()
        calls = [
            job_store.create_job(spec(), job_id="job-1", verification={}, now=T0),
            job_store.job("job-1"),
            job_store.reserve_slots("job-1", [adset()], request_id="req-a", now=T1),
            job_store.complete_slots([outcome(1, SlotState.FREE)], now=T1),
            job_store.resolve_slot("job-1", "adset", 1, graph_id=None, now=T1),
            job_store.slots("job-1"),
            job_store.set_job_status("job-1", JobStatus.FAILED, now=T1),
            job_store.record_checks(
                [CheckResult("token", "passed", "", 1.0)],
                caller="c0ffee",
                account_id="act_1",
                job_id=None,
                now=T1,
            ),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await call


class TestRepairSlot:
    async def _completed(self, job_store: JobStore) -> None:
        await new_job(job_store, {"adset": 2})
        await reserve(job_store, adset(), adset())
        await job_store.complete_slots(
            [outcome(1, SlotState.CREATED, "g1"), outcome(2, SlotState.CREATED, "g2")], now=T2
        )
        assert await status(job_store) is JobStatus.COMPLETED

    async def test_freeing_a_missing_entity_reopens_the_job_and_adopting_closes_it(
        self, job_store: JobStore
    ) -> None:
        """Created g2 vanished: its slot is freed (job back in progress); an untracked g9
        adopted into it completes the job again."""
        await self._completed(job_store)
        assert await job_store.repair_slot("job-1", "adset", 2, was="g2", graph_id=None, now=T3)
        freed = await slot(job_store, 2)
        assert (freed.state, freed.graph_id, freed.request_id) == (SlotState.FREE, None, None)
        assert await status(job_store) is JobStatus.IN_PROGRESS
        assert await job_store.repair_slot("job-1", "adset", 2, was=None, graph_id="g9", now=T3)
        filled = await slot(job_store, 2)
        assert (filled.state, filled.graph_id) == (SlotState.CREATED, "g9")
        assert await status(job_store) is JobStatus.COMPLETED

    async def test_a_slot_not_as_expected_is_left_alone(self, job_store: JobStore) -> None:
        """Another id, a slot not free, a slot in flight: nothing changes (compare-and-set)."""
        await self._completed(job_store)
        assert not await job_store.repair_slot("job-1", "adset", 2, was="g7", graph_id=None, now=T3)
        assert not await job_store.repair_slot("job-1", "adset", 1, was=None, graph_id="g9", now=T3)
        assert (await slot(job_store, 1)).graph_id == "g1"
        assert (await slot(job_store, 2)).graph_id == "g2"
        assert await status(job_store) is JobStatus.COMPLETED


class TestListJobs:
    async def test_filters_and_pages_newest_first(self, job_store: JobStore) -> None:
        """Five jobs over two accounts: status/account/since filters hold together, and
        pages of two walk every match once, newest first."""
        for n in range(5):
            await job_store.create_job(
                spec(account_id="act_1" if n % 2 else "act_2", external_ref=f"r{n}"),
                job_id=f"job-{n}",
                verification=VERIFICATION,
                now=T0 + timedelta(seconds=n),
            )
        await job_store.set_job_status("job-3", JobStatus.FAILED, now=T3)
        everything = await job_store.list_jobs(JobQuery(limit=10))
        assert [j.job_id for j in everything.items] == [f"job-{n}" for n in (4, 3, 2, 1, 0)]
        assert everything.next_before is None
        failed = await job_store.list_jobs(JobQuery(status=JobStatus.FAILED))
        assert [j.job_id for j in failed.items] == ["job-3"]
        mine = await job_store.list_jobs(
            JobQuery(account_id="act_1", since=T0 + timedelta(seconds=2))
        )
        assert [j.job_id for j in mine.items] == ["job-3"]
        seen: list[str] = []
        cursor = None
        while True:
            page = await job_store.list_jobs(JobQuery(limit=2, before=cursor))
            seen.extend(j.job_id for j in page.items)
            if page.next_before is None:
                break
            cursor = page.next_before
        assert seen == [f"job-{n}" for n in (4, 3, 2, 1, 0)]
        with pytest.raises(ValueError, match="limit"):
            await job_store.list_jobs(JobQuery(limit=0))


class TestNotifications:
    async def test_each_ending_status_is_due_once_until_announced(
        self, job_store: JobStore
    ) -> None:
        """A job declared with a notify_url is due when it completes; once announced it is not;
        a later ending status (rolled back) is due again; a job without a URL never is."""
        await new_job(job_store, {"adset": 1}, notify_url="https://hooks.example/job")
        await new_job(job_store, {"adset": 1}, job_id="job-2", external_ref="quiet")
        assert await job_store.due_notifications(max_tries=3) == []  # pending: not ending
        await reserve(job_store, adset())
        await job_store.complete_slots([outcome(1, SlotState.CREATED, "g1")], now=T2)
        (due,) = await job_store.due_notifications(max_tries=3)
        assert (due.job.job_id, due.job.status, due.url, due.tries) == (
            "job-1",
            JobStatus.COMPLETED,
            "https://hooks.example/job",
            0,
        )
        await job_store.notification_done("job-1", "completed", ok=True, error=None, now=T3)
        assert await job_store.due_notifications(max_tries=3) == []
        await job_store.set_job_status("job-1", JobStatus.ROLLED_BACK, now=T3)
        (again,) = await job_store.due_notifications(max_tries=3)
        assert again.job.status is JobStatus.ROLLED_BACK

    async def test_failed_tries_are_counted_per_status_up_to_the_limit(
        self, job_store: JobStore
    ) -> None:
        await new_job(job_store, {"adset": 1}, notify_url="https://hooks.example/job")
        await job_store.set_job_status("job-1", JobStatus.FAILED, now=T2)
        for n in range(2):
            (due,) = await job_store.due_notifications(max_tries=2)
            assert due.tries == n
            await job_store.notification_done("job-1", "failed", ok=False, error="503", now=T3)
        assert await job_store.due_notifications(max_tries=2) == []  # gave up on "failed"
        await job_store.set_job_status("job-1", JobStatus.ROLLED_BACK, now=T3)
        (fresh,) = await job_store.due_notifications(max_tries=2)
        assert fresh.tries == 0  # a new status starts again
