"""Pre-creation verification reads take the path every call to Graph takes: the account's
throttle gate, the "graph" circuit breaker, the retry policy (capped at `[verification]
attempts`) — so a job declaration neither hammers a failing Graph nor jumps a throttled
account's queue."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.testing import SimHandle, running_gateway
from tests.gateway.test_jobs import ALICE, declare, job_rows, policy_with


def _gateway(sim: SimHandle, sqlite_url: str, policy: Any = None) -> Any:
    return running_gateway(sim.url, sqlite_url, policy=policy)


async def _sim_requests(sim: SimHandle) -> int:
    count: int = (await sim.requests())["http_requests"]
    return count


def _metric(text: str, sample: str) -> float:
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(sample + " ")]
    return float(values[0]) if values else 0.0


async def test_a_declaration_under_a_forced_open_breaker_answers_circuit_open_and_reads_nothing(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    async with _gateway(graph_sim, sqlite_url) as gw:
        async with http.post(
            f"{gw.admin_url}/admin/v1/breakers/graph", json={"action": "open", "reason": "drill"}
        ) as resp:
            assert resp.status == 200
        before = await _sim_requests(graph_sim)
        answer = await declare(http, gw)
        err = answer.refused(503, "circuit_open")
        assert err["is_transient"] is True
        assert "Retry-After" in answer.headers
        assert await _sim_requests(graph_sim) == before  # not one verification read was sent
    assert job_rows(sqlite_url) == 0


async def test_a_declaration_for_a_throttled_account_waits_at_its_gate_and_sends_no_account_read(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """Graph blocked act_1001 for a minute; a read through the proxy closed its gate. The
    declaration's account reads wait at that gate (here past their 1 s deadline: 429
    `throttled`) instead of reaching Graph; a declaration for act_1002 goes through."""
    policy = policy_with(throttle={"max_wait_seconds": 1.0})
    async with _gateway(graph_sim, sqlite_url, policy) as gw:
        await graph_sim.throttle("act_1001", 60)
        params = {"access_token": ALICE}
        async with http.get(f"{gw.url}/v25.0/act_1001/campaigns", params=params) as resp:
            assert resp.status == 429
        before = await graph_sim.requests()
        answer = await declare(http, gw, account="act_1001")
        answer.refused(429, "throttled")
        assert int(answer.headers["Retry-After"]) > 30
        after = await graph_sim.requests()
        assert after["by_account"].get("act_1001") == before["by_account"].get("act_1001")
        other = await declare(http, gw, account="act_1002", name="Other")
        assert other.status == 201, other.body
    assert job_rows(sqlite_url) == 1


async def test_verification_reads_stop_after_the_verification_attempts_and_count_as_attempts(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """Every read by id answers Graph's transient 500 (listings are not faulted): the token and
    account reads are each tried `[verification] attempts` = 2 times, no more, the 3 listings
    once; the declaration gets a transient error listing the checks in error, and the tries
    show in the attempts and retries metrics."""
    policy = policy_with(
        verification={"attempts": 2, "cache_seconds": 0.0},
        retry={"base_seconds": 0.001, "budget_min_retries_per_second": 10.0},
        breaker={"minimum_calls": 100000},
    )
    async with _gateway(graph_sim, sqlite_url, policy) as gw:
        await graph_sim.add_fault(kind="error", op="read")
        before = await _sim_requests(graph_sim)
        answer = await declare(http, gw, expect={"campaign": 1, "adset": 2})
        err = answer.refused(502, "upstream_unavailable")
        assert err["is_transient"] is True
        statuses = {c["name"]: c["status"] for c in err["error_data"]["checks"]}
        assert statuses["token"] == statuses["account"] == "error"
        assert await _sim_requests(graph_sim) - before == 2 * 2 + 3
        async with http.get(gw.admin_url + "/metrics") as resp:
            text = await resp.text()
        assert _metric(text, 'gateway_upstream_attempts_total{kind="precheck"}') == 7
        assert _metric(text, 'gateway_retries_total{reason="transient"}') == 2
    assert job_rows(sqlite_url) == 0


async def test_a_transient_read_during_verification_is_retried_through_the_gateways_retry_path(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """One transient 500: the declaration succeeds, and the retry shows in the retry metrics
    (which aiohttp-retry, used before, never fed)."""
    async with _gateway(graph_sim, sqlite_url) as gw:
        await graph_sim.add_fault(kind="error", op="read", times=1)
        answer = await declare(http, gw)
        assert answer.status == 201, answer.body
        async with http.get(gw.admin_url + "/metrics") as resp:
            text = await resp.text()
        assert _metric(text, 'gateway_retries_total{reason="transient"}') == 1
        assert _metric(text, 'gateway_upstream_attempts_total{kind="precheck"}') == 6
