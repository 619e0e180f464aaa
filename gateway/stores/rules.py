"""Pure rules both SQL backends apply alike: argument checks the schema cannot express, and
what an existing Idempotency-Key record means for a new claim. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.model import (
    Claim,
    Claimed,
    InProgress,
    Mismatch,
    Replay,
    SlotOutcome,
    SlotState,
    StoredResponse,
)

# One slot row per expected entity. A 1-50-50 job has 101; Graph's own per-account object
# limits (a few thousand ad sets or ads) are far below this, so a larger declaration is a
# mistake, and refusing it keeps one bad request from writing millions of rows.
MAX_SLOTS_PER_JOB = 10_000


def slot_counts(expect: Mapping[str, int]) -> list[tuple[str, int]]:
    """(entity type, how many) per declared type; ValueError for what cannot be a cap."""
    counts: list[tuple[str, int]] = []
    for entity_type, count in expect.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"expect[{entity_type!r}] must be a count >= 0, got {count!r}")
        counts.append((entity_type, count))
    total = sum(count for _, count in counts)
    if total > MAX_SLOTS_PER_JOB:
        raise ValueError(f"a job may expect at most {MAX_SLOTS_PER_JOB} entities, got {total}")
    return counts


def check_outcome(outcome: SlotOutcome) -> None:
    """ValueError unless *outcome* is one complete_slots can apply."""
    if outcome.state is SlotState.CREATED and outcome.graph_id is None:
        raise ValueError(f"a CREATED slot outcome needs its graph_id: {outcome!r}")
    if outcome.state not in (SlotState.CREATED, SlotState.FREE, SlotState.UNKNOWN):
        raise ValueError(f"a slot outcome is CREATED, FREE or UNKNOWN, got {outcome.state!r}")


def check_lease(lease: timedelta) -> None:
    if lease <= timedelta(0):
        raise ValueError(f"an idempotency lease must be positive, got {lease!r}")


@dataclass(frozen=True)
class KeyRecord:
    """An idempotency_keys row as the claim decision needs it."""

    fingerprint: str
    request_id: str
    done: bool
    locked_until: datetime | None
    response: StoredResponse | None


def decide_claim(record: KeyRecord, fingerprint: str, *, now: datetime) -> Claim:
    """What a claim of an existing key gets. Claimed(recovered=True) means: the holder's lease
    has run out (it names that holder), so the caller must take the record over (new request
    id and lease)."""
    if record.fingerprint != fingerprint:
        return Mismatch()
    if record.done:
        if record.response is None:  # the schema's done_has_response CHECK forbids this
            raise AssertionError("a done idempotency record without its response")
        return Replay(record.response)
    if record.locked_until is None:  # the schema's in_progress_is_locked CHECK forbids this
        raise AssertionError("an in-progress idempotency record without a lease")
    if record.locked_until > now:
        return InProgress(record.request_id, record.locked_until)
    return Claimed(recovered=True, previous_request_id=record.request_id)


def effective_outcomes(outcomes: Sequence[SlotOutcome]) -> list[SlotOutcome]:
    """The outcomes that matter when *outcomes* are applied one by one, one per (slot,
    request), sorted by slot (a stable lock order).

    Applied in order, the first CREATED or FREE a holder reports ends its hold, so later ones
    from it are ignored; UNKNOWN keeps the hold. So per (slot, request) the first CREATED or
    FREE wins, else UNKNOWN. Backends that apply a whole call in one statement use this.
    """
    chosen: dict[tuple[str, str, int, str], SlotOutcome] = {}
    for o in outcomes:
        key = (o.job_id, o.entity_type, o.slot_no, o.request_id)
        held = chosen.get(key)
        if held is None or held.state is SlotState.UNKNOWN:
            chosen[key] = o
    return [chosen[key] for key in sorted(chosen)]
