"""The simulator's control API (`/__sim/...`): ground truth, counters, and changing the world."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from gateway.testing import SimHandle
from tests.sim.support import (
    TOKEN,
    VERSION,
    Graph,
    campaign_params,
    create,
    form,
    new_ad,
    new_adset,
    new_campaign,
    new_creative,
    python_batch,
)


async def build_world(graph: Graph) -> dict[str, str]:
    """Campaign A (ad set, ad, creative) and a deleted campaign D in act_1001; B in act_1002."""
    a = await new_campaign(graph, "A")
    adset = await new_adset(graph, a)
    ad = await new_ad(graph, adset, await new_creative(graph))
    d = await new_campaign(graph, "D")
    assert (await graph("DELETE", d)).status == 200
    b = await new_campaign(graph, "B", account="act_1002")
    return {"a": a, "adset": adset, "ad": ad, "d": d, "b": b}


# --- reading state -------------------------------------------------------------------------


async def test_state_lists_the_default_accounts_and_tokens(graph_sim: SimHandle) -> None:
    """The initial world: active act_1001/act_1002, disabled act_2001, unsettled act_3001."""
    state = await graph_sim.state()

    statuses = {a["id"]: a["account_status"] for a in state["accounts"]}
    assert statuses == {"act_1001": 1, "act_1002": 1, "act_2001": 2, "act_3001": 3}
    kinds = {t["token"]: t["kind"] for t in state["tokens"]}
    assert kinds["sim-token-alice"] == "valid"
    assert kinds["sim-token-bob"] == "valid"
    assert kinds["sim-token-expired"] == "expired"
    assert kinds["sim-token-invalid"] == "invalid"
    assert kinds["sim-token-readonly"] == "no_permission"
    assert state["seed"] == 0
    assert state["default_version"] == "v25.0"
    assert state["faults"] == []
    assert state["counts"] == {"by_account": {}, "by_parent": {}}


async def test_objects_filter_by_type_account_parent_and_liveness(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """/__sim/objects narrows by type, account, parent and live, deleted objects included."""
    ids = await build_world(graph)

    everything = await graph_sim.objects()
    assert len(everything) == 6  # three campaigns, an ad set, a creative, an ad
    assert {o["id"] for o in await graph_sim.objects(type="campaign")} == {
        ids["a"],
        ids["d"],
        ids["b"],
    }
    assert [o["id"] for o in await graph_sim.objects(account="act_1002")] == [ids["b"]]
    assert {o["id"] for o in await graph_sim.objects(parent=ids["a"])} == {
        ids["adset"],
        ids["ad"],
    }
    assert [o["id"] for o in await graph_sim.objects(parent=ids["adset"])] == [ids["ad"]]
    live_campaigns = await graph_sim.objects(type="campaign", live=True)
    assert {o["id"] for o in live_campaigns} == {ids["a"], ids["b"]}
    [deleted] = [o for o in everything if o["id"] == ids["d"]]
    assert deleted["status"] == "DELETED"


async def test_counts_are_live_objects_per_account_and_per_parent(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """/__sim/counts counts live objects by type, per account and per parent id."""
    ids = await build_world(graph)

    counts = await graph_sim.counts()

    assert counts["by_account"] == {
        "act_1001": {"campaign": 1, "adset": 1, "ad": 1, "adcreative": 1},
        "act_1002": {"campaign": 1},
    }
    assert counts["by_parent"][ids["a"]] == {"adset": 1, "ad": 1}
    assert counts["by_parent"][ids["adset"]] == {"ad": 1}
    assert ids["d"] not in counts["by_parent"]


async def test_requests_count_operations_and_commits_per_label(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """/__sim/requests counts arrivals and committed creates per op label and per account."""
    await new_campaign(graph)
    reply = await graph("POST", "act_1001/campaigns", data={"name": "missing objective"})
    assert reply.status == 400
    await graph("GET", "act_1001/campaigns")

    counters = await graph_sim.requests(log=10)

    assert counters["http_requests"] == 3
    assert counters["operations"] == {"create:campaign": 2, "list:campaign": 1}
    assert counters["committed"] == {"create:campaign": 1}
    assert counters["by_account"] == {
        "act_1001 create:campaign": 2,
        "act_1001 list:campaign": 1,
    }
    assert [(e["method"], e["path"], e["status"], e["committed"]) for e in counters["log"]] == [
        ("POST", "act_1001/campaigns", 200, True),
        ("POST", "act_1001/campaigns", 400, False),
        ("GET", "act_1001/campaigns", 200, False),
    ]


async def test_request_log_never_contains_an_access_token(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """Tokens sent in the query, the body or a header appear nowhere in /__sim/requests."""
    secret = "sim-token-alice"
    await new_campaign(graph)
    await graph("GET", "act_1001/campaigns?fields=name")
    reply = await graph(
        "POST",
        "act_1001/campaigns",
        token=None,
        data=form(campaign_params()) | {"access_token": secret},
    )
    assert reply.status == 200
    reply = await graph(
        "GET", "act_1001", token=None, headers={"Authorization": f"Bearer {secret}"}
    )
    assert reply.status == 200
    op = {"method": "GET", "relative_url": f"act_1001/campaigns?access_token={secret}"}
    reply = await python_batch(graph, [op])
    assert (reply.status, reply.body[0]["code"]) == (200, 200)

    text = (await graph.control("GET", "requests", params={"log": "100"})).text

    assert len(json.loads(text)["log"]) == 6  # the batch and its one op are two entries
    assert secret not in text
    assert "access_token" not in text


async def test_access_log_lines_carry_the_path_but_never_the_query(
    graph_sim: SimHandle, graph: Graph, caplog: pytest.LogCaptureFixture
) -> None:
    """The simulator's access log records method, path and status, and no token."""
    caplog.set_level(logging.INFO)

    await graph("GET", "act_1001/campaigns?fields=name")

    lines = [json.loads(r.getMessage()) for r in caplog.records if "sim_request" in r.getMessage()]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", f"/{VERSION}/act_1001/campaigns", 200)
    ]
    assert TOKEN not in caplog.text


