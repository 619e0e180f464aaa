"""Sending part of a batch: drop the ops the gateway answers itself, merge the answers back.

Pure. Under a job, a batch op over its cap is not sent (it gets a `cap_exceeded` entry) and an
op whose slot is already created is replayed; the rest go to Graph as a smaller batch in the
caller's own encoding, and the answer comes back whole, in the caller's order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode

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


_REFERENCE = re.compile(r"\{result=([^:{}]+):\$\.id\}")


def _substitute(text: str, ids: Mapping[str, str]) -> str:
    """*text* with every `{result=NAME:$.id}` of a known NAME (raw or percent-encoded)
    replaced by its id."""
    decoded_refs = text
    if "%7B" in text.upper():
        for name, graph_id in ids.items():
            ref = "{result=" + name + ":$.id}"
            for encoded in {quote(ref, safe=""), quote(ref, safe="").lower()}:
                decoded_refs = decoded_refs.replace(encoded, graph_id)
    return _REFERENCE.sub(lambda m: ids.get(m.group(1), m.group(0)), decoded_refs)


def resend(body: BatchBody, indexes: Sequence[int], ids: Mapping[str, str]) -> BatchBody | None:
    """A batch of only the ops at *indexes* (in order), for sending them again.

    *ids* maps the `name` of each op already created to its id: a reference to it
    (`{result=NAME:$.id}`) becomes that id and a `depends_on` it is dropped. None when an op
    depends on an op that is neither created nor sent again (or on a field other than the
    id): that op cannot go alone.
    """
    names_sent = {
        str(body.ops[i]["name"])
        for i in indexes
        if isinstance(body.ops[i], dict) and body.ops[i].get("name")
    }
    ops: list[Any] = []
    for i in indexes:
        op = body.ops[i]
        if not isinstance(op, dict):
            return None
        out = dict(op)
        for field in ("relative_url", "body"):
            value = out.get(field)
            if isinstance(value, str):
                out[field] = _substitute(value, ids)
                # Any reference left must be to an op sent along (other JSONPaths cannot be
                # resolved from an earlier answer here).
                text = unquote(out[field])
                refs = _REFERENCE.findall(text)
                if text.count("{result=") != len(refs) or set(refs) - names_sent:
                    return None
        depends = out.get("depends_on")
        if isinstance(depends, str) and depends in ids:
            del out["depends_on"]
        elif isinstance(depends, str) and depends not in names_sent:
            return None
        ops.append(out)
    return BatchBody(dict(body.params), ops, body.batch_was_string)
