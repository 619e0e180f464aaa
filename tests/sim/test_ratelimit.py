"""The simulator's rate limits and usage headers (graph-api-notes Part A §2.2, §3).

Every test talks real HTTP to a fresh simulator (`graph_sim`). Time only moves through
`graph_sim.advance()`; the little real time a test takes decays a score by a negligible amount,
so percentages are compared with a small tolerance.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from gateway.testing import SimHandle
from tests.sim.support import (
    ACCOUNT,
    ERROR_KEYS_REQUIRED,
    Graph,
    Reply,
    assert_graph_error,
    campaign_params,
    create,
)

OTHER_ACCOUNT = "act_1002"
# Small numbers so a test reaches the limit in a few calls: 12 points = 4 writes or 12 reads.
LIMITS = {"max_score": 12, "decay_seconds": 300, "block_seconds": 120}
PCT = pytest.approx  # percentages drift by ~0.01 with the real time a test takes
APP_KEYS = {"call_count", "total_cputime", "total_time"}
ACCOUNT_KEYS = {"acc_id_util_pct", "reset_time_duration", "ads_api_access_tier"}
BUC_KEYS = {
    "type",
    "call_count",
    "total_cputime",
    "total_time",
    "estimated_time_to_regain_access",
    "ads_api_access_tier",
}


class UsageReply(Reply):
    """A Reply that reads Graph's usage headers."""

    @classmethod
    def of(cls, reply: Reply) -> UsageReply:
        return cls(reply.status, reply.body, reply.headers, reply.text)

    @property
    def app_usage(self) -> dict[str, Any]:
        """X-App-Usage, checked for shape."""
        usage = json.loads(self.headers["X-App-Usage"])
        assert set(usage) == APP_KEYS
        for value in usage.values():
            assert isinstance(value, int)
            assert 0 <= value <= 100
        return dict(usage)

    @property
    def account_usage(self) -> dict[str, Any]:
        """X-Ad-Account-Usage, checked for shape."""
        usage = json.loads(self.headers["X-Ad-Account-Usage"])
        assert set(usage) == ACCOUNT_KEYS
        assert isinstance(usage["acc_id_util_pct"], int | float)
        assert isinstance(usage["reset_time_duration"], int)
        assert usage["ads_api_access_tier"] in {"development_access", "standard_access"}
        return dict(usage)

    def buc(self, account_id: str) -> dict[str, Any]:
        """The ads_management entry of X-Business-Use-Case-Usage for *account_id* (numeric)."""
        usage = json.loads(self.headers["X-Business-Use-Case-Usage"])
        assert isinstance(usage, dict)
        (entry,) = usage[account_id]
        assert set(entry) == BUC_KEYS
        assert entry["type"] == "ads_management"
        for key in ("call_count", "total_cputime", "total_time"):
            assert isinstance(entry[key], int)
            assert entry[key] == entry["call_count"]
        assert isinstance(entry["estimated_time_to_regain_access"], int)
        return dict(entry)

    def buc_accounts(self) -> set[str]:
        return set(json.loads(self.headers["X-Business-Use-Case-Usage"]))


