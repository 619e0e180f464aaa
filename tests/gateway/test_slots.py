"""Creates under `X-Gateway-Job`: slots, caps and parents (DESIGN.md §2 invariant 4, §3.1, §6).

The seed's Week-2 / Week-6 scenarios against the simulator, whose ground truth (what arrived,
what exists) is the judge: 10 slots tracked through a failure at the fifth; 50 requested, 45
created, a re-drive of all 50 creates exactly 5 more; 80 concurrent creates for 50 slots let
exactly 50 reach Graph, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from gateway.model import JobStatus, SlotRecord, SlotState
from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.test_jobs import (
    Answer,
    adset_params,
    campaign_params,
    create,
    graph_creates,
    graph_ops,
    job,
    on_graph,
    progress,
)
from tests.pgschema import scratch_schema

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    """A fresh ledger database: a SQLite file, or a brand-new PostgreSQL schema."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    async with scratch_schema(request.getfixturevalue("postgres_dsn")) as dsn:
        yield dsn


async def job_campaign(http: aiohttp.ClientSession, gw: GatewayHandle, job_id: str) -> str:
    """The job's campaign, created under the job (its campaign slot)."""
    made = await create(http, gw, "campaigns", campaign_params(), job_id=job_id)
    assert made.status == 200, made.body
    assert made.headers["X-Gateway-Slot"] == "1"
    return str(made.body["id"])


async def slot_states(gw: GatewayHandle, job_id: str, kind: str) -> list[SlotState]:
    return [s.state for s in await gw.gateway.jobs.slots(job_id) if s.entity_type == kind]


def entry_body(entry: dict[str, Any]) -> Any:
    return json.loads(entry["body"])


@dataclass
class Contention:
    answers: list[Answer]
    slots: list[SlotRecord]
    status: str

    @property
    def refused(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 409]


async def eighty_for_fifty(
    http: aiohttp.ClientSession, sim: SimHandle, database_url: str
) -> Contention:
    """A job expecting 50 ad sets; 80 concurrent ad set creates under it."""
    async with running_gateway(sim.url, database_url, recovery=False) as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 50})
        cid = await job_campaign(http, gw, job_id)
        answers = await asyncio.gather(
            *(
                create(http, gw, "adsets", adset_params(cid, f"c{i}"), job_id=job_id)
                for i in range(80)
            )
        )
        slots = await gw.gateway.jobs.slots(job_id)
        shown = (await progress(http, gw, job_id)).body
    return Contention(list(answers), slots, shown["status"])


