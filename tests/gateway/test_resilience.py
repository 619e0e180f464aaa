"""Upstream resilience against the simulator's faults, with its ground truth (DESIGN.md §2.4-2.6).

Every test counts what really exists (or arrived) in the simulator, not what the gateway says.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.model import EntityQuery, EntityState
from gateway.testing import JumpClock, SimHandle, running_gateway
from tests.gateway.test_jobs import adset_params, campaign_params, create, job, policy_with

TARGETING = json.dumps({"geo_locations": {"countries": ["US"]}})


def _resilient_policy(**retry: Any) -> Any:
    # A budget that never refuses unless a test says so: these tests are about exactly-once.
    values = {"budget_min_retries_per_second": 100.0, "attempts": 4, "base_seconds": 0.01} | retry
    return policy_with(retry=values, recovery={"listing_lag_seconds": 0.2})


def _gateway(sim: SimHandle, tmp_path: Path, policy: Any) -> Any:
    return running_gateway(sim.url, f"sqlite:///{tmp_path / 'g.db'}", policy=policy)


@pytest.mark.parametrize(
    "faults",
    [
        [{"kind": "error", "probability": 0.25}],  # 500 code 2 before the write
        [{"kind": "drop_after_commit", "probability": 0.25}],
        [{"kind": "error", "preset": "bad_gateway_html", "probability": 0.25}],
        [
            {"kind": "error", "probability": 0.1},
            {"kind": "drop_after_commit", "probability": 0.1},
            {"kind": "error", "preset": "unknown_error", "probability": 0.1},
        ],
    ],
    ids=["pre_commit_500", "commit_then_drop", "html_502", "mixed"],
)
async def test_fifty_same_name_ad_sets_under_faults_exist_exactly_once(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path, faults: list[dict[str, Any]]
) -> None:
    """50 concurrent creates of one name under a job: every call succeeds, Graph holds exactly
    50, and each answer's id is one of them, each once, each on record."""
    async with _gateway(graph_sim, tmp_path, _resilient_policy()) as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 50})
        made = await create(http, gw, "campaigns", campaign_params(), job_id=job_id)
        cid = made.body["id"]
        for rule in faults:
            await graph_sim.add_fault(op="create:adset", **rule)
        answers = await asyncio.gather(
            *(
                create(http, gw, "adsets", adset_params(cid, "Same"), job_id=job_id)
                for _ in range(50)
            )
        )
        assert Counter(a.status for a in answers) == {200: 50}, [a.body for a in answers]
        live = {o["id"] for o in await graph_sim.objects(type="adset", live=True)}
        assert len(live) == 50
        assert sorted(a.body["id"] for a in answers) == sorted(live)
        page = await gw.gateway.ledger.entities(EntityQuery(state=EntityState.CREATED, limit=500))
        assert {r.graph_id for r in page.items if r.entity_type == "adset"} == live
        fired = sum(f["fired"] for f in await graph_sim.faults())
        assert fired > 0  # the faults did hit


