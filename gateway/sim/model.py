"""The simulated Graph world: ad accounts, tokens, ad objects and the operations on them.

Pure: no I/O and no clock (every operation takes `now`, POSIX seconds). Operations raise
`GraphError` for what Graph would refuse; the server renders it. `persist=False` runs an
operation fully (validation, limits, ids) without storing it: the "silent drop" fault.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gateway.sim import errors
from gateway.sim.config import AccountSpec, AccountStatus, ObjectLimits, TokenKind, TokenSpec

# Graph ids are numeric strings; ad-object ids are 18 digits these days.
ID_BASE = 120_200_000_000_000_000


class Kind(StrEnum):
    CAMPAIGN = "campaign"
    ADSET = "adset"
    AD = "ad"
    CREATIVE = "adcreative"
    IMAGE = "adimage"


@dataclass(frozen=True)
class KindSpec:
    kind: Kind
    edge: str
    node_type: str
    # Parameters stored on create / update (beyond name and status).
    writable: frozenset[str]
    required: tuple[str, ...]
    statuses: frozenset[str]
    default_status: str


_COMMON = frozenset({"id", "account_id", "name", "status", "created_time", "updated_time"})
SPECS: dict[Kind, KindSpec] = {
    Kind.CAMPAIGN: KindSpec(
        Kind.CAMPAIGN,
        "campaigns",
        "Campaign",
        frozenset(
            {
                "objective",
                "special_ad_categories",
                "daily_budget",
                "lifetime_budget",
                "bid_strategy",
                "buying_type",
                "spend_cap",
                "start_time",
                "stop_time",
            }
        ),
        ("name", "objective", "special_ad_categories"),
        frozenset({"ACTIVE", "PAUSED"}),
        "ACTIVE",
    ),
    Kind.ADSET: KindSpec(
        Kind.ADSET,
        "adsets",
        "AdSet",
        frozenset(
            {
                "daily_budget",
                "lifetime_budget",
                "billing_event",
                "optimization_goal",
                "bid_amount",
                "bid_strategy",
                "targeting",
                "promoted_object",
                "start_time",
                "end_time",
            }
        ),
        ("name", "campaign_id", "billing_event", "targeting"),
        frozenset({"ACTIVE", "PAUSED"}),
        "ACTIVE",
    ),
    Kind.AD: KindSpec(
        Kind.AD,
        "ads",
        "Ad",
        frozenset({"tracking_specs", "conversion_domain"}),
        ("name", "adset_id", "creative"),
        frozenset({"ACTIVE", "PAUSED"}),
        "ACTIVE",
    ),
    Kind.CREATIVE: KindSpec(
        Kind.CREATIVE,
        "adcreatives",
        "AdCreative",
        frozenset(
            {
                "object_story_spec",
                "title",
                "body",
                "image_hash",
                "image_url",
                "link_url",
                "call_to_action_type",
                "object_id",
                "asset_feed_spec",
            }
        ),
        ("name",),
        frozenset({"ACTIVE"}),
        "ACTIVE",
    ),
    Kind.IMAGE: KindSpec(
        Kind.IMAGE, "adimages", "AdImage", frozenset(), (), frozenset({"ACTIVE"}), "ACTIVE"
    ),
}
EDGE_KINDS: dict[str, Kind] = {spec.edge: spec.kind for spec in SPECS.values()}
READABLE: dict[Kind, frozenset[str]] = {
    Kind.CAMPAIGN: _COMMON
    | SPECS[Kind.CAMPAIGN].writable
    | {"configured_status", "effective_status", "source_campaign_id"},
    Kind.ADSET: _COMMON
    | SPECS[Kind.ADSET].writable
    | {"campaign_id", "campaign", "configured_status", "effective_status", "source_adset_id"},
    Kind.AD: _COMMON
    | SPECS[Kind.AD].writable
    | {
        "campaign_id",
        "campaign",
        "adset_id",
        "adset",
        "creative",
        "configured_status",
        "effective_status",
        "source_ad_id",
    },
    Kind.CREATIVE: _COMMON | SPECS[Kind.CREATIVE].writable,
    Kind.IMAGE: _COMMON | {"hash", "url", "url_128", "width", "height", "original_width"},
}
ACCOUNT_FIELDS = frozenset(
    {
        "id",
        "account_id",
        "name",
        "account_status",
        "disable_reason",
        "currency",
        "timezone_name",
        "amount_spent",
        "spend_cap",
        "created_time",
    }
)
# Fields a default read returns when `fields` is absent (Graph returns just the id for ad
# objects on edges; by id it adds the name).
DEFAULT_NODE_FIELDS = ("id", "name")
# Which child edges exist under which parent kind.
CHILD_EDGES: dict[Kind, dict[str, Kind]] = {
    Kind.CAMPAIGN: {"adsets": Kind.ADSET, "ads": Kind.AD},
    Kind.ADSET: {"ads": Kind.AD},
}
LIVE_HIDDEN = frozenset({"DELETED", "ARCHIVED"})


@dataclass
class Account:
    spec: AccountSpec
    account_status: int
    disable_reason: int
    created_time: float

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def account_id(self) -> str:
        return self.spec.account_id

    @property
    def active(self) -> bool:
        return self.account_status == AccountStatus.ACTIVE

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "name": self.spec.name,
            "account_status": self.account_status,
            "disable_reason": self.disable_reason,
            "currency": self.spec.currency,
            "timezone_name": self.spec.timezone_name,
            "amount_spent": "0",
            "spend_cap": "0",
            "created_time": iso(self.created_time),
        }


@dataclass
class SimObject:
    id: str
    kind: Kind
    account_id: str
    name: str
    status: str
    created_time: float
    updated_time: float
    params: dict[str, Any] = field(default_factory=dict)
    campaign_id: str | None = None
    adset_id: str | None = None
    source_id: str | None = None
    # Creation order across all objects; paging cursors point into it.
    seq: int = 0

    @property
    def deleted(self) -> bool:
        return self.status == "DELETED"


def iso(ts: float) -> str:
    """Graph's timestamp format: `2026-11-29T01:44:34+0000`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def parse_json_param(value: Any) -> Any:
    """A nested parameter arrives as a JSON string (form bodies) or natively (JSON bodies)."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1")


# Graph returns money amounts as strings of minor units and bids as integers.
_MONEY_FIELDS = frozenset({"daily_budget", "lifetime_budget", "spend_cap"})
_INT_FIELDS = frozenset({"bid_amount"})


def _stored(name: str, value: Any) -> Any:
    """A parameter as Graph stores and returns it (form values arrive as strings)."""
    value = parse_json_param(value)
    if (
        name in _MONEY_FIELDS
        and isinstance(value, int | float | str)
        and not isinstance(value, bool)
    ):
        return str(value)
    if name in _INT_FIELDS and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


class World:
    """Everything that exists in the simulated Graph, and the operations Graph offers on it."""

    def __init__(
        self,
        accounts: Iterable[AccountSpec],
        tokens: Iterable[TokenSpec],
        limits: ObjectLimits,
        *,
        now: float,
    ) -> None:
        self.limits = limits
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, TokenSpec] = {}
        self.objects: dict[str, SimObject] = {}
        self._next_id = 0
        for spec in accounts:
            self.put_account(spec, now=now)
        for token in tokens:
            self.tokens[token.token] = token

    # --- accounts and tokens ---------------------------------------------------------------

    def put_account(self, spec: AccountSpec, *, now: float) -> Account:
        current = self.accounts.get(spec.account_id)
        created = current.created_time if current else now - 86_400 * 365
        account = Account(spec, spec.account_status, spec.disable_reason, created)
        self.accounts[spec.account_id] = account
        return account

    def suspend(self, account_id: str, *, status: int, reason: int) -> None:
        account = self.accounts[account_id.removeprefix("act_")]
        account.account_status = status
        account.disable_reason = reason

    def authenticate(self, value: str | None) -> TokenSpec:
        if not value:
            raise errors.token_required()
        token = self.tokens.get(value)
        if token is None:
            raise errors.token_unparseable()
        if token.kind is TokenKind.EXPIRED:
            raise errors.token_expired("Saturday, 01-Nov-25 00:00:00 PDT")
        if token.kind is TokenKind.INVALID:
            raise errors.token_invalid()
        return token

    def account(self, token: TokenSpec, act_id: str, *, write: bool, method: str) -> Account:
        """The ad account *act_id* ("act_<n>") as *token* may use it."""
        account = self.accounts.get(act_id.removeprefix("act_"))
        if account is None or (token.accounts is not None and account.id not in token.accounts):
            raise errors.object_missing(act_id, method)
        needed = "ads_management" if write else "ads_read"
        if needed not in token.scopes and "ads_management" not in token.scopes:
            raise errors.permission_denied(needed, account.id)
        if write and not account.active:
            raise errors.account_not_active(account.id, account.account_status)
        return account

    # --- reads -------------------------------------------------------------------------------

    def node(self, token: TokenSpec, object_id: str, *, write: bool, method: str) -> SimObject:
        obj = self.objects.get(object_id)
        if obj is None:
            raise errors.object_missing(object_id, method)
        self.account(token, "act_" + obj.account_id, write=False, method=method)
        if write:
            self.account(token, "act_" + obj.account_id, write=True, method=method)
        return obj

    def effective_status(self, obj: SimObject) -> str:
        if obj.status in LIVE_HIDDEN:
            return obj.status
        if obj.status == "PAUSED":
            return "PAUSED"
        adset = self.objects.get(obj.adset_id or "")
        if adset is not None and adset.status != "ACTIVE":
            return "ADSET_PAUSED"
        campaign = self.objects.get(obj.campaign_id or "")
        if campaign is not None and campaign.status != "ACTIVE":
            return "CAMPAIGN_PAUSED"
        return obj.status

    def field_value(self, obj: SimObject, name: str) -> Any:
        match name:
            case "id":
                return obj.id
            case "account_id":
                return obj.account_id
            case "name":
                return obj.name
            case "status" | "configured_status":
                return obj.status
            case "effective_status":
                return self.effective_status(obj)
            case "created_time":
                return iso(obj.created_time)
            case "updated_time":
                return iso(obj.updated_time)
            case "campaign_id":
                return obj.campaign_id
            case "adset_id":
                return obj.adset_id
            case "source_campaign_id" | "source_adset_id" | "source_ad_id":
                return obj.source_id or "0"
            case _:
                return obj.params.get(name)

    def children(self, parent: SimObject | Account, kind: Kind) -> list[SimObject]:
        """Every object of *kind* under *parent*, deleted ones included, newest first."""
        if isinstance(parent, Account):
            matches = [
                o
                for o in self.objects.values()
                if o.account_id == parent.account_id and o.kind == kind
            ]
        elif parent.kind is Kind.CAMPAIGN:
            matches = [
                o for o in self.objects.values() if o.campaign_id == parent.id and o.kind == kind
            ]
        else:
            matches = [
                o for o in self.objects.values() if o.adset_id == parent.id and o.kind == kind
            ]
        matches.sort(key=lambda o: o.seq, reverse=True)
        return matches

    def _live_count(self, predicate: Any) -> int:
        return sum(1 for o in self.objects.values() if o.status not in LIVE_HIDDEN and predicate(o))

    # --- writes ------------------------------------------------------------------------------

    def _stamp(self, obj: SimObject, *, numeric_id: bool = True) -> SimObject:
        """Give *obj* the next creation sequence number and, for ad objects, its Graph id."""
        self._next_id += 1
        obj.seq = self._next_id
        if numeric_id:
            obj.id = str(ID_BASE + self._next_id)
        return obj

    def create(
        self,
        token: TokenSpec,
        act_id: str,
        kind: Kind,
        params: Mapping[str, Any],
        *,
        now: float,
        persist: bool = True,
        files: Mapping[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """POST /act_{id}/{edge}: validate, enforce limits, store; Graph's create answer."""
        account = self.account(token, act_id, write=True, method="POST")
        if kind is Kind.IMAGE:
            return self._create_images(account, params, files or {}, now=now, persist=persist)
        spec = SPECS[kind]
        for name in spec.required:
            if params.get(name) in (None, ""):
                raise errors.missing_parameter(name)
        status = str(params.get("status", spec.default_status)).upper()
        if status not in spec.statuses:
            raise errors.invalid_parameter(
                f"Param status must be one of {{{', '.join(sorted(spec.statuses))}}}",
                blame=[["status"]],
            )
        obj = SimObject(
            id="",
            kind=kind,
            account_id=account.account_id,
            name=str(params.get("name", "")),
            status=status,
            created_time=now,
            updated_time=now,
            params={k: _stored(k, v) for k, v in params.items() if k in spec.writable},
        )
        self._link_parents(obj, account, params)
        self._check_limits(kind, account.account_id, 1, adset_id=obj.adset_id)
        self._stamp(obj)
        if persist:
            self.objects[obj.id] = obj
        return {"id": obj.id}

    def _link_parents(self, obj: SimObject, account: Account, params: Mapping[str, Any]) -> None:
        if obj.kind is Kind.ADSET:
            campaign = self._parent(params["campaign_id"], Kind.CAMPAIGN, account, "campaign_id")
            obj.campaign_id = campaign.id
        elif obj.kind is Kind.AD:
            adset = self._parent(params["adset_id"], Kind.ADSET, account, "adset_id")
            obj.adset_id = adset.id
            obj.campaign_id = adset.campaign_id
            obj.params["creative"] = self._creative_ref(params["creative"], account.account_id)

    def _creative_ref(self, raw: Any, account_id: str) -> dict[str, str]:
        """`creative={"creative_id": X}` → the stored reference `{"id": X}`."""
        creative = parse_json_param(raw)
        creative_id = creative.get("creative_id") if isinstance(creative, dict) else None
        found = self.objects.get(str(creative_id))
        if found is None or found.kind is not Kind.CREATIVE or found.account_id != account_id:
            raise errors.invalid_parameter(
                'Invalid parameter: creative must be {"creative_id": <id of a creative>}',
                blame=[["creative"]],
            )
        return {"id": found.id}

    def _parent(self, raw: Any, kind: Kind, account: Account, param: str) -> SimObject:
        parent = self.objects.get(str(raw))
        if parent is None or parent.kind is not kind or parent.account_id != account.account_id:
            raise errors.invalid_parameter(f"Invalid parameter: {param} {raw!s}", blame=[[param]])
        if parent.deleted:
            raise errors.invalid_parameter(
                f"Invalid parameter: {param} {raw!s} refers to a deleted object", blame=[[param]]
            )
        return parent

    def _check_limits(
        self, kind: Kind, account_id: str, adding: int, *, adset_id: str | None = None
    ) -> None:
        """Refuse *adding* more live objects of *kind* past the account's (or ad set's) limit."""
        lim = self.limits
        per_account = {
            Kind.CAMPAIGN: (lim.campaigns_per_account, "campaigns per ad account"),
            Kind.ADSET: (lim.adsets_per_account, "ad sets per ad account"),
            Kind.AD: (lim.ads_per_account, "ads per ad account"),
        }
        if kind in per_account:
            limit, what = per_account[kind]
            n = self._live_count(lambda o: o.kind is kind and o.account_id == account_id)
            if n + adding > limit:
                raise errors.object_limit(what, limit)
        if kind is Kind.AD and adset_id is not None:
            n = self._live_count(lambda o: o.kind is Kind.AD and o.adset_id == adset_id)
            if n + adding > lim.ads_per_adset:
                raise errors.object_limit("ads per ad set", lim.ads_per_adset)

    def _create_images(
        self,
        account: Account,
        params: Mapping[str, Any],
        files: Mapping[str, bytes],
        *,
        now: float,
        persist: bool,
    ) -> dict[str, Any]:
        uploads: dict[str, bytes] = dict(files)
        if "bytes" in params:
            try:
                data = base64.b64decode(str(params["bytes"]), validate=True)
                if not data:
                    raise ValueError("empty image")
            except ValueError as exc:
                raise errors.invalid_parameter(
                    "Param bytes must be base64", blame=[["bytes"]]
                ) from exc
            uploads[str(params.get("name") or "bytes")] = data
        if not uploads:
            raise errors.missing_parameter("bytes")
        images: dict[str, Any] = {}
        for key, data in uploads.items():
            digest = hashlib.md5(data).hexdigest()  # noqa: S324  # Graph's image hash is an md5
            width, height = _png_size(data)
            obj_id = f"{account.account_id}:{digest}"
            obj = SimObject(
                id=obj_id,
                kind=Kind.IMAGE,
                account_id=account.account_id,
                name=key,
                status="ACTIVE",
                created_time=now,
                updated_time=now,
                params={
                    "hash": digest,
                    "url": f"https://scontent.sim.invalid/{digest}.png",
                    "url_128": f"https://scontent.sim.invalid/{digest}_128.png",
                    "width": width,
                    "height": height,
                    "original_width": width,
                },
            )
            existing = self.objects.get(obj_id)
            if persist and (existing is None or existing.deleted):
                self.objects[obj_id] = self._stamp(obj, numeric_id=False)
            images[key] = {
                "hash": digest,
                "url": obj.params["url"],
                "url_128": obj.params["url_128"],
                "url_256": f"https://scontent.sim.invalid/{digest}_256.png",
                "url_256_height": str(min(height, 256)),
                "url_256_width": str(min(width, 256)),
                "height": height,
                "width": width,
                "name": key,
            }
        return {"images": images}

    def delete_image(self, token: TokenSpec, act_id: str, image_hash: str) -> dict[str, Any]:
        account = self.account(token, act_id, write=True, method="DELETE")
        obj = self.objects.get(f"{account.account_id}:{image_hash}")
        if obj is None:
            raise errors.invalid_parameter(
                f"Image with hash {image_hash} not found", blame=[["hash"]]
            )
        obj.status = "DELETED"
        return {"success": True}

    def update(
        self,
        token: TokenSpec,
        object_id: str,
        params: Mapping[str, Any],
        *,
        now: float,
        persist: bool = True,
    ) -> dict[str, Any]:
        """POST /{id}: change name, status and writable fields (an ad's creative too).

        Deleted objects take only a new name; archived ones a name or a status of DELETED.
        """
        obj = self.node(token, object_id, write=True, method="POST")
        spec = SPECS[obj.kind]
        editable = (
            spec.writable | {"name", "status"} | ({"creative"} if obj.kind is Kind.AD else set())
        )
        changes = {k: v for k, v in params.items() if k in editable}
        if obj.deleted and set(changes) - {"name"}:
            raise errors.restricted_edit(obj.kind.value, deleted=True)
        if obj.status == "ARCHIVED" and set(changes) - {"name", "status"}:
            raise errors.restricted_edit(obj.kind.value, deleted=False)
        creative = (
            self._creative_ref(changes.pop("creative"), obj.account_id)
            if "creative" in changes
            else None
        )
        status = str(changes.get("status", obj.status)).upper()
        allowed = spec.statuses | {"DELETED", "ARCHIVED"}
        if status not in allowed or (
            obj.status == "ARCHIVED" and status not in ("ARCHIVED", "DELETED")
        ):
            raise errors.invalid_parameter(
                f"Invalid status transition to {status}", blame=[["status"]]
            )
        if not persist:
            return {"success": True}
        if "name" in changes:
            obj.name = str(changes["name"])
        for key, value in changes.items():
            if key not in ("name", "status"):
                obj.params[key] = _stored(key, value)
        if creative is not None:
            obj.params["creative"] = creative
        obj.updated_time = now
        if status == "DELETED":
            self._delete_tree(obj, now=now)
        else:
            obj.status = status
        return {"success": True}

    def delete(
        self, token: TokenSpec, object_id: str, *, now: float, persist: bool = True
    ) -> dict[str, Any]:
        """DELETE /{id}: the object and (campaigns, ad sets) its children become DELETED.

        Deleting an already deleted object succeeds again (the simulator's choice; unconfirmed).
        """
        obj = self.node(token, object_id, write=True, method="DELETE")
        if persist:
            self._delete_tree(obj, now=now)
        return {"success": True}

    def _delete_tree(self, obj: SimObject, *, now: float) -> None:
        for child in self.objects.values():
            in_tree = child.campaign_id == obj.id or child.adset_id == obj.id or child is obj
            if in_tree and not child.deleted:
                child.status = "DELETED"
                child.updated_time = now

    # --- copies ------------------------------------------------------------------------------

    def copy(
        self,
        token: TokenSpec,
        source_id: str,
        params: Mapping[str, Any],
        *,
        now: float,
        persist: bool = True,
    ) -> dict[str, Any]:
        """POST /{id}/copies for campaigns, ad sets and ads (graph-api-notes §5)."""
        source = self.node(token, source_id, write=True, method="POST")
        if source.kind not in (Kind.CAMPAIGN, Kind.ADSET, Kind.AD):
            raise errors.unknown_path("/copies")
        if source.deleted:
            raise errors.invalid_parameter("Cannot copy a deleted object", blame=[["id"]])
        deep = parse_bool(params.get("deep_copy", False))
        status_option = str(params.get("status_option", "PAUSED")).upper()
        if status_option not in ("ACTIVE", "PAUSED", "INHERITED_FROM_SOURCE"):
            raise errors.invalid_parameter("Invalid status_option", blame=[["status_option"]])
        rename = parse_json_param(params.get("rename_options", {})) or {}
        if not isinstance(rename, dict):
            raise errors.invalid_parameter(
                "rename_options must be an object", blame=[["rename_options"]]
            )
        strategy = str(rename.get("rename_strategy", "ONLY_TOP_LEVEL_RENAME"))
        if strategy not in ("DEEP_RENAME", "ONLY_TOP_LEVEL_RENAME", "NO_RENAME"):
            raise errors.invalid_parameter("Invalid rename_strategy", blame=[["rename_options"]])
        prefix = str(rename.get("rename_prefix", ""))
        suffix = str(rename.get("rename_suffix", " - Copy"))

        plan = self._copy_plan(source, params, deep=deep)
        ads = sum(1 for obj, _parent in plan if obj.kind is Kind.AD)
        if deep and ads > self.limits.deep_copy_sync_max_ads:
            raise errors.invalid_parameter(
                f"Deep copy of more than {self.limits.deep_copy_sync_max_ads} ads must use an "
                "asynchronous batch request",
            )
        # Limits are checked on the whole plan before anything is stored. Only an ad copied on
        # its own lands in an existing ad set; deep copies fill new parents.
        new_counts = Counter(obj.kind for obj, _parent in plan)
        target_adset = plan[0][1] if source.kind is Kind.AD else None
        for kind, n in new_counts.items():
            self._check_limits(kind, source.account_id, n, adset_id=target_adset)
        copied: dict[str, SimObject] = {}
        out_ids = []
        for depth, (orig, new_parent) in enumerate(plan):
            top = depth == 0
            renamed = strategy == "DEEP_RENAME" or (strategy == "ONLY_TOP_LEVEL_RENAME" and top)
            status = orig.status if status_option == "INHERITED_FROM_SOURCE" else status_option
            if status in LIVE_HIDDEN:
                status = "PAUSED"
            new = replace(
                orig,
                name=f"{prefix}{orig.name}{suffix}" if renamed else orig.name,
                status=status,
                created_time=now,
                updated_time=now,
                params=dict(orig.params),
                source_id=orig.id,
            )
            self._stamp(new)
            if orig.kind is Kind.ADSET:
                new.campaign_id = (
                    copied[orig.campaign_id].id if orig.campaign_id in copied else new_parent
                )
            elif orig.kind is Kind.AD:
                parent_adset = copied.get(orig.adset_id or "")
                new.adset_id = parent_adset.id if parent_adset else new_parent
                new.campaign_id = (
                    parent_adset.campaign_id
                    if parent_adset
                    else self.objects[new.adset_id or ""].campaign_id
                )
            copied[orig.id] = new
            out_ids.append(
                {"ad_object_type": _COPY_TYPE[orig.kind], "source_id": orig.id, "copied_id": new.id}
            )
        if persist:
            for new in copied.values():
                self.objects[new.id] = new
        top_copy = copied[source.id]
        if source.kind is Kind.AD:
            return {"copied_ad_id": top_copy.id}
        key = "copied_campaign_id" if source.kind is Kind.CAMPAIGN else "copied_adset_id"
        return {key: top_copy.id, "ad_object_ids": out_ids}

    def _copy_plan(
        self, source: SimObject, params: Mapping[str, Any], *, deep: bool
    ) -> list[tuple[SimObject, str | None]]:
        """(object to copy, new parent id) in creation order, the source first."""
        account = self.accounts[source.account_id]
        if source.kind is Kind.CAMPAIGN:
            plan: list[tuple[SimObject, str | None]] = [(source, None)]
            if deep:
                for adset in reversed(self._live_children(source, Kind.ADSET)):
                    plan.append((adset, None))
                    plan.extend((ad, None) for ad in reversed(self._live_children(adset, Kind.AD)))
            return plan
        if source.kind is Kind.ADSET:
            parent = source.campaign_id
            if params.get("campaign_id"):
                parent = self._parent(
                    params["campaign_id"], Kind.CAMPAIGN, account, "campaign_id"
                ).id
            plan = [(source, parent)]
            if deep:
                plan.extend((ad, None) for ad in reversed(self._live_children(source, Kind.AD)))
            return plan
        parent = source.adset_id
        if params.get("adset_id"):
            parent = self._parent(params["adset_id"], Kind.ADSET, account, "adset_id").id
        return [(source, parent)]

    def _live_children(self, parent: SimObject, kind: Kind) -> list[SimObject]:
        return [o for o in self.children(parent, kind) if o.status not in LIVE_HIDDEN]

    # --- ground truth ----------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Every object, deleted ones included, with parents and status (control API)."""
        return [
            {
                "id": o.id,
                "type": o.kind.value,
                "account_id": "act_" + o.account_id,
                "name": o.name,
                "status": o.status,
                "effective_status": self.effective_status(o),
                "campaign_id": o.campaign_id,
                "adset_id": o.adset_id,
                "source_id": o.source_id,
                "created_time": iso(o.created_time),
            }
            for o in self.objects.values()
        ]

    def live_counts(self) -> dict[str, Any]:
        """Live (not deleted or archived) objects per account and per parent, by type."""
        by_account: dict[str, dict[str, int]] = {}
        by_parent: dict[str, dict[str, int]] = {}
        for o in self.objects.values():
            if o.status in LIVE_HIDDEN:
                continue
            acct = by_account.setdefault("act_" + o.account_id, {})
            acct[o.kind.value] = acct.get(o.kind.value, 0) + 1
            for parent in {o.campaign_id, o.adset_id} - {None}:
                bucket = by_parent.setdefault(str(parent), {})
                bucket[o.kind.value] = bucket.get(o.kind.value, 0) + 1
        return {"by_account": by_account, "by_parent": by_parent}


_COPY_TYPE = {Kind.CAMPAIGN: "campaign", Kind.ADSET: "ad_set", Kind.AD: "ad"}


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG header; 1x1 for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return 1, 1
