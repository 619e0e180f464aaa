"""Which requests create entities on Graph: the proxy's first decision about a request.

Pure: no I/O, no clock. Reads the shapes both official SDKs send (graph-api-notes Part B):
form or JSON bodies, batches as a JSON string or an array, unencoded Node op bodies. Where
Graph's behaviour is unknown it leans towards "create", so that a create cannot slip past
the ledger: a false create costs one failed ledger row, a missed one costs the guarantees.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote


@dataclass(frozen=True)
class CreateRules:
    """Which calls create entities (from the policy file's [classification] table)."""

    edges: Mapping[str, str]  # account edge -> entity type, e.g. {"adsets": "adset"}
    copies: bool = True  # POST /{id}/copies is a create
    batch_max_ops: int = 50


DEFAULT_RULES = CreateRules(
    edges=MappingProxyType(
        {
            "campaigns": "campaign",
            "adsets": "adset",
            "ads": "ad",
            "adcreatives": "adcreative",
            "adimages": "adimage",
            "advideos": "advideo",
        }
    )
)


@dataclass(frozen=True)
class RawRequest:
    method: str  # as received
    path: str  # raw path, no query (may have /vNN.N/ prefix, trailing slash)
    query: Mapping[str, str]
    content_type: str  # lower-case mime type without parameters ("" if none)
    authorization: str | None  # the Authorization header, if any
    body: bytes | None  # None when the body is not buffered (streamed upload)


@dataclass(frozen=True)
class CreateOp:
    index: int  # 0 for a single create; the op's index in a batch
    account_id: str | None  # "act_<digits>"; None for copies (not in the path)
    entity_type: str  # from CreateRules.edges, or "copy"
    parent_id: str | None  # ad set: campaign_id; ad: adset_id; copy: the copied source id
    name: str | None  # the `name` param if given
    reparent_id: str | None = None  # copies: campaign_id / adset_id param (new parent)
    deep_copy: bool = False  # copies: deep_copy param


@dataclass(frozen=True)
class Passthrough:
    """Not a create: forward untouched."""


@dataclass(frozen=True)
class Create:
    """One create (or a copy)."""

    op: CreateOp
    token: str | None


@dataclass(frozen=True)
class Batch:
    """A batch call; with no `creates` it is forwarded untouched."""

    creates: tuple[CreateOp, ...]
    size: int  # number of ops in the batch
    token: str | None  # the top-level token


@dataclass(frozen=True)
class Invalid:
    """Refuse with 400 bad_request."""

    message: str


Classification: TypeAlias = Passthrough | Create | Batch | Invalid

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
_MULTIPART = "multipart/form-data"

# Multipart bodies to these edges are file uploads, possibly large: classified from the
# path alone and streamed. Other multipart creates are small and buffered for their params.
_UPLOAD_EDGES = frozenset({"adimages", "advideos"})

# Where an entity's parent id sits in its create params.
_PARENT_PARAMS: Mapping[str, str] = MappingProxyType({"adset": "campaign_id", "ad": "adset_id"})

# Case-insensitive and with an optional minor version: Graph may 404 such paths, but
# classifying one as a create only costs a failed ledger row (see the module docstring).
_VERSION = re.compile(r"v[0-9]+(?:\.[0-9]+)?", re.IGNORECASE)
_ACCOUNT = re.compile(r"act_([0-9]+)", re.IGNORECASE)
# A copy's source: a numeric id, or (in a batch) a reference to an earlier op's result.
_COPY_SOURCE = re.compile(r"[0-9]+|\{result=[^{}]*\}")
_DISPOSITION_NAME = re.compile(r';\s*name="([^"]*)"|;\s*name=([^;\s]+)', re.IGNORECASE)
_DISPOSITION_FILENAME = re.compile(r";\s*filename\*?=", re.IGNORECASE)


@dataclass(frozen=True)
class _Unreadable:
    message: str


def needs_body(
    method: str, path: str, query: Mapping[str, str], content_type: str, rules: CreateRules
) -> bool:
    """Whether the proxy must buffer the body before classify() can decide.

    True for form and JSON bodies of any method (they are small; a batch may be posted to
    any node; a body `method=post` override turns any verb into a create), and for multipart
    POSTs to the root or a single node (a batch with attached files) or to a create edge that
    is not a file upload. False for multipart uploads to adimages and advideos: those are
    classified from the path alone and streamed.
    """
    if content_type in (_FORM, _JSON):
        return True
    if content_type != _MULTIPART or not _is_post(method, query):
        return False
    segments = _segments(path)
    if len(segments) <= 1:
        return True
    is_create = _create_op(0, segments, {}, rules) is not None
    return is_create and segments[1].lower() not in _UPLOAD_EDGES


def classify(req: RawRequest, rules: CreateRules = DEFAULT_RULES) -> Classification:
    """Whether *req* is a create, a batch, something to forward untouched, or malformed."""
    body = _body_params(req.content_type, req.body)
    if isinstance(body, _Unreadable):
        # Unreadable for us is unreadable for Graph too, except where Graph ignores bodies.
        return Invalid(body.message) if _is_post(req.method, req.query) else Passthrough()
    if not _is_post(req.method, req.query, body):
        return Passthrough()
    token = find_token(req.query, req.authorization, body)
    params = {**req.query, **body}
    if "batch" in params:
        return _classify_batch(params["batch"], token, rules)
    op = _create_op(0, _segments(req.path), params, rules)
    return Passthrough() if op is None else Create(op, token)


def request_params(req: RawRequest) -> dict[str, Any]:
    """Query and body parameters together (the body wins), as Graph reads them; {} when the
    body cannot be read."""
    body = _body_params(req.content_type, req.body)
    return {**req.query, **({} if isinstance(body, _Unreadable) else body)}


def find_token(
    query: Mapping[str, str], authorization: str | None, params: Mapping[str, Any] | None
) -> str | None:
    """The access token wherever Graph accepts it: query `access_token`, body field
    `access_token`, `Authorization: Bearer <t>` or `Authorization: OAuth <t>` (first found
    in that order). Empty values count as absent."""
    for found in (query.get("access_token"), _text((params or {}).get("access_token"))):
        if found:
            return found
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() in ("bearer", "oauth") and credentials.strip():
        return credentials.strip()
    return None


def _classify_batch(raw: Any, token: str | None, rules: CreateRules) -> Batch | Invalid:
    ops = raw
    if isinstance(raw, str):
        try:
            ops = json.loads(raw)
        except (ValueError, RecursionError):
            return Invalid("batch is not valid JSON")
    if not isinstance(ops, list):
        return Invalid("batch must be a JSON array")
    if len(ops) > rules.batch_max_ops:
        return Invalid(f"batch has {len(ops)} requests; at most {rules.batch_max_ops} allowed")
    creates: list[CreateOp] = []
    for index, item in enumerate(ops):
        if not isinstance(item, dict):
            return Invalid(f"batch request {index} must be a JSON object")
        url = item.get("relative_url")
        if not isinstance(url, str):
            return Invalid(f"batch request {index} has no relative_url")
        # The op's own `name` key labels it for {result=name:...} references and Node's
        # `attachedFiles` lists multipart parts: neither is an entity param.
        path, _, query = url.partition("?")
        params = {**dict(parse_qsl(query, keep_blank_values=True)), **_op_body(item.get("body"))}
        if not _is_post(_text(item.get("method")) or "GET", params):
            continue
        op = _create_op(index, _segments(path), params, rules)
        if op is not None:
            creates.append(op)
    return Batch(tuple(creates), len(ops), token)


def _op_body(body: Any) -> Mapping[str, Any]:
    if isinstance(body, str):
        # Node does not url-encode op bodies: a `&` inside a value splits it here exactly as
        # it does on Graph, so parsing what comes out is the faithful reading.
        return dict(parse_qsl(body, keep_blank_values=True))
    if isinstance(body, dict):
        return body
    return {}


def _create_op(
    index: int, segments: list[str], params: Mapping[str, Any], rules: CreateRules
) -> CreateOp | None:
    if len(segments) != 2:
        return None
    node, edge = segments[0], segments[1].lower()
    account = _ACCOUNT.fullmatch(node)
    if account is not None:
        entity_type = next((t for e, t in rules.edges.items() if e.lower() == edge), None)
        if entity_type is None:
            return None
        parent_param = _PARENT_PARAMS.get(entity_type)
        return CreateOp(
            index=index,
            account_id=f"act_{account.group(1)}",
            entity_type=entity_type,
            parent_id=_id_param(params, parent_param) if parent_param else None,
            name=_text(params.get("name")),
        )
    if rules.copies and edge == "copies" and _COPY_SOURCE.fullmatch(node):
        return CreateOp(
            index=index,
            account_id=None,
            entity_type="copy",
            parent_id=node,
            name=_text(params.get("name")),
            # An ad set copy names its new campaign, an ad copy its new ad set.
            reparent_id=_id_param(params, "campaign_id") or _id_param(params, "adset_id"),
            deep_copy=_flag(params.get("deep_copy")),
        )
    return None


def _segments(path: str) -> list[str]:
    """Path segments without an API version and without empty segments.

    Percent-escapes are decoded first, so `act_1%2Fcampaigns` reads as a create too.
    """
    segments = [segment for segment in unquote(path).split("/") if segment]
    if segments and _VERSION.fullmatch(segments[0]):
        del segments[0]
    return segments


def _is_post(method: str, *param_maps: Mapping[str, Any]) -> bool:
    """Whether Graph treats the call as a POST, honouring the `method` override parameter.

    Should the query and the body disagree, any override saying POST wins.
    """
    overrides = [(_text(params.get("method")) or "").strip().upper() for params in param_maps]
    present = [override for override in overrides if override]
    if present:
        return "POST" in present
    return method.strip().upper() == "POST"


def _body_params(content_type: str, body: bytes | None) -> dict[str, Any] | _Unreadable:
    if body is None or not body.strip():
        return {}
    if content_type == _FORM:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _Unreadable("form body is not valid UTF-8")
        return dict(parse_qsl(text, keep_blank_values=True))
    if content_type == _JSON:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return _Unreadable("request body is not valid JSON")
        if not isinstance(doc, dict):
            return _Unreadable("a JSON request body must be an object")
        return doc
    if content_type == _MULTIPART:
        return _multipart_fields(body)
    return {}


def _multipart_fields(body: bytes) -> dict[str, Any] | _Unreadable:
    """The text fields of a multipart/form-data body; file parts are skipped.

    The proxy hands over the mime type without its boundary parameter, so the boundary is
    read from the body's first line, where every HTTP client puts it (RFC 2046 allows a
    preamble before it; no client we know sends one).
    """
    delimiter, crlf, _ = body.partition(b"\r\n")
    if not crlf or len(delimiter) < 3 or not delimiter.startswith(b"--"):
        return _Unreadable("multipart body does not start with a boundary line")
    fields: dict[str, Any] = {}
    for part in (b"\r\n" + body).split(b"\r\n" + delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.partition(b"\r\n\r\n")
        disposition = next(
            (
                line
                for line in head.decode("utf-8", "replace").split("\r\n")
                if line.lower().startswith("content-disposition:")
            ),
            "",
        )
        name = _DISPOSITION_NAME.search(disposition)
        if name is None or _DISPOSITION_FILENAME.search(disposition):
            continue
        # Lenient: a text part may legitimately hold binary data (a file sent without a
        # filename); the fields we read are plain text.
        quoted, bare = name.groups()
        fields[bare if quoted is None else quoted] = content.decode("utf-8", "replace")
    return fields


def _text(value: Any) -> str | None:
    """A param value as Graph would read it: JSON numbers, booleans and objects as text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _id_param(params: Mapping[str, Any], key: str) -> str | None:
    return _text(params.get(key)) or None


def _flag(value: Any) -> bool:
    if isinstance(value, bool | int):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in ("true", "1")
