"""Fault injection: every fault kind does exactly what it says, checked against ground truth.

Each test drives the simulator over real HTTP and then compares what the client saw with what
the simulator stored (`/__sim/objects`) and what it logged (`/__sim/requests`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from gateway.testing import SimFactory, SimHandle
from tests.sim.support import (
    Graph,
    ad_params,
    adset_params,
    campaign_params,
    create,
    create_op,
    form,
    new_adset,
    new_campaign,
    new_creative,
    python_batch,
)

# A client timeout that is short enough to keep tests quick, long enough for loopback.
SHORT_TIMEOUT = aiohttp.ClientTimeout(total=0.3)


async def new_ad_parents(graph: Graph) -> tuple[str, str]:
    """(ad set id, creative id) under a fresh campaign in act_1001, made without faults."""
    adset_id = await new_adset(graph, await new_campaign(graph))
    return adset_id, await new_creative(graph)


async def log(sim: SimHandle, n: int = 100) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await sim.requests(log=n))["log"]
    return entries


async def assert_nothing_stored(sim: SimHandle) -> None:
    assert await sim.objects() == []
    assert (await sim.requests())["committed"] == {}


# --- error faults --------------------------------------------------------------------------


async def test_error_fault_defaults_to_transient_500_code_2_and_stores_nothing(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """A bare `error` rule answers 500, code 2, is_transient true, before anything is stored."""
    rule = await graph_sim.add_fault(kind="error", op="create")

    reply = await create(graph, "campaigns", campaign_params())

    assert reply.status == 500
    assert reply.content_type == "application/json"
    err = reply.body["error"]
    assert err["code"] == 2
    assert err["is_transient"] is True
    assert err["type"] == "OAuthException"
    assert "error_subcode" not in err
    assert err["fbtrace_id"]
    await assert_nothing_stored(graph_sim)
    [entry] = await log(graph_sim)
    assert entry["faults"] == [rule["id"]]
    assert entry["status"] == 500
    assert entry["committed"] is False


async def test_unknown_error_preset_answers_500_code_1_and_stores_nothing(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """Preset `unknown_error` is Graph's 500 "An unknown error occurred", code 1."""
    await graph_sim.add_fault(kind="error", preset="unknown_error", op="create")

    reply = await create(graph, "campaigns", campaign_params())

    assert reply.status == 500
    err = reply.body["error"]
    assert err["code"] == 1
    assert err["message"] == "An unknown error occurred"
    await assert_nothing_stored(graph_sim)


