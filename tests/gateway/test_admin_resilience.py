"""The admin port's resilience endpoints: breakers, throttled accounts, their metrics and
readiness (DESIGN.md §3.3), over real HTTP against the simulator."""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from gateway.stores.redis_coord import RedisCoordinator
from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.test_jobs import campaign_params, create, job

TOKEN = "sim-token-alice"
ADMIN = "admin-secret-for-tests"
# A port nothing listens on: a Redis that is down.
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"


async def read_campaigns(
    http: aiohttp.ClientSession, gw: GatewayHandle, account: str = "act_1001"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with http.get(
        f"{gw.url}/v25.0/{account}/campaigns", params={"access_token": TOKEN}
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def force(
    http: aiohttp.ClientSession,
    gw: GatewayHandle,
    body: Any,
    *,
    name: str = "graph",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{gw.admin_url}/admin/v1/breakers/{name}", json=body, headers=headers
    ) as resp:
        return resp.status, await resp.json()


async def breakers(http: aiohttp.ClientSession, gw: GatewayHandle) -> dict[str, Any]:
    async with http.get(f"{gw.admin_url}/admin/v1/breakers") as resp:
        assert resp.status == 200
        listing: dict[str, Any] = (await resp.json())["breakers"]
        return listing


async def sim_calls(graph_sim: SimHandle) -> int:
    calls: int = (await graph_sim.requests())["http_requests"]
    return calls


async def test_breakers_list_graph_closed_before_any_call(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """GET /admin/v1/breakers shows the "graph" breaker, closed, even before it was used."""
    listing = await breakers(http, gateway)

    assert list(listing) == ["graph"]
    assert listing["graph"]["state"] == "closed"
    assert listing["graph"]["calls"] == 0
    assert listing["graph"]["retry_after_seconds"] is None


async def test_forced_open_answers_503_circuit_open_and_sends_nothing(
    http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
) -> None:
    """Forced open: a proxied read gets a Graph-shaped 503 circuit_open with Retry-After and
    never reaches Graph; the listing says forced-open; the gateway stays ready."""
    status, body = await force(http, gateway, {"action": "open", "reason": "Graph incident"})
    assert status == 200, body
    assert (body["name"], body["action"], body["reason"]) == ("graph", "open", "Graph incident")
    assert body["breaker"]["state"] == "forced-open"
    before = await sim_calls(graph_sim)

    for _ in range(3):
        status, headers, answer = await read_campaigns(http, gateway)
        assert status == 503
        assert answer["error"]["gateway_reason"] == "circuit_open"
        assert answer["error"]["code"] == 9009
        assert answer["error"]["is_transient"] is True
        assert float(headers["Retry-After"]) > 0

    assert await sim_calls(graph_sim) == before, "nothing reached the simulator"
    assert (await breakers(http, gateway))["graph"]["state"] == "forced-open"
    async with http.get(gateway.admin_url + "/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json())["breakers"] == {"graph": "forced-open"}


async def test_reset_closes_a_forced_breaker_and_calls_flow_again(
    http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
) -> None:
    """After "reset" the breaker is closed and reads reach Graph again."""
    await force(http, gateway, {"action": "open", "reason": "drill"})
    assert (await read_campaigns(http, gateway))[0] == 503

    status, body = await force(http, gateway, {"action": "reset", "reason": "drill over"})

    assert status == 200, body
    assert body["breaker"]["state"] == "closed"
    before = await sim_calls(graph_sim)
    status, _, answer = await read_campaigns(http, gateway)
    assert status == 200, answer
    assert await sim_calls(graph_sim) == before + 1


async def test_a_disabled_breaker_lets_calls_through(
    http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
) -> None:
    """ "disable" (never break): the breaker shows disabled and reads reach Graph."""
    await force(http, gateway, {"action": "open"})
    status, body = await force(http, gateway, {"action": "disable", "reason": "breaker misfires"})
    assert status == 200, body
    assert body["breaker"]["state"] == "disabled"
    before = await sim_calls(graph_sim)

    for _ in range(3):
        assert (await read_campaigns(http, gateway))[0] == 200

    assert await sim_calls(graph_sim) == before + 3
    assert (await breakers(http, gateway))["graph"]["state"] == "disabled"


@pytest.mark.parametrize(
    "body",
    [
        {"action": "close"},
        {"action": "OPEN"},
        {"reason": "no action"},
        {"action": "open", "reason": 7},
        {"action": "open", "reason": "x" * 501},
        {"action": "open", "resaon": "a typo must not drop the reason"},
        {"action": "open", "reason": "INC\x0042"},
        ["open"],
        "open",
    ],
)
async def test_a_bad_force_request_is_400_bad_request_and_changes_nothing(
    http: aiohttp.ClientSession, gateway: GatewayHandle, body: Any
) -> None:
    """Anything but a known action (and a short string reason) is a Graph-shaped 400."""
    before = await breakers(http, gateway)

    status, answer = await force(http, gateway, body)

    assert status == 400
    assert answer["error"]["gateway_reason"] == "bad_request"
    assert answer["error"]["code"] == 9004
    assert answer["error"]["is_transient"] is False
    assert answer["error"]["problems"]
    assert await breakers(http, gateway) == before


async def test_a_body_that_is_not_json_is_400(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """A body that does not parse is refused like a wrong action."""
    async with http.post(
        f"{gateway.admin_url}/admin/v1/breakers/graph",
        data=b"action=open",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["gateway_reason"] == "bad_request"
    assert (await breakers(http, gateway))["graph"]["state"] == "closed"


async def test_an_unknown_breaker_is_404_and_not_created(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """Only breakers the gateway has can be forced; a typo creates nothing."""
    status, answer = await force(http, gateway, {"action": "open"}, name="grpah")

    assert status == 404
    assert "grpah" in answer["error"]["message"]
    assert list(await breakers(http, gateway)) == ["graph"]


async def test_forcing_is_logged_with_action_and_reason(
    http: aiohttp.ClientSession, gateway: GatewayHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """A `breaker_forced` event names the breaker, the action and the operator's reason."""
    caplog.set_level(logging.INFO, logger="gateway")

    await force(http, gateway, {"action": "open", "reason": "INC-42"})

    events = [getattr(r, "fields", {}) for r in caplog.records]
    [forced] = [e for e in events if e.get("event") == "breaker_forced"]
    assert forced["breaker"] == "graph"
    assert forced["action"] == "open"
    assert forced["reason"] == "INC-42"
    assert forced["state"] == "forced-open"


async def test_breaker_and_account_endpoints_need_the_admin_token(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """With GATEWAY_ADMIN_TOKEN set: no token → 401 and nothing forced; the token → 200."""
    async with running_gateway(
        graph_sim.url, sqlite_url, environ={"GATEWAY_ADMIN_TOKEN": ADMIN}
    ) as gw:
        for path in ("/admin/v1/breakers", "/admin/v1/accounts"):
            async with http.get(gw.admin_url + path) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        status, _ = await force(http, gw, {"action": "open", "reason": "no token"})
        assert status == 401
        status, _ = await force(http, gw, {"action": "open"}, headers={"Authorization": "Bearer x"})
        assert status == 403
        assert (await read_campaigns(http, gw))[0] == 200, "the breaker was not forced"

        auth = {"Authorization": f"Bearer {ADMIN}"}
        status, body = await force(http, gw, {"action": "open"}, headers=auth)
        assert status == 200
        assert body["breaker"]["state"] == "forced-open"
        async with http.get(gw.admin_url + "/admin/v1/breakers", headers=auth) as resp:
            assert resp.status == 200
            assert (await resp.json())["breakers"]["graph"]["state"] == "forced-open"


async def test_accounts_show_the_gate_a_throttled_account_closed(
    http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
) -> None:
    """Graph blocks act_1001 for 10 minutes: the read gets 429 throttled at once (the wait
    passes its deadline), and /admin/v1/accounts shows act_1001's gates closed for about
    that long, from the throttle error and from the usage headers; act_1002 is untouched."""
    await graph_sim.throttle("act_1001", 600)

    status, headers, answer = await read_campaigns(http, gateway)
    assert status == 429, answer
    assert answer["error"]["gateway_reason"] == "throttled"
    assert float(headers["Retry-After"]) > 500
    assert (await read_campaigns(http, gateway, "act_1002"))[0] == 200

    async with http.get(gateway.admin_url + "/admin/v1/accounts") as resp:
        assert resp.status == 200
        doc = await resp.json()
    act = doc["accounts"]["act_1001"]
    assert 500 < act["wait_seconds"] <= 600
    assert (act["queue_depth"], act["in_flight"]) == (0, 0)
    gates = act["gates"]
    # X-Ad-Account-Usage / X-Business-Use-Case-Usage at 100 % close the account's own gate;
    # the 80004 error closes its ads_management gate.
    assert gates["act_1001"]["reason"] == "usage"
    assert gates["act_1001"]["wait_seconds"] > 500
    assert gates["act_1001:ads_management"]["reason"].startswith("80004")
    assert doc["accounts"].get("act_1002", {"wait_seconds": 0.0})["wait_seconds"] == 0.0
    assert doc["app"]["wait_seconds"] == 0.0
    assert doc["retry_budget"]["requests"] >= 2
    assert set(doc["retry_budget"]) == {"requests", "retries", "allowance"}


async def test_metrics_show_breaker_state_and_queue_depth(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """/metrics carries gateway_breaker_state (3 = forced-open) and the queue depth by lane."""
    async with http.get(gateway.admin_url + "/metrics") as resp:
        text = await resp.text()
    assert 'gateway_breaker_state{name="graph"} 0.0' in text
    assert 'gateway_throttle_queue_depth{lane="account"} 0.0' in text
    assert 'gateway_throttle_queue_depth{lane="app"} 0.0' in text

    await force(http, gateway, {"action": "open"})
    async with http.get(gateway.admin_url + "/metrics") as resp:
        text = await resp.text()
    assert 'gateway_breaker_state{name="graph"} 3.0' in text


@pytest.mark.redis
async def test_a_breaker_forced_on_one_gateway_holds_another_on_the_same_redis(
    http: aiohttp.ClientSession, graph_sim: SimHandle, clean_redis: str, tmp_path: Any
) -> None:
    """Two gateways on one Redis: forced open through one's admin port, the other's reads get
    circuit_open without calling Graph; a reset through the other reopens both."""
    env = {"GATEWAY_REDIS_URL": clean_redis}
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(
            running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'one.db'}", environ=env)
        )
        two = await stack.enter_async_context(
            running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'two.db'}", environ=env)
        )
        status, _ = await force(http, one, {"action": "open", "reason": "shared"})
        assert status == 200
        before = await sim_calls(graph_sim)

        status, _, answer = await read_campaigns(http, two)

        assert status == 503
        assert answer["error"]["gateway_reason"] == "circuit_open"
        assert await sim_calls(graph_sim) == before
        assert (await breakers(http, two))["graph"]["state"] == "forced-open"
        status, _ = await force(http, two, {"action": "reset"})
        assert status == 200
        assert (await read_campaigns(http, one))[0] == 200


@pytest.mark.redis
async def test_readyz_checks_redis_and_is_503_without_it(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str, clean_redis: str
) -> None:
    """With Redis configured /readyz reports a "coordinator" check; Redis gone → 503, and
    forcing a breaker is refused (it would only hold this process)."""
    async with running_gateway(
        graph_sim.url, sqlite_url, environ={"GATEWAY_REDIS_URL": clean_redis}
    ) as gw:
        async with http.get(gw.admin_url + "/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == {"ledger": "ok", "coordinator": "ok"}

        live = gw.gateway.coordinator
        async with RedisCoordinator.from_url(DEAD_REDIS_URL, timeout=0.5) as dead:
            gw.gateway.coordinator = dead
            try:
                async with http.get(gw.admin_url + "/readyz") as resp:
                    body = await resp.json()
                    assert resp.status == 503
                assert body["ready"] is False
                assert body["checks"]["ledger"] == "ok"
                assert body["checks"]["coordinator"].startswith("unavailable")
                status, answer = await force(http, gw, {"action": "open"})
                assert status == 503
                assert "nothing was forced" in answer["error"]["message"]
            finally:
                gw.gateway.coordinator = live
        assert (await breakers(http, gw))["graph"]["state"] == "closed"


async def test_an_unknown_admin_path_or_method_answers_in_the_error_envelope(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    async with running_gateway(graph_sim.url, sqlite_url) as gw:
        async with http.get(f"{gw.admin_url}/admin/v1/nope") as resp:
            assert resp.status == 404
            assert "No admin endpoint" in (await resp.json())["error"]["message"]
        async with http.delete(f"{gw.admin_url}/admin/v1/breakers") as resp:
            assert resp.status == 405
            assert "GET" in resp.headers["Allow"]
            assert (await resp.json())["error"]["status"] == 405


async def test_a_body_nested_too_deep_or_with_a_key_twice_is_400_not_a_crash(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """JSON nested past what the parser reads was a 500; a key given twice took the last one.
    Both are 400 bad_request and the breaker stays as it was."""
    url = f"{gateway.admin_url}/admin/v1/breakers/graph"
    for raw, problem in (
        ("[" * 100_000, "body: a JSON object"),
        ('{"action": "reset", "action": "open"}', "action: given more than once in the body"),
    ):
        async with http.post(url, data=raw, headers={"Content-Type": "application/json"}) as resp:
            body = await resp.json()
            assert resp.status == 400, body
        assert any(p.startswith(problem) for p in body["error"]["problems"]), body
    assert (await breakers(http, gateway))["graph"]["state"] == "closed"


async def test_verify_and_repair_under_a_forced_open_breaker_are_503_circuit_open(
    http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
) -> None:
    """Post-creation verification and repair read Graph through the breaker: forced open, they
    answer what the proxy would (503 circuit_open, transient, Retry-After), not a 502 that
    blames Graph, and send nothing."""
    job_id = await job(http, gateway, {"campaign": 1})
    made = await create(http, gateway, "campaigns", campaign_params(), job_id=job_id)
    assert made.status == 200, made.body
    status, _ = await force(http, gateway, {"action": "open", "reason": "Graph incident"})
    assert status == 200
    before = await sim_calls(graph_sim)

    for action in ("verify", "repair"):
        async with http.post(
            f"{gateway.admin_url}/admin/v1/jobs/{job_id}/{action}", json={"access_token": TOKEN}
        ) as resp:
            body = await resp.json()
            assert resp.status == 503, body
            assert int(resp.headers["Retry-After"]) >= 1
        error = body["error"]
        assert (error["gateway_reason"], error["code"], error["is_transient"]) == (
            "circuit_open",
            9009,
            True,
        )
    assert await sim_calls(graph_sim) == before

    await force(http, gateway, {"action": "reset"})
    async with http.post(
        f"{gateway.admin_url}/admin/v1/jobs/{job_id}/verify", json={"access_token": TOKEN}
    ) as resp:
        assert resp.status == 200, await resp.text()


async def test_verify_and_repair_with_a_token_graph_refuses_are_400_saying_what_graph_said(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """The operator's Graph token is the operator's to fix: Graph's 190 comes back as a 400
    bad_request with Graph's error and a hint, not a 502 that blames Graph."""
    job_id = await job(http, gateway, {"campaign": 1})
    made = await create(http, gateway, "campaigns", campaign_params(), job_id=job_id)
    assert made.status == 200, made.body
    for action in ("verify", "repair"):
        async with http.post(
            f"{gateway.admin_url}/admin/v1/jobs/{job_id}/{action}",
            json={"access_token": "not-a-token-graph-knows"},
        ) as resp:
            body = await resp.json()
            assert resp.status == 400, body
        error = body["error"]
        assert error["gateway_reason"] == "bad_request"
        assert error["graph_error"]["code"] == 190
        assert "(#190)" in error["message"]
        assert "GATEWAY_ROLLBACK_TOKEN" in error["message"]
        assert "not-a-token-graph-knows" not in json.dumps(body)