async def test_a_batch_retries_only_its_failed_and_null_entries(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """Null entries (run or not) and a dropped answer: succeeded ops are never re-sent, the
    caller gets 10 ids, Graph holds exactly 10."""
    async with _gateway(graph_sim, tmp_path, _resilient_policy()) as gw:
        cid = (await create(http, gw, "campaigns", campaign_params())).body["id"]
        await graph_sim.add_fault(kind="batch_null", op="create:adset", after=1, times=1)
        await graph_sim.add_fault(
            kind="batch_null", op="create:adset", after=3, times=1, executed=True
        )
        body = f"name=Same&campaign_id={cid}&billing_event=IMPRESSIONS&targeting=%7B%7D"
        ops = [{"method": "POST", "relative_url": "act_1001/adsets", "body": body}] * 10
        async with http.post(
            f"{gw.url}/v25.0/",
            data={"batch": json.dumps(ops), "access_token": "sim-token-alice"},
        ) as resp:
            assert resp.status == 200
            answer = await resp.json()
        ids = [json.loads(entry["body"])["id"] for entry in answer]
        live = sorted(o["id"] for o in await graph_sim.objects(type="adset", live=True))
        assert sorted(ids) == live
        assert len(live) == 10
        committed = (await graph_sim.requests())["committed"]["create:adset"]
        assert committed == 10  # nothing created twice


@pytest.mark.parametrize(
    "rule",
    [
        {"status": 400, "code": 100, "message": "Invalid parameter", "is_transient": False},
        {
            "status": 400,
            "code": 190,
            "message": "token expired",
            "error_type": "OAuthException",
            "is_transient": False,
        },
        {"status": 403, "code": 200, "message": "Permissions error", "is_transient": False},
        {"status": 400, "code": 368, "message": "deemed abusive", "is_transient": True},
    ],
    ids=["100", "190", "200", "368"],
)
@pytest.mark.parametrize("op", ["create:campaign", "read"])
async def test_a_permanent_error_is_returned_at_once_and_never_retried(
    http: aiohttp.ClientSession,
    graph_sim: SimHandle,
    tmp_path: Path,
    rule: dict[str, Any],
    op: str,
) -> None:
    async with _gateway(graph_sim, tmp_path, _resilient_policy()) as gw:
        await graph_sim.add_fault(kind="error", op=op, **rule)
        before = (await graph_sim.requests())["http_requests"]
        if op == "read":
            url, data, method = f"{gw.url}/v25.0/act_1001", None, "GET"
        else:
            url, data, method = f"{gw.url}/v25.0/act_1001/campaigns", campaign_params(), "POST"
        async with http.request(
            method, url, params={"access_token": "sim-token-alice"}, data=data
        ) as resp:
            body = await resp.json()
            assert resp.status == rule["status"], body
            assert resp.headers["X-Gateway-Attempts"] == "1"
        assert body["error"]["code"] == rule["code"]
        assert (await graph_sim.requests())["http_requests"] - before == 1


async def test_the_breaker_opens_on_an_outage_answers_fast_and_closes_after_probes(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    policy = policy_with(
        breaker={
            "minimum_calls": 5,
            "open_seconds": 0.5,
            "half_open_probes": 1,
            "half_open_successes_to_close": 1,
        },
        retry={"attempts": 1},
    )
    async with _gateway(graph_sim, tmp_path, policy) as gw:
        await graph_sim.add_fault(kind="error", op="read", preset="bad_gateway_html")
        url = f"{gw.url}/v25.0/act_1001"
        params = {"access_token": "sim-token-alice"}
        statuses = []
        for _ in range(12):
            async with http.get(url, params=params) as resp:
                statuses.append(resp.status)
                if resp.status == 503:
                    body = await resp.json()
                    assert body["error"]["gateway_reason"] == "circuit_open"
                    assert int(resp.headers["Retry-After"]) >= 1
        assert statuses[:5] == [502] * 5
        assert set(statuses[5:]) == {503}
        assert (await graph_sim.requests())["http_requests"] == 5  # fast 503s sent nothing
        await graph_sim.clear_faults()
        await asyncio.sleep(0.6)
        async with http.get(url, params=params) as resp:
            assert resp.status == 200  # the probe
        async with http.get(url, params=params) as resp:
            assert resp.status == 200
        breakers = await gw.gateway.breakers.snapshot()
        assert breakers["graph"]["state"] == "closed"


async def test_the_retry_budget_bounds_upstream_requests_in_an_outage(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """100 reads while every read fails: 3 attempts each would be 300 requests; the budget
    (20 % of requests, floor 1/s over 10 s) allows at most 20 retries."""
    policy = policy_with(
        retry={"attempts": 3, "base_seconds": 0.001, "budget_min_retries_per_second": 1.0},
        breaker={"minimum_calls": 100000},
    )
    async with _gateway(graph_sim, tmp_path, policy) as gw:
        await graph_sim.add_fault(kind="error", op="read")
        url = f"{gw.url}/v25.0/act_1001"

        async def read() -> int:
            async with http.get(url, params={"access_token": "sim-token-alice"}) as resp:
                return resp.status

        statuses = await asyncio.gather(*(read() for _ in range(100)))
        assert set(statuses) == {500}
        arrived = (await graph_sim.requests())["http_requests"]
        assert 100 < arrived <= 120
        metrics = (await (await http.get(gw.admin_url + "/metrics")).text()).splitlines()
        budget = 'gateway_retries_refused_total{why="budget"}'
        refused = [m for m in metrics if m.startswith(budget)]
        assert refused
        assert float(refused[0].split()[-1]) >= 80


async def test_a_throttled_account_waits_or_gets_429_while_another_account_runs(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """act_1001 is blocked by Graph for a minute: its calls wait at the gate (here, past their
    2 s deadline: 429 throttled with Retry-After, nothing sent while blocked); act_1002's
    calls meanwhile go straight through."""
    policy = policy_with(throttle={"max_wait_seconds": 2.0})
    async with _gateway(graph_sim, tmp_path, policy) as gw:
        params = {"access_token": "sim-token-alice"}
        await graph_sim.throttle("act_1001", 60)
        async with http.get(f"{gw.url}/v25.0/act_1001/campaigns", params=params) as resp:
            # Graph's throttle closes the gate for the regain time, past this call's deadline.
            assert resp.status == 429
            assert (await resp.json())["error"]["gateway_reason"] == "throttled"
            assert resp.headers["X-Gateway-Attempts"] == "1"
            assert int(resp.headers["Retry-After"]) > 30
        arrived = (await graph_sim.requests())["http_requests"]

        async def timed(account: str) -> tuple[int, float]:
            started = time.monotonic()
            async with http.get(f"{gw.url}/v25.0/{account}/campaigns", params=params) as r:
                return r.status, time.monotonic() - started

        blocked = [asyncio.ensure_future(timed("act_1001")) for _ in range(5)]
        others = [await timed("act_1002") for _ in range(10)]
        assert all(status == 200 for status, _ in others)
        assert max(seconds for _, seconds in others) < 1.0
        results = await asyncio.gather(*blocked)
        assert {status for status, _ in results} == {429}
        # Nothing for the blocked account reached Graph while it was blocked.
        assert (await graph_sim.requests())["http_requests"] - arrived == 10


async def test_a_rate_limit_after_30_of_50_waits_for_the_regain_time_and_finishes_the_rest(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """Seed scenario 2: Graph blocks the account at the 31st ad set. The gateway holds that
    create and the 19 behind it at the account's gate until Graph's regain time (jumped here
    on both clocks), then sends them: the backend sees 50 successes, Graph holds 50."""
    clock = JumpClock()
    policy = policy_with(throttle={"max_wait_seconds": 600.0})
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", policy=policy, clock=clock
    ) as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 50})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        first = [
            await create(http, gw, "adsets", adset_params(cid), job_id=job_id) for _ in range(30)
        ]
        assert {a.status for a in first} == {200}
        await graph_sim.add_fault(kind="throttle", op="create:adset", block_seconds=120, times=1)
        rest = [
            asyncio.ensure_future(create(http, gw, "adsets", adset_params(cid), job_id=job_id))
            for _ in range(20)
        ]
        # Wait until Graph's throttle answer closed the gate and the other 19 queue behind it.
        entry: dict[str, Any] = {}
        for _ in range(500):
            accounts = await gw.gateway.gate.snapshot()
            entry = accounts["accounts"].get("act_1001", {})
            if entry.get("wait_seconds", 0) > 30 and entry.get("queue_depth", 0) >= 19:
                break
            await asyncio.sleep(0.02)
        assert entry["wait_seconds"] > 30, entry  # closed until Graph's regain time
        assert not any(task.done() for task in rest)
        arrived = (await graph_sim.requests())["http_requests"]
        await asyncio.sleep(0.3)
        assert (await graph_sim.requests())["http_requests"] == arrived  # nothing sent meanwhile
        await graph_sim.advance(121)
        clock.advance(121)
        answers = await asyncio.gather(*rest)
        assert Counter(a.status for a in answers) == {200: 20}, [a.body for a in answers]
        assert all(int(a.headers["X-Gateway-Queued-Ms"]) > 30_000 for a in answers)
        assert len(await graph_sim.objects(type="adset", live=True)) == 50


async def test_a_lost_batch_answer_after_3_of_5_creates_exactly_2_more(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """Seed scenario 3: 45 ad sets made, then a batch of the last 5 whose connection drops
    after Graph ran only 3 of them (made "outside tracking": the gateway never saw their ids).
    The gateway finds the 3, adopts them into their slots and creates exactly 2 more."""
    async with _gateway(graph_sim, tmp_path, _resilient_policy()) as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 50})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        made = await asyncio.gather(
            *(create(http, gw, "adsets", adset_params(cid), job_id=job_id) for _ in range(45))
        )
        assert {a.status for a in made} == {200}
        # Ops 4 and 5 fail before running; the answer of the batch is lost after it ran.
        await graph_sim.add_fault(kind="error", op="create:adset", in_batch=True, after=3, times=2)
        await graph_sim.add_fault(kind="drop_after_commit", op="batch", times=1)
        body = adset_params(cid)
        encoded = "&".join(f"{k}={v}" for k, v in body.items())
        ops = [{"method": "POST", "relative_url": "act_1001/adsets", "body": encoded}] * 5
        before = (await graph_sim.requests())["committed"].get("create:adset", 0)
        async with http.post(
            f"{gw.url}/v25.0/",
            data={"batch": json.dumps(ops), "access_token": "sim-token-alice"},
            headers={"X-Gateway-Job": job_id},
        ) as resp:
            assert resp.status == 200
            answer = await resp.json()
        assert [entry["code"] for entry in answer] == [200] * 5
        committed = (await graph_sim.requests())["committed"]["create:adset"]
        assert committed - before == 5  # 3 in the lost batch, exactly 2 more
        live = {o["id"] for o in await graph_sim.objects(type="adset", live=True)}
        assert len(live) == 50
        assert {json.loads(e["body"])["id"] for e in answer} <= live
        slots = await gw.gateway.jobs.slots(job_id)
        assert {s.graph_id for s in slots if s.entity_type == "adset"} == live


async def test_a_fresh_entity_graph_calls_missing_is_read_again_and_an_unknown_one_is_not(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """100/33 right after the gateway created the campaign: read-after-write lag, asked again;
    the same error for an id the gateway never created is Graph's answer, returned at once."""
    missing = {"status": 400, "code": 100, "subcode": 33, "is_transient": False}
    async with _gateway(graph_sim, tmp_path, _resilient_policy()) as gw:
        cid = (await create(http, gw, "campaigns", campaign_params())).body["id"]
        params = {"access_token": "sim-token-alice", "fields": "name"}
        await graph_sim.add_fault(kind="error", op="read", times=1, **missing)
        async with http.get(f"{gw.url}/v25.0/{cid}", params=params) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Gateway-Attempts"] == "2"
        await graph_sim.add_fault(kind="error", op="read", times=1, **missing)
        async with http.get(f"{gw.url}/v25.0/120299999999999999", params=params) as resp:
            assert resp.status == 400
            assert resp.headers["X-Gateway-Attempts"] == "1"
