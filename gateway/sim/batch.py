"""Graph batch requests: parsing the `batch` parameter and resolving `{result=name:$.path}`.

Pure: no I/O. Accepts both encodings seen on the wire (graph-api-notes Part B §2): a form
field holding a JSON string (Python SDK) and a JSON body whose `batch` is an array (Node SDK).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from gateway.sim import errors
from gateway.sim.model import parse_bool

REFERENCE = re.compile(r"\{result=([^:}]+):([^}]*)\}")


@dataclass(frozen=True)
class BatchOp:
    index: int
    method: str
    path: str  # path part of relative_url (version kept; the caller strips it)
    params: dict[str, str]  # query of relative_url, then the form body
    name: str | None
    depends_on: str | None
    omit_response_on_success: bool
    attached_files: tuple[str, ...]
    raw_url: str
    raw_body: str


def parse_batch(raw: Any, *, max_ops: int) -> list[dict[str, Any]]:
    """The list of op objects from the `batch` parameter (string or array)."""
    items = raw
    if isinstance(raw, str):
        try:
            items = json.loads(raw)
        except ValueError as exc:
            raise errors.batch_not_array() from exc
    if not isinstance(items, list):
        raise errors.batch_not_array()
    if len(items) > max_ops:
        raise errors.batch_too_large(max_ops)
    if not items:
        raise errors.batch_not_array()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise errors.batch_bad_op(i, "each request must be a JSON object")
        if not isinstance(item.get("relative_url"), str):
            raise errors.batch_bad_op(i, "relative_url is required")
    return items


def op_from(index: int, item: dict[str, Any], results: dict[str, Any]) -> BatchOp:
    """One op, with JSONPath references to earlier named results substituted."""
    url = substitute(str(item["relative_url"]), results)
    body = item.get("body") or ""
    if isinstance(body, dict):  # tolerated: some clients send the body as an object
        body = "&".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in body.items()
        )
    body = substitute(str(body), results)
    split = urlsplit(url)
    params = dict(parse_qsl(split.query, keep_blank_values=True))
    params.update(parse_qsl(body, keep_blank_values=True))
    # The Python SDK percent-encodes op bodies, references included: resolve those too.
    params = {k: substitute(v, results) for k, v in params.items()}
    attached = item.get("attached_files") or ""
    return BatchOp(
        index=index,
        method=str(item.get("method", "GET")).upper(),
        path=split.path,
        params=params,
        name=str(item["name"]) if item.get("name") else None,
        depends_on=str(item["depends_on"]) if item.get("depends_on") else None,
        omit_response_on_success=parse_bool(item.get("omit_response_on_success", False)),
        attached_files=tuple(f.strip() for f in str(attached).split(",") if f.strip()),
        raw_url=url,
        raw_body=body,
    )


def references(item: dict[str, Any]) -> set[str]:
    """Names of earlier ops this op's relative_url or body refers to."""
    text = str(item.get("relative_url", "")) + str(item.get("body", ""))
    return {m.group(1) for m in REFERENCE.finditer(text + unquote_plus(text))}


class MissingResult(Exception):
    """A `{result=...}` names an op that has no (successful) result."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def substitute(text: str, results: dict[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, path = match.group(1), match.group(2)
        if name not in results:
            raise MissingResult(name)
        return ",".join(str(v) for v in jsonpath(results[name], path))

    return REFERENCE.sub(replace, text)


def jsonpath(doc: Any, path: str) -> list[Any]:
    """The small JSONPath subset Graph documents: `$`, `.key`, `.*`, `[n]`, `[*]`."""
    tokens = re.findall(r"\.([^.\[\]]+)|\[(\d+|\*)\]", path.strip().removeprefix("$"))
    current = [doc]
    for key, index in tokens:
        step: list[Any] = []
        selector = key or index
        for node in current:
            if selector == "*":
                if isinstance(node, dict):
                    step.extend(node.values())
                elif isinstance(node, list):
                    step.extend(node)
            elif isinstance(node, dict) and selector in node:
                step.append(node[selector])
            elif isinstance(node, list) and selector.isdigit() and int(selector) < len(node):
                step.append(node[int(selector)])
        current = step
    return current