async def test_bad_gateway_html_preset_answers_a_502_html_page_not_json(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """Preset `bad_gateway_html` is the edge proxy's HTML "Sorry, something went wrong." 502."""
    await graph_sim.add_fault(kind="error", preset="bad_gateway_html", op="create")

    reply = await graph(
        "POST", "act_1001/campaigns", data=form(campaign_params()), expect_json=False
    )

    assert reply.status == 502
    assert reply.content_type == "text/html"
    assert "Sorry, something went wrong." in reply.text
    with pytest.raises(ValueError, match="Expecting value"):
        json.loads(reply.text)
    await assert_nothing_stored(graph_sim)
    [entry] = await log(graph_sim)
    assert entry["status"] == 502


async def test_empty_500_preset_answers_500_with_an_empty_body(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """Preset `empty_500` is a 500 with no body at all."""
    await graph_sim.add_fault(kind="error", preset="empty_500", op="create")

    reply = await create(graph, "campaigns", campaign_params())

    assert reply.status == 500
    assert reply.text == ""
    await assert_nothing_stored(graph_sim)


async def test_explicit_error_fault_answers_the_given_status_code_and_subcode(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """An error rule with status/code/subcode/type/message answers exactly that envelope."""
    await graph_sim.add_fault(
        kind="error",
        op="create",
        status=400,
        code=613,
        subcode=1487742,
        error_type="OAuthException",
        message="(#613) Calls to this api have exceeded the rate limit.",
        is_transient=False,
    )

    reply = await create(graph, "campaigns", campaign_params())

    assert reply.status == 400
    err = reply.body["error"]
    assert (err["code"], err["error_subcode"]) == (613, 1487742)
    assert err["message"] == "(#613) Calls to this api have exceeded the rate limit."
    assert err["is_transient"] is False
    await assert_nothing_stored(graph_sim)


# --- connection faults ---------------------------------------------------------------------


async def test_drop_after_commit_stores_the_object_but_the_client_loses_the_connection(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """`drop_after_commit`: the create is committed, then the connection closes unanswered."""
    await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign")

    with pytest.raises(aiohttp.ClientConnectionError):
        await create(graph, "campaigns", campaign_params("dropped"))

    [stored] = await graph_sim.objects(type="campaign")
    assert stored["name"] == "dropped"
    assert stored["account_id"] == "act_1001"
    counters = await graph_sim.requests(log=1)
    assert counters["committed"] == {"create:campaign": 1}
    assert counters["log"][0]["connection"] == "drop"


async def test_drop_after_commit_surfaces_as_server_disconnected(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """The dropped answer reaches aiohttp as ServerDisconnectedError (no bytes, no status)."""
    await graph_sim.add_fault(kind="drop_after_commit", op="create")

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await create(graph, "campaigns", campaign_params())


async def test_stall_after_commit_stores_the_object_and_the_client_times_out(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """`stall_after_commit`: committed, then the answer waits past the client's timeout."""
    await graph_sim.add_fault(kind="stall_after_commit", op="create", stall_seconds=5)

    with pytest.raises(TimeoutError):
        await graph(
            "POST",
            "act_1001/campaigns",
            data=form(campaign_params("stalled")),
            client_timeout=SHORT_TIMEOUT,
        )

    [stored] = await graph_sim.objects(type="campaign")
    assert stored["name"] == "stalled"
    counters = await graph_sim.requests(log=1)
    assert counters["committed"] == {"create:campaign": 1}
    assert counters["log"][0]["connection"] == "stall"


async def test_silent_drop_answers_success_with_an_id_that_does_not_exist(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """`silent_drop`: 200 with a plausible id, but nothing is stored and a read says 100/33."""
    await graph_sim.add_fault(kind="silent_drop", op="create")

    reply = await create(graph, "campaigns", campaign_params())

    assert reply.status == 200
    ghost = reply.body["id"]
    assert ghost.isdigit()
    assert await graph_sim.objects() == []
    reply = await graph("GET", ghost)
    assert reply.status == 400
    err = reply.body["error"]
    assert (err["code"], err["error_subcode"]) == (100, 33)
    assert (await graph_sim.requests())["committed"] == {}


# --- account-state faults ------------------------------------------------------------------


async def test_suspend_account_after_three_creates_refuses_the_fourth(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """`suspend_account` op=create after=3: creates 1-3 succeed, the 4th is refused (403/200)."""
    await graph_sim.add_fault(kind="suspend_account", op="create", after=3)

    statuses = []
    for i in range(3):
        reply = await create(graph, "campaigns", campaign_params(f"c{i}"))
        statuses.append(reply.status)
    reply = await create(graph, "campaigns", campaign_params("fourth"))

    assert statuses == [200, 200, 200]
    assert reply.status == 403
    assert reply.body["error"]["code"] == 200
    assert sorted(o["name"] for o in await graph_sim.objects()) == ["c0", "c1", "c2"]
    reply = await graph("GET", "act_1001?fields=account_status")
    assert reply.body["account_status"] == 2


async def test_throttle_fault_blocks_the_account_with_80004(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """`throttle`: the account answers 80004/2446079 until its block ends, fault or not."""
    await graph_sim.add_fault(kind="throttle", op="create", times=1, block_seconds=60)

    reply = await create(graph, "campaigns", campaign_params())
    assert reply.status == 400
    assert (reply.body["error"]["code"], reply.body["error"]["error_subcode"]) == (80004, 2446079)

    reply = await create(graph, "campaigns", campaign_params())
    assert reply.status == 400, "the block outlives the single firing"
    assert reply.body["error"]["code"] == 80004
    assert await graph_sim.objects() == []

    reply = await create(graph, "campaigns", campaign_params(), account="act_1002")
    assert reply.status == 200, "other accounts are not throttled"

    await graph_sim.advance(61)
    reply = await create(graph, "campaigns", campaign_params())
    assert reply.status == 200


# --- latency -------------------------------------------------------------------------------


async def test_fixed_latency_delays_the_answer(graph_sim: SimHandle, graph: Graph) -> None:
    """`latency` fixed 200 ms: the matched request takes at least ~200 ms; others do not wait."""
    loop = asyncio.get_running_loop()
    await graph_sim.add_fault(kind="latency", account="act_1002", latency_ms=200)

    started = loop.time()
    reply = await graph("GET", "act_1002")
    slow = loop.time() - started
    started = loop.time()
    await graph("GET", "act_1001")
    fast = loop.time() - started

    assert reply.status == 200
    assert 0.18 <= slow < 2.0
    assert fast < slow


# --- batch faults --------------------------------------------------------------------------


@pytest.mark.parametrize("executed", [False, True])
async def test_batch_null_entry_is_null_and_stored_only_if_executed(
    graph_sim: SimHandle, graph: Graph, executed: bool
) -> None:
    """`batch_null`: that op's entry is `null`; the object exists only when executed=true."""
    await graph_sim.add_fault(
        kind="batch_null", op="create:campaign", after=1, times=1, executed=executed
    )
    ops = [create_op("campaigns", campaign_params(f"b{i}")) for i in range(3)]

    reply = await python_batch(graph, ops)

    assert reply.status == 200
    entries = reply.body
    assert len(entries) == 3
    assert entries[1] is None
    assert entries[0]["code"] == 200
    assert entries[2]["code"] == 200
    names = sorted(o["name"] for o in await graph_sim.objects(type="campaign"))
    assert names == (["b0", "b1", "b2"] if executed else ["b0", "b2"])
    nulled = [e for e in await log(graph_sim) if e["in_batch"] and e["status"] is None]
    assert len(nulled) == 1
    assert nulled[0]["committed"] is executed


async def test_drop_on_one_batch_op_drops_the_whole_answer_after_every_op_ran(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """A drop fault on op 2 of 3 loses the whole batch answer, yet all three ops committed."""
    await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", after=1, times=1)
    ops = [create_op("campaigns", campaign_params(f"b{i}")) for i in range(3)]

    with pytest.raises(aiohttp.ClientConnectionError):
        await python_batch(graph, ops)

    names = sorted(o["name"] for o in await graph_sim.objects(type="campaign"))
    assert names == ["b0", "b1", "b2"]
    assert (await graph_sim.requests())["committed"] == {"create:campaign": 3}


# --- selectors and counters ----------------------------------------------------------------


async def test_op_with_entity_selector_hits_only_adset_creates(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """op="create:adset" fails ad set creates and leaves campaign creates and reads alone."""
    await graph_sim.add_fault(kind="error", op="create:adset")

    campaign_id = await new_campaign(graph)
    reply = await create(graph, "adsets", adset_params(campaign_id))
    assert reply.status == 500
    reply = await graph("GET", campaign_id)
    assert reply.status == 200
    reply = await create(graph, "adcreatives", {"name": "creative"})
    assert reply.status == 200

    assert await graph_sim.objects(type="adset") == []
    fired = [e["op"] for e in await log(graph_sim) if e["faults"]]
    assert fired == ["create:adset"]


async def test_account_selector_hits_only_that_account(graph_sim: SimHandle, graph: Graph) -> None:
    """account="act_1002" fails calls on act_1002 only."""
    await graph_sim.add_fault(kind="error", account="act_1002")

    reply = await create(graph, "campaigns", campaign_params(), account="act_1001")
    assert reply.status == 200
    reply = await create(graph, "campaigns", campaign_params(), account="act_1002")
    assert reply.status == 500
    reply = await graph("GET", "act_1002/campaigns")
    assert reply.status == 500

    accounts = {o["account_id"] for o in await graph_sim.objects()}
    assert accounts == {"act_1001"}


async def test_path_selector_matches_a_glob_on_the_unversioned_path(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """path="act_*/ads" fails ad creates (any account) and nothing on other edges."""
    adset_id, creative_id = await new_ad_parents(graph)
    await graph_sim.add_fault(kind="error", path="act_*/ads")

    reply = await create(graph, "ads", ad_params(adset_id, creative_id))
    assert reply.status == 500
    reply = await create(graph, "adcreatives", {"name": "another"})
    assert reply.status == 200
    reply = await graph("GET", "act_1001/adsets")
    assert reply.status == 200

    assert await graph_sim.objects(type="ad") == []


async def test_in_batch_selector_hits_only_ops_inside_a_batch(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """in_batch=true leaves top-level requests (and the batch envelope) alone."""
    await graph_sim.add_fault(kind="error", in_batch=True)

    reply = await create(graph, "campaigns", campaign_params("top"))
    assert reply.status == 200
    reply = await python_batch(graph, [create_op("campaigns", campaign_params("b"))])

    assert reply.status == 200
    entries = reply.body
    assert entries[0]["code"] == 500
    assert json.loads(entries[0]["body"])["error"]["code"] == 2
    assert [o["name"] for o in await graph_sim.objects()] == ["top"]


async def test_after_and_times_choose_which_matches_fire(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """after=2 times=2: matches 1-2 pass, 3-4 fail, 5-6 pass again."""
    rule = await graph_sim.add_fault(kind="error", op="read", after=2, times=2)

    statuses = []
    for _ in range(6):
        reply = await graph("GET", "act_1001")
        statuses.append(reply.status)

    assert statuses == [200, 200, 500, 500, 200, 200]
    [snapshot] = await graph_sim.faults()
    assert snapshot["id"] == rule["id"]
    assert (snapshot["matched"], snapshot["fired"]) == (6, 2)


async def _firing_pattern(sim: SimHandle, http: aiohttp.ClientSession) -> list[bool]:
    await sim.add_fault(id="coin", kind="error", op="read", probability=0.5)
    graph = Graph(http, sim.url)
    pattern = []
    for _ in range(40):
        reply = await graph("GET", "act_1001")
        pattern.append(reply.status == 500)
    return pattern


async def test_probability_with_a_seed_is_deterministic(
    graph_sim_factory: SimFactory, http: aiohttp.ClientSession
) -> None:
    """Same seed, rule and request order fire on the same requests; another seed differs."""
    first = await _firing_pattern(await graph_sim_factory({"seed": 7}), http)
    second = await _firing_pattern(await graph_sim_factory({"seed": 7}), http)
    other = await _firing_pattern(await graph_sim_factory({"seed": 8}), http)

    assert first == second
    assert 5 < sum(first) < 35, "p=0.5 over 40 requests fires some but not all"
    assert other != first


# --- where rules come from -----------------------------------------------------------------


async def test_faults_from_the_configuration_are_active_at_start(
    graph_sim_factory: SimFactory, http: aiohttp.ClientSession
) -> None:
    """Rules in the config's `faults` list are loaded with their ids and fire as written."""
    sim = await graph_sim_factory(
        {"faults": [{"id": "cfg-once", "kind": "error", "op": "create:campaign", "times": 1}]}
    )

    assert [r["id"] for r in await sim.faults()] == ["cfg-once"]
    graph = Graph(http, sim.url)
    first = await create(graph, "campaigns", campaign_params("first"))
    second = await create(graph, "campaigns", campaign_params("second"))

    assert (first.status, second.status) == (500, 200)
    assert [o["name"] for o in await sim.objects()] == ["second"]


async def test_invalid_fault_rule_is_refused_with_every_problem_listed(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """A bad rule answers 400 listing each problem, and no rule is added."""
    bad = {
        "kind": "explode",
        "op": "frobnicate",
        "probability": 2,
        "preset": "no_such_preset",
        "after": -1,
        "colour": "red",
    }
    reply = await graph.control("POST", "faults", bad)

    assert reply.status == 400
    problems = reply.body["error"]["problems"]
    for needle in ("kind", "op", "probability", "preset", "after", "colour"):
        assert any(needle in p for p in problems), (needle, problems)
    assert await graph_sim.faults() == []


async def test_a_bad_rule_in_a_list_adds_none_of_the_list(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """Rules posted together are all-or-nothing: one bad rule means none is added."""
    rules = [
        {"id": "good", "kind": "error"},
        {"id": "also-good", "kind": "latency", "latency_ms": 5},
        {"id": "bad", "kind": "error", "probability": 1.5},
    ]
    reply = await graph.control("POST", "faults", {"faults": rules})

    assert reply.status == 400
    assert any("probability" in p for p in reply.body["error"]["problems"])
    assert await graph_sim.faults() == []
    reply = await create(graph, "campaigns", campaign_params())
    assert reply.status == 200


async def test_a_duplicate_rule_id_is_refused(graph_sim: SimHandle, graph: Graph) -> None:
    """Two rules may not share an id; the refused one leaves the existing rule in place."""
    await graph_sim.add_fault(id="only", kind="error", op="read")
    reply = await graph.control("POST", "faults", {"id": "only", "kind": "latency"})

    assert reply.status == 400
    assert any("only" in p for p in reply.body["error"]["problems"])
    [rule] = await graph_sim.faults()
    assert rule["kind"] == "error"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("times", "twice"),
        ("subcode", "x"),
        ("in_batch", "yes"),
        ("account", 1002),
        ("latency_max_ms", "slow"),
    ],
)
async def test_optional_rule_fields_are_type_checked(
    graph_sim: SimHandle, graph: Graph, key: str, value: Any
) -> None:
    """Fields that default to None are validated too: a wrong type is a 400, not a later 500."""
    reply = await graph.control("POST", "faults", {"kind": "error", "op": "read", key: value})

    assert reply.status == 400, reply.body
    assert any(key in p for p in reply.body["error"]["problems"])
    assert await graph_sim.faults() == []
    reply = await graph("GET", "act_1001")
    assert reply.status == 200
