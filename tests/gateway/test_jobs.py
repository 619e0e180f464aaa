"""The job API on the proxy port: declaration, pre-creation verification, progress.

The seed's Week-1 matrix (TC-001 … TC-007) against the simulator, plus the declaration's
contract (DESIGN.md §3.1, §3.2): bad bodies, external_ref, per-caller visibility and caching.
The helpers here are shared by test_slots.py and test_idempotency.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from gateway.app import load_policy
from gateway.core.policy import PolicySet
from gateway.sim.config import AccountStatus
from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.pgschema import scratch_schema

ALICE = "sim-token-alice"
BOB = "sim-token-bob"
V = "/v25.0"
JOBS = "/_gateway/v1/jobs"
CHECKS = {"token", "account", "campaign_name", "object_limits"}
CAMPAIGN = {"objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"}
TARGETING = json.dumps({"geo_locations": {"countries": ["US"]}}, separators=(",", ":"))


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    """A fresh ledger database: a SQLite file, or a brand-new PostgreSQL schema."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    async with scratch_schema(request.getfixturevalue("postgres_dsn")) as dsn:
        yield dsn


# --- shared helpers -------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict), self.body
        assert "error" in self.body, self.body
        err: dict[str, Any] = self.body["error"]
        return err

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"

    def refused(self, status: int, reason: str) -> dict[str, Any]:
        """Assert a Graph-shaped error of the gateway's own; return its `error` object."""
        assert self.status == status, (self.status, self.body)
        err = self.error
        assert err["gateway_reason"] == reason, err
        assert err["type"] == "GatewayException"
        assert err["fbtrace_id"] == self.headers["X-Gateway-Request-Id"]
        return err


def policy_with(**tables: Mapping[str, Any]) -> PolicySet:
    """The bundled policy with some keys of some tables changed."""
    policy = load_policy(None)
    for table, values in tables.items():
        policy = replace(policy, **{table: replace(getattr(policy, table), **values)})
    return policy


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = ALICE,
    data: Any = None,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    params = {"access_token": token} if token else {}
    async with http.request(
        method, url, params=params, data=data, json=json_body, headers=dict(headers or {})
    ) as resp:
        text = await resp.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return Answer(resp.status, body, resp.headers)


async def declare(
    http: aiohttp.ClientSession,
    gw: GatewayHandle,
    *,
    token: str = ALICE,
    account: str = "act_1001",
    name: str = "Spring",
    expect: Mapping[str, int] | None = None,
    **extra: Any,
) -> Answer:
    """POST /_gateway/v1/jobs, the caller's token as `Authorization: Bearer`."""
    doc = {
        "ad_account_id": account,
        "campaign_name": name,
        "expect": dict(expect or {"campaign": 1, "adset": 2}),
        **extra,
    }
    return await call(
        http,
        "POST",
        gw.url + JOBS,
        token=None,
        json_body=doc,
        headers={"Authorization": f"Bearer {token}"},
    )


async def job(
    http: aiohttp.ClientSession,
    gw: GatewayHandle,
    expect: Mapping[str, int] | None = None,
    **kwargs: Any,
) -> str:
    """A declared job's id (the declaration must pass)."""
    answer = await declare(http, gw, expect=expect, **kwargs)
    assert answer.status == 201, answer.body
    job_id: str = answer.body["job_id"]
    return job_id


async def progress(
    http: aiohttp.ClientSession, gw: GatewayHandle, job_id: str, *, token: str = ALICE
) -> Answer:
    return await call(http, "GET", f"{gw.url}{JOBS}/{job_id}", token=token)


