"""Reconciliation: which entity on Graph, if any, an unresolved create became.

Pure (DESIGN.md §6 "Reconciliation must work when names repeat"). Candidates are the parent's
children on Graph with the create's name (or, for copies, its source), created after the
attempt began; entities the ledger already holds are not candidates; each candidate is given
to at most one create, oldest attempt first. A create Graph shows nothing for is only called
absent once it is old enough that Graph would list it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Pending:
    """A ledger row whose outcome is not known."""

    entity_id: int
    match_key: str  # the name (or copied source id) the entity would carry
    started_at: float  # when the attempt began (POSIX seconds)


@dataclass(frozen=True)
class Candidate:
    """A child of the parent, as Graph lists it."""

    graph_id: str
    match_key: str
    created_at: float  # created_time (POSIX seconds)


@dataclass(frozen=True)
class Adopt:
    entity_id: int
    graph_id: str


@dataclass(frozen=True)
class Absent:
    """Graph shows no such entity, long enough after the attempt: it did not happen."""

    entity_id: int


@dataclass(frozen=True)
class Undecided:
    """Too early to call it absent (Graph may not list a fresh entity yet)."""

    entity_id: int


Decision = Adopt | Absent | Undecided


def match(
    pending: Sequence[Pending],
    candidates: Iterable[Candidate],
    known: set[str],
    *,
    now: float,
    clock_skew: float,
    give_up_after: float,
) -> list[Decision]:
    """One decision per pending row, in the order given."""
    free = sorted(
        (c for c in candidates if c.graph_id not in known), key=lambda c: (c.created_at, c.graph_id)
    )
    taken: set[str] = set()
    decided: dict[int, Decision] = {}
    for row in sorted(pending, key=lambda p: (p.started_at, p.entity_id)):
        found = next(
            (
                c
                for c in free
                if c.graph_id not in taken
                and c.match_key == row.match_key
                and c.created_at >= row.started_at - clock_skew
            ),
            None,
        )
        if found is not None:
            taken.add(found.graph_id)
            decided[row.entity_id] = Adopt(row.entity_id, found.graph_id)
        elif now - row.started_at >= give_up_after:
            decided[row.entity_id] = Absent(row.entity_id)
        else:
            decided[row.entity_id] = Undecided(row.entity_id)
    return [decided[p.entity_id] for p in pending]
