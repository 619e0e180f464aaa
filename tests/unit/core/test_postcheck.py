"""gateway.core.postcheck: recorded entities against what Graph shows."""

from __future__ import annotations

from gateway.core.postcheck import Recorded, Seen, compare

C = Recorded("c1", "campaign", 1)
A1 = Recorded("a1", "adset", 1, "c1")
A2 = Recorded("a2", "adset", 2, "c1")


def seen(graph_id: str, kind: str, parent: str | None, status: str = "ACTIVE") -> Seen:
    return Seen(graph_id, kind, parent, status, name=f"n-{graph_id}")


def test_everything_as_recorded_is_clean() -> None:
    report = compare(
        [C, A1], {"c1": seen("c1", "campaign", None), "a1": seen("a1", "adset", "c1")}, []
    )
    assert report.clean
    assert report.to_dict()["counts"] == {"missing": 0, "untracked": 0, "mismatched": 0}
    assert report.checked == 2


def test_an_entity_graph_lacks_or_shows_deleted_is_missing_with_its_slot() -> None:
    report = compare([A1, A2], {"a1": None, "a2": seen("a2", "adset", "c1", "DELETED")}, [])
    assert [(f.graph_id, f.slot_no) for f in report.missing] == [("a1", 1), ("a2", 2)]
    assert "not on Graph" in report.missing[0].detail
    assert "DELETED" in report.missing[1].detail
    assert not report.clean


def test_a_listed_child_the_job_did_not_record_is_untracked_once() -> None:
    outside = seen("a9", "adset", "c1")
    gone = seen("a8", "adset", "c1", "DELETED")
    report = compare(
        [A1], {"a1": seen("a1", "adset", "c1")}, [outside, outside, gone, seen("a1", "adset", "c1")]
    )
    assert [f.graph_id for f in report.untracked] == ["a9"]
    assert report.untracked[0].slot_no is None


def test_another_type_another_parent_or_archived_is_mismatched() -> None:
    report = compare(
        [A1, A2, C],
        {
            "a1": seen("a1", "ad", "c1"),
            "a2": seen("a2", "adset", "c7"),
            "c1": seen("c1", "campaign", None, "ARCHIVED"),
        },
        [],
    )
    details = {f.graph_id: f.detail for f in report.mismatched}
    assert "it is a ad" in details["a1"]
    assert "its parent is c7" in details["a2"]
    assert "ARCHIVED" in details["c1"]
    assert report.to_dict()["mismatched"][0]["graph_id"] == "a1"
