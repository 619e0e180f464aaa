"""The recovery worker resolves `sending` and `unknown` rows by looking on Graph (invariants 5, 7).

In-process gateway in front of the simulator with its worker off (`recovery=False`): each test
calls `recover_once` itself, so nothing happens behind its back. The gateway's clock is an
`OffsetClock` the test moves forward instead of sleeping through in_flight or give_up times.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from gateway.app import load_policy
from gateway.clock import OffsetClock
from gateway.core.policy import PolicySet
from gateway.model import EntityQuery, EntityRecord, EntityState, Reserved, SlotWant
from gateway.recovery import recover_once
from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.pgschema import scratch_schema

TOKEN = "sim-token-alice"
ACCOUNT = "act_1001"
V = "/v25.0"
TARGETING = json.dumps({"geo_locations": {"countries": ["US"]}, "age_min": 18})
# Long enough that nothing is called absent or "no longer in flight" unless a test says so.
IN_FLIGHT = 60.0
GIVE_UP = 600.0


def recovery_policy(**values: float) -> PolicySet:
    """The bundled policies with these [recovery] values."""
    policy = load_policy(None)
    defaults: dict[str, float] = {
        "interval_seconds": 0.2,
        "in_flight_seconds": IN_FLIGHT,
        "clock_skew_seconds": 5.0,
        "give_up_seconds": GIVE_UP,
    }
    # The worker is under test: requests leave unknown outcomes to it instead of looking.
    return replace(
        policy,
        recovery=replace(policy.recovery, **(defaults | values)),
        retry=replace(policy.retry, reconcile_creates=False),
    )


@dataclass
class Stack:
    """A gateway (worker off) with a movable clock, and a client of it."""

    handle: GatewayHandle
    clock: OffsetClock
    http: aiohttp.ClientSession

    async def recover(self) -> Any:
        return await recover_once(self.handle.gateway)

    async def post(
        self,
        path: str,
        data: Mapping[str, str],
        *,
        job: str | None = None,
        slot: int | None = None,
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        headers = {}
        if job is not None:
            headers["X-Gateway-Job"] = job
        if slot is not None:
            headers["X-Gateway-Slot"] = str(slot)
        async with self.http.post(
            f"{self.handle.url}{V}/{path}",
            params={"access_token": TOKEN},
            data=dict(data),
            headers=headers,
        ) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None), resp.headers

    async def campaign(self, name: str, *, job: str | None = None) -> tuple[int, Any]:
        status, body, _ = await self.post(
            f"{ACCOUNT}/campaigns",
            {"name": name, "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
            job=job,
        )
        return status, body

    async def adset(
        self, campaign_id: str, name: str, *, job: str | None = None, slot: int | None = None
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        return await self.post(
            f"{ACCOUNT}/adsets",
            {
                "name": name,
                "campaign_id": campaign_id,
                "billing_event": "IMPRESSIONS",
                "targeting": TARGETING,
            },
            job=job,
            slot=slot,
        )

    async def declare(self, name: str, expect: Mapping[str, int]) -> str:
        async with self.http.post(
            f"{self.handle.url}/_gateway/v1/jobs",
            params={"access_token": TOKEN},
            json={"ad_account_id": ACCOUNT, "campaign_name": name, "expect": dict(expect)},
        ) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            return str(body["job_id"])

    async def progress(self, job_id: str) -> dict[str, Any]:
        async with self.http.get(
            f"{self.handle.url}/_gateway/v1/jobs/{job_id}", params={"access_token": TOKEN}
        ) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 200, body
            return body

    async def rows(self) -> list[EntityRecord]:
        page = await self.handle.gateway.ledger.entities(EntityQuery(limit=1000))
        return sorted(page.items, key=lambda r: r.id)


@asynccontextmanager
async def gateway_stack(
    sim: SimHandle,
    database_url: str,
    http: aiohttp.ClientSession,
    *,
    environ: Mapping[str, str] | None = None,
    **recovery: float,
) -> AsyncIterator[Stack]:
    policy = recovery_policy(**recovery)
    async with running_gateway(
        sim.url, database_url, policy=policy, environ=environ, recovery=False
    ) as handle:
        clock = OffsetClock()
        # The clock is a test seam (gateway.clock): now() runs with the real one until moved.
        handle.gateway.clock = clock
        yield Stack(handle, clock, http)


async def sim_adset(sim: SimHandle, http: aiohttp.ClientSession, cid: str, name: str) -> str:
    """An ad set made on Graph directly, outside the gateway."""
    async with http.post(
        f"{sim.url}{V}/{ACCOUNT}/adsets",
        params={"access_token": TOKEN},
        data={"name": name, "campaign_id": cid, "billing_event": "IMPRESSIONS", "targeting": "{}"},
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return str(body["id"])


async def creates_arrived(sim: SimHandle, label: str) -> int:
    operations: dict[str, int] = (await sim.requests())["operations"]
    return operations.get(label, 0)


def ledgered(rows: list[EntityRecord]) -> Counter[str]:
    return Counter(r.graph_id for r in rows if r.graph_id)


async def test_a_lost_answer_is_adopted_from_what_graph_holds(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """Commit-then-drop leaves `unknown`; recover_once finds the campaign: `created`, its id."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        status, _ = await stack.campaign("Lost answer")
        assert status == 504
        (row,) = await stack.rows()
        assert row.state is EntityState.UNKNOWN

        report = await stack.recover()

        (truth,) = await graph_sim.objects(type="campaign")
        (row,) = await stack.rows()
        assert (row.state, row.graph_id) == (EntityState.CREATED, truth["id"])
        assert (report.adopted, report.absent, report.waiting) == (1, 0, 0)
        assert await creates_arrived(graph_sim, "create:campaign") == 1, "nothing re-sent"
        again = await stack.recover()
        assert (again.adopted, again.absent, again.waiting) == (0, 0, 0)