async def test_deleting_requests_resets_the_counters(graph_sim: SimHandle, graph: Graph) -> None:
    """DELETE /__sim/requests zeroes counters and empties the log; objects stay."""
    await new_campaign(graph)

    reply = await graph.control("DELETE", "requests")

    assert reply.status == 200
    assert reply.body == {"cleared": True}
    counters = await graph_sim.requests(log=10)
    assert counters["http_requests"] == 0
    assert counters["operations"] == {}
    assert counters["committed"] == {}
    assert counters["log"] == []
    assert len(await graph_sim.objects()) == 1


async def test_requests_with_a_non_integer_log_is_a_400(graph_sim: SimHandle, graph: Graph) -> None:
    """?log= must be an integer."""
    reply = await graph.control("GET", "requests", params={"log": "many"})
    assert reply.status == 400
    assert reply.body["error"]["problems"]


# --- changing the world --------------------------------------------------------------------


async def test_posting_a_new_account_makes_it_usable(graph_sim: SimHandle, graph: Graph) -> None:
    """POST /__sim/accounts with a new id adds it (201); creates in it then succeed."""
    reply = await graph.control("POST", "accounts", {"id": "act_5005", "name": "Fresh"})

    assert reply.status == 201
    assert reply.body["id"] == "act_5005"
    assert reply.body["account_status"] == 1
    await new_campaign(graph, account="act_5005")
    assert len(await graph_sim.objects(account="act_5005")) == 1


