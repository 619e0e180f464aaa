"""What Graph's answer says became of each create: created (with ids), failed, or unknown.

Pure: reads a status and a decoded body, returns values. "Unknown" is for answers that do not
prove the create did not happen (graph-api-notes Part A §2.7): HTTP 5xx, codes 1 and 2, a
non-JSON error page, a `null` batch entry. Every other Graph error means nothing was created.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.core.classify import CreateOp

# Graph codes that may be raised after the write happened (§2.1): look before re-sending.
AMBIGUOUS_CODES = frozenset({1, 2})
# `ad_object_type` in copy answers → the gateway's entity types.
COPY_TYPES = {
    "campaign": "campaign",
    "ad_set": "adset",
    "ad": "ad",
    "unique_adcreative": "adcreative",
}
_COPY_KEYS = {"copied_campaign_id": "campaign", "copied_adset_id": "adset", "copied_ad_id": "ad"}


@dataclass(frozen=True)
class Child:
    """An entity an answer names beyond the one its intent row stands for."""

    entity_type: str
    graph_id: str
    parent_id: str | None  # the entity it was copied from


@dataclass(frozen=True)
class Created:
    graph_id: str
    entity_type: str | None = None  # known only from the answer (copies)
    children: tuple[Child, ...] = ()


@dataclass(frozen=True)
class Failed:
    error: dict[str, Any]


@dataclass(frozen=True)
class Unknown:
    reason: str


OpOutcome = Created | Failed | Unknown


def parse_json(body: bytes | str | None) -> Any:
    """The JSON document in *body*, or None when there is none."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _error(status: int, doc: Any) -> dict[str, Any] | None:
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        return {
            "status": status,
            "code": err.get("code"),
            "subcode": err.get("error_subcode"),
            "type": err.get("type"),
            "message": str(err.get("message", ""))[:500],
        }
    return None


def _judge_error(status: int, doc: Any) -> Failed | Unknown | None:
    """Failed/Unknown for an error answer; None when the answer is a success."""
    error = _error(status, doc)
    if error is not None:
        if status >= 500 or error["code"] in AMBIGUOUS_CODES:
            return Unknown(f"Graph error {error['code']} (HTTP {status}) may follow a write")
        return Failed(error)
    if status >= 500:
        return Unknown(f"HTTP {status} without a Graph error body")
    if status >= 300:
        return Failed({"status": status, "code": None, "message": "not a Graph answer"})
    if not isinstance(doc, dict):
        # A success whose body cannot be read may well have created the entity.
        return Unknown(f"HTTP {status} with a body that is not a Graph answer")
    return None


def judge(op: CreateOp, status: int, doc: Any) -> OpOutcome:
    """The outcome of one create from its HTTP status and parsed JSON body."""
    bad = _judge_error(status, doc)
    if bad is not None:
        return bad
    if op.entity_type == "copy":
        return _judge_copy(doc)
    if op.entity_type == "adimage" and isinstance(doc.get("images"), dict):
        return _judge_images(op, doc["images"])
    graph_id = doc.get("id")
    if isinstance(graph_id, str | int) and not isinstance(graph_id, bool) and str(graph_id):
        return Created(str(graph_id))
    # A success without an id created nothing (e.g. execution_options=["validate_only"]).
    return Failed({"status": status, "code": None, "message": "answer names no entity id"})


def _judge_images(op: CreateOp, images: dict[str, Any]) -> OpOutcome:
    account = (op.account_id or "").removeprefix("act_")
    hashes = [str(v["hash"]) for v in images.values() if isinstance(v, dict) and v.get("hash")]
    if not hashes:
        return Failed({"status": 200, "code": None, "message": "images answer without hashes"})
    ids = [f"{account}:{h}" for h in hashes]
    return Created(ids[0], children=tuple(Child("adimage", i, None) for i in ids[1:]))


def _judge_copy(doc: dict[str, Any]) -> OpOutcome:
    top = next(((doc[k], t) for k, t in _COPY_KEYS.items() if doc.get(k)), None)
    if top is None:
        return Unknown("copy answer names no copied id")
    top_id, top_type = str(top[0]), top[1]
    children = []
    for item in doc.get("ad_object_ids") or []:
        if not isinstance(item, dict) or not item.get("copied_id"):
            continue
        copied = str(item["copied_id"])
        if copied == top_id:
            continue
        kind = COPY_TYPES.get(str(item.get("ad_object_type")), str(item.get("ad_object_type")))
        source = item.get("source_id")
        children.append(Child(kind, copied, str(source) if source else None))
    return Created(top_id, entity_type=top_type, children=tuple(children))


def judge_batch(ops: tuple[CreateOp, ...], status: int, doc: Any) -> dict[int, OpOutcome]:
    """The outcome of every create in a batch answer, by op index.

    A refused batch (an error answer) ran none of its ops; a 5xx or unreadable answer may have
    run any of them; otherwise each entry is judged alone, and a `null` entry is unknown.
    """
    if not isinstance(doc, list):
        refused = _judge_error(status, doc)
        whole = refused if isinstance(refused, Failed) and _error(status, doc) else None
        return {op.index: whole or Unknown("batch answer is not a list of entries") for op in ops}
    out: dict[int, OpOutcome] = {}
    for op in ops:
        entry = doc[op.index] if op.index < len(doc) else None
        if not isinstance(entry, dict):
            out[op.index] = Unknown("null batch entry: the op may or may not have run")
            continue
        code = entry.get("code")
        entry_status = code if isinstance(code, int) else 500
        out[op.index] = judge(op, entry_status, parse_json(entry.get("body")))
    return out