class TestSlotsThroughFailures:
    @pytest.mark.parametrize("failure", ["invalid_parameter", "suspend_account"])
    async def test_ten_slots_a_permanent_failure_at_the_fifth_frees_it_and_its_retry_reuses_it(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        failure: str,
    ) -> None:
        """10 ad set slots: the 5th create fails for good → 1-4 created, 5-10 free; the retry
        takes slot 5 again (X-Gateway-Slot: 5) — unless the refusal was the account's
        suspension, which fails the job."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 10})
        cid = await job_campaign(http, gateway, job_id)
        if failure == "invalid_parameter":
            await graph_sim.add_fault(
                kind="error", preset="invalid_parameter", op="create:adset", after=4, times=1
            )
        else:
            await graph_sim.add_fault(kind="suspend_account", op="create:adset", after=4, times=1)
        for n in range(1, 5):
            made = await create(http, gateway, "adsets", adset_params(cid, f"s{n}"), job_id=job_id)
            assert made.status == 200, made.body
            assert made.headers["X-Gateway-Slot"] == str(n)
        failed = await create(http, gateway, "adsets", adset_params(cid, "s5"), job_id=job_id)
        assert 400 <= failed.status < 500, failed.body
        assert "gateway_reason" not in failed.error  # Graph's own error, passed through
        states = await slot_states(gateway, job_id, "adset")
        assert states == [SlotState.CREATED] * 4 + [SlotState.FREE] * 6
        shown = (await progress(http, gateway, job_id)).body
        assert shown["slots"]["adset"] == {
            "expected": 10,
            "created": 4,
            "in_flight": 0,
            "unknown": 0,
            "free": 6,
        }
        if failure == "suspend_account":
            # Graph shows the account is no longer active: the job failed (seed scenario 4,
            # tests/gateway/test_job_failure.py) and takes no more creates, even once the
            # account is active again.
            assert shown["status"] == "failed"
            await graph_sim.put_account(id="act_1001", account_status=1, disable_reason=0)
            again = await create(http, gateway, "adsets", adset_params(cid, "s5"), job_id=job_id)
            again.refused(409, "job_closed")
            return
        assert shown["status"] == "in_progress"
        retried = await create(http, gateway, "adsets", adset_params(cid, "s5"), job_id=job_id)
        assert retried.status == 200, retried.body
        assert retried.headers["X-Gateway-Slot"] == "5"
        assert not retried.replayed
        slots = [s for s in await gateway.gateway.jobs.slots(job_id) if s.entity_type == "adset"]
        assert slots[4].graph_id == retried.body["id"]
        assert [s.state for s in slots] == [SlotState.CREATED] * 5 + [SlotState.FREE] * 5
        assert len(await graph_sim.objects(type="adset")) == 5

    async def test_request_fifty_create_forty_five_and_a_re_drive_creates_exactly_five_more(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """50 expected, 45 created; the backend re-sends all 50 with X-Gateway-Slot n: slots
        1-45 replay their entity without calling Graph, exactly 5 new ad sets reach Graph."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 50})
        cid = await job_campaign(http, gateway, job_id)

        async def adset(n: int) -> Answer:
            return await create(
                http, gateway, "adsets", adset_params(cid, "Set"), job_id=job_id, slot=n
            )

        first = await asyncio.gather(*(adset(n) for n in range(1, 46)))
        assert all(a.status == 200 for a in first), [a.body for a in first if a.status != 200]
        ids = {n: a.body["id"] for n, a in zip(range(1, 46), first, strict=True)}
        assert (await graph_ops(graph_sim))["create:adset"] == 45

        again = await asyncio.gather(*(adset(n) for n in range(1, 51)))
        for n, answer in zip(range(1, 51), again, strict=True):
            assert answer.status == 200, (n, answer.body)
            assert answer.headers["X-Gateway-Slot"] == str(n)
            if n <= 45:
                assert answer.replayed, n
                assert answer.body == {"id": ids[n]}
            else:
                assert not answer.replayed, n
        assert (await graph_ops(graph_sim))["create:adset"] == 50
        truth = await graph_sim.objects(type="adset")
        assert len(truth) == 50
        assert {o["id"] for o in truth} == {a.body["id"] for a in again}
        shown = (await progress(http, gateway, job_id)).body
        assert shown["slots"]["adset"]["created"] == 50
        assert shown["status"] == "completed"

    async def test_eighty_concurrent_creates_for_fifty_slots_let_exactly_fifty_reach_graph(
        self,
        http: aiohttp.ClientSession,
        graph_sim: SimHandle,
        database_url: str,
    ) -> None:
        """80 concurrent ad set creates against 50 slots: 50 created on Graph (ground truth),
        30 answered 409 cap_exceeded; never more."""
        run = await eighty_for_fifty(http, graph_sim, database_url)
        assert Counter(a.status for a in run.answers) == {200: 50, 409: 30}
        for refused in run.refused:
            err = refused.refused(409, "cap_exceeded")
            assert err["is_transient"] is False
            assert (err["error_data"]["entity_type"], err["error_data"]["expected"]) == (
                "adset",
                50,
            )
        created = {a.body["id"] for a in run.answers if a.status == 200}
        assert len(created) == 50
        slot_numbers = [int(a.headers["X-Gateway-Slot"]) for a in run.answers if a.status == 200]
        assert sorted(slot_numbers) == list(range(1, 51))
        assert (await graph_ops(graph_sim))["create:adset"] == 50
        truth = await graph_sim.objects(type="adset")
        assert {o["id"] for o in truth} == created
        assert {s.graph_id for s in run.slots if s.entity_type == "adset"} == created
        assert run.status == "completed"

    async def test_a_cap_exceeded_answer_reports_a_full_cap(
        self,
        http: aiohttp.ClientSession,
        graph_sim: SimHandle,
        database_url: str,
    ) -> None:
        """Under contention every 409 cap_exceeded says created + in_flight == expected (a
        caller reading error_data must not see room that is not there)."""
        run = await eighty_for_fifty(http, graph_sim, database_url)
        counts = [
            (d["created"], d["in_flight"], d["expected"])
            for d in (a.error["error_data"] for a in run.refused)
        ]
        assert counts
        assert all(created + flying == expected for created, flying, expected in counts), counts


