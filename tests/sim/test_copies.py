"""The simulator's copy endpoints: `POST /{campaign|adset|ad}/copies` (graph-api-notes §5).

Every test talks real HTTP to a fresh simulator (`graph_sim`) and checks each copied id
against its ground truth (`graph_sim.objects()`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from gateway.testing import SimHandle
from tests.sim.support import (
    ACCOUNT,
    TARGETING,
    UNPINNED,
    Graph,
    Reply,
    assert_graph_error,
    form,
    new_ad,
    new_adset,
    new_campaign,
    new_creative,
    python_batch,
)

COPY_ENTRY_KEYS = {"ad_object_type", "source_id", "copied_id"}


@dataclass
class Tree:
    """A campaign and what was created under it: ad set id -> its ad ids, in creation order."""

    campaign: str
    adsets: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ads(self) -> list[str]:
        return [ad for ads in self.adsets.values() for ad in ads]


class CopyGraph(Graph):
    """A Graph client that also builds ad trees (ACTIVE unless told) and copies them."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        super().__init__(http, base)
        self._creative: str | None = None

    async def campaign(self, name: str, status: str = "ACTIVE") -> str:
        return await new_campaign(self, name, status=status)

    async def adset(self, campaign_id: str, name: str, status: str = "ACTIVE") -> str:
        return await new_adset(self, campaign_id, name, status=status)

    async def ad(self, adset_id: str, name: str, status: str = "ACTIVE") -> str:
        if self._creative is None:
            self._creative = await new_creative(self, "creative")
        return await new_ad(self, adset_id, self._creative, name, status=status)

    async def tree(self, name: str, shape: list[int], status: str = "ACTIVE") -> Tree:
        """A campaign `name` with one ad set per entry of *shape*, holding that many ads."""
        tree = Tree(await self.campaign(name, status))
        for i, n_ads in enumerate(shape):
            adset_id = await self.adset(tree.campaign, f"{name} set {i}", status)
            tree.adsets[adset_id] = [
                await self.ad(adset_id, f"{name} set {i} ad {j}", status) for j in range(n_ads)
            ]
        return tree

    async def copy(self, source_id: str, **params: Any) -> Reply:
        """`POST /{id}/copies`, form-encoded as the Python SDK sends it."""
        return await self("POST", f"{source_id}/copies", data=form(params))


@pytest.fixture
def graph(http: aiohttp.ClientSession, graph_sim: SimHandle) -> CopyGraph:
    return CopyGraph(http, graph_sim.url)


async def truth(sim: SimHandle) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in await sim.objects()}


def copied_ids(body: Mapping[str, Any]) -> dict[str, str]:
    """source id -> copied id from `ad_object_ids`, after checking each entry's shape."""
    entries = body["ad_object_ids"]
    assert isinstance(entries, list)
    for entry in entries:
        assert set(entry) == COPY_ENTRY_KEYS
        assert entry["ad_object_type"] in {"campaign", "ad_set", "ad"}
        assert entry["copied_id"].isdigit()
    mapping = {entry["source_id"]: entry["copied_id"] for entry in entries}
    assert len(mapping) == len(entries)
    assert len(set(mapping.values())) == len(entries)
    return mapping


def refused(reply: Reply) -> dict[str, Any]:
    """The error of a copy refused with HTTP 400, code 100."""
    return assert_graph_error(reply, status=400, code=100, subcode=UNPINNED, type_=UNPINNED)


