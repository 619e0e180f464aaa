"""Reading the world as Graph shows it: `fields` selection, edge `filtering`, cursor paging.

Pure: no I/O. Raises `GraphError` for a request Graph would refuse (unknown field, bad filter).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from gateway.sim import errors
from gateway.sim.model import (
    ACCOUNT_FIELDS,
    LIVE_HIDDEN,
    READABLE,
    SPECS,
    Account,
    SimObject,
    World,
    parse_json_param,
)


@dataclass(frozen=True)
class FieldSel:
    name: str
    sub: tuple[FieldSel, ...] | None = None


def parse_fields(raw: str) -> tuple[FieldSel, ...]:
    """`name,campaign{id,name},ads.limit(5){id}` → selections (modifiers are ignored)."""
    out: list[FieldSel] = []
    pos = 0

    def parse_list(end: str | None) -> tuple[FieldSel, ...]:
        nonlocal pos
        items: list[FieldSel] = []
        name = ""
        while pos < len(raw):
            ch = raw[pos]
            pos += 1
            if ch == "{":
                sub = parse_list("}")
                items.append(FieldSel(_base_name(name), sub))
                name = ""
            elif ch == ",":
                if name.strip():
                    items.append(FieldSel(_base_name(name)))
                name = ""
            elif end is not None and ch == end:
                break
            else:
                name += ch
        if name.strip():
            items.append(FieldSel(_base_name(name)))
        return tuple(items)

    out.extend(parse_list(None))
    return tuple(sel for sel in out if sel.name)


def _base_name(raw: str) -> str:
    return raw.strip().split(".", 1)[0].strip()


# --- rendering ---------------------------------------------------------------------------------


def render(
    world: World, target: SimObject | Account, selection: Sequence[FieldSel] | None
) -> dict[str, Any]:
    """The JSON Graph returns for *target* with the requested fields (id always included)."""
    if isinstance(target, Account):
        fields = target.fields()
        out: dict[str, Any] = {}
        for sel in selection or (FieldSel("id"), FieldSel("account_id")):
            if sel.name not in ACCOUNT_FIELDS:
                raise errors.nonexisting_field(sel.name, "AdAccount")
            out[sel.name] = fields[sel.name]
        out.setdefault("id", target.id)
        return out
    readable = READABLE[target.kind]
    out = {}
    for sel in selection or (FieldSel("id"),):
        if sel.name not in readable:
            raise errors.nonexisting_field(sel.name, SPECS[target.kind].node_type)
        if sel.name in ("campaign", "adset", "creative"):
            related = _related(world, target, sel.name)
            if related is not None:
                out[sel.name] = render(world, related, sel.sub)
            continue
        value = world.field_value(target, sel.name)
        if value is not None:
            out[sel.name] = value
    out.setdefault("id", target.id)
    return out


def _related(world: World, obj: SimObject, name: str) -> SimObject | None:
    if name == "creative":
        ref = obj.params.get("creative")
        return world.objects.get(ref["id"]) if isinstance(ref, dict) else None
    return world.objects.get((obj.campaign_id if name == "campaign" else obj.adset_id) or "")


# --- filtering ---------------------------------------------------------------------------------

OPERATORS = frozenset(
    {
        "EQUAL",
        "NOT_EQUAL",
        "IN",
        "NOT_IN",
        "CONTAIN",
        "NOT_CONTAIN",
        "STARTS_WITH",
        "GREATER_THAN",
        "GREATER_THAN_OR_EQUAL",
        "LESS_THAN",
        "LESS_THAN_OR_EQUAL",
    }
)
FILTER_FIELDS = {
    "id": "id",
    "name": "name",
    "status": "status",
    "configured_status": "status",
    "effective_status": "effective_status",
    "campaign.id": "campaign_id",
    "campaign_id": "campaign_id",
    "adset.id": "adset_id",
    "adset_id": "adset_id",
    "created_time": "created_time",
    "updated_time": "updated_time",
}
_STATUS_FIELDS = frozenset({"status", "effective_status"})
_NUMERIC_OPERATORS = frozenset(
    {"GREATER_THAN", "GREATER_THAN_OR_EQUAL", "LESS_THAN", "LESS_THAN_OR_EQUAL"}
)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Filter:
    field: str  # attribute name in FILTER_FIELDS' values
    operator: str
    value: Any


def parse_filtering(raw: Any, effective_status: Any = None) -> tuple[Filter, ...]:
    """The `filtering` JSON list plus the `effective_status` edge parameter, validated."""
    out: list[Filter] = []
    if raw not in (None, ""):
        items = parse_json_param(raw)
        if not isinstance(items, list):
            raise errors.invalid_parameter(
                "Param filtering must be a JSON array of {field, operator, value}",
                blame=[["filtering"]],
            )
        for item in items:
            if not isinstance(item, dict) or not {"field", "operator", "value"} <= item.keys():
                raise errors.invalid_parameter(
                    "Each filtering entry needs field, operator and value", blame=[["filtering"]]
                )
            name = str(item["field"])
            if name not in FILTER_FIELDS:
                raise errors.invalid_parameter(
                    f"Filtering field {name} is invalid. Choose from {sorted(FILTER_FIELDS)}",
                    blame=[["filtering"]],
                )
            operator = str(item["operator"]).upper()
            if operator not in OPERATORS:
                raise errors.invalid_parameter(
                    f"Filtering operator {operator} is invalid", blame=[["filtering"]]
                )
            value = item.get("value")
            if operator in ("IN", "NOT_IN") and not isinstance(value, list):
                raise errors.invalid_parameter(
                    f"Filtering operator {operator} needs a list value", blame=[["filtering"]]
                )
            if operator in _NUMERIC_OPERATORS and not _is_number(value):
                raise errors.invalid_parameter(
                    f"Filtering operator {operator} needs a number", blame=[["filtering"]]
                )
            out.append(Filter(FILTER_FIELDS[name], operator, value))
    if effective_status not in (None, ""):
        statuses = parse_json_param(effective_status)
        if isinstance(statuses, str) and statuses[:1] != "[":
            statuses = [s for s in statuses.split(",") if s]
        if not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses):
            raise errors.invalid_parameter(
                "Param effective_status must be a list", blame=[["effective_status"]]
            )
        out.append(Filter("effective_status", "IN", [str(s).upper() for s in statuses]))
    return tuple(out)


def _value(world: World, obj: SimObject, attr: str) -> Any:
    if attr in ("created_time", "updated_time"):
        return getattr(obj, attr)
    if attr == "effective_status":
        return world.effective_status(obj)
    return getattr(obj, attr)


def _compare(actual: Any, operator: str, expected: Any) -> bool:
    if operator in _NUMERIC_OPERATORS:
        if not _is_number(actual):
            return False
        a, e = float(actual), float(expected)
        return {
            "GREATER_THAN": a > e,
            "GREATER_THAN_OR_EQUAL": a >= e,
            "LESS_THAN": a < e,
            "LESS_THAN_OR_EQUAL": a <= e,
        }[operator]
    text = "" if actual is None else str(actual)
    match operator:
        case "EQUAL":
            return text == str(expected)
        case "NOT_EQUAL":
            return text != str(expected)
        case "IN":
            return text in {str(v) for v in expected}
        case "NOT_IN":
            return text not in {str(v) for v in expected}
        case "CONTAIN":
            return str(expected).lower() in text.lower()
        case "NOT_CONTAIN":
            return str(expected).lower() not in text.lower()
        case _:  # STARTS_WITH
            return text.lower().startswith(str(expected).lower())


def select(world: World, items: Sequence[SimObject], filters: Sequence[Filter]) -> list[SimObject]:
    """Apply *filters*; with no status filter, deleted and archived objects stay hidden."""
    status_filtered = any(f.field in _STATUS_FIELDS for f in filters)
    out = []
    for obj in items:
        if not status_filtered and obj.status in LIVE_HIDDEN:
            continue
        if all(_compare(_value(world, obj, f.field), f.operator, f.value) for f in filters):
            out.append(obj)
    return out


# --- paging ------------------------------------------------------------------------------------


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, param: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("seq:"):
            raise ValueError(text)
        return int(text[4:])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise errors.invalid_parameter(
            f"The {param} cursor specified is invalid", blame=[[param]]
        ) from exc


def parse_limit(raw: Any, default: int, maximum: int) -> int:
    if raw in (None, ""):
        return default
    try:
        limit = int(str(raw))
    except ValueError as exc:
        raise errors.invalid_parameter("Param limit must be an integer", blame=[["limit"]]) from exc
    if limit < 0:
        raise errors.invalid_parameter("Param limit must be non-negative", blame=[["limit"]])
    return min(limit, maximum)


def page(
    world: World,
    items: Sequence[SimObject],
    params: Mapping[str, Any],
    *,
    selection: Sequence[FieldSel] | None,
    page_url: str,
    token: str | None = None,
) -> dict[str, Any]:
    """Graph's edge answer: `{"data": [...], "paging": {...}}` over *items* (newest first).

    Cursors name a position in creation order, so they stay valid when objects are added
    or deleted; `next` is present only when more items follow. Like Graph's, the links carry
    the access token, so a client can follow them as they are.
    """
    limits = world.limits
    limit = parse_limit(params.get("limit"), limits.page_default_limit, limits.page_max_limit)
    start = 0
    if params.get("after"):
        seq = decode_cursor(str(params["after"]), "after")
        start = next((i for i, o in enumerate(items) if o.seq < seq), len(items))
        chunk = list(items[start : start + limit])
    elif params.get("before"):
        seq = decode_cursor(str(params["before"]), "before")
        end = next((i for i, o in enumerate(items) if o.seq <= seq), len(items))
        start = max(0, end - limit)
        chunk = list(items[start:end])
    else:
        chunk = list(items[:limit])
    body: dict[str, Any] = {"data": [render(world, o, selection) for o in chunk]}
    if chunk:
        query = {k: v for k, v in params.items() if k not in ("after", "before") and _is_text(v)}
        if token:
            query["access_token"] = token
        paging: dict[str, Any] = {
            "cursors": {
                "before": encode_cursor(chunk[0].seq),
                "after": encode_cursor(chunk[-1].seq),
            }
        }
        if start + len(chunk) < len(items):
            paging["next"] = (
                page_url + "?" + urlencode(query | {"after": encode_cursor(chunk[-1].seq)})
            )
        if start > 0:
            paging["previous"] = (
                page_url + "?" + urlencode(query | {"before": encode_cursor(chunk[0].seq)})
            )
        body["paging"] = paging
    if str(params.get("summary", "")).lower() in ("true", "1", "total_count"):
        body["summary"] = {"total_count": len(items)}
    return body


def _is_text(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)
