"""Post-creation verification: what a job recorded against what Graph holds (issue 6).

Pure. The shell (gateway.postcheck) reads every recorded entity by id and lists the job's
parents' children created since the job began; this module compares:

    missing     recorded as created, but Graph does not have it (or shows it deleted): a
                silent drop, or deleted behind the gateway's back
    untracked   Graph has a child of the job's campaign, created since the job began, that
                the job has not recorded (made outside the gateway, or an adoption missed)
    mismatched  Graph has it, but not as recorded: another type, another parent, or archived
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# effective_status values that mean the entity is gone for the job's purposes.
GONE = frozenset({"DELETED"})
SHELVED = frozenset({"ARCHIVED"})


@dataclass(frozen=True)
class Recorded:
    """An entity the job holds a created slot for."""

    graph_id: str
    entity_type: str  # campaign, adset, ad
    slot_no: int
    parent_id: str | None = None  # the campaign (ad set) or ad set (ad) it should be under


@dataclass(frozen=True)
class Seen:
    """An entity as Graph shows it."""

    graph_id: str
    entity_type: str | None
    parent_id: str | None
    status: str | None  # effective_status
    name: str | None = None


@dataclass(frozen=True)
class Finding:
    graph_id: str
    entity_type: str | None
    slot_no: int | None
    detail: str


@dataclass(frozen=True)
class Report:
    missing: tuple[Finding, ...]
    untracked: tuple[Finding, ...]
    mismatched: tuple[Finding, ...]
    checked: int  # recorded entities read

    @property
    def clean(self) -> bool:
        return not (self.missing or self.untracked or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "checked": self.checked,
            "counts": {
                "missing": len(self.missing),
                "untracked": len(self.untracked),
                "mismatched": len(self.mismatched),
            },
            "missing": [asdict(f) for f in self.missing],
            "untracked": [asdict(f) for f in self.untracked],
            "mismatched": [asdict(f) for f in self.mismatched],
        }


def compare(
    recorded: Sequence[Recorded],
    by_id: Mapping[str, Seen | None],
    listed: Sequence[Seen],
) -> Report:
    """*by_id*: Graph's answer for each recorded id (None: Graph has no such entity);
    *listed*: the children Graph lists under the job's campaign, created since it began."""
    missing: list[Finding] = []
    mismatched: list[Finding] = []
    for entry in recorded:
        seen = by_id.get(entry.graph_id)
        if seen is None or (seen.status or "") in GONE:
            why = "not on Graph" if seen is None else f"Graph shows it {seen.status}"
            missing.append(Finding(entry.graph_id, entry.entity_type, entry.slot_no, why))
            continue
        problems = []
        if seen.entity_type is not None and seen.entity_type != entry.entity_type:
            problems.append(f"it is a {seen.entity_type}, recorded as a {entry.entity_type}")
        if entry.parent_id and seen.parent_id and seen.parent_id != entry.parent_id:
            problems.append(f"its parent is {seen.parent_id}, recorded under {entry.parent_id}")
        if (seen.status or "") in SHELVED:
            problems.append(f"Graph shows it {seen.status}")
        if problems:
            mismatched.append(
                Finding(entry.graph_id, entry.entity_type, entry.slot_no, "; ".join(problems))
            )
    ids = {entry.graph_id for entry in recorded}
    untracked = [
        Finding(seen.graph_id, seen.entity_type, None, f"not recorded by the job ({seen.name})")
        for seen in sorted(listed, key=lambda s: s.graph_id)
        if seen.graph_id not in ids and (seen.status or "") not in GONE
    ]
    return Report(tuple(missing), tuple(_unique(untracked)), tuple(mismatched), len(recorded))


def _unique(findings: Sequence[Finding]) -> list[Finding]:
    seen: set[str] = set()
    out = []
    for finding in findings:
        if finding.graph_id not in seen:
            seen.add(finding.graph_id)
            out.append(finding)
    return out
