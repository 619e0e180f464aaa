"""Sending part of a batch: drop the ops the gateway answers itself, merge the answers back.

Pure. Under a job, a batch op over its cap is not sent (it gets a `cap_exceeded` entry) and an
op whose slot is already created is replayed; the rest go to Graph as a smaller batch in the
caller's own encoding, and the answer comes back whole, in the caller's order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class BatchBody:
    """A batch request's parameters with its ops parsed."""

    params: dict[str, Any]  # every parameter but `batch`
    ops: list[Any]
    batch_was_string: bool  # a JSON body may carry `batch` as a JSON string too


def parse_batch_body(params: Mapping[str, Any]) -> BatchBody | None:
    raw = params.get("batch")
    ops = raw
    as_string = isinstance(raw, str)
    if as_string:
        try:
            ops = json.loads(str(raw))
        except ValueError:
            return None
    if not isinstance(ops, list):
        return None
    rest = {k: v for k, v in params.items() if k != "batch"}
    return BatchBody(rest, list(ops), as_string)


def encode(body: BatchBody, keep: Sequence[int], content_type: str) -> bytes:
    """The request body with only the ops at *keep* (in order), in the caller's encoding."""
    ops = [body.ops[i] for i in keep]
    if content_type == FORM:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.params.items()}
        fields["batch"] = json.dumps(ops, separators=(",", ":"))
        return urlencode(fields).encode()
    doc = dict(body.params)
    doc["batch"] = json.dumps(ops, separators=(",", ":")) if body.batch_was_string else ops
    return json.dumps(doc, separators=(",", ":")).encode()


def merge(
    size: int,
    sent: Sequence[int],
    answer: Any,
    own: Mapping[int, Mapping[str, Any]],
) -> list[Any]:
    """The whole answer: Graph's entries for the *sent* ops, the gateway's *own* for the rest.

    When Graph's answer is not a list of the right length (the batch was refused whole),
    every sent op gets None (the caller sees the entry as lost) — callers only merge answers
    that are lists.
    """
    entries: list[Any] = [None] * size
    if isinstance(answer, list) and len(answer) == len(sent):
        for position, index in enumerate(sent):
            entries[index] = answer[position]
    for index, entry in own.items():
        entries[index] = dict(entry)
    return entries


def own_entry(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """A batch entry the gateway answers itself, shaped like Graph's."""
    return {
        "code": status,
        "headers": [{"name": k, "value": v} for k, v in headers.items()],
        "body": json.dumps(body, separators=(",", ":")),
    }