async def test_suspending_an_account_refuses_writes_but_not_reads(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """Updating act_1001 to account_status 2 (200) keeps its name; creates then get 403/200."""
    reply = await graph.control("POST", "accounts", {"id": "act_1001", "account_status": 2})

    assert reply.status == 200
    assert reply.body["account_status"] == 2
    assert reply.body["name"] == "Sim Active Account"
    reply = await create(graph, "campaigns", campaign_params())
    assert reply.status == 403
    assert reply.body["error"]["code"] == 200
    reply = await graph("GET", "act_1001?fields=account_status")
    assert reply.status == 200
    assert reply.body["account_status"] == 2
    assert await graph_sim.objects() == []


async def test_an_invalid_account_is_refused_listing_problems(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """A malformed id and an unknown status are both reported; nothing is added."""
    reply = await graph.control(
        "POST", "accounts", {"id": "1234", "name": "x", "account_status": 42}
    )

    assert reply.status == 400
    problems = reply.body["error"]["problems"]
    assert any("id" in p for p in problems)
    assert any("account_status" in p for p in problems)
    ids = {a["id"] for a in (await graph_sim.state())["accounts"]}
    assert ids == {"act_1001", "act_1002", "act_2001", "act_3001"}


async def test_posting_a_token_scoped_to_one_account(graph_sim: SimHandle, graph: Graph) -> None:
    """POST /__sim/tokens adds a token; it may use its account and sees others as missing."""
    reply = await graph.control("POST", "tokens", {"token": "scoped", "accounts": ["act_1002"]})

    assert reply.status == 201
    assert reply.body == {"token": "scoped", "kind": "valid"}
    reply = await create(graph, "campaigns", campaign_params(), account="act_1002", token="scoped")
    assert reply.status == 200
    reply = await create(graph, "campaigns", campaign_params(), token="scoped")
    assert reply.status == 400
    assert (reply.body["error"]["code"], reply.body["error"]["error_subcode"]) == (100, 33)


async def test_posting_an_expired_token_makes_it_answer_190_463(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """A token added with kind=expired is refused as expired."""
    await graph_sim.put_token(token="old", kind="expired")

    reply = await graph("GET", "me", token="old")

    assert reply.status == 400
    assert (reply.body["error"]["code"], reply.body["error"]["error_subcode"]) == (190, 463)


async def test_an_invalid_token_kind_is_refused(graph_sim: SimHandle, graph: Graph) -> None:
    """POST /__sim/tokens with an unknown kind is a 400 naming the field."""
    reply = await graph.control("POST", "tokens", {"token": "t", "kind": "meh"})

    assert reply.status == 400
    assert any("kind" in p for p in reply.body["error"]["problems"])


async def test_limits_with_bad_values_are_refused_listing_every_problem(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """POST /__sim/limits lists the problems of both sections at once and changes nothing."""
    before = await graph_sim.state()
    bad = {
        "object_limits": {"campaigns_per_account": 0},
        "rate_limits": {"max_score": -1, "throttle_error": "999", "speed": 3},
    }

    reply = await graph.control("POST", "limits", bad)

    assert reply.status == 400
    problems = " | ".join(reply.body["error"]["problems"])
    for needle in ("campaigns_per_account", "max_score", "throttle_error", "speed"):
        assert needle in problems, (needle, problems)
    after = await graph_sim.state()
    assert after["object_limits"] == before["object_limits"]
    assert after["rate_limits"] == before["rate_limits"]


@pytest.mark.parametrize(
    "bad",
    [
        {"object_limits": {"ads_per_adset": "many"}},
        {"object_limits": {"batch_max_ops": None}},
        {"rate_limits": {"max_score": "lots"}},
        {"rate_limits": {"mutation_qps": "fast"}},
    ],
)
async def test_limits_of_the_wrong_type_are_a_400_not_a_crash(
    graph_sim: SimHandle, graph: Graph, bad: dict[str, Any]
) -> None:
    """A limit of the wrong type is reported as a problem (400), not a 500."""
    [(section, fields)] = bad.items()
    [name] = fields
    before = (await graph_sim.state())[section]

    reply = await graph.control("POST", "limits", bad)

    assert reply.status == 400, reply.body
    assert any(name in p for p in reply.body["error"]["problems"])
    assert (await graph_sim.state())[section] == before


async def test_limits_apply_to_later_requests(graph_sim: SimHandle, graph: Graph) -> None:
    """campaigns_per_account=1: the second campaign in an account is refused (code 100)."""
    result = await graph_sim.set_limits(object_limits={"campaigns_per_account": 1})
    assert result["object_limits"]["campaigns_per_account"] == 1

    await new_campaign(graph)
    reply = await create(graph, "campaigns", campaign_params())

    assert reply.status == 400
    assert reply.body["error"]["code"] == 100
    assert len(await graph_sim.objects()) == 1


async def test_advancing_the_clock_moves_now_and_ends_a_throttle(
    graph_sim: SimHandle, graph: Graph
) -> None:
    """POST /__sim/clock moves `now` forward; a 60 s block is over after 61 s."""
    before = (await graph_sim.state())["now"]
    await graph_sim.throttle("act_1001", 60)
    reply = await graph("GET", "act_1001")
    assert reply.status == 400
    assert reply.body["error"]["code"] == 80004

    now = await graph_sim.advance(61)

    assert now - before >= 61
    reply = await graph("GET", "act_1001")
    assert reply.status == 200


async def test_a_negative_clock_advance_is_refused(graph_sim: SimHandle, graph: Graph) -> None:
    """The clock only moves forward."""
    reply = await graph.control("POST", "clock", {"advance_seconds": -5})

    assert reply.status == 400
    assert any("advance_seconds" in p for p in reply.body["error"]["problems"])


async def test_reset_returns_to_the_initial_world(graph_sim: SimHandle, graph: Graph) -> None:
    """POST /__sim/reset forgets objects, faults, counters, account and token changes."""
    initial = await graph_sim.state()
    await build_world(graph)
    await graph_sim.add_fault(kind="latency", latency_ms=1)
    await graph_sim.put_account(id="act_1001", account_status=2)
    await graph_sim.put_token(token="temporary")
    await graph_sim.set_limits(object_limits={"campaigns_per_account": 2})

    await graph_sim.reset()

    state = await graph_sim.state()
    assert await graph_sim.objects() == []
    assert state["faults"] == []
    assert state["accounts"] == initial["accounts"]
    assert state["tokens"] == initial["tokens"]
    assert state["object_limits"] == initial["object_limits"]
    assert (await graph_sim.requests())["http_requests"] == 0
    await new_campaign(graph)


async def test_reset_with_a_seed_changes_the_seed(graph_sim: SimHandle) -> None:
    """POST /__sim/reset {"seed": n} restarts the world with that seed."""
    await graph_sim.reset(seed=11)

    assert (await graph_sim.state())["seed"] == 11


@pytest.mark.parametrize("seed", [True, "7", 1.5])
async def test_reset_with_a_seed_that_is_not_an_integer_is_refused(
    graph_sim: SimHandle, graph: Graph, seed: Any
) -> None:
    """The seed must be an integer (a JSON `true` is not one); the world is left as it was."""
    await new_campaign(graph)

    reply = await graph.control("POST", "reset", {"seed": seed})

    assert reply.status == 400
    assert any("seed" in p for p in reply.body["error"]["problems"])
    assert (await graph_sim.state())["seed"] == 0
    assert len(await graph_sim.objects()) == 1


async def test_throttling_an_unknown_account_is_a_404(graph_sim: SimHandle, graph: Graph) -> None:
    """POST /__sim/accounts/{id}/throttle needs an existing account."""
    reply = await graph.control("POST", "accounts/act_999/throttle", {})

    assert reply.status == 404
    assert reply.body["error"]["problems"]


async def test_removing_one_fault_by_id(graph_sim: SimHandle, graph: Graph) -> None:
    """DELETE /__sim/faults/{id} removes that rule only; an unknown id is a 404."""
    await graph_sim.add_fault(id="one", kind="error", op="read")
    await graph_sim.add_fault(id="two", kind="error", op="create")

    reply = await graph.control("DELETE", "faults/one")
    assert (reply.status, reply.body) == (200, {"removed": "one"})
    assert [r["id"] for r in await graph_sim.faults()] == ["two"]
    reply = await graph.control("DELETE", "faults/one")
    assert reply.status == 404


@pytest.mark.parametrize(("method", "path"), [("GET", "nope"), ("DELETE", "state")])
async def test_unknown_control_paths_are_a_json_404(
    graph_sim: SimHandle, graph: Graph, method: str, path: str
) -> None:
    """Anything under /__sim/ that is not an endpoint is a 404 with a JSON problem list."""
    reply = await graph.control(method, path)
    assert reply.status == 404
    assert reply.content_type == "application/json"
    assert reply.body["error"]["problems"]
