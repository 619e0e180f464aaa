"""`Idempotency-Key` through the gateway, against the simulator (DESIGN.md §3.1, §6).

The first request with a key runs; a repeat replays its answer (`Idempotent-Replayed: true`)
and Graph sees one create; another request under the key is 422; a repeat while the first is
in flight waits for it (409 request_in_progress past the wait); an unknown outcome is never
stored; refusals before Graph release the key. Concurrency runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from gateway.errors import StoreUnavailable
from gateway.model import Intent, JobStatus
from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.test_jobs import (
    BOB,
    Answer,
    campaign_params,
    create,
    graph_ops,
    job,
    policy_with,
)
from tests.pgschema import scratch_schema

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
JSON_CAMPAIGN = {"name": "Spring", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": []}


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    """A fresh ledger database: a SQLite file, or a brand-new PostgreSQL schema."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    async with scratch_schema(request.getfixturevalue("postgres_dsn")) as dsn:
        yield dsn


async def campaign(
    http: aiohttp.ClientSession, gw: GatewayHandle, key: str | None, **kwargs: Any
) -> Answer:
    data = kwargs.pop("data", campaign_params())
    return await create(http, gw, "campaigns", data, key=key, **kwargs)


async def campaign_creates(sim: SimHandle) -> int:
    return (await graph_ops(sim)).get("create:campaign", 0)