async def create(
    http: aiohttp.ClientSession,
    gw: GatewayHandle,
    edge: str,
    data: Mapping[str, Any] | None = None,
    *,
    json_body: Any = None,
    token: str = ALICE,
    account: str = "act_1001",
    job_id: str | None = None,
    slot: int | None = None,
    key: str | None = None,
) -> Answer:
    """POST /v25.0/act_<n>/<edge> (or /v25.0/<edge> when it names a node) through the gateway."""
    headers = {}
    if job_id is not None:
        headers["X-Gateway-Job"] = job_id
    if slot is not None:
        headers["X-Gateway-Slot"] = str(slot)
    if key is not None:
        headers["Idempotency-Key"] = key
    path = edge if "/" in edge or not edge else f"{account}/{edge}"
    return await call(
        http,
        "POST",
        f"{gw.url}{V}/{path}",
        token=token,
        data=dict(data) if data is not None else None,
        json_body=json_body,
        headers=headers,
    )


def campaign_params(name: str = "Spring") -> dict[str, str]:
    return {"name": name, **CAMPAIGN}


def adset_params(campaign_id: str, name: str = "Set") -> dict[str, str]:
    return {
        "name": name,
        "campaign_id": campaign_id,
        "billing_event": "IMPRESSIONS",
        "targeting": TARGETING,
    }