class RateGraph(Graph):
    """A Graph client whose answers are UsageReplies, with reads and writes of known cost."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        super().__init__(http, base)
        self._names = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> UsageReply:
        return UsageReply.of(await super().__call__(*args, **kwargs))

    async def read(self, account: str = ACCOUNT) -> UsageReply:
        """A read costing one point: the ad account node."""
        return await self("GET", account, params={"fields": "name"})

    async def create(self, account: str = ACCOUNT) -> UsageReply:
        """A write costing three points: a campaign create."""
        self._names += 1
        params = campaign_params(f"campaign {self._names}")
        return UsageReply.of(await create(self, "campaigns", params, account=account))

    async def exhaust(self, account: str = ACCOUNT) -> UsageReply:
        """Create until refused; the refusal (with LIMITS: the fifth create)."""
        for _ in range(4):
            reply = await self.create(account)
            assert reply.status == 200, reply.body
        return await self.create(account)


@pytest.fixture
def graph(http: aiohttp.ClientSession, graph_sim: SimHandle) -> RateGraph:
    return RateGraph(http, graph_sim.url)


def throttle_error(reply: Reply, *, status: int, code: int, subcode: int | None) -> dict[str, Any]:
    """The error of a throttled answer, after checking its full shape."""
    err = assert_graph_error(reply, status=status, code=code, subcode=subcode)
    expected = set(ERROR_KEYS_REQUIRED)
    if subcode is not None:
        expected.add("error_subcode")
    assert set(err) - {"is_transient"} == expected, err
    assert err["message"].startswith(f"(#{code}) ")
    return err


class TestUsageHeaders:
    async def test_ad_account_responses_carry_parseable_usage_headers(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """Reads and writes of an ad account carry X-App-Usage, X-Ad-Account-Usage and BUC."""
        created = await graph.create()
        read = await graph.read()
        node = await graph("GET", created.body["id"], params={"fields": "name"})

        for reply in (created, read, node):
            assert reply.status == 200
            assert reply.app_usage == {"call_count": 0, "total_cputime": 0, "total_time": 0}
            assert reply.account_usage["ads_api_access_tier"] == "standard_access"
            assert reply.buc_accounts() == {"1001"}
            assert reply.buc("1001") == {
                "type": "ads_management",
                "call_count": 0,
                "total_cputime": 0,
                "total_time": 0,
                "estimated_time_to_regain_access": 0,
                "ads_api_access_tier": "standard_access",
            }

    async def test_object_reads_report_the_objects_own_account(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """Reading an object by id reports the usage of the account that owns it."""
        created = await graph.create(OTHER_ACCOUNT)

        node = await graph("GET", created.body["id"], params={"fields": "name"})

        assert node.status == 200
        assert node.buc_accounts() == {"1002"}

    async def test_calls_without_an_ad_account_carry_only_app_usage(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """`/me` touches no ad account: X-App-Usage only."""
        reply = await graph("GET", "me")

        assert reply.status == 200
        assert reply.app_usage == {"call_count": 0, "total_cputime": 0, "total_time": 0}
        assert "X-Ad-Account-Usage" not in reply.headers
        assert "X-Business-Use-Case-Usage" not in reply.headers

    async def test_usage_headers_appear_once_usage_reaches_header_min_pct(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """Below `header_min_pct` Graph sends no usage headers; at or above it, it does."""
        await graph_sim.set_limits(rate_limits=LIMITS | {"header_min_pct": 20})

        quiet = await graph.read()
        loud = await graph.create()

        assert quiet.status == 200
        for name in ("X-App-Usage", "X-Ad-Account-Usage", "X-Business-Use-Case-Usage"):
            assert name not in quiet.headers
        assert loud.account_usage["acc_id_util_pct"] == PCT(400 / 12, abs=0.05)
        assert loud.buc("1001")["call_count"] == 33
        assert "X-App-Usage" not in loud.headers


class TestScore:
    async def test_reads_cost_one_point_and_writes_three(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """With a max score of 12 a read adds 8.33 % and a write 25 % to the usage headers."""
        await graph_sim.set_limits(rate_limits=LIMITS)

        read = await graph.read()
        write = await graph.create()
        listing = await graph("GET", f"{ACCOUNT}/campaigns")

        assert read.account_usage["acc_id_util_pct"] == PCT(100 / 12, abs=0.05)
        assert read.buc("1001")["call_count"] == 8
        assert write.account_usage["acc_id_util_pct"] == PCT(400 / 12, abs=0.05)
        assert write.buc("1001")["call_count"] == 33
        assert listing.account_usage["acc_id_util_pct"] == PCT(500 / 12, abs=0.05)
        assert listing.buc("1001")["call_count"] == 41
        # 5 points decaying at 12 points per 300 s reach zero in 125 s.
        assert listing.account_usage["reset_time_duration"] in (124, 125)
        assert listing.buc("1001")["estimated_time_to_regain_access"] == 0

    async def test_call_that_would_pass_the_max_score_is_throttled(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """Four writes reach 12 points; the fifth gets 80004/2446079 and regains in 2 minutes."""
        await graph_sim.set_limits(rate_limits=LIMITS)

        refused = await graph.exhaust()

        throttle_error(refused, status=400, code=80004, subcode=2446079)
        assert refused.buc("1001")["estimated_time_to_regain_access"] == 2
        assert refused.buc("1001")["call_count"] == 100
        assert refused.account_usage["acc_id_util_pct"] == PCT(100.0)
        assert len(await graph_sim.objects(type="campaign")) == 4

    async def test_throttled_account_stays_throttled_until_the_block_ends(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """During the 120 s block every call is refused, however cheap; after it, calls work."""
        await graph_sim.set_limits(rate_limits=LIMITS)
        await graph.exhaust()

        still = await graph.read()
        throttle_error(still, status=400, code=80004, subcode=2446079)
        assert still.buc("1001")["estimated_time_to_regain_access"] == 2
        await graph_sim.advance(60)
        later = await graph.read()
        throttle_error(later, status=400, code=80004, subcode=2446079)
        assert later.buc("1001")["estimated_time_to_regain_access"] == 1
        await graph_sim.advance(61)
        read = await graph.read()
        write = await graph.create()

        assert read.status == 200
        assert write.status == 200
        assert write.buc("1001")["estimated_time_to_regain_access"] == 0
        assert len(await graph_sim.objects(type="campaign")) == 5

    async def test_score_decays_as_the_clock_advances(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """The score falls linearly: 9 points less 150 s at 12 per 300 s leave 3."""
        await graph_sim.set_limits(rate_limits=LIMITS)
        for _ in range(3):
            assert (await graph.create()).status == 200

        await graph_sim.advance(150)
        half = await graph.read()
        await graph_sim.advance(300)
        empty = await graph.read()

        assert half.account_usage["acc_id_util_pct"] == PCT(400 / 12, abs=0.05)
        assert empty.account_usage["acc_id_util_pct"] == PCT(100 / 12, abs=0.05)

    async def test_reset_time_duration_is_the_time_until_the_score_is_zero(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """After `reset_time_duration` seconds the score has decayed to nothing."""
        await graph_sim.set_limits(rate_limits=LIMITS)
        for _ in range(2):
            assert (await graph.create()).status == 200
        last = await graph.create()
        reset = last.account_usage["reset_time_duration"]
        assert reset in (224, 225)

        await graph_sim.advance(reset)
        after = await graph.read()

        assert after.account_usage["acc_id_util_pct"] == PCT(100 / 12, abs=0.05)

    async def test_reset_time_duration_of_a_blocked_account_reaches_a_zero_score(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """A blocked account's `reset_time_duration` also counts down to a score of zero."""
        await graph_sim.set_limits(rate_limits=LIMITS)
        refused = await graph.exhaust()
        reset = refused.account_usage["reset_time_duration"]
        assert reset >= LIMITS["block_seconds"]

        await graph_sim.advance(reset + 1)
        after = await graph.read()

        assert after.status == 200
        assert after.account_usage["acc_id_util_pct"] == PCT(100 / 12, abs=0.05)

    async def test_another_account_is_not_throttled_by_the_first(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """act_1002 keeps working while act_1001 is blocked; each reports only its own usage."""
        await graph_sim.set_limits(rate_limits=LIMITS)
        await graph.exhaust()

        read = await graph.read(OTHER_ACCOUNT)
        write = await graph.create(OTHER_ACCOUNT)
        blocked = await graph.read()

        assert read.status == 200
        assert read.buc_accounts() == {"1002"}
        assert read.buc("1002")["estimated_time_to_regain_access"] == 0
        assert read.account_usage["acc_id_util_pct"] == PCT(100 / 12, abs=0.05)
        assert write.status == 200
        assert write.account_usage["acc_id_util_pct"] == PCT(400 / 12, abs=0.05)
        throttle_error(blocked, status=400, code=80004, subcode=2446079)

    @pytest.mark.parametrize(
        ("kind", "code", "subcode", "wording"),
        [
            ("80004", 80004, 2446079, "too many calls to this ad-account"),
            ("17", 17, 2446079, "User request limit reached"),
            ("613", 613, 1487742, "too many calls from this ad-account"),
        ],
    )
    async def test_throttle_error_selects_the_code_a_blocked_account_gets(
        self,
        graph: RateGraph,
        graph_sim: SimHandle,
        kind: str,
        code: int,
        subcode: int,
        wording: str,
    ) -> None:
        """`throttle_error` picks 80004/2446079, 17/2446079 or 613/1487742 (all HTTP 400)."""
        await graph_sim.set_limits(rate_limits=LIMITS | {"throttle_error": kind})

        refused = await graph.exhaust()
        blocked = await graph.read()

        for reply in (refused, blocked):
            err = throttle_error(reply, status=400, code=code, subcode=subcode)
            assert wording in err["message"]

    async def test_control_throttle_blocks_the_account_at_once(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """`throttle("act_1001", 300)` refuses the very next call for 5 minutes."""
        state = await graph_sim.throttle(ACCOUNT, 300)
        assert state["blocked_for_seconds"] == PCT(300, abs=0.1)

        blocked = await graph.read()
        other = await graph.read(OTHER_ACCOUNT)
        await graph_sim.advance(301)
        after = await graph.read()

        throttle_error(blocked, status=400, code=80004, subcode=2446079)
        assert blocked.buc("1001")["estimated_time_to_regain_access"] == 5
        assert blocked.account_usage["reset_time_duration"] >= 300
        assert other.status == 200
        assert after.status == 200

    async def test_throttled_creates_store_nothing(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """A create refused by the throttle is counted as arrived but never committed."""
        await graph_sim.throttle(ACCOUNT, 60)

        refused = await graph.create()

        throttle_error(refused, status=400, code=80004, subcode=2446079)
        assert await graph_sim.objects() == []
        traffic = await graph_sim.requests()
        assert traffic["operations"] == {"create:campaign": 1}
        assert traffic["committed"] == {}


class TestMutationQps:
    async def test_creates_past_the_mutation_qps_get_613_5044001(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """With mutation_qps 3 the 4th create in a second is refused; a second later it works."""
        await graph_sim.set_limits(rate_limits={"mutation_qps": 3})
        for _ in range(3):
            assert (await graph.create()).status == 200

        refused = await graph.create()
        read = await graph.read()
        other = await graph.create(OTHER_ACCOUNT)
        await graph_sim.advance(1.1)
        again = await graph.create()

        throttle_error(refused, status=400, code=613, subcode=5044001)
        assert read.status == 200
        assert other.status == 200
        assert again.status == 200
        assert len(await graph_sim.objects(account_id=ACCOUNT, type="campaign")) == 4

    async def test_edits_count_toward_the_mutation_qps(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """Edits of ad objects share the mutation QPS with creates."""
        created = await graph.create()
        campaign_id = created.body["id"]
        await graph_sim.advance(1.1)
        await graph_sim.set_limits(rate_limits={"mutation_qps": 2})

        first = await graph("POST", campaign_id, data={"name": "one"})
        second = await graph("POST", campaign_id, data={"name": "two"})
        third = await graph("POST", campaign_id, data={"name": "three"})

        assert first.body == {"success": True}
        assert second.body == {"success": True}
        throttle_error(third, status=400, code=613, subcode=5044001)
        (row,) = await graph_sim.objects(type="campaign")
        assert row["name"] == "two"


class TestAppLimit:
    async def test_calls_past_the_app_allowance_get_code_4(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """With 5 app calls per hour the sixth call is HTTP 403 code 4; an hour later it works."""
        await graph_sim.set_limits(rate_limits={"app_calls_per_hour": 5})
        replies = [await graph("GET", "me") for _ in range(5)]

        refused = await graph("GET", "me")
        refused_account = await graph.read()
        await graph_sim.advance(3601)
        again = await graph.read()

        assert [r.status for r in replies] == [200] * 5
        assert [r.app_usage["call_count"] for r in replies] == [20, 40, 60, 80, 100]
        for reply in (refused, refused_account):
            err = throttle_error(reply, status=403, code=4, subcode=None)
            assert err["is_transient"] is True
            assert reply.app_usage == {"call_count": 100, "total_cputime": 100, "total_time": 100}
        assert again.status == 200


class TestBatch:
    async def test_each_batch_op_counts_toward_the_score(
        self, graph: RateGraph, graph_sim: SimHandle
    ) -> None:
        """With max score 9 a batch of 5 creates succeeds 3 times; the rest are throttle entries."""
        await graph_sim.set_limits(rate_limits={"max_score": 9})
        ops = [
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns",
                "body": f"name=b{i}&objective=OUTCOME_TRAFFIC&special_ad_categories=%5B%5D",
            }
            for i in range(5)
        ]

        reply = await graph("POST", "/v26.0/", data={"batch": json.dumps(ops)})

        assert reply.status == 200
        assert [entry["code"] for entry in reply.body] == [200, 200, 200, 400, 400]
        ids = [json.loads(entry["body"])["id"] for entry in reply.body[:3]]
        for entry in reply.body[3:]:
            body = json.loads(entry["body"])
            assert set(body) == {"error"}
            assert body["error"]["code"] == 80004
            assert body["error"]["error_subcode"] == 2446079
            headers = {h["name"]: h["value"] for h in entry["headers"]}
            (buc,) = json.loads(headers["X-Business-Use-Case-Usage"])["1001"]
            assert buc["estimated_time_to_regain_access"] == 1
        assert reply.buc("1001")["estimated_time_to_regain_access"] == 1
        rows = await graph_sim.objects(type="campaign")
        assert sorted(row["id"] for row in rows) == sorted(ids)
        assert [row["name"] for row in rows] == ["b0", "b1", "b2"]
        traffic = await graph_sim.requests()
        assert traffic["operations"]["create:campaign"] == 5
        assert traffic["committed"]["create:campaign"] == 3