class TestReplay:
    async def test_the_same_key_replays_the_stored_answer_and_graph_sees_one_create(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Second request with the key: same status and body, Idempotent-Replayed: true."""
        first = await campaign(http, gateway, "key-1")
        again = await campaign(http, gateway, "key-1")
        assert first.status == 200, first.body
        assert not first.replayed
        assert (again.status, again.body) == (first.status, first.body)
        assert again.replayed
        assert again.headers["X-Gateway-Request-Id"] != first.headers["X-Gateway-Request-Id"]
        assert await campaign_creates(graph_sim) == 1
        assert len(await graph_sim.objects(type="campaign")) == 1

    async def test_a_graph_refusal_is_replayed_too(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """A definite Graph error (400, code 100) is an outcome: the repeat replays it."""
        first = await campaign(http, gateway, "key-bad", data={"name": "no objective"})
        again = await campaign(http, gateway, "key-bad", data={"name": "no objective"})
        assert first.status == 400
        assert (again.status, again.body, again.replayed) == (400, first.body, True)
        assert await campaign_creates(graph_sim) == 1

    async def test_the_same_key_with_different_params_is_a_mismatch(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Same key, another name → 422 idempotency_mismatch, nothing sent."""
        assert (await campaign(http, gateway, "key-2")).status == 200
        other = await campaign(http, gateway, "key-2", data=campaign_params("Autumn"))
        assert other.refused(422, "idempotency_mismatch")["is_transient"] is False
        assert await campaign_creates(graph_sim) == 1

    async def test_form_and_json_encodings_of_one_create_share_a_fingerprint(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Python SDK form body, then Node SDK JSON body of the same create → replay."""
        form = await campaign(http, gateway, "key-3")
        node = await create(
            http,
            gateway,
            "campaigns",
            json_body={**JSON_CAMPAIGN, "id": "act_1001"},
            key="key-3",
        )
        assert form.status == 200, form.body
        assert node.status == 200, node.body
        assert node.replayed
        assert node.body == form.body
        assert await campaign_creates(graph_sim) == 1

    async def test_keys_are_scoped_by_caller(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Bob's request with alice's key runs on its own; alice's repeat still replays."""
        alice = await campaign(http, gateway, "shared")
        bob = await campaign(http, gateway, "shared", token=BOB)
        again = await campaign(http, gateway, "shared")
        assert (alice.status, bob.status) == (200, 200)
        assert not bob.replayed
        assert bob.body["id"] != alice.body["id"]
        assert again.replayed
        assert again.body == alice.body
        assert await campaign_creates(graph_sim) == 2

    async def test_keys_are_scoped_by_account(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """The same key on another ad account is another request, not a mismatch."""
        one = await campaign(http, gateway, "per-account")
        two = await campaign(http, gateway, "per-account", account="act_1002")
        assert (one.status, two.status) == (200, 200), two.body
        assert not two.replayed
        assert await campaign_creates(graph_sim) == 2

    async def test_a_quoted_key_is_the_same_key_as_the_bare_one(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """`"abc"` (the IETF draft's sf-string) and `abc` name one key."""
        quoted = await campaign(http, gateway, '"abc"')
        bare = await campaign(http, gateway, "abc")
        assert quoted.status == 200, quoted.body
        assert bare.replayed
        assert bare.body == quoted.body
        assert await campaign_creates(graph_sim) == 1

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param("", id="empty"),
            pytest.param('""', id="empty_quoted"),
            pytest.param("k" * 256, id="256_chars"),
            pytest.param("a\tb", id="tab"),
            pytest.param("caf\u00e9", id="not_ascii"),
        ],
    )
    async def test_a_malformed_key_is_400(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        key: str,
    ) -> None:
        """Empty, longer than 255 or not printable ASCII → 400 bad_request, nothing sent."""
        answer = await campaign(http, gateway, key)
        assert "Idempotency-Key" in answer.refused(400, "bad_request")["message"]
        assert await campaign_creates(graph_sim) == 0

    async def test_a_255_character_key_is_accepted(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """The longest key allowed runs and replays."""
        first = await campaign(http, gateway, "k" * 255)
        again = await campaign(http, gateway, "k" * 255)
        assert first.status == 200, first.body
        assert again.replayed


class TestConcurrency:
    async def test_twenty_concurrent_requests_with_one_key_make_one_create(
        self, http: aiohttp.ClientSession, graph_sim: SimHandle, database_url: str
    ) -> None:
        """The first is slowed down on Graph; the other 19 wait for it and replay its answer:
        Graph sees exactly one create."""
        await graph_sim.add_fault(kind="latency", op="create:campaign", latency_ms=200, times=1)
        async with running_gateway(graph_sim.url, database_url, recovery=False) as gw:
            answers = await asyncio.gather(*(campaign(http, gw, "together") for _ in range(20)))
        assert [a.status for a in answers] == [200] * 20, [a.body for a in answers]
        assert len({a.body["id"] for a in answers}) == 1
        assert sum(not a.replayed for a in answers) == 1
        assert sum(a.replayed for a in answers) == 19
        assert await campaign_creates(graph_sim) == 1
        assert len(await graph_sim.objects(type="campaign")) == 1

    async def test_a_duplicate_that_waits_past_wait_seconds_gets_request_in_progress(
        self, http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
    ) -> None:
        """wait_seconds 0.3, the first stalled 1.5 s on Graph: the duplicate gets 409
        request_in_progress with Retry-After; the first completes; one create."""
        await graph_sim.add_fault(kind="latency", op="create:campaign", latency_ms=1500, times=1)
        # Graph cannot list campaigns either: looking cannot tell, the outcome stays unknown.
        await graph_sim.add_fault(kind="error", op="list", times=100)
        policy = policy_with(idempotency={"wait_seconds": 0.3})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            answers = await asyncio.gather(*(campaign(http, gw, "slow") for _ in range(2)))
            later = await campaign(http, gw, "slow")
        by_status = {a.status: a for a in answers}
        assert set(by_status) == {200, 409}, [a.body for a in answers]
        err = by_status[409].refused(409, "request_in_progress")
        assert err["is_transient"] is True
        assert int(by_status[409].headers["Retry-After"]) >= 1
        assert later.replayed
        assert later.body == by_status[200].body
        assert await campaign_creates(graph_sim) == 1


class TestRelease:
    async def test_a_key_refused_for_its_cap_is_released_so_a_retry_runs_afresh(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """409 cap_exceeded is not stored: the retry is refused afresh, not replayed."""
        job_id = await job(http, gateway, {"campaign": 1})
        assert (await campaign(http, gateway, None, job_id=job_id)).status == 200
        first = await campaign(http, gateway, "capped", job_id=job_id)
        again = await campaign(http, gateway, "capped", job_id=job_id)
        first.refused(409, "cap_exceeded")
        again.refused(409, "cap_exceeded")
        assert not again.replayed
        assert await campaign_creates(graph_sim) == 1

    async def test_a_key_refused_by_a_closed_job_is_released_so_a_retry_runs(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """409 job_closed, the job reopened, the same key again → the create runs."""
        job_id = await job(http, gateway, {"campaign": 1})
        jobs = gateway.gateway.jobs
        await jobs.set_job_status(job_id, JobStatus.FAILED, now=datetime.now(UTC))
        (await campaign(http, gateway, "reopen", job_id=job_id)).refused(409, "job_closed")
        await jobs.set_job_status(job_id, JobStatus.IN_PROGRESS, now=datetime.now(UTC))
        retried = await campaign(http, gateway, "reopen", job_id=job_id)
        assert retried.status == 200, retried.body
        assert not retried.replayed
        assert await campaign_creates(graph_sim) == 1

    async def test_a_key_whose_intent_could_not_be_written_is_released_so_a_retry_runs(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The ledger refuses the write-ahead once: 503 ledger_unavailable, nothing sent; the
        retry with the key creates the campaign."""
        ledger = gateway.gateway.ledger
        real = ledger.write_intents
        failures = [StoreUnavailable("the ledger is unavailable (test)")]

        async def flaky(intents: Sequence[Intent], *, now: datetime) -> list[int]:
            if failures:
                raise failures.pop()
            return await real(intents, now=now)

        monkeypatch.setattr(ledger, "write_intents", flaky)
        first = await campaign(http, gateway, "ledger-blip")
        assert first.refused(503, "ledger_unavailable")["is_transient"] is True
        assert await campaign_creates(graph_sim) == 0
        retried = await campaign(http, gateway, "ledger-blip")
        assert retried.status == 200, retried.body
        assert not retried.replayed
        assert await campaign_creates(graph_sim) == 1

    async def test_an_unknown_outcome_is_not_stored_and_never_sent_twice(
        self, http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
    ) -> None:
        """Graph committed and dropped the connection: 504 outcome_unknown; a retry with the
        key inside the lease waits, then gets 409 request_in_progress; one create on Graph."""
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        # Graph cannot list campaigns either: looking cannot tell, the outcome stays unknown.
        await graph_sim.add_fault(kind="error", op="list", times=100)
        policy = policy_with(idempotency={"wait_seconds": 0.3})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            lost = await campaign(http, gw, "dropped")
            retried = await campaign(http, gw, "dropped")
        lost.refused(504, "outcome_unknown")
        assert retried.refused(409, "request_in_progress")["is_transient"] is True
        assert not retried.replayed
        assert await campaign_creates(graph_sim) == 1
        assert len(await graph_sim.objects(type="campaign")) == 1

    async def test_past_the_lease_an_unknown_outcome_is_refused_not_sent_again(
        self, http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
    ) -> None:
        """Lease 0.2 s, wait 2 s: the retry outlives the first request's lease, finds its row
        still unknown and answers 504 outcome_unknown; Graph sees one create."""
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        # Graph cannot list campaigns either: looking cannot tell, the outcome stays unknown.
        await graph_sim.add_fault(kind="error", op="list", times=100)
        policy = policy_with(idempotency={"wait_seconds": 2.0, "lease_seconds": 0.2})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy, recovery=False) as gw:
            lost = await campaign(http, gw, "expired")
            retried = await campaign(http, gw, "expired")
        lost.refused(504, "outcome_unknown")
        retried.refused(504, "outcome_unknown")
        assert await campaign_creates(graph_sim) == 1


async def test_the_recovery_pass_reaps_keys_past_their_retention(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """Within retention a key replays; after it the recovery pass reaps it and it runs anew."""
    from gateway.clock import OffsetClock
    from gateway.recovery import recover_once

    async def create(gw: GatewayHandle) -> tuple[int, dict[str, Any], str | None]:
        async with http.post(
            f"{gw.url}/v25.0/act_1001/campaigns",
            params={"access_token": "sim-token-alice"},
            headers={"Idempotency-Key": "reap-me"},
            data={"name": "R", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        ) as resp:
            return resp.status, await resp.json(), resp.headers.get("Idempotent-Replayed")

    async with running_gateway(graph_sim.url, sqlite_url, recovery=False) as gw:
        clock = OffsetClock()
        gw.gateway.clock = clock
        first = await create(gw)
        assert (await recover_once(gw.gateway)).reaped == 0
        again = await create(gw)
        assert again[2] == "true"
        assert again[1] == first[1]
        clock.advance(25 * 3600)
        assert (await recover_once(gw.gateway)).reaped == 1
        fresh = await create(gw)
        assert fresh[0] == 200
        assert fresh[2] is None
    assert len(await graph_sim.objects(type="campaign")) == 2