async def on_graph(
    http: aiohttp.ClientSession, sim: SimHandle, path: str, data: Mapping[str, str]
) -> str:
    """Create something directly on the simulator (not through the gateway); its id."""
    async with http.post(
        f"{sim.url}{V}/{path}", params={"access_token": ALICE}, data=dict(data)
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return str(body["id"])


async def graph_ops(sim: SimHandle) -> dict[str, int]:
    """Operations that reached the simulator, by label ("create:adset": 3, ...)."""
    ops: dict[str, int] = (await sim.requests())["operations"]
    return ops


def graph_creates(ops: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in ops.items() if k.startswith(("create", "copy", "batch"))}


def job_rows(sqlite_url: str) -> int:
    """Jobs on record in the gateway's SQLite ledger."""
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        (count,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
        return int(count)


def checks_of(err_or_report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A verification report's checks by name (from a 201 body or a 422's error_data)."""
    report = err_or_report.get("error_data", err_or_report.get("verification", err_or_report))
    return {c["name"]: c for c in report["checks"]}


# --- TC-001 … TC-007 ------------------------------------------------------------------------


class TestWeekOneMatrix:
    @pytest.mark.parametrize("how", ["disabled_account", "suspended_mid_life"])
    async def test_tc001_a_suspended_account_is_refused_and_every_check_is_listed(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        sqlite_url: str,
        how: str,
    ) -> None:
        """TC-001: 422 verification_failed naming the account's status; nothing is created."""
        account = "act_2001"
        if how == "suspended_mid_life":
            account = "act_1001"
            await graph_sim.put_account(
                id=account, account_status=AccountStatus.DISABLED, disable_reason=1
            )
        answer = await declare(http, gateway, account=account)
        err = answer.refused(422, "verification_failed")
        assert err["is_transient"] is False
        assert err["code"] == 9007
        assert "account" in err["message"]
        report = err["error_data"]
        assert report["status"] == "failed"
        checks = checks_of(err)
        assert set(checks) == CHECKS
        assert all(c["status"] in ("passed", "failed", "warning", "error") for c in checks.values())
        assert all(isinstance(c["duration_ms"], int | float) for c in checks.values())
        assert checks["token"]["status"] == "passed"
        assert checks["account"]["status"] == "failed"
        assert "DISABLED" in checks["account"]["detail"]
        assert "account_status=2" in checks["account"]["detail"]
        assert graph_creates(await graph_ops(graph_sim)) == {}
        assert await graph_sim.objects() == []
        assert job_rows(sqlite_url) == 0

    async def test_tc002_a_duplicate_campaign_name_is_refused_naming_the_existing_campaign(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        sqlite_url: str,
    ) -> None:
        """TC-002: a live campaign with the same name → 422 whose campaign_name check names it."""
        existing = await on_graph(http, graph_sim, "act_1001/campaigns", campaign_params("Sale"))
        answer = await declare(http, gateway, name="Sale")
        err = answer.refused(422, "verification_failed")
        checks = checks_of(err)
        assert checks["campaign_name"]["status"] == "failed"
        assert existing in checks["campaign_name"]["detail"]
        assert "campaign_name" in err["message"]
        assert {n for n, c in checks.items() if c["status"] == "failed"} == {"campaign_name"}
        assert len(await graph_sim.objects(type="campaign")) == 1
        assert job_rows(sqlite_url) == 0

    async def test_tc002_with_duplicate_name_warn_the_job_is_declared_with_a_warning(
        self,
        http: aiohttp.ClientSession,
        graph_sim: SimHandle,
        sqlite_url: str,
    ) -> None:
        """TC-002 under `duplicate_name = "warn"`: 201, the check is a warning naming the id."""
        existing = await on_graph(http, graph_sim, "act_1001/campaigns", campaign_params("Sale"))
        policy = policy_with(verification={"duplicate_name": "warn"})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            answer = await declare(http, gw, name="Sale")
        assert answer.status == 201, answer.body
        checks = checks_of(answer.body)
        assert checks["campaign_name"]["status"] == "warning"
        assert existing in checks["campaign_name"]["detail"]
        assert answer.body["verification"]["status"] == "passed"

    async def test_tc003_an_account_at_its_object_limit_is_refused(
        self,
        http: aiohttp.ClientSession,
        graph_sim: SimHandle,
        sqlite_url: str,
    ) -> None:
        """TC-003: live ad sets + the job's ad sets past the limit → 422 object_limits."""
        cid = await on_graph(http, graph_sim, "act_1001/campaigns", campaign_params("Old"))
        for i in range(2):
            await on_graph(http, graph_sim, "act_1001/adsets", adset_params(cid, f"old {i}"))
        policy = policy_with(verification={"limits": {"campaign": 100, "adset": 3, "ad": 100}})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            refused = await declare(http, gw, expect={"campaign": 1, "adset": 2})
            fits = await declare(http, gw, name="Fits", expect={"campaign": 1, "adset": 1})
        err = refused.refused(422, "verification_failed")
        checks = checks_of(err)
        assert checks["object_limits"]["status"] == "failed"
        assert "adset: 2 live + 2 wanted > limit 3" in checks["object_limits"]["detail"]
        assert {n for n, c in checks.items() if c["status"] == "failed"} == {"object_limits"}
        assert fits.status == 201, fits.body
        assert len(await graph_sim.objects(type="adset")) == 2

    async def test_tc003_more_ads_per_ad_set_than_graph_allows_is_refused(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """TC-003: 60 ads over one ad set passes Graph's 50 ads per ad set → object_limits."""
        answer = await declare(http, gateway, expect={"campaign": 1, "adset": 1, "ad": 60})
        err = answer.refused(422, "verification_failed")
        assert checks_of(err)["object_limits"]["status"] == "failed"
        assert "per ad set" in checks_of(err)["object_limits"]["detail"]

    @pytest.mark.parametrize("token", ["sim-token-invalid", "sim-token-expired"])
    async def test_tc004_an_invalid_or_expired_token_is_refused(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        sqlite_url: str,
        token: str,
    ) -> None:
        """TC-004: 422 with the token check failed on Graph's code 190; nothing created."""
        answer = await declare(http, gateway, token=token)
        err = answer.refused(422, "verification_failed")
        token_check = checks_of(err)["token"]
        assert token_check["status"] == "failed"
        assert "190" in token_check["detail"]
        assert "token" in err["message"]
        assert graph_creates(await graph_ops(graph_sim)) == {}
        assert job_rows(sqlite_url) == 0

    async def test_tc005_a_valid_declaration_is_a_pending_job_with_four_timed_checks(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        sqlite_url: str,
    ) -> None:
        """TC-005: 201 with job_id, status pending, verification passed, 4 checks with durations."""
        answer = await declare(http, gateway, expect={"campaign": 1, "adset": 50, "ad": 50})
        assert answer.status == 201, answer.body
        body = answer.body
        assert re.fullmatch(r"job_[0-9a-f]{20}", body["job_id"])
        assert body["status"] == "pending"
        assert body["ad_account_id"] == "act_1001"
        assert body["expect"] == {"campaign": 1, "adset": 50, "ad": 50}
        verification = body["verification"]
        assert verification["status"] == "passed"
        assert isinstance(verification["duration_ms"], int | float)
        assert len(verification["checks"]) == 4
        checks = checks_of(body)
        assert set(checks) == CHECKS
        for check in checks.values():
            assert check["status"] == "passed", check
            assert isinstance(check["duration_ms"], int | float)
            assert check["duration_ms"] >= 0
            assert check["detail"]
        assert body["slots"]["adset"] == {
            "expected": 50,
            "created": 0,
            "in_flight": 0,
            "unknown": 0,
            "free": 50,
        }
        assert graph_creates(await graph_ops(graph_sim)) == {}
        assert job_rows(sqlite_url) == 1

    async def test_tc006_a_verification_read_that_never_answers_is_transient_and_no_job(
        self,
        http: aiohttp.ClientSession,
        graph_sim: SimHandle,
        sqlite_url: str,
    ) -> None:
        """TC-006: reads stalled past the per-try timeout → 502 upstream_unavailable listing the
        checks in error; no job exists."""
        await graph_sim.add_fault(kind="latency", op="read", latency_ms=2000)
        policy = policy_with(upstream={"per_try_timeout_seconds": 0.3, "deadline_seconds": 2.0})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            answer = await declare(http, gw)
        err = answer.refused(502, "upstream_unavailable")
        assert err["is_transient"] is True
        assert "Retry-After" in answer.headers
        report = err["error_data"]
        assert report["status"] == "error"
        errored = {c["name"] for c in report["checks"] if c["status"] == "error"}
        assert errored == {"token", "account"}
        assert job_rows(sqlite_url) == 0
        assert graph_creates(await graph_ops(graph_sim)) == {}

    async def test_tc006_a_transient_500_on_one_read_is_absorbed_by_the_retry(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
    ) -> None:
        """TC-006: one read answering Graph's transient 500 is retried: the job is declared."""
        await graph_sim.add_fault(kind="error", op="read", times=1)
        answer = await declare(http, gateway)
        assert answer.status == 201, answer.body
        assert all(c["status"] == "passed" for c in checks_of(answer.body).values())
        (fault,) = await graph_sim.faults()
        assert fault["fired"] == 1

    async def test_tc007_two_users_at_once_each_see_only_their_own_job(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
    ) -> None:
        """TC-007: alice and bob declare concurrently on one account; each job is private."""
        a, b = await asyncio.gather(
            declare(http, gateway, token=ALICE, name="Alice's"),
            declare(http, gateway, token=BOB, name="Bob's"),
        )
        assert (a.status, b.status) == (201, 201), (a.body, b.body)
        alice_job, bob_job = a.body["job_id"], b.body["job_id"]
        assert alice_job != bob_job
        assert (await progress(http, gateway, alice_job, token=ALICE)).status == 200
        assert (await progress(http, gateway, bob_job, token=BOB)).status == 200
        (await progress(http, gateway, bob_job, token=ALICE)).refused(404, "job_not_found")
        (await progress(http, gateway, alice_job, token=BOB)).refused(404, "job_not_found")
        stolen = await create(
            http, gateway, "campaigns", campaign_params("Alice's"), token=BOB, job_id=alice_job
        )
        stolen.refused(404, "job_not_found")
        assert graph_creates(await graph_ops(graph_sim)) == {}
        shown = await progress(http, gateway, alice_job)
        assert shown.body["slots"]["campaign"]["free"] == 1


# --- the declaration's contract -------------------------------------------------------------


class TestDeclaration:
    async def test_an_external_ref_makes_the_declaration_idempotent(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """The same caller's second POST with an external_ref is 200 with the same job."""
        first = await declare(http, gateway, external_ref="order-42")
        again = await declare(http, gateway, external_ref="order-42")
        other = await declare(http, gateway, token=BOB, external_ref="order-42")
        assert (first.status, again.status, other.status) == (201, 200, 201)
        assert again.body["job_id"] == first.body["job_id"]
        assert again.body["external_ref"] == "order-42"
        assert other.body["job_id"] != first.body["job_id"]

    @pytest.mark.parametrize(
        ("change", "differs"),
        [
            ({"name": "Autumn"}, ["campaign_name"]),
            ({"expect": {"campaign": 1, "adset": 3}}, ["expect"]),
            ({"account": "act_1002"}, ["ad_account_id"]),
        ],
    )
    async def test_an_external_ref_reused_for_another_job_is_422_and_changes_nothing(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        change: dict[str, Any],
        differs: list[str],
    ) -> None:
        """Stripe's rule for a reused key: the same external_ref with another declaration is
        422 idempotency_mismatch naming what differs; the first job is untouched."""
        first = await declare(http, gateway, external_ref="order-43")
        assert first.status == 201, first.body
        other = await declare(http, gateway, external_ref="order-43", **change)
        err = other.refused(422, "idempotency_mismatch")
        assert err["error_data"] == {"job_id": first.body["job_id"], "differs": differs}
        again = await declare(http, gateway, external_ref="order-43")
        assert (again.status, again.body["job_id"]) == (200, first.body["job_id"])
        assert again.body["expect"] == first.body["expect"]

    async def test_a_repeated_declaration_still_answers_after_its_campaign_exists(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """The backend re-sends its declaration (same external_ref) after the job's campaign was
        created: 200 with the same job, not a duplicate-name refusal of its own campaign."""
        first = await declare(http, gateway, name="Mine", external_ref="order-7")
        assert first.status == 201, first.body
        made = await create(
            http, gateway, "campaigns", campaign_params("Mine"), job_id=first.body["job_id"]
        )
        assert made.status == 200, made.body
        again = await declare(http, gateway, name="Mine", external_ref="order-7")
        assert again.status == 200, again.body
        assert again.body["job_id"] == first.body["job_id"]
        assert again.body["campaign_id"] == made.body["id"]

    async def test_concurrent_declarations_with_one_external_ref_make_one_job(
        self, http: aiohttp.ClientSession, graph_sim: SimHandle, database_url: str
    ) -> None:
        """Five concurrent POSTs with one external_ref: one 201, four 200, one job id."""
        async with running_gateway(graph_sim.url, database_url, recovery=False) as gw:
            answers = await asyncio.gather(
                *(declare(http, gw, external_ref="order-9") for _ in range(5))
            )
        assert sorted(a.status for a in answers) == [200, 200, 200, 200, 201], [
            a.body for a in answers
        ]
        assert len({a.body["job_id"] for a in answers}) == 1

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            pytest.param(b"{not json", "JSON object", id="not_json"),
            pytest.param([1, 2], "JSON object", id="not_an_object"),
            pytest.param({"colour": "red"}, "unknown fields: colour", id="unknown_field"),
            pytest.param({"expect": {"widget": 1}}, "expect.widget", id="unknown_type"),
            pytest.param({"expect": {"campaign": 1, "adset": 0}}, "expect.adset", id="zero"),
            pytest.param({"expect": {"campaign": 1, "adset": True}}, "expect.adset", id="bool"),
            pytest.param({"expect": {"campaign": 2}}, "expect.campaign", id="two_campaigns"),
            pytest.param({"expect": {}}, "expect:", id="empty_expect"),
            pytest.param({"ad_account_id": None}, "ad_account_id", id="missing_account"),
            pytest.param({"ad_account_id": "1001"}, "ad_account_id", id="account_no_prefix"),
            pytest.param({"campaign_name": ""}, "campaign_name", id="empty_name"),
        ],
    )
    async def test_a_malformed_declaration_is_400_naming_the_problem(
        self,
        http: aiohttp.ClientSession,
        gateway: GatewayHandle,
        graph_sim: SimHandle,
        body: Any,
        problem: str,
    ) -> None:
        """Bad bodies → 400 bad_request naming what is wrong; Graph is never asked."""
        headers = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"}
        if isinstance(body, dict):
            doc: dict[str, Any] = {
                "ad_account_id": "act_1001",
                "campaign_name": "Spring",
                "expect": {"campaign": 1, "adset": 2},
            }
            doc.update(body)
            raw = json.dumps({k: v for k, v in doc.items() if v is not None}).encode()
        else:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = await call(http, "POST", gateway.url + JOBS, token=None, data=raw, headers=headers)
        err = answer.refused(400, "bad_request")
        assert problem in err["message"], err["message"]
        assert err["is_transient"] is False
        assert (await graph_sim.requests())["http_requests"] == 0

    async def test_a_declaration_without_a_token_is_400(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """No access token anywhere → 400 bad_request."""
        doc = {"ad_account_id": "act_1001", "campaign_name": "x", "expect": {"adset": 1}}
        answer = await call(http, "POST", gateway.url + JOBS, token=None, json_body=doc)
        assert "access token" in answer.refused(400, "bad_request")["message"]

    async def test_an_unknown_job_is_not_found(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """GET of a job id nobody declared → 404 job_not_found."""
        answer = await progress(http, gateway, "job_" + "0" * 20)
        assert answer.refused(404, "job_not_found")["is_transient"] is False

    async def test_progress_counts_slots_by_state(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """GET shows expected / created / in_flight / unknown / free per type, and the campaign."""
        job_id = await job(http, gateway, {"campaign": 1, "adset": 3})
        made = await create(http, gateway, "campaigns", campaign_params(), job_id=job_id)
        assert made.status == 200, made.body
        cid = made.body["id"]
        assert (
            await create(http, gateway, "adsets", adset_params(cid), job_id=job_id)
        ).status == 200
        await graph_sim.add_fault(kind="drop_after_commit", op="create:adset", times=1)
        # Graph cannot list the ad sets either: the look-up cannot tell, nothing is re-sent.
        await graph_sim.add_fault(kind="error", op="list", times=20)
        lost = await create(http, gateway, "adsets", adset_params(cid), job_id=job_id)
        lost.refused(504, "outcome_unknown")
        assert lost.headers["X-Gateway-Attempts"] == "1"  # looked, never sent again
        assert len(await graph_sim.objects(type="adset")) == 2
        shown = await progress(http, gateway, job_id)
        assert shown.status == 200, shown.body
        assert shown.body["status"] == "in_progress"
        assert shown.body["campaign_id"] == cid
        assert shown.body["slots"] == {
            "campaign": {"expected": 1, "created": 1, "in_flight": 0, "unknown": 0, "free": 0},
            "adset": {"expected": 3, "created": 1, "in_flight": 1, "unknown": 1, "free": 1},
        }

    async def test_verification_reads_are_cached_per_caller(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """A second declaration within cache_seconds reads less from Graph; another caller's
        does not use the first caller's cache."""

        async def reads_for(**kwargs: Any) -> int:
            before = (await graph_sim.requests())["http_requests"]
            answer = await declare(http, gateway, **kwargs)
            assert answer.status == 201, answer.body
            return int((await graph_sim.requests())["http_requests"] - before)

        first = await reads_for(name="One")
        second = await reads_for(name="Two")
        bobs = await reads_for(name="Three", token=BOB)
        assert second < first
        assert bobs == first

    async def test_object_limits_count_what_the_gateway_created_since_the_last_declaration(
        self, http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
    ) -> None:
        """A cached count must not hide entities created meanwhile: 2 ad sets made through the
        gateway + 2 wanted > limit 3 → the next declaration is refused."""
        policy = policy_with(verification={"limits": {"campaign": 100, "adset": 3, "ad": 100}})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            first = await job(http, gw, {"campaign": 1, "adset": 2}, name="First")
            made = await create(http, gw, "campaigns", campaign_params("First"), job_id=first)
            for n in range(2):
                answer = await create(
                    http, gw, "adsets", adset_params(made.body["id"], f"s{n}"), job_id=first
                )
                assert answer.status == 200, answer.body
            second = await declare(http, gw, name="Second", expect={"campaign": 1, "adset": 2})
        err = second.refused(422, "verification_failed")
        assert "adset: 2 live + 2 wanted > limit 3" in checks_of(err)["object_limits"]["detail"]
