"""The admin port: health, readiness, metrics and the entities listing (DESIGN.md §3.3)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.test_jobs import (
    ALICE,
    campaign_params,
    create,
    database_url,  # noqa: F401 - a fixture
    job,
)

TOKEN = "sim-token-alice"
ADMIN = "admin-secret-for-tests"


async def create_campaigns(http: aiohttp.ClientSession, gw: GatewayHandle, n: int) -> list[str]:
    ids = []
    for i in range(n):
        async with http.post(
            f"{gw.url}/v25.0/act_1001/campaigns",
            params={"access_token": TOKEN},
            data={"name": f"C{i}", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        ) as resp:
            ids.append((await resp.json())["id"])
    return ids


async def test_healthz_and_readyz_report_a_reachable_ledger(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """/healthz says the process is alive; /readyz checks the ledger."""
    async with http.get(gateway.admin_url + "/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    async with http.get(gateway.admin_url + "/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "ready": True,
            "checks": {"ledger": "ok"},
            "breakers": {"graph": "closed"},
        }


async def test_readyz_is_503_when_the_ledger_is_gone(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """A ledger that cannot answer makes the gateway not ready."""
    await gateway.gateway.ledger.aclose()
    async with http.get(gateway.admin_url + "/readyz") as resp:
        body = await resp.json()
        assert resp.status == 503
        assert body["ready"] is False
        assert body["checks"]["ledger"].startswith("unavailable")


async def test_metrics_count_requests_upstream_latency_and_ledger_writes(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """Prometheus text with requests by kind/outcome, upstream and ledger histograms."""
    await create_campaigns(http, gateway, 2)
    async with http.get(f"{gateway.url}/v25.0/me", params={"access_token": TOKEN}) as resp:
        assert resp.status == 200
    async with http.get(gateway.admin_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'gateway_requests_total{kind="create",outcome="ok"} 2.0' in text
    assert 'gateway_requests_total{kind="passthrough",outcome="ok"} 1.0' in text
    assert 'gateway_upstream_latency_seconds_count{kind="create"} 2.0' in text
    assert 'gateway_ledger_write_seconds_count{op="intents"} 2.0' in text
    assert 'gateway_entities_total{entity_type="campaign",state="created"} 2.0' in text
    assert TOKEN not in text


async def test_a_refused_create_a_copy_and_a_batch_are_counted_under_their_own_kind(
    http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
) -> None:
    """A create that ends in the gateway's own error is still a create in
    gateway_requests_total (with its reason as outcome); copies and batches have their kinds."""
    (campaign,) = await create_campaigns(http, gateway, 1)
    params = {"access_token": TOKEN}
    async with http.post(
        f"{gateway.url}/v25.0/act_1001/campaigns",
        params=params,
        data={"name": "held", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        headers={"X-Gateway-Job": "job_" + "0" * 20},
    ) as resp:
        assert resp.status == 404
    async with http.post(f"{gateway.url}/v25.0/{campaign}/copies", params=params) as resp:
        assert resp.status == 200, await resp.text()
    batch = [{"method": "GET", "relative_url": "me"}]
    async with http.post(
        f"{gateway.url}/v25.0/",
        data={"access_token": TOKEN, "batch": json.dumps(batch)},
    ) as resp:
        assert resp.status == 200
    batch = [{"method": "POST", "relative_url": "act_1001/campaigns", "body": "name=b"}]
    async with http.post(
        f"{gateway.url}/v25.0/",
        data={"access_token": TOKEN, "batch": json.dumps(batch)},
    ) as resp:
        assert resp.status == 200
    async with http.get(gateway.admin_url + "/metrics") as resp:
        text = await resp.text()
    assert 'gateway_requests_total{kind="create",outcome="job_not_found"} 1.0' in text
    assert 'gateway_requests_total{kind="copy",outcome="ok"} 1.0' in text
    assert 'gateway_requests_total{kind="batch",outcome="ok"} 1.0' in text
    # A batch with no create in it is forwarded untouched: a pass-through.
    assert 'gateway_requests_total{kind="passthrough",outcome="ok"} 1.0' in text


async def test_entities_are_listed_newest_first_with_filters_and_paging(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """GET /admin/v1/entities pages through every row once; account and state filter."""
    ids = await create_campaigns(http, gateway, 5)
    seen: list[str] = []
    url = gateway.admin_url + "/admin/v1/entities?limit=2&account=act_1001"
    while url:
        async with http.get(url) as resp:
            assert resp.status == 200
            page = await resp.json()
        seen.extend(row["graph_id"] for row in page["data"])
        nxt = page["paging"].get("next")
        url = gateway.admin_url + nxt if nxt else ""
    assert seen == list(reversed(ids))
    async with http.get(gateway.admin_url + "/admin/v1/entities?account=act_9") as resp:
        assert (await resp.json())["data"] == []
    async with http.get(gateway.admin_url + "/admin/v1/entities?state=failed") as resp:
        assert (await resp.json())["data"] == []
    async with http.get(
        gateway.admin_url + "/admin/v1/entities?since=2000-01-01T00:00:00Z"
    ) as resp:
        assert len((await resp.json())["data"]) == 5


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=x", "before=abc", "since=yesterday", "state=odd"]
)
async def test_bad_entity_filters_are_400_with_the_problem(
    http: aiohttp.ClientSession, gateway: GatewayHandle, query: str
) -> None:
    """Every bad filter is named; nothing is queried."""
    async with http.get(f"{gateway.admin_url}/admin/v1/entities?{query}") as resp:
        body = await resp.json()
        assert resp.status == 400
        assert body["error"]["problems"]


@pytest.mark.parametrize("listing", ["jobs", "entities", "audit"])
async def test_every_listing_pages_up_to_1000_and_refuses_more_the_same_way(
    http: aiohttp.ClientSession, gateway: GatewayHandle, listing: str
) -> None:
    """One `limit` rule for every admin listing: 1..1000, else 400 `bad_request` naming it."""
    url = f"{gateway.admin_url}/admin/v1/{listing}"
    async with http.get(url, params={"limit": "1000"}) as resp:
        assert resp.status == 200, await resp.text()
    for bad in ("1001", "0", "-1", "ten"):
        async with http.get(url, params={"limit": bad}) as resp:
            body = await resp.json()
            assert resp.status == 400
            assert body["error"]["gateway_reason"] == "bad_request"
            assert body["error"]["problems"] == ["limit: an integer from 1 to 1000"]


async def test_admin_api_needs_the_bearer_token_when_one_is_set(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """No token → 401 with WWW-Authenticate; wrong → 403; right → 200. Health stays open."""
    async with running_gateway(
        graph_sim.url, sqlite_url, environ={"GATEWAY_ADMIN_TOKEN": ADMIN}
    ) as gw:
        url = gw.admin_url + "/admin/v1/entities"
        async with http.get(url) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(url, headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 403
        async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
            assert resp.status == 200
            assert json.loads(await resp.text())["data"] == []
        async with http.get(gw.admin_url + "/healthz") as resp:
            assert resp.status == 200


# --- what property-based testing of the admin API found (schemathesis, by hand) -------------


@pytest.fixture
async def on_each_ledger(
    graph_sim: SimHandle,
    database_url: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[GatewayHandle]:
    """The gateway on SQLite, then on PostgreSQL (whose text cannot hold NUL and whose BIGINT
    and timestamps have ranges of their own)."""
    async with running_gateway(graph_sim.url, database_url) as handle:
        yield handle


async def get_raw(
    http: aiohttp.ClientSession, gw: GatewayHandle, path_and_query: str
) -> tuple[int, Any]:
    """GET with the path and query sent exactly as written (percent-escapes kept)."""
    async with http.get(URL(gw.admin_url + path_and_query, encoded=True)) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


ODD_QUERIES = [
    ("entities?account=act_1%00", "account: NUL characters are not accepted"),
    ("entities?job=%00", "job: NUL characters are not accepted"),
    ("jobs?account=%00", "account: NUL characters are not accepted"),
    ("audit?action=rollback%00", "action: NUL characters are not accepted"),
    ("audit?graph_id=1%002", "graph_id: NUL characters are not accepted"),
    ("jobs/job_%00", "job_id: NUL characters are not accepted"),
    ("entities?before=99999999999999999999", "before: the integer cursor from paging.next"),
    ("audit?before=9223372036854775808", "before: the integer cursor from paging.next"),
    ("audit?before=0", "before: the integer cursor from paging.next"),
    ("entities?before=1_0", "before: the integer cursor from paging.next"),
    (
        "jobs?before=2026-02-30T10:00:00%2B00:00%7Cjob_1",
        "before: a cursor as paging.next carries it",
    ),
    ("jobs?limit=%C2%B2", "limit: an integer from 1 to 1000"),  # '²': str.isdigit() says yes
    ("audit?limit=%EF%BC%95", "limit: an integer from 1 to 1000"),  # a fullwidth '5'
    ("entities?since=inf", "since: ISO 8601 (2026-11-29T10:00:00Z) or unix seconds"),
    ("jobs?since=nan", "since: POSIX seconds or an ISO 8601 time"),
    ("jobs?since=1_000", "since: POSIX seconds or an ISO 8601 time"),
    ("entities?limit=1&limit=2", "limit: given 2 times, at most once"),
    ("jobs?since=2026-01-01&since=junk", "since: given 2 times, at most once"),
]


@pytest.mark.parametrize(("query", "problem"), ODD_QUERIES)
async def test_an_odd_query_is_400_naming_it_on_either_ledger_never_a_crash(
    http: aiohttp.ClientSession, on_each_ledger: GatewayHandle, query: str, problem: str
) -> None:
    """NUL bytes, row ids past BIGINT, digits int() reads but the API does not (superscript
    and fullwidth digits, '1_0'), an impossible date in a cursor, inf/nan, a parameter given
    twice: each is a 400 bad_request naming it, on SQLite and PostgreSQL alike (they were
    500s, or silently took the first value)."""
    status, body = await get_raw(http, on_each_ledger, f"/admin/v1/{query}")

    assert status == 400, body
    assert body["error"]["gateway_reason"] == "bad_request"
    assert problem in body["error"]["problems"]


@pytest.mark.parametrize(
    ("since", "matches"),
    [
        ("1e20", False),  # unix seconds past year 9999: was a 500
        ("-1e20", True),
        ("1e999", False),  # a float that overflows to infinity
        ("0001-01-01T00:00:00%2B14:00", True),  # before datetime.min in UTC: a 500 on Postgres
        ("9999-12-31T23:00:00-05:00", False),  # after datetime.max in UTC
        ("2000-01-01", True),
    ],
)
async def test_a_since_past_either_end_of_the_calendar_reads_as_that_end(
    http: aiohttp.ClientSession, on_each_ledger: GatewayHandle, since: str, matches: bool
) -> None:
    """A `since` beyond what a date can hold selects what the nearest representable time
    does (everything, or nothing) for jobs and entities, on either ledger."""
    job_id = await job(http, on_each_ledger, {"campaign": 1})
    made = await create(http, on_each_ledger, "campaigns", campaign_params(), job_id=job_id)
    assert made.status == 200, made.body

    for listing in ("jobs", "entities"):
        status, body = await get_raw(http, on_each_ledger, f"/admin/v1/{listing}?since={since}")
        assert status == 200, body
        assert len(body["data"]) == (1 if matches else 0), (listing, body)


async def test_the_jobs_cursor_pages_through_every_job_on_either_ledger(
    http: aiohttp.ClientSession, on_each_ledger: GatewayHandle
) -> None:
    """The stricter cursor rule still takes every cursor paging.next hands out."""
    declared = [await job(http, on_each_ledger, {"campaign": 1}, name=f"Job {n}") for n in range(3)]
    seen: list[str] = []
    path = "/admin/v1/jobs?limit=1"
    while path:
        status, page = await get_raw(http, on_each_ledger, path)
        assert status == 200, page
        seen.extend(j["job_id"] for j in page["data"])
        path = page["paging"].get("next", "")
    assert seen == list(reversed(declared))


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"access_token": null}', "access_token: a string"),
        ('{"access_token": "a", "access_token": "b"}', "access_token: given more than once"),
        ('{"access_token": "a\\u0000b"}', "access_token: NUL characters are not accepted"),
        ("[" * 100_000, "body: a JSON object"),  # nested past what json reads: was a 500
    ],
)
async def test_a_bad_verify_or_repair_body_is_400_naming_the_problem(
    http: aiohttp.ClientSession, on_each_ledger: GatewayHandle, raw: str, problem: str
) -> None:
    """The Graph-token body of verify and repair is a JSON object with at most a string
    access_token, each key once."""
    job_id = await job(http, on_each_ledger, {"campaign": 1})
    for action in ("verify", "repair"):
        async with http.post(
            f"{on_each_ledger.admin_url}/admin/v1/jobs/{job_id}/{action}",
            data=raw,
            headers={"Content-Type": "application/json"},
        ) as resp:
            body = await resp.json()
            assert resp.status == 400, body
        assert any(p.startswith(problem) for p in body["error"]["problems"]), body
    async with http.post(
        f"{on_each_ledger.admin_url}/admin/v1/jobs/{job_id}/verify", json={"access_token": ALICE}
    ) as resp:
        assert resp.status == 200, await resp.text()
