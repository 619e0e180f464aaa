"""gateway.core.reconcile.match: which entity on Graph each unresolved create became.

DESIGN.md §6 "Reconciliation must work when names repeat": candidates are the parent's
children with the create's name, created after the attempt began (less the clock skew), minus
what the ledger already holds; each goes to at most one row, oldest attempt first; a row Graph
shows nothing for is only called absent once it is old enough.

Branch coverage (should stay at 100 %):
    python -m coverage run --branch --source=gateway.core.reconcile \
        -m pytest tests/unit/core/test_reconcile.py && python -m coverage report -m
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.reconcile import Absent, Adopt, Candidate, Decision, Pending, Undecided, match

T0 = 1_800_000_000.0
SKEW = 5.0
GIVE_UP = 600.0


def decide(
    pending: list[Pending],
    candidates: list[Candidate],
    known: set[str] | None = None,
    *,
    now: float = T0 + 100.0,
    skew: float = SKEW,
    give_up: float = GIVE_UP,
) -> list[Decision]:
    return match(
        pending, candidates, known or set(), now=now, clock_skew=skew, give_up_after=give_up
    )


def adopted(decisions: list[Decision]) -> dict[int, str]:
    return {d.entity_id: d.graph_id for d in decisions if isinstance(d, Adopt)}


def test_fifty_rows_with_one_name_each_adopt_one_entity_in_time_order() -> None:
    """50 same-name rows, 50 same-name children: attempt i adopts the i-th oldest child."""
    pending = [Pending(100 + i, "Ad set", T0 + i) for i in range(50)]
    candidates = [Candidate(f"9{i:03d}", "Ad set", T0 + i + 0.5) for i in range(50)]
    shuffled = candidates[:]
    random.Random(7).shuffle(shuffled)

    decisions = decide(pending, shuffled, skew=0.0)

    assert all(isinstance(d, Adopt) for d in decisions)
    assert adopted(decisions) == {100 + i: f"9{i:03d}" for i in range(50)}
    assert len(set(adopted(decisions).values())) == 50


def test_children_the_ledger_already_holds_are_never_adopted() -> None:
    """A known id is skipped even when it is the oldest match; the next one is taken."""
    pending = [Pending(1, "Same", T0)]
    candidates = [Candidate("111", "Same", T0 + 1), Candidate("222", "Same", T0 + 2)]

    decisions = decide(pending, candidates, {"111"})

    assert decisions == [Adopt(1, "222")]


def test_only_known_children_leave_the_row_undecided() -> None:
    """Every child already in the ledger and the attempt still young: not adopted, not absent."""
    decisions = decide([Pending(1, "Same", T0)], [Candidate("111", "Same", T0 + 1)], {"111"})

    assert decisions == [Undecided(1)]


def test_children_created_before_the_attempt_less_the_skew_are_not_adopted() -> None:
    """Older than started - skew: someone else's; exactly at the skew boundary: eligible."""
    row = Pending(1, "Same", T0)
    too_old = Candidate("100", "Same", T0 - SKEW - 1)
    at_boundary = Candidate("200", "Same", T0 - SKEW)

    assert decide([row], [too_old]) == [Undecided(1)]
    assert decide([row], [too_old], now=T0 + GIVE_UP) == [Absent(1)]
    assert decide([row], [too_old, at_boundary]) == [Adopt(1, "200")]


def test_children_with_another_name_are_not_adopted() -> None:
    """A sibling named differently is not this create's entity."""
    decisions = decide([Pending(1, "Wanted", T0)], [Candidate("100", "Other", T0 + 1)])

    assert decisions == [Undecided(1)]


def test_more_children_than_rows_adopts_the_oldest_eligible_and_leaves_the_rest() -> None:
    """5 rows, 8 eligible children (3 made outside tracking, newer): the 5 oldest adopted."""
    pending = [Pending(10 + i, "Same", T0 + i) for i in range(5)]
    candidates = [Candidate(f"{500 + i}", "Same", T0 + 10 + i) for i in range(8)]

    decisions = decide(pending, list(reversed(candidates)))

    assert adopted(decisions) == {10 + i: f"{500 + i}" for i in range(5)}
    left = {c.graph_id for c in candidates} - set(adopted(decisions).values())
    assert left == {"505", "506", "507"}


def test_equal_created_times_are_broken_by_graph_id() -> None:
    """Graph's created_time has one-second precision: ties go to the smaller id."""
    pending = [Pending(1, "Same", T0), Pending(2, "Same", T0 + 0.2)]
    candidates = [Candidate("30", "Same", T0 + 1), Candidate("20", "Same", T0 + 1)]

    assert decide(pending, candidates) == [Adopt(1, "20"), Adopt(2, "30")]