class TestParents:
    async def test_an_ad_set_naming_another_campaign_is_refused_and_not_sent(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """An ad set of the job must name the job's campaign: 409 parent_mismatch otherwise."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 2})
        await job_campaign(http, gateway, job_id)
        foreign = await on_graph(http, graph_sim, "act_1001/campaigns", campaign_params("Other"))
        answer = await create(http, gateway, "adsets", adset_params(foreign), job_id=job_id)
        err = answer.refused(409, "parent_mismatch")
        assert foreign in err["message"]
        assert "create:adset" not in await graph_ops(graph_sim)
        assert await slot_states(gateway, job_id, "adset") == [SlotState.FREE] * 2

    async def test_an_ad_naming_an_ad_set_outside_the_job_is_refused_and_not_sent(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """An ad of the job must name one of the job's ad sets, even one in the job's campaign."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 1, "ad": 1})
        cid = await job_campaign(http, gateway, job_id)
        outside = await on_graph(http, graph_sim, "act_1001/adsets", adset_params(cid, "stray"))
        creative = await create(http, gateway, "adcreatives", {"name": "Cr"})
        ad = {
            "name": "Ad",
            "adset_id": outside,
            "creative": json.dumps({"creative_id": creative.body["id"]}),
        }
        answer = await create(http, gateway, "ads", ad, job_id=job_id)
        answer.refused(409, "parent_mismatch")
        assert "create:ad" not in await graph_ops(graph_sim)
        assert await slot_states(gateway, job_id, "ad") == [SlotState.FREE]


class TestBatchesAndCopies:
    @pytest.mark.parametrize("encoding", ["python_form", "node_json"])
    async def test_a_batch_over_the_cap_sends_what_fits_and_answers_the_rest_itself(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        encoding: str,
    ) -> None:
        """5 ad set creates in one batch under a job expecting 3: 3 ids, 2 Graph-shaped
        cap_exceeded entries (409), 3 ad sets on Graph."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 3})
        cid = await job_campaign(http, gateway, job_id)
        if encoding == "python_form":
            ops = [
                {
                    "method": "POST",
                    "relative_url": "act_1001/adsets",
                    "body": urlencode(adset_params(cid, f"b{i}")),
                }
                for i in range(5)
            ]
            answer = await create(http, gateway, "", {"batch": json.dumps(ops)}, job_id=job_id)
        else:
            ops = [
                {
                    "method": "POST",
                    "relative_url": "act_1001/adsets",
                    "body": "&".join(f"{k}={v}" for k, v in adset_params(cid, f"b{i}").items()),
                    "name": f"b{i}",
                    "attachedFiles": "",
                }
                for i in range(5)
            ]
            answer = await create(http, gateway, "", json_body={"batch": ops}, job_id=job_id)
        assert answer.status == 200, answer.body
        assert len(answer.body) == 5
        codes = [entry["code"] for entry in answer.body]
        assert codes == [200, 200, 200, 409, 409]
        ids = [entry_body(entry)["id"] for entry in answer.body[:3]]
        for entry in answer.body[3:]:
            err = entry_body(entry)["error"]
            assert err["gateway_reason"] == "cap_exceeded"
            assert err["type"] == "GatewayException"
            assert err["code"] == 9001
            assert err["is_transient"] is False
        assert (await graph_ops(graph_sim))["create:adset"] == 3
        assert {o["id"] for o in await graph_sim.objects(type="adset")} == set(ids)
        assert await slot_states(gateway, job_id, "adset") == [SlotState.CREATED] * 3

    async def test_a_deep_copy_takes_a_slot_for_the_copy_and_each_child(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Copy of the job's ad set with its ad under adset 2 / ad 2: both second slots hold
        the copies; a second copy is 409 cap_exceeded and never reaches Graph."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 2, "ad": 2})
        cid = await job_campaign(http, gateway, job_id)
        source = await create(http, gateway, "adsets", adset_params(cid), job_id=job_id)
        creative = await create(http, gateway, "adcreatives", {"name": "Cr"})
        ad = {
            "name": "Ad",
            "adset_id": source.body["id"],
            "creative": json.dumps({"creative_id": creative.body["id"]}),
        }
        assert (await create(http, gateway, "ads", ad, job_id=job_id)).status == 200
        copy_path = f"{source.body['id']}/copies"
        copied = await create(http, gateway, copy_path, {"deep_copy": "true"}, job_id=job_id)
        assert copied.status == 200, copied.body
        new_ids = {o["copied_id"] for o in copied.body["ad_object_ids"]}
        assert copied.body["copied_adset_id"] in new_ids
        slots = {(s.entity_type, s.slot_no): s for s in await gateway.gateway.jobs.slots(job_id)}
        assert slots[("adset", 2)].state is SlotState.CREATED
        assert slots[("ad", 2)].state is SlotState.CREATED
        assert {slots[("adset", 2)].graph_id, slots[("ad", 2)].graph_id} == new_ids
        shown = (await progress(http, gateway, job_id)).body
        assert shown["status"] == "completed"
        # The copy's child is recorded as the job's too (rollback and the ledger listing see it).
        child = await gateway.gateway.ledger.find_by_graph_id(slots[("ad", 2)].graph_id or "")
        assert child is not None
        assert child.job_id == job_id

        again = await create(http, gateway, copy_path, {"deep_copy": "true"}, job_id=job_id)
        again.refused(409, "cap_exceeded")
        assert (await graph_ops(graph_sim))["copy:adset"] == 1
        assert len(await graph_sim.objects(type="adset")) == 2
        assert len(await graph_sim.objects(type="ad")) == 2

    async def test_a_copy_into_a_campaign_outside_the_job_is_refused(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """A copy of the job's ad set that names another campaign (campaign_id) → 409
        parent_mismatch: the job's ad sets belong to the job's campaign."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 2})
        cid = await job_campaign(http, gateway, job_id)
        source = await create(http, gateway, "adsets", adset_params(cid), job_id=job_id)
        foreign = await on_graph(http, graph_sim, "act_1001/campaigns", campaign_params("Other"))
        answer = await create(
            http, gateway, f"{source.body['id']}/copies", {"campaign_id": foreign}, job_id=job_id
        )
        answer.refused(409, "parent_mismatch")
        assert "copy:adset" not in await graph_ops(graph_sim)
        assert await graph_sim.objects(type="adset", campaign_id=foreign) == []

    async def test_a_copy_of_an_entity_outside_the_job_is_refused(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Under a job a copy must copy one of the job's own entities: 409 parent_mismatch."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 2})
        cid = await job_campaign(http, gateway, job_id)
        stray = await on_graph(http, graph_sim, "act_1001/adsets", adset_params(cid, "stray"))
        answer = await create(http, gateway, f"{stray}/copies", {}, job_id=job_id)
        answer.refused(409, "parent_mismatch")
        assert "copy:adset" not in await graph_ops(graph_sim)

    async def test_a_deep_copy_counts_children_that_exist_on_graph_but_not_in_the_ledger(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """The job's ad set has 2 ads on Graph, only 1 made through the job: a deep copy would
        create 2 ads with 1 ad slot left → 409 cap_exceeded, nothing copied (invariant 4)."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 2, "ad": 2})
        cid = await job_campaign(http, gateway, job_id)
        source = await create(http, gateway, "adsets", adset_params(cid), job_id=job_id)
        sid = source.body["id"]
        creative = await create(http, gateway, "adcreatives", {"name": "Cr"})
        ad = {
            "name": "Ad",
            "adset_id": sid,
            "creative": json.dumps({"creative_id": creative.body["id"]}),
        }
        assert (await create(http, gateway, "ads", ad, job_id=job_id)).status == 200
        await on_graph(http, graph_sim, "act_1001/ads", {**ad, "name": "Made elsewhere"})
        copied = await create(http, gateway, f"{sid}/copies", {"deep_copy": "true"}, job_id=job_id)
        copied.refused(409, "cap_exceeded")
        assert "copy:adset" not in await graph_ops(graph_sim)
        assert len(await graph_sim.objects(type="ad")) == 2


class TestJobState:
    @pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.ROLLED_BACK])
    async def test_a_closed_job_takes_no_more_creates(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        status: JobStatus,
    ) -> None:
        """A failed or rolled-back job: creates under it get 409 job_closed, nothing sent."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 1})
        await gateway.gateway.jobs.set_job_status(job_id, status, now=datetime.now(UTC))
        answer = await create(http, gateway, "campaigns", campaign_params(), job_id=job_id)
        assert answer.refused(409, "job_closed")["is_transient"] is False
        assert graph_creates(await graph_ops(graph_sim)) == {}

    async def test_a_job_for_one_account_refuses_creates_on_another(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """A job declared for act_1001 used for a create on act_1002 → 400, nothing sent."""
        job_id = await job(http, gateway, {"campaign": 1})
        answer = await create(
            http, gateway, "campaigns", campaign_params(), account="act_1002", job_id=job_id
        )
        assert "act_1002" in answer.refused(400, "bad_request")["message"]
        assert graph_creates(await graph_ops(graph_sim)) == {}
        assert await slot_states(gateway, job_id, "campaign") == [SlotState.FREE]

    async def test_a_job_is_completed_when_every_slot_is_created(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """pending → in_progress on the first create → completed when the last slot is made."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 1, "ad": 1})
        assert (await progress(http, gateway, job_id)).body["status"] == "pending"
        cid = await job_campaign(http, gateway, job_id)
        sid = (await create(http, gateway, "adsets", adset_params(cid), job_id=job_id)).body["id"]
        assert (await progress(http, gateway, job_id)).body["status"] == "in_progress"
        creative = await create(http, gateway, "adcreatives", {"name": "Cr"})
        ad = {
            "name": "Ad",
            "adset_id": sid,
            "creative": json.dumps({"creative_id": creative.body["id"]}),
        }
        made = await create(http, gateway, "ads", ad, job_id=job_id)
        assert made.status == 200, made.body
        shown = (await progress(http, gateway, job_id)).body
        assert shown["status"] == "completed"
        assert all(p["created"] == p["expected"] for p in shown["slots"].values())

    async def test_a_named_slot_past_the_expectation_is_cap_exceeded(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """X-Gateway-Slot 3 of a job expecting 2 ad sets → 409 cap_exceeded, nothing sent."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 2})
        cid = await job_campaign(http, gateway, job_id)
        answer = await create(http, gateway, "adsets", adset_params(cid), job_id=job_id, slot=3)
        answer.refused(409, "cap_exceeded")
        assert "create:adset" not in await graph_ops(graph_sim)
        # A cap rejection is a safety action: it is in the job's audit trail.
        trail = await gateway.gateway.audit.audit(job_id=job_id, action="cap_rejection")
        (row,) = trail.items
        assert row.detail["entity_type"] == "adset"
        assert row.detail["request_id"] == answer.headers["X-Gateway-Request-Id"]

    @pytest.mark.parametrize(
        ("headers", "problem"),
        [
            pytest.param({"X-Gateway-Job": "nope"}, "X-Gateway-Job", id="bad_job_id"),
            pytest.param({"X-Gateway-Slot": "1"}, "needs X-Gateway-Job", id="slot_without_job"),
            pytest.param(
                {"X-Gateway-Job": "job_" + "0" * 20, "X-Gateway-Slot": "0"},
                "X-Gateway-Slot",
                id="slot_zero",
            ),
            pytest.param(
                {"X-Gateway-Job": "job_" + "0" * 20, "X-Gateway-Slot": "x"},
                "X-Gateway-Slot",
                id="slot_not_a_number",
            ),
        ],
    )
    async def test_malformed_job_headers_are_400(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        headers: dict[str, str],
        problem: str,
    ) -> None:
        """Malformed X-Gateway-Job / X-Gateway-Slot → 400 bad_request, nothing sent."""
        async with http.post(
            f"{gateway.url}/v25.0/act_1001/campaigns",
            params={"access_token": "sim-token-alice"},
            data=campaign_params(),
            headers=headers,
        ) as resp:
            answer = Answer(resp.status, await resp.json(), resp.headers)
        assert problem in answer.refused(400, "bad_request")["message"]
        assert graph_creates(await graph_ops(graph_sim)) == {}