async def test_repeated_names_each_unknown_row_adopts_a_distinct_ad_set(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """10 same-name ad sets, 3 answers lost: each unknown row adopts its own id, none re-sent."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        status, body = await stack.campaign("Repeats")
        assert status == 200, body
        cid = body["id"]
        for after in (1, 4, 8):  # the 2nd, 5th and 9th ad set lose their answer
            await graph_sim.add_fault(
                kind="drop_after_commit", op="create:adset", after=after, times=1
            )
        statuses = [(await stack.adset(cid, "Same name"))[0] for _ in range(10)]
        assert Counter(statuses) == {200: 7, 504: 3}
        unknown = [r.id for r in await stack.rows() if r.state is EntityState.UNKNOWN]
        assert len(unknown) == 3

        report = await stack.recover()

        rows = {r.id: r for r in await stack.rows()}
        truth = {o["id"] for o in await graph_sim.objects(type="adset", live=True)}
        assert len(truth) == 10
        assert report.adopted == 3
        assert all(rows[i].state is EntityState.CREATED for i in unknown)
        assert len({rows[i].graph_id for i in unknown}) == 3
        counts = ledgered(list(rows.values()))
        assert {g for g in counts if g in truth} == truth
        assert all(counts[g] == 1 for g in truth), counts
        assert all(r.state is EntityState.CREATED for r in rows.values())
        assert await creates_arrived(graph_sim, "create:adset") == 10, "nothing re-sent"


async def test_a_create_graph_never_made_fails_after_give_up_and_frees_its_slot(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """A 500 code 2 before commit: `unknown`, then `failed` after give_up; the slot is reused."""
    async with gateway_stack(graph_sim, sqlite_url, http, give_up_seconds=60.0) as stack:
        job = await stack.declare("Never made", {"campaign": 1, "adset": 2})
        status, body = await stack.campaign("Never made", job=job)
        assert status == 200, body
        cid = body["id"]
        await graph_sim.add_fault(kind="error", op="create:adset", times=1)
        status, body, headers = await stack.adset(cid, "Set", job=job)
        assert status == 500, body
        (row,) = [r for r in await stack.rows() if r.entity_type == "adset"]
        assert (row.state, row.slot_no) == (EntityState.UNKNOWN, 1)
        assert (await stack.progress(job))["slots"]["adset"]["unknown"] == 1

        early = await stack.recover()
        assert (early.adopted, early.absent, early.waiting) == (0, 0, 1)
        assert (await stack.progress(job))["slots"]["adset"]["unknown"] == 1
        stack.clock.advance(61.0)
        report = await stack.recover()

        assert (report.adopted, report.absent) == (0, 1)
        (row,) = [r for r in await stack.rows() if r.entity_type == "adset"]
        assert row.state is EntityState.FAILED
        assert row.graph_id is None
        adsets = (await stack.progress(job))["slots"]["adset"]
        assert (adsets["created"], adsets["unknown"], adsets["free"]) == (0, 0, 2)
        status, body, headers = await stack.adset(cid, "Set", job=job)
        assert status == 200, body
        assert headers["X-Gateway-Slot"] == "1", "the freed slot is used again"
        assert [o["id"] for o in await graph_sim.objects(type="adset")] == [body["id"]]


async def test_a_young_sending_row_holds_its_group_and_an_old_one_is_resolved(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """A young `sending` create makes its same-name group wait; once old, both are adopted."""
    async with gateway_stack(graph_sim, sqlite_url, http, in_flight_seconds=30.0) as stack:
        # An earlier attempt with the same name whose answer was lost (`unknown`).
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        assert (await stack.campaign("Twin"))[0] == 504
        # The next one is committed on Graph, then its answer is held back: it stays `sending`.
        await graph_sim.add_fault(
            kind="stall_after_commit", op="create:campaign", times=1, stall_seconds=1.5
        )
        in_flight = asyncio.create_task(stack.campaign("Twin"))
        try:
            for _ in range(200):
                if len(await graph_sim.objects(type="campaign")) == 2:
                    break
                await asyncio.sleep(0.01)
            states = [r.state for r in await stack.rows()]
            assert states == [EntityState.UNKNOWN, EntityState.SENDING]

            young = await stack.recover()

            assert (young.adopted, young.absent, young.waiting) == (0, 0, 2)
            assert [r.state for r in await stack.rows()] == states, "the group waited"
            stack.clock.advance(31.0)
            old = await stack.recover()

            assert (old.adopted, old.absent) == (2, 0)
            truth = {o["id"] for o in await graph_sim.objects(type="campaign")}
            rows = await stack.rows()
            assert [r.state for r in rows] == [EntityState.CREATED, EntityState.CREATED]
            assert {r.graph_id for r in rows} == truth
        finally:
            status, body = await in_flight
        # The late answer agrees with what recovery adopted.
        assert status == 200, body
        rows = await stack.rows()
        assert body["id"] in {r.graph_id for r in rows}
        assert sorted(ledgered(rows).values()) == [1, 1]
        assert await creates_arrived(graph_sim, "create:campaign") == 2


@pytest.mark.postgres
async def test_on_a_shared_ledger_a_fresh_unknown_row_is_left_to_the_replica_reconciling_it(
    graph_sim: SimHandle, postgres_dsn: str, http: aiohttp.ClientSession
) -> None:
    """PostgreSQL may be shared by replicas, and the request that left a row `unknown` may be
    looking it up (and may send it again) in another one: the worker leaves a row updated
    within in_flight_seconds alone, then adopts it."""
    async with (
        scratch_schema(postgres_dsn) as dsn,
        gateway_stack(graph_sim, dsn, http, in_flight_seconds=30.0) as stack,
    ):
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        assert (await stack.campaign("Elsewhere"))[0] == 504
        (row,) = await stack.rows()
        assert row.state is EntityState.UNKNOWN

        young = await stack.recover()

        assert (young.adopted, young.absent, young.waiting) == (0, 0, 1)
        stack.clock.advance(31.0)
        old = await stack.recover()
        assert (old.adopted, old.absent) == (1, 0)
        (truth,) = await graph_sim.objects(type="campaign")
        (row,) = await stack.rows()
        assert (row.state, row.graph_id) == (EntityState.CREATED, truth["id"])


async def test_same_name_ad_sets_made_before_the_attempt_are_not_adopted(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """3 same-name ad sets made on Graph 10 min earlier are someone else's: not adopted."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        status, body = await stack.campaign("Outside")
        assert status == 200, body
        cid = body["id"]
        outside = {await sim_adset(graph_sim, http, cid, "Same") for _ in range(3)}
        # Ten minutes pass, for Graph and for the gateway alike.
        await graph_sim.advance(600.0)
        stack.clock.advance(600.0)
        await graph_sim.add_fault(kind="drop_after_commit", op="create:adset", times=2)
        assert (await stack.adset(cid, "Same"))[0] == 504
        assert (await stack.adset(cid, "Same"))[0] == 504

        report = await stack.recover()

        truth = {o["id"] for o in await graph_sim.objects(type="adset")}
        ours = truth - outside
        assert len(ours) == 2
        rows = [r for r in await stack.rows() if r.entity_type == "adset"]
        assert report.adopted == 2
        assert [r.state for r in rows] == [EntityState.CREATED, EntityState.CREATED]
        assert {r.graph_id for r in rows} == ours
        assert not outside & set(ledgered(await stack.rows()))


async def test_without_a_token_rows_wait_and_the_rollback_token_resolves_them(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """After a restart no token is in memory: rows wait (no_token); GATEWAY_ROLLBACK_TOKEN reads."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        assert (await stack.campaign("Tokenless"))[0] == 504
    async with gateway_stack(graph_sim, sqlite_url, http) as restarted:
        report = await restarted.recover()

        assert report.skipped == {"no_token": 1}
        assert report.adopted == 0
        (row,) = await restarted.rows()
        assert row.state is EntityState.UNKNOWN
    environ = {"GATEWAY_ROLLBACK_TOKEN": TOKEN}
    async with gateway_stack(graph_sim, sqlite_url, http, environ=environ) as with_token:
        report = await with_token.recover()

        (truth,) = await graph_sim.objects(type="campaign")
        (row,) = await with_token.rows()
        assert report.adopted == 1
        assert (row.state, row.graph_id) == (EntityState.CREATED, truth["id"])


async def test_an_adopted_row_under_a_job_marks_its_slot_created(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """Job progress moves the slot from unknown to created; a re-drive of it replays the id."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        job = await stack.declare("Job adopt", {"campaign": 1, "adset": 2})
        status, body = await stack.campaign("Job adopt", job=job)
        assert status == 200, body
        cid = body["id"]
        assert (await stack.adset(cid, "Set", job=job, slot=1))[0] == 200
        await graph_sim.add_fault(kind="drop_after_commit", op="create:adset", times=1)
        status, body, _ = await stack.adset(cid, "Set", job=job, slot=2)
        assert status == 504, body
        before = (await stack.progress(job))["slots"]["adset"]
        assert (before["created"], before["unknown"]) == (1, 1)
        status, body, _ = await stack.adset(cid, "Set", job=job, slot=2)
        assert status == 409, "an unknown slot is not re-sent before it is resolved"

        report = await stack.recover()

        assert report.adopted == 1
        progress = await stack.progress(job)
        after = progress["slots"]["adset"]
        assert (after["created"], after["unknown"], after["in_flight"]) == (2, 0, 0)
        assert progress["status"] == "completed"
        (row,) = [r for r in await stack.rows() if r.slot_no == 2 and r.entity_type == "adset"]
        status, body, headers = await stack.adset(cid, "Set", job=job, slot=2)
        assert status == 200, body
        assert headers["Idempotent-Replayed"] == "true"
        assert body["id"] == row.graph_id
        truth = {o["id"] for o in await graph_sim.objects(type="adset")}
        assert len(truth) == 2
        assert row.graph_id in truth
        assert await creates_arrived(graph_sim, "create:adset") == 2


# --- what a crash can leave beyond a single create's row ------------------------------------


async def test_a_slot_reserved_by_a_request_that_died_before_its_intent_is_freed(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """Killed between reserving a slot and writing the intent: nothing was sent; slot freed."""
    async with gateway_stack(graph_sim, sqlite_url, http, in_flight_seconds=30.0) as stack:
        job = await stack.declare("Reserved only", {"campaign": 1, "adset": 2})
        status, body = await stack.campaign("Reserved only", job=job)
        assert status == 200, body
        cid = body["id"]
        # What a process killed right after reserve_slots leaves: a slot, no ledger row.
        now = datetime.fromtimestamp(stack.clock.now(), UTC)
        got = await stack.handle.gateway.jobs.reserve_slots(
            job, [SlotWant("adset", 1)], request_id="died-before-intent", now=now
        )
        assert got == [Reserved(1)]
        stack.clock.advance(GIVE_UP + 1)

        await stack.recover()

        adsets = (await stack.progress(job))["slots"]["adset"]
        assert (adsets["in_flight"], adsets["free"]) == (0, 2), "the dead request's slot is free"
        status, body, headers = await stack.adset(cid, "Set", job=job, slot=1)
        assert status == 200, body
        assert headers.get("Idempotent-Replayed") is None


async def test_an_ad_set_batched_with_its_campaign_is_adopted_after_the_answer_is_lost(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """A batch's ad set names its campaign by {result=…}: both rows are adopted, not stuck."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        ops = [
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns",
                "name": "camp",
                "body": "name=Batched&objective=OUTCOME_TRAFFIC&special_ad_categories=%5B%5D",
            },
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
                "body": "name=Batched%20set&campaign_id=%7Bresult%3Dcamp%3A%24.id%7D"
                "&billing_event=IMPRESSIONS&targeting=%7B%7D",
            },
        ]
        await graph_sim.add_fault(kind="drop_after_commit", op="create:adset", times=1)
        status, body, _ = await stack.post("", {"batch": json.dumps(ops)})
        assert status == 504, body
        assert [r.state for r in await stack.rows()] == [EntityState.UNKNOWN] * 2

        await stack.recover()
        await stack.recover()  # a second pass, should the ad set need its campaign first

        (campaign,) = await graph_sim.objects(type="campaign")
        (adset,) = await graph_sim.objects(type="adset")
        rows = await stack.rows()
        assert [(r.state, r.graph_id) for r in rows] == [
            (EntityState.CREATED, campaign["id"]),
            (EntityState.CREATED, adset["id"]),
        ]


async def test_a_lost_copy_is_adopted_by_its_source_and_recorded_as_an_ad_set(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """Copies are matched by source_adset_id; the adopted row reads like a live copy's row."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        status, body = await stack.campaign("Copies")
        assert status == 200, body
        cid = body["id"]
        status, body, _ = await stack.adset(cid, "Source")
        assert status == 200, body
        source = body["id"]
        # Another ad set of the same campaign and name, made on Graph directly: not a copy.
        outside = await sim_adset(graph_sim, http, cid, "Source")
        await graph_sim.add_fault(kind="drop_after_commit", op="copy", times=1)
        status, body, _ = await stack.post(f"{source}/copies", {})
        assert status == 504, body

        report = await stack.recover()

        (copy,) = {o["id"] for o in await graph_sim.objects(type="adset")} - {source, outside}
        row = (await stack.rows())[-1]
        assert report.adopted == 1
        assert (row.state, row.graph_id, row.parent_id) == (EntityState.CREATED, copy, source)
        assert row.entity_type == "adset", "as the live path records a copy's row"


async def test_a_lost_deep_copy_is_adopted_with_every_entity_it_created(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """A deep copy's answer lost: the copied ad set and its copied ad both end in the ledger."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        status, body = await stack.campaign("Copies")
        assert status == 200, body
        cid = body["id"]
        status, body, _ = await stack.adset(cid, "Source")
        assert status == 200, body
        source = body["id"]
        status, creative, _ = await stack.post(f"{ACCOUNT}/adcreatives", {"name": "Cr"})
        assert status == 200, creative
        status, body, _ = await stack.post(
            f"{ACCOUNT}/ads",
            {
                "name": "Ad",
                "adset_id": source,
                "creative": json.dumps({"creative_id": creative["id"]}),
            },
        )
        assert status == 200, body
        await graph_sim.add_fault(kind="drop_after_commit", op="copy", times=1)
        status, body, _ = await stack.post(f"{source}/copies", {"deep_copy": "true"})
        assert status == 504, body

        await stack.recover()

        truth = {o["id"] for o in await graph_sim.objects()}
        rows = await stack.rows()
        assert all(r.state is EntityState.CREATED for r in rows), [r.state for r in rows]
        assert set(ledgered(rows)) == truth, "every entity the copy made is in the ledger"


async def test_a_key_retried_while_its_create_is_unresolved_is_never_sent_again(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """Lost answer, Graph not listable yet: every retry with the key is 504, none re-sent."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        lease = stack.handle.gateway.policy.idempotency.lease_seconds
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        # Graph's listings fail for now: recovery cannot look, the row stays `unknown`.
        await graph_sim.add_fault(kind="error", op="list")
        answers = []
        for _ in range(4):
            async with http.post(
                f"{stack.handle.url}{V}/{ACCOUNT}/campaigns",
                params={"access_token": TOKEN},
                data={
                    "name": "Keyed",
                    "objective": "OUTCOME_TRAFFIC",
                    "special_ad_categories": "[]",
                },
                headers={"Idempotency-Key": "campaign-keyed-1"},
            ) as resp:
                answers.append(resp.status)
            assert (await stack.recover()).adopted == 0
            # The backend retries after each holder's lease has run out.
            stack.clock.advance(lease + 1)

        assert await creates_arrived(graph_sim, "create:campaign") == 1, "nothing re-sent"
        assert answers == [504, 504, 504, 504]
        (row,) = await stack.rows()
        assert row.state is EntityState.UNKNOWN
        # Once Graph can be read, the row is adopted and the key replays that campaign.
        await graph_sim.clear_faults()
        assert (await stack.recover()).adopted == 1
        (truth,) = await graph_sim.objects(type="campaign")
        async with http.post(
            f"{stack.handle.url}{V}/{ACCOUNT}/campaigns",
            params={"access_token": TOKEN},
            data={"name": "Keyed", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
            headers={"Idempotency-Key": "campaign-keyed-1"},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Idempotent-Replayed"] == "true"
            assert (await resp.json())["id"] == truth["id"]


async def test_the_worker_keeps_running_after_graph_answers_a_listing_with_html(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """An HTML 502 for one look-up is a failed look, not the end of the periodic worker."""
    policy = recovery_policy(interval_seconds=0.1)
    async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as handle:
        stack = Stack(handle, OffsetClock(), http)
        await graph_sim.add_fault(kind="error", preset="bad_gateway_html", op="list", times=1)
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        assert (await stack.campaign("Html"))[0] == 504

        for _ in range(60):  # 3 s: some thirty intervals
            rows = await stack.rows()
            if rows[0].state is EntityState.CREATED:
                break
            await asyncio.sleep(0.05)

        (truth,) = await graph_sim.objects(type="campaign")
        assert [(r.state, r.graph_id) for r in rows] == [(EntityState.CREATED, truth["id"])]
        (rule,) = [f for f in await graph_sim.faults() if f["op"] == "list"]
        assert rule["fired"] == 1, "the worker looked again after the failed look-up"


async def test_unresolved_creates_and_the_oldest_ones_age_are_gauged_and_failed_looks_counted(
    graph_sim: SimHandle, sqlite_url: str, http: aiohttp.ClientSession
) -> None:
    """An operator sees creates nobody has settled: how many, in which state, and how old the
    oldest is; a look-up Graph refuses counts as a failed reconciliation. Once adopted, the
    gauges fall back to 0."""
    async with gateway_stack(graph_sim, sqlite_url, http) as stack:
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        assert (await stack.campaign("Gauged"))[0] == 504
        # A refusal is not retried: this pass's look-up fails.
        await graph_sim.add_fault(kind="error", preset="permission", op="list", times=1)
        stack.clock.advance(IN_FLIGHT + 30)
        report = await stack.recover()
        assert report.adopted == 0
        text = await _metrics(http, stack)
        assert 'gateway_unresolved_creates{state="unknown"} 1.0' in text
        assert 'gateway_unresolved_creates{state="sending"} 0.0' in text
        oldest = _sample(text, "gateway_unresolved_create_oldest_seconds")
        assert IN_FLIGHT + 30 <= oldest < IN_FLIGHT + 60
        assert 'gateway_reconciliations_total{result="failed",where="worker"} 1.0' in text

        assert (await stack.recover()).adopted == 1  # the listing answers now
        await stack.recover()
        text = await _metrics(http, stack)
        assert 'gateway_unresolved_creates{state="unknown"} 0.0' in text
        assert _sample(text, "gateway_unresolved_create_oldest_seconds") == 0.0


async def _metrics(http: aiohttp.ClientSession, stack: Stack) -> str:
    async with http.get(stack.handle.admin_url + "/metrics") as resp:
        return await resp.text()


def _sample(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[-1])