def test_equal_start_times_are_broken_by_row_id() -> None:
    """Two attempts started in the same instant: the older row takes the older child."""
    pending = [Pending(8, "Same", T0), Pending(3, "Same", T0)]
    candidates = [Candidate("71", "Same", T0 + 2), Candidate("70", "Same", T0 + 1)]

    assert decide(pending, candidates) == [Adopt(8, "71"), Adopt(3, "70")]


def test_no_child_and_a_young_attempt_is_undecided() -> None:
    """Graph may not list a fresh entity yet: too early to call it absent."""
    row = Pending(1, "Same", T0)

    assert decide([row], [], now=T0 + GIVE_UP - 0.001) == [Undecided(1)]


def test_no_child_and_an_old_attempt_is_absent() -> None:
    """From give_up_after on, no entity on Graph means the create did not happen."""
    row = Pending(1, "Same", T0)

    assert decide([row], [], now=T0 + GIVE_UP) == [Absent(1)]
    assert decide([row], [], now=T0 + GIVE_UP + 3600) == [Absent(1)]


def test_no_rows_no_decisions() -> None:
    """Nothing pending: nothing decided, whatever Graph lists."""
    assert decide([], [Candidate("1", "Same", T0)]) == []


def test_decisions_follow_the_order_rows_were_given_in() -> None:
    """Matching runs oldest first, but the answer lists the rows as the caller passed them."""
    pending = [
        Pending(3, "Same", T0 + 2),
        Pending(1, "Same", T0),
        Pending(4, "Gone", T0 - GIVE_UP),
        Pending(2, "Same", T0 + 1),
        Pending(5, "Fresh", T0 + 50),
    ]
    candidates = [Candidate(f"{700 + i}", "Same", T0 + 10 + i) for i in range(3)]

    decisions = decide(pending, candidates)

    assert [d.entity_id for d in decisions] == [3, 1, 4, 2, 5]
    assert decisions == [
        Adopt(3, "702"),
        Adopt(1, "700"),
        Absent(4),
        Adopt(2, "701"),
        Undecided(5),
    ]


def test_a_child_too_old_for_a_late_row_still_goes_to_an_earlier_row() -> None:
    """Eligibility is per row: a child between two attempts belongs to the earlier one."""
    early = Pending(1, "Same", T0)
    late = Pending(2, "Same", T0 + 100)
    between = Candidate("50", "Same", T0 + 10)

    assert decide([late, early], [between], now=T0 + 101) == [Undecided(2), Adopt(1, "50")]


# --- properties ----------------------------------------------------------------------------

KEYS = st.sampled_from(["A", "B", "C"])
TIMES = st.integers(min_value=0, max_value=40).map(lambda s: T0 + s)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[list[Pending], list[Candidate], set[str], float, float, float]:
    pending_ids = draw(st.lists(st.integers(1, 10_000), max_size=25, unique=True))
    pending = [Pending(i, draw(KEYS), draw(TIMES)) for i in pending_ids]
    graph_ids = draw(st.lists(st.integers(1, 10_000).map(str), max_size=30, unique=True))
    candidates = [Candidate(g, draw(KEYS), draw(TIMES)) for g in graph_ids]
    known = set(draw(st.lists(st.sampled_from(graph_ids), unique=True))) if graph_ids else set()
    now = T0 + draw(st.integers(0, 80))
    skew = float(draw(st.integers(0, 6)))
    give_up = float(draw(st.integers(0, 60)))
    return pending, candidates, known, now, skew, give_up


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_graph_id_is_adopted_twice_and_no_known_id_is_adopted(
    scenario: tuple[list[Pending], list[Candidate], set[str], float, float, float],
) -> None:
    """Any rows, children and known ids: adoptions are distinct, unknown, matching, eligible."""
    pending, candidates, known, now, skew, give_up = scenario

    decisions = match(pending, candidates, known, now=now, clock_skew=skew, give_up_after=give_up)

    assert [d.entity_id for d in decisions] == [p.entity_id for p in pending]
    taken = [d.graph_id for d in decisions if isinstance(d, Adopt)]
    assert len(taken) == len(set(taken)), "a graph id adopted twice"
    assert not set(taken) & known, "an id the ledger already holds was adopted"
    by_graph_id = {c.graph_id: c for c in candidates}
    for row, decision in zip(pending, decisions, strict=True):
        eligible = [
            c
            for c in candidates
            if c.graph_id not in known
            and c.match_key == row.match_key
            and c.created_at >= row.started_at - skew
        ]
        if isinstance(decision, Adopt):
            assert by_graph_id[decision.graph_id] in eligible
        else:
            # Not adopted only if every eligible child went to another row.
            assert {c.graph_id for c in eligible} <= set(taken)
            old = now - row.started_at >= give_up
            assert isinstance(decision, Absent if old else Undecided)
