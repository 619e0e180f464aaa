"""gateway.core.rollback: the plan (children first, one step per Graph id, batches of at most 50
of one level, less what earlier runs did), the campaign tree, and what Graph's answers mean.

Branch coverage (should stay at 100 %):
    python -m coverage run --branch --source=gateway.core.rollback \
        -m pytest tests/unit/core/test_rollback.py && python -m coverage report -m
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core import rollback as rb
from gateway.core.retry import ErrorRules
from gateway.model import (
    AuditRecord,
    CreateSource,
    EntityRecord,
    EntityState,
    JobStatus,
    SlotRecord,
    SlotState,
)

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
RULES = ErrorRules()


def row(
    id: int,
    graph_id: str | None,
    entity_type: str,
    *,
    parent: str | None = None,
    state: EntityState = EntityState.CREATED,
    source: CreateSource = CreateSource.SINGLE,
    request: str | None = None,
    op: int = 0,
    account: str | None = "act_1",
) -> EntityRecord:
    return EntityRecord(
        id=id,
        request_id=request or f"req-{id}",
        op_index=op,
        caller="c",
        account_id=account,
        entity_type=entity_type,
        source=source,
        state=state,
        parent_id=parent,
        name=None,
        job_id="job-1",
        graph_id=graph_id,
        error=None,
        created_at=T0,
        updated_at=T0,
    )


def slot(entity_type: str, n: int, graph_id: str | None, state: SlotState) -> SlotRecord:
    return SlotRecord("job-1", entity_type, n, state, "r" if graph_id else None, graph_id, T0)


def order(plan: rb.Plan) -> list[tuple[str, int]]:
    return [(s.graph_id, s.batch) for s in plan.steps]


def job_tree() -> list[EntityRecord]:
    """A campaign, two ad sets, two ads, written in creation order."""
    return [
        row(1, "c", "campaign"),
        row(2, "s1", "adset", parent="c"),
        row(3, "a1", "ad", parent="s1"),
        row(4, "s2", "adset", parent="c"),
        row(5, "a2", "ad", parent="s2"),
    ]


class TestPlan:
    def test_children_come_first_one_level_per_batch(self) -> None:
        plan = rb.plan(job_tree())
        assert order(plan) == [("a1", 1), ("a2", 1), ("s1", 2), ("s2", 2), ("c", 3)]
        assert [len(b) for b in plan.batches] == [2, 2, 1]
        assert plan.done == ()
        assert plan.kept == ()

    def test_rows_are_taken_in_ledger_order_whatever_order_they_come_in(self) -> None:
        assert order(rb.plan(list(reversed(job_tree())))) == order(rb.plan(job_tree()))

    def test_no_batch_holds_more_than_fifty(self) -> None:
        rows = [row(n, f"a{n}", "ad") for n in range(1, 121)] + [row(200, "s", "adset")]
        plan = rb.plan(rows)
        assert [len(b) for b in plan.batches] == [50, 50, 20, 1]
        assert plan.steps[-1] == rb.Step("s", "adset", "act_1", 4)

    def test_a_smaller_batch_size_cuts_smaller_batches(self) -> None:
        plan = rb.plan(job_tree(), batch_size=1)
        assert [s.batch for s in plan.steps] == [1, 2, 3, 4, 5]

    @pytest.mark.parametrize("size", [0, 51])
    def test_a_batch_size_graph_cannot_take_is_refused(self, size: int) -> None:
        with pytest.raises(ValueError, match="batch_size"):
            rb.plan(job_tree(), batch_size=size)

    def test_one_step_per_graph_id_keeping_a_learned_type_and_an_account(self) -> None:
        rows = [
            row(1, "x", "copy", account=None),  # a copy whose answer did not say its type
            row(2, "x", "adset"),  # the same entity adopted later, type known
            row(3, "y", "ad"),
            row(4, "y", "copy"),  # a known type is never replaced by an unknown one
        ]
        plan = rb.plan(rows)
        assert plan.steps == (rb.Step("y", "ad", "act_1", 1), rb.Step("x", "adset", "act_1", 2))

    def test_a_type_never_learned_goes_last_and_reads_the_fields_every_object_has(self) -> None:
        plan = rb.plan([row(1, "x", "copy"), *job_tree()])
        assert plan.steps[-1] == rb.Step("x", "copy", "act_1", 4)
        assert plan.steps[-1].fields == rb.GENERIC_FIELDS
        assert "targeting" in plan.steps[2].fields  # an ad set's backup has its targeting
        assert "creative" in plan.steps[0].fields

    def test_creatives_images_and_videos_are_kept_not_deleted(self) -> None:
        rows = [
            row(1, "cr", "adcreative"),
            row(2, "act_1:abc", "adimage"),
            row(3, "act_1:abc", "adimage"),
            row(4, "v", "advideo"),
            row(5, "a", "ad"),
        ]
        plan = rb.plan(rows, slots=[slot("adcreative", 1, "cr2", SlotState.CREATED)])
        assert order(plan) == [("a", 1)]
        assert plan.kept == (
            rb.Kept("adcreative", "asset", "cr", 1),
            rb.Kept("adimage", "asset", "act_1:abc", 2),
            rb.Kept("advideo", "asset", "v", 4),
            rb.Kept("adcreative", "asset", "cr2", None),
        )

    def test_rows_with_an_unknown_outcome_are_listed_not_deleted(self) -> None:
        rows = [
            row(1, None, "adset", state=EntityState.SENDING),
            row(2, None, "adset", state=EntityState.UNKNOWN),
            row(3, "s", "adset", state=EntityState.UNKNOWN),  # the same entity created below
            row(4, "s", "adset"),
            row(5, "s9", "adset", state=EntityState.UNKNOWN),  # an id, never settled created
            row(6, None, "adset", state=EntityState.FAILED),  # nothing on Graph
        ]
        plan = rb.plan(rows)
        assert order(plan) == [("s", 1)]
        assert plan.kept == (
            rb.Kept("adset", "unresolved", None, 1),
            rb.Kept("adset", "unresolved", None, 2),
            rb.Kept("adset", "unresolved", "s9", 5),
        )

    def test_created_slots_add_what_no_row_names_with_the_default_account(self) -> None:
        slots = [
            slot("campaign", 1, "c", SlotState.CREATED),  # also a row
            slot("ad", 1, "a9", SlotState.CREATED),  # a copy's child the rows missed
            slot("ad", 2, None, SlotState.FREE),
            slot("ad", 3, None, SlotState.RESERVED),
        ]
        plan = rb.plan(
            [row(1, "c", "campaign", account=None)], slots=slots, default_account="act_7"
        )
        assert plan.steps == (rb.Step("a9", "ad", "act_7", 1), rb.Step("c", "campaign", "act_7", 2))

    def test_what_earlier_runs_did_is_skipped_and_batches_are_numbered_afresh(self) -> None:
        plan = rb.plan(job_tree(), done={"a1", "a2", "s1", "gone-elsewhere"})
        assert order(plan) == [("s2", 1), ("c", 2)]
        assert plan.done == ("s1", "a1", "a2")

    def test_nothing_live_is_an_empty_plan(self) -> None:
        plan = rb.plan([])
        assert plan.steps == ()
        assert plan.batches == ()


class TestCampaignTree:
    def ids(self, rows: list[EntityRecord], campaign: str = "c") -> list[int]:
        return [r.id for r in rb.campaign_tree(rows, campaign)]

    def test_the_campaign_its_ad_sets_and_their_ads(self) -> None:
        rows = [
            *job_tree(),
            row(6, "c2", "campaign"),
            row(7, "s9", "adset", parent="c2"),
            row(8, "a9", "ad", parent="s9"),
            row(9, None, "adset", parent="c", state=EntityState.UNKNOWN),
            row(10, "orphan", "ad", parent=None),
        ]
        assert self.ids(rows) == [1, 2, 3, 4, 5, 9]

    def test_a_tree_whose_campaign_has_no_row_still_gathers_its_children(self) -> None:
        rows = [row(2, "s1", "adset", parent="c"), row(3, "a1", "ad", parent="s1")]
        assert self.ids(rows) == [2, 3]

    def test_copies_land_beside_their_source_with_the_children_they_brought(self) -> None:
        copy: dict[str, Any] = {"source": CreateSource.COPY, "request": "rc"}
        rows = [
            *job_tree(),
            row(6, "s1c", "adset", parent="s1", **copy),  # a deep copy of s1 (stays in c)
            row(7, "a1c", "ad", parent="a1", op=1000, **copy),  # the ad that copy brought
            row(8, "a2c", "ad", parent="a2", source=CreateSource.COPY),  # an ad copy in s2
        ]
        assert self.ids(rows) == [1, 2, 3, 4, 5, 6, 7, 8]

    def test_a_copied_campaign_is_a_tree_of_its_own(self) -> None:
        copy: dict[str, Any] = {"source": CreateSource.COPY, "request": "rk"}
        rows = [
            *job_tree(),
            row(6, "cc", "campaign", parent="c", **copy),
            row(7, "s1k", "adset", parent="s1", op=1000, **copy),
            row(8, "a1k", "ad", parent="a1", op=1001, **copy),
        ]
        assert self.ids(rows) == [1, 2, 3, 4, 5]
        assert self.ids(rows, "cc") == [6, 7, 8]

    def test_a_copy_whose_source_is_not_on_record_is_left_out(self) -> None:
        rows = [*job_tree(), row(6, "x", "adset", parent="elsewhere", source=CreateSource.COPY)]
        assert self.ids(rows) == [1, 2, 3, 4, 5]

    def test_a_child_op_whose_owner_has_no_row_follows_its_parent(self) -> None:
        rows = [*job_tree(), row(6, "a7", "ad", parent="s1", op=2000, request="lost")]
        assert self.ids(rows) == [1, 2, 3, 4, 5, 6]

    def test_a_cycle_in_the_rows_leads_nowhere(self) -> None:
        rows = [row(1, "x", "adset", parent="y"), row(2, "y", "ad", parent="x")]
        assert self.ids(rows) == []


def audit(graph_id: str | None, outcome: str, action: str = "rollback_step") -> AuditRecord:
    return AuditRecord(1, action, outcome, "job-1", None, graph_id, "r", {}, "admin", T0)


def test_done_ids_are_the_steps_deleted_or_found_deleted() -> None:
    records = [
        audit("a", "ok"),
        audit("b", "already_deleted"),
        audit("c", "failed"),
        audit("d", "skipped"),
        audit("e", "ok", action="verification"),
        audit(None, "ok"),
    ]
    assert rb.done_ids(records) == {"a", "b"}


class TestReadVerdict:
    @pytest.mark.parametrize(
        "doc",
        [
            None,
            {"id": "a", "status": "DELETED"},
            {"id": "a", "status": "ACTIVE", "configured_status": "DELETED"},
            {"id": "a", "status": "PAUSED", "effective_status": "DELETED"},
        ],
    )
    def test_deleted_or_missing_is_gone(self, doc: dict[str, Any] | None) -> None:
        assert rb.read_verdict(doc) == rb.Gone()
        assert rb.read_verdict(doc, campaign_id="elsewhere") == rb.Gone()

    def test_anything_else_is_live(self) -> None:
        assert rb.read_verdict({"id": "a", "effective_status": "CAMPAIGN_PAUSED"}) == rb.Live()

    @pytest.mark.parametrize("doc", [{"id": "c"}, {"id": "s", "campaign_id": "c"}])
    def test_in_the_campaign_rolled_back_is_live(self, doc: dict[str, Any]) -> None:
        assert rb.read_verdict(doc, campaign_id="c") == rb.Live()

    def test_elsewhere_is_foreign(self) -> None:
        assert rb.read_verdict({"id": "s", "campaign_id": "c2"}, campaign_id="c") == rb.Foreign(
            "c2"
        )
        assert rb.read_verdict({"id": "x"}, campaign_id="c") == rb.Foreign(None)


@pytest.mark.parametrize(
    ("error", "gone"),
    [
        (None, False),
        ({"code": 100, "error_subcode": 33}, True),
        ({"code": 803}, True),
        ({"code": 803, "error_subcode": 7}, True),
        ({"code": 100}, False),
        ({"code": 100, "error_subcode": 34}, False),
    ],
)
def test_graph_says_there_is_no_such_object(error: dict[str, Any] | None, gone: bool) -> None:
    assert rb.is_gone_error(error) is gone


def entry(code: Any, body: Any) -> dict[str, Any]:
    return {"code": code, "body": body if isinstance(body, str) else json.dumps(body)}


def err(code: int, subcode: int | None = None, **more: Any) -> dict[str, Any]:
    return {"error": {"code": code, "error_subcode": subcode, "message": "m", **more}}


class TestDeleteVerdict:
    @pytest.mark.parametrize(
        "answer",
        [entry(200, {"success": True}), entry(200, "true"), {"code": 200, "body": {"x": 1}}],
    )
    def test_a_success_is_deleted(self, answer: dict[str, Any]) -> None:
        assert rb.delete_verdict(answer, RULES) == rb.Deleted()

    def test_success_false_is_refused(self) -> None:
        verdict = rb.delete_verdict(entry(200, {"success": False}), RULES)
        assert isinstance(verdict, rb.Refused)
        assert verdict.error["status"] == 200

    def test_no_such_object_is_gone(self) -> None:
        assert rb.delete_verdict(entry(400, err(100, 33)), RULES) == rb.Gone()

    @pytest.mark.parametrize("answer", [None, "garbage", {"body": None}, {"code": True}])
    def test_no_entry_is_no_verdict_yet(self, answer: Any) -> None:
        assert rb.delete_verdict(answer, RULES) == rb.Again("null")

    def test_a_throttle_is_tried_again(self) -> None:
        verdict = rb.delete_verdict(entry(400, err(80004, 2446079)), RULES)
        assert verdict == rb.Again("throttle", err(80004, 2446079)["error"])

    @pytest.mark.parametrize(
        ("answer", "error"),
        [
            (entry(500, err(2, is_transient=True)), err(2, is_transient=True)["error"]),
            (entry(502, "<html>Sorry</html>"), {"status": 502}),
        ],
    )
    def test_a_transient_failure_is_tried_again(
        self, answer: dict[str, Any], error: dict[str, Any]
    ) -> None:
        assert rb.delete_verdict(answer, RULES) == rb.Again("transient", error)

    def test_a_permanent_refusal_is_refused(self) -> None:
        verdict = rb.delete_verdict(entry(403, err(200)), RULES)
        assert verdict == rb.Refused(err(200)["error"])


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ([], JobStatus.ROLLED_BACK),
        (["ok", "already_deleted"], JobStatus.ROLLED_BACK),
        (["ok", "failed"], JobStatus.PARTIALLY_ROLLED_BACK),
        (["skipped"], JobStatus.PARTIALLY_ROLLED_BACK),
    ],
)
def test_the_job_is_rolled_back_only_when_every_step_is_done(
    outcomes: list[str], status: JobStatus
) -> None:
    assert rb.final_status(outcomes) is status


def test_a_create_still_unresolved_leaves_the_job_partially_rolled_back() -> None:
    asset = rb.Kept("adcreative", "asset", "cr", 1)
    assert rb.final_status(["ok"], [asset]) is JobStatus.ROLLED_BACK
    unresolved = rb.Kept("adset", "unresolved", None, 2)
    assert rb.final_status(["ok"], [asset, unresolved]) is JobStatus.PARTIALLY_ROLLED_BACK