class TestCampaignCopies:
    async def test_deep_copy_copies_ad_sets_and_ads_under_the_new_campaign(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """Deep copy answers every source/copy pair and stores each copy under copied parents."""
        tree = await graph.tree("Spring", [2, 1])
        before = await truth(graph_sim)

        reply = await graph.copy(tree.campaign, deep_copy=True)

        assert reply.status == 200
        assert set(reply.body) == {"copied_campaign_id", "ad_object_ids"}
        new_campaign = reply.body["copied_campaign_id"]
        assert reply.body["ad_object_ids"][0] == {
            "ad_object_type": "campaign",
            "source_id": tree.campaign,
            "copied_id": new_campaign,
        }
        mapping = copied_ids(reply.body)
        types = {e["source_id"]: e["ad_object_type"] for e in reply.body["ad_object_ids"]}
        assert set(mapping) == {tree.campaign, *tree.adsets, *tree.ads}
        assert Counter(types.values()) == {"campaign": 1, "ad_set": 2, "ad": 3}
        after = await truth(graph_sim)
        assert set(after) == set(before) | set(mapping.values())
        assert after[new_campaign]["type"] == "campaign"
        assert after[new_campaign]["account_id"] == ACCOUNT
        assert after[new_campaign]["source_id"] == tree.campaign
        for adset_id, ad_ids in tree.adsets.items():
            assert types[adset_id] == "ad_set"
            new_adset = after[mapping[adset_id]]
            assert new_adset["type"] == "adset"
            assert new_adset["campaign_id"] == new_campaign
            assert new_adset["source_id"] == adset_id
            assert new_adset["name"] == before[adset_id]["name"]
            for ad_id in ad_ids:
                assert types[ad_id] == "ad"
                new_ad = after[mapping[ad_id]]
                assert new_ad["type"] == "ad"
                assert new_ad["adset_id"] == new_adset["id"]
                assert new_ad["campaign_id"] == new_campaign
                assert new_ad["source_id"] == ad_id
                assert new_ad["name"] == before[ad_id]["name"]
        for object_id, row in before.items():
            assert after[object_id] == row

    async def test_shallow_copy_copies_only_the_campaign(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """Without deep_copy only the campaign is copied."""
        tree = await graph.tree("Shallow", [1])

        reply = await graph.copy(tree.campaign)

        assert reply.status == 200
        new_campaign = reply.body["copied_campaign_id"]
        assert reply.body == {
            "copied_campaign_id": new_campaign,
            "ad_object_ids": [
                {
                    "ad_object_type": "campaign",
                    "source_id": tree.campaign,
                    "copied_id": new_campaign,
                }
            ],
        }
        assert await graph_sim.objects(campaign_id=new_campaign) == []
        counts = await graph_sim.counts()
        assert counts["by_account"][ACCOUNT] == {
            "campaign": 2,
            "adset": 1,
            "ad": 1,
            "adcreative": 1,
        }

    async def test_node_style_json_copy_request_works(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """A JSON body with native booleans and objects copies like the form-encoded one."""
        tree = await graph.tree("Json", [1])

        reply = await graph(
            "POST",
            f"{tree.campaign}/copies",
            json_body={
                "deep_copy": True,
                "rename_options": {"rename_strategy": "DEEP_RENAME", "rename_suffix": " (json)"},
                "id": tree.campaign,
            },
        )

        assert reply.status == 200
        rows = await truth(graph_sim)
        copies = {row["source_id"]: row["name"] for row in rows.values() if row["source_id"]}
        assert copies == {
            tree.campaign: "Json (json)",
            next(iter(tree.adsets)): "Json set 0 (json)",
            tree.ads[0]: "Json set 0 ad 0 (json)",
        }


class TestStatusOption:
    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({}, "PAUSED"),
            ({"status_option": "PAUSED"}, "PAUSED"),
            ({"status_option": "ACTIVE"}, "ACTIVE"),
        ],
        ids=["default", "paused", "active"],
    )
    async def test_status_option_sets_every_copy_status(
        self, graph: CopyGraph, graph_sim: SimHandle, params: dict[str, str], expected: str
    ) -> None:
        """PAUSED (the default) and ACTIVE apply to the copy and all its children."""
        tree = await graph.tree("Status", [1, 1], status="ACTIVE")
        await graph("POST", tree.ads[0], data={"status": "PAUSED"})

        reply = await graph.copy(tree.campaign, deep_copy=True, **params)

        assert reply.status == 200
        rows = await truth(graph_sim)
        for copied in copied_ids(reply.body).values():
            assert rows[copied]["status"] == expected

    async def test_inherited_from_source_keeps_each_source_status(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """INHERITED_FROM_SOURCE gives each copy the status of the object it was copied from."""
        campaign = await graph.campaign("Mixed", "ACTIVE")
        paused_set = await graph.adset(campaign, "paused set", "PAUSED")
        active_set = await graph.adset(campaign, "active set", "ACTIVE")
        paused_ad = await graph.ad(active_set, "paused ad", "PAUSED")
        active_ad = await graph.ad(paused_set, "active ad", "ACTIVE")

        reply = await graph.copy(campaign, deep_copy=True, status_option="INHERITED_FROM_SOURCE")

        assert reply.status == 200
        mapping = copied_ids(reply.body)
        rows = await truth(graph_sim)
        expected = {
            campaign: "ACTIVE",
            paused_set: "PAUSED",
            active_set: "ACTIVE",
            paused_ad: "PAUSED",
            active_ad: "ACTIVE",
        }
        assert {source: rows[mapping[source]]["status"] for source in mapping} == expected

    async def test_unknown_status_option_is_refused(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """An unknown status_option is error 100 and stores nothing."""
        tree = await graph.tree("Bad status", [1])
        before = await truth(graph_sim)

        reply = await graph.copy(tree.campaign, deep_copy=True, status_option="DELETED")

        refused(reply)
        assert await truth(graph_sim) == before


class TestRenameOptions:
    @pytest.mark.parametrize(
        ("rename", "campaign_name", "adset_name", "ad_name"),
        [
            (None, "Sale - Copy", "Sale set 0", "Sale set 0 ad 0"),
            (
                {"rename_strategy": "ONLY_TOP_LEVEL_RENAME"},
                "Sale - Copy",
                "Sale set 0",
                "Sale set 0 ad 0",
            ),
            (
                {"rename_strategy": "DEEP_RENAME"},
                "Sale - Copy",
                "Sale set 0 - Copy",
                "Sale set 0 ad 0 - Copy",
            ),
            ({"rename_strategy": "NO_RENAME"}, "Sale", "Sale set 0", "Sale set 0 ad 0"),
            (
                {"rename_prefix": "[B] ", "rename_suffix": " v2"},
                "[B] Sale v2",
                "Sale set 0",
                "Sale set 0 ad 0",
            ),
            (
                {"rename_strategy": "DEEP_RENAME", "rename_prefix": "X-", "rename_suffix": ""},
                "X-Sale",
                "X-Sale set 0",
                "X-Sale set 0 ad 0",
            ),
        ],
        ids=["default", "top-level", "deep", "none", "prefix-suffix", "deep-prefix"],
    )
    async def test_rename_options_rename_the_chosen_levels(
        self,
        graph: CopyGraph,
        graph_sim: SimHandle,
        rename: dict[str, str] | None,
        campaign_name: str,
        adset_name: str,
        ad_name: str,
    ) -> None:
        """Default suffix " - Copy" on the top level only; strategies, prefix and suffix apply."""
        tree = await graph.tree("Sale", [1])
        params: dict[str, Any] = {"deep_copy": True}
        if rename is not None:
            params["rename_options"] = rename

        reply = await graph.copy(tree.campaign, **params)

        assert reply.status == 200
        mapping = copied_ids(reply.body)
        rows = await truth(graph_sim)
        assert rows[mapping[tree.campaign]]["name"] == campaign_name
        assert rows[mapping[next(iter(tree.adsets))]]["name"] == adset_name
        assert rows[mapping[tree.ads[0]]]["name"] == ad_name
        assert rows[tree.campaign]["name"] == "Sale"

    async def test_unknown_rename_strategy_is_refused(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """An unknown rename_strategy is error 100 and stores nothing."""
        tree = await graph.tree("Bad rename", [1])
        before = await truth(graph_sim)

        reply = await graph.copy(tree.campaign, rename_options={"rename_strategy": "SHOUT"})

        refused(reply)
        assert await truth(graph_sim) == before


class TestAdSetCopies:
    async def test_ad_set_copy_stays_in_its_campaign_by_default(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """`POST /{adset}/copies` answers copied_adset_id; the copy joins the source's campaign."""
        tree = await graph.tree("Home", [1])
        (adset_id,) = tree.adsets

        reply = await graph.copy(adset_id)

        assert reply.status == 200
        new_adset = reply.body["copied_adset_id"]
        assert reply.body == {
            "copied_adset_id": new_adset,
            "ad_object_ids": [
                {"ad_object_type": "ad_set", "source_id": adset_id, "copied_id": new_adset}
            ],
        }
        rows = await truth(graph_sim)
        assert rows[new_adset]["type"] == "adset"
        assert rows[new_adset]["campaign_id"] == tree.campaign
        assert rows[new_adset]["name"] == "Home set 0 - Copy"
        assert rows[new_adset]["status"] == "PAUSED"
        assert await graph_sim.objects(adset_id=new_adset) == []
        fields = "billing_event,daily_budget,targeting,campaign_id"
        source = await graph("GET", adset_id, params={"fields": fields})
        copy = await graph("GET", new_adset, params={"fields": fields})
        assert copy.body == source.body | {"id": new_adset}
        assert copy.body["targeting"] == TARGETING

    async def test_ad_set_copy_can_move_to_another_campaign_with_its_ads(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """With campaign_id and deep_copy the copy and its ads land in the other campaign."""
        tree = await graph.tree("Source", [2])
        (adset_id,) = tree.adsets
        other = await graph.campaign("Target")

        reply = await graph.copy(adset_id, campaign_id=other, deep_copy=True)

        assert reply.status == 200
        assert set(reply.body) == {"copied_adset_id", "ad_object_ids"}
        new_adset = reply.body["copied_adset_id"]
        mapping = copied_ids(reply.body)
        assert mapping[adset_id] == new_adset
        assert set(mapping) == {adset_id, *tree.ads}
        rows = await truth(graph_sim)
        assert rows[new_adset]["campaign_id"] == other
        for ad_id in tree.ads:
            new_ad = rows[mapping[ad_id]]
            assert new_ad["type"] == "ad"
            assert new_ad["adset_id"] == new_adset
            assert new_ad["campaign_id"] == other
            assert new_ad["source_id"] == ad_id
        assert await graph_sim.objects(campaign_id=tree.campaign, type="adset") == [rows[adset_id]]

    async def test_ad_set_copy_into_a_missing_campaign_is_refused(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """A campaign_id that names no campaign is error 100 and stores nothing."""
        tree = await graph.tree("Lost", [1])
        (adset_id,) = tree.adsets
        before = await truth(graph_sim)

        reply = await graph.copy(adset_id, campaign_id="999999999")

        refused(reply)
        assert await truth(graph_sim) == before

    async def test_copy_exposes_its_source_id(self, graph: CopyGraph, graph_sim: SimHandle) -> None:
        """`source_adset_id` (and the campaign and ad variants) name the source; "0" if none."""
        tree = await graph.tree("Origin", [1])
        (adset_id,) = tree.adsets
        reply = await graph.copy(adset_id)
        adset_copy = reply.body["copied_adset_id"]
        campaign_copy = (await graph.copy(tree.campaign)).body["copied_campaign_id"]
        ad_copy = (await graph.copy(tree.ads[0])).body["copied_ad_id"]

        read = await graph("GET", adset_copy, params={"fields": "source_adset_id,name"})
        assert read.body == {
            "id": adset_copy,
            "source_adset_id": adset_id,
            "name": "Origin set 0 - Copy",
        }
        original = await graph("GET", adset_id, params={"fields": "source_adset_id"})
        assert original.body == {"id": adset_id, "source_adset_id": "0"}
        read = await graph("GET", campaign_copy, params={"fields": "source_campaign_id"})
        assert read.body == {"id": campaign_copy, "source_campaign_id": tree.campaign}
        read = await graph("GET", ad_copy, params={"fields": "source_ad_id"})
        assert read.body == {"id": ad_copy, "source_ad_id": tree.ads[0]}


class TestAdCopies:
    async def test_ad_copy_answers_only_the_copied_ad_id(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """`POST /{ad}/copies` answers `{copied_ad_id}`; the copy stays in the source ad set."""
        tree = await graph.tree("Solo", [1])
        (adset_id,) = tree.adsets

        reply = await graph.copy(tree.ads[0])

        assert reply.status == 200
        assert set(reply.body) == {"copied_ad_id"}
        new_ad = reply.body["copied_ad_id"]
        rows = await truth(graph_sim)
        assert rows[new_ad]["type"] == "ad"
        assert rows[new_ad]["adset_id"] == adset_id
        assert rows[new_ad]["campaign_id"] == tree.campaign
        assert rows[new_ad]["source_id"] == tree.ads[0]
        assert rows[new_ad]["name"] == "Solo set 0 ad 0 - Copy"
        assert rows[new_ad]["status"] == "PAUSED"

    async def test_ad_copy_into_another_ad_set(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """With adset_id the copied ad lands in that ad set and its campaign."""
        tree = await graph.tree("From", [1])
        other = await graph.tree("To", [0])
        (target_adset,) = other.adsets

        reply = await graph.copy(tree.ads[0], adset_id=target_adset)

        assert reply.status == 200
        new_ad = reply.body["copied_ad_id"]
        rows = await truth(graph_sim)
        assert rows[new_ad]["adset_id"] == target_adset
        assert rows[new_ad]["campaign_id"] == other.campaign
        assert [row["id"] for row in await graph_sim.objects(adset_id=target_adset)] == [new_ad]


class TestLimits:
    @pytest.mark.parametrize("level", ["campaign", "adset"])
    async def test_deep_copy_of_more_than_three_ads_is_refused(
        self, graph: CopyGraph, graph_sim: SimHandle, level: str
    ) -> None:
        """A synchronous deep copy of more than 3 ads is error 100 and stores nothing."""
        tree = await graph.tree("Big", [4] if level == "adset" else [2, 2])
        source = next(iter(tree.adsets)) if level == "adset" else tree.campaign
        before = await truth(graph_sim)

        reply = await graph.copy(source, deep_copy=True)

        err = refused(reply)
        assert err["type"] == "FacebookApiException"
        assert await truth(graph_sim) == before
        traffic = await graph_sim.requests()
        assert "copy" not in {op.split(":")[0] for op in traffic["committed"]}

    async def test_deep_copy_of_exactly_three_ads_is_allowed(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """Three ads is the synchronous deep-copy maximum, and is copied."""
        tree = await graph.tree("Three", [3])
        (adset_id,) = tree.adsets

        reply = await graph.copy(adset_id, deep_copy=True)

        assert reply.status == 200
        assert len(copied_ids(reply.body)) == 4

    async def test_one_ad_set_copied_49_times_fills_the_campaign_to_50(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """The 1-50-1 strategy: 49 deep copies of one ad set with one ad give 50 and 50."""
        tree = await graph.tree("Fifty", [1])
        (adset_id,) = tree.adsets

        new_adsets = set()
        for _ in range(49):
            reply = await graph.copy(adset_id, deep_copy=True)
            assert reply.status == 200, reply.body
            new_adsets.add(reply.body["copied_adset_id"])

        counts = await graph_sim.counts()
        assert counts["by_parent"][tree.campaign] == {"adset": 50, "ad": 50}
        adsets = await graph_sim.objects(campaign_id=tree.campaign, type="adset")
        assert {row["id"] for row in adsets} == new_adsets | {adset_id}
        ads = await graph_sim.objects(campaign_id=tree.campaign, type="ad")
        assert len(ads) == 50
        assert Counter(row["adset_id"] for row in ads) == dict.fromkeys(new_adsets | {adset_id}, 1)
        traffic = await graph_sim.requests()
        assert traffic["committed"]["copy:adset"] == 49

    async def test_49_copies_in_one_batch_fill_the_campaign_to_50(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """The 1-50-1 copies sent as one batch of 49 copy ops give 50 ad sets and 50 ads."""
        tree = await graph.tree("Batched", [1])
        (adset_id,) = tree.adsets
        ops = [
            {"method": "POST", "relative_url": f"{adset_id}/copies", "body": "deep_copy=true"}
        ] * 49

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        assert [entry["code"] for entry in reply.body] == [200] * 49
        bodies = [json.loads(entry["body"]) for entry in reply.body]
        for body in bodies:
            assert set(body) == {"copied_adset_id", "ad_object_ids"}
        counts = await graph_sim.counts()
        assert counts["by_parent"][tree.campaign] == {"adset": 50, "ad": 50}
        rows = await truth(graph_sim)
        for body in bodies:
            mapping = copied_ids(body)
            assert rows[mapping[adset_id]]["campaign_id"] == tree.campaign
            assert rows[mapping[tree.ads[0]]]["adset_id"] == mapping[adset_id]
        traffic = await graph_sim.requests()
        assert traffic["committed"]["copy:adset"] == 49

    @pytest.mark.parametrize("level", ["campaign", "adset", "ad"])
    async def test_copy_of_a_deleted_object_is_refused(
        self, graph: CopyGraph, graph_sim: SimHandle, level: str
    ) -> None:
        """Copying a deleted campaign, ad set or ad is error 100 and stores nothing."""
        tree = await graph.tree("Gone", [1])
        source = {"campaign": tree.campaign, "adset": next(iter(tree.adsets)), "ad": tree.ads[0]}[
            level
        ]
        deleted = await graph("DELETE", source)
        assert deleted.body == {"success": True}
        before = await truth(graph_sim)

        reply = await graph.copy(source)

        refused(reply)
        assert await truth(graph_sim) == before

    async def test_copies_count_against_object_limits(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """A copy past `adsets_per_account` is error 100 and stores nothing."""
        tree = await graph.tree("Limited", [0])
        (adset_id,) = tree.adsets
        await graph_sim.set_limits(object_limits={"adsets_per_account": 3})

        first = await graph.copy(adset_id)
        second = await graph.copy(adset_id)
        third = await graph.copy(adset_id)

        assert first.status == 200
        assert second.status == 200
        refused(third)
        counts = await graph_sim.counts()
        assert counts["by_account"][ACCOUNT]["adset"] == 3
        copies = [row for row in await graph_sim.objects(type="adset") if row["source_id"]]
        assert {row["id"] for row in copies} == {
            first.body["copied_adset_id"],
            second.body["copied_adset_id"],
        }

    async def test_deep_copy_past_a_limit_stores_nothing_at_all(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """A deep copy whose ads would pass `ads_per_account` stores not even the campaign."""
        tree = await graph.tree("All or nothing", [2])
        await graph_sim.set_limits(object_limits={"ads_per_account": 3})
        before = await truth(graph_sim)

        reply = await graph.copy(tree.campaign, deep_copy=True)

        refused(reply)
        assert await truth(graph_sim) == before

    async def test_ad_copy_counts_against_the_ads_per_ad_set_limit(
        self, graph: CopyGraph, graph_sim: SimHandle
    ) -> None:
        """An ad copied into a full ad set is error 100 and stores nothing."""
        tree = await graph.tree("Full", [2])
        await graph_sim.set_limits(object_limits={"ads_per_adset": 2})
        before = await truth(graph_sim)

        reply = await graph.copy(tree.ads[0])

        refused(reply)
        assert await truth(graph_sim) == before
