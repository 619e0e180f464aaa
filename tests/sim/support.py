"""What the simulator tests share: a Graph client, its answers, constants and object builders.

`Graph` sends a request the way the official SDKs do (token in the query string, form bodies
with nested values as JSON text, or JSON bodies) and answers a `Reply`. The builders create
campaigns, ad sets, creatives and ads through it; `assert_graph_error` checks Graph's error
envelope. The `http` and `graph` fixtures that hand these out are in `conftest.py`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy

TOKEN = "sim-token-alice"
ACCOUNT = "act_1001"
VERSION = "v25.0"  # the simulator's default; a path that is not absolute is served under it
BATCH_VERSION = "v26.0"  # where `python_batch` posts, as the Python SDK does
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=10)  # loopback answers; a hang fails fast
# Key order as a Node caller would write it; the Python SDK sorts keys when it encodes.
TARGETING: dict[str, Any] = {
    "geo_locations": {"countries": ["US", "CA"]},
    "age_min": 18,
    "age_max": 65,
    "publisher_platforms": ["facebook"],
}

OAUTH = "OAuthException"
METHOD = "GraphMethodException"
API = "FacebookApiException"
ERROR_KEYS_REQUIRED = frozenset({"message", "type", "code", "fbtrace_id"})
ERROR_KEYS_ALLOWED = ERROR_KEYS_REQUIRED | {
    "error_subcode",
    "is_transient",
    "error_data",
    "error_user_title",
    "error_user_msg",
}


# --- sending requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer: status, body (parsed JSON, None if empty), headers and the body's text."""

    status: int
    body: Any
    headers: CIMultiDictProxy[str]
    text: str = ""

    @property
    def content_type(self) -> str:
        """The media type without parameters, like aiohttp's `ClientResponse.content_type`."""
        value = self.headers.get("Content-Type", "application/octet-stream")
        return value.partition(";")[0].strip().lower()


class Graph:
    """Sends one request to the simulator as a Graph client would; answers a `Reply`.

    *path* is a full URL (a paging `next` link), a path from the host (`/v26.0/me`, `/me`),
    or a path under *version* (`act_1001/campaigns` is `/v25.0/act_1001/campaigns`). The token
    goes in the query string, as both official SDKs send it, unless *token* is None. A body that
    is not JSON fails the call unless *expect_json* is False (then `body` is None).
    """

    def __init__(self, http: aiohttp.ClientSession, base: str, *, version: str = VERSION) -> None:
        self.http = http
        self.base = base
        self.version = version

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if path.startswith("/"):
            return self.base + path
        return f"{self.base}/{self.version}/{path}"

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        token: str | None = TOKEN,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
        expect_json: bool = True,
    ) -> Reply:
        query = dict(params or {})
        if token is not None:
            query["access_token"] = token
        # Passing timeout=None to aiohttp would mean "no timeout", not the session's.
        options: dict[str, Any] = {} if client_timeout is None else {"timeout": client_timeout}
        async with self.http.request(
            method,
            self.url(path),
            params=query,
            data=data,
            json=json_body,
            headers=headers,
            **options,
        ) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                if expect_json:
                    raise AssertionError(f"HTTP {resp.status}, not JSON: {text[:300]!r}") from None
                body = None
            return Reply(resp.status, body, resp.headers, text)

    async def control(
        self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None
    ) -> Reply:
        """A raw control-API call (`/__sim/<path>`), errors included; `body` is text if not JSON."""
        async with self.http.request(
            method, f"{self.base}/__sim/{path}", json=body, params=params
        ) as resp:
            text = await resp.text()
            parsed = json.loads(text) if resp.content_type == "application/json" else text
            return Reply(resp.status, parsed, resp.headers, text)


def ok(reply: Reply) -> Any:
    assert reply.status == 200, reply.body
    return reply.body


def new_id(reply: Reply) -> str:
    """The id a successful create answered."""
    return str(ok(reply)["id"])


# --- Graph's error envelope --------------------------------------------------------------------


class Unpinned:
    """A value the notes do not pin down: any is accepted."""


UNPINNED = Unpinned()


def error_of(envelope: Any) -> dict[str, Any]:
    """The `error` object of Graph's envelope, after checking the envelope's shape."""
    assert isinstance(envelope, dict), envelope
    assert set(envelope) == {"error"}, envelope
    err = envelope["error"]
    assert ERROR_KEYS_REQUIRED <= set(err) <= ERROR_KEYS_ALLOWED, err
    assert isinstance(err["message"], str), err
    assert err["message"], err
    assert isinstance(err["fbtrace_id"], str), err
    assert err["fbtrace_id"], err
    return dict(err)


def assert_graph_error(
    reply: Reply,
    *,
    status: int,
    code: int,
    subcode: int | Unpinned | None = None,
    type_: str | Unpinned = OAUTH,
    is_transient: bool | None = None,
) -> dict[str, Any]:
    """Graph's envelope: `{"error": {message, type, code[, error_subcode], fbtrace_id}}`.

    *subcode* None means the answer must carry no `error_subcode`; *is_transient* None means
    the flag is not checked; UNPINNED accepts any subcode or any type.
    """
    assert reply.status == status, reply.body
    err = error_of(reply.body)
    assert err["code"] == code, err
    if not isinstance(subcode, Unpinned):
        assert err.get("error_subcode") == subcode, err
    assert isinstance(err["type"], str), err
    if not isinstance(type_, Unpinned):
        assert err["type"] == type_, err
    if is_transient is not None:
        assert err["is_transient"] is is_transient, err
    assert reply.headers["Content-Type"].startswith("application/json"), reply.headers
    assert reply.headers["x-fb-trace-id"] == err["fbtrace_id"]
    return err


# --- building ad objects -----------------------------------------------------------------------


def campaign_params(name: str = "Campaign", *, status: str = "PAUSED") -> dict[str, Any]:
    return {
        "name": name,
        "objective": "OUTCOME_TRAFFIC",
        "status": status,
        "special_ad_categories": [],
    }


def adset_params(
    campaign_id: str, name: str = "Ad set", *, status: str = "PAUSED"
) -> dict[str, Any]:
    return {
        "name": name,
        "campaign_id": campaign_id,
        "daily_budget": 1000,
        "billing_event": "IMPRESSIONS",
        "optimization_goal": "LINK_CLICKS",
        "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
        "status": status,
        "targeting": TARGETING,
    }


def creative_params(name: str = "Creative") -> dict[str, Any]:
    return {"name": name, "title": "Hello", "body": "World", "link_url": "https://x.test"}


def ad_params(
    adset_id: str, creative_id: str, name: str = "Ad", *, status: str = "PAUSED"
) -> dict[str, Any]:
    return {
        "name": name,
        "adset_id": adset_id,
        "creative": {"creative_id": creative_id},
        "status": status,
    }


def form(params: Mapping[str, Any]) -> dict[str, str]:
    """Form fields as the Python SDK sends them: anything but a string as compact JSON."""
    return {
        key: value
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True, separators=(",", ":"))
        for key, value in params.items()
    }


async def create(
    graph: Graph,
    edge: str,
    params: Mapping[str, Any],
    *,
    account: str = ACCOUNT,
    token: str | None = TOKEN,
) -> Reply:
    """`POST /{account}/{edge}` with *params* form-encoded, as the Python SDK creates."""
    return await graph("POST", f"{account}/{edge}", token=token, data=form(params))


async def new_campaign(
    graph: Graph, name: str = "Campaign", *, status: str = "PAUSED", account: str = ACCOUNT
) -> str:
    return new_id(
        await create(graph, "campaigns", campaign_params(name, status=status), account=account)
    )


async def new_adset(
    graph: Graph,
    campaign_id: str,
    name: str = "Ad set",
    *,
    status: str = "PAUSED",
    account: str = ACCOUNT,
) -> str:
    params = adset_params(campaign_id, name, status=status)
    return new_id(await create(graph, "adsets", params, account=account))


async def new_creative(graph: Graph, name: str = "Creative", *, account: str = ACCOUNT) -> str:
    return new_id(await create(graph, "adcreatives", creative_params(name), account=account))


async def new_ad(
    graph: Graph,
    adset_id: str,
    creative_id: str,
    name: str = "Ad",
    *,
    status: str = "PAUSED",
    account: str = ACCOUNT,
) -> str:
    params = ad_params(adset_id, creative_id, name, status=status)
    return new_id(await create(graph, "ads", params, account=account))


# --- batches -----------------------------------------------------------------------------------


def python_op_body(params: Mapping[str, Any]) -> str:
    """`k=quote(v)` joined by `&`; dicts, lists and bools JSON-encoded with sorted keys."""
    parts = []
    for key, value in params.items():
        if isinstance(value, dict | list | tuple | bool):
            value = json.dumps(value, sort_keys=True, separators=(",", ":"))
        parts.append(f"{key}={quote(str(value))}")
    return "&".join(parts)


def node_op_body(params: Mapping[str, Any]) -> str:
    """`k=${v}` joined by `&`, not URL-encoded, nested values as JSON, then `&fields=`."""
    parts = [
        f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
        for key, value in params.items()
    ]
    return "&".join([*parts, "fields="])


def create_op(edge: str, params: Mapping[str, Any], *, account: str = ACCOUNT) -> dict[str, Any]:
    """A batch op creating under *account*, its body encoded as the Python SDK does."""
    return {"method": "POST", "relative_url": f"{account}/{edge}", "body": python_op_body(params)}


async def python_batch(
    graph: Graph,
    ops: list[Any],
    *,
    token: str | None = TOKEN,
    extra: Mapping[str, str] | None = None,
) -> Reply:
    """The Python SDK's batch: `POST /v26.0/`, form field `batch` = compact, key-sorted JSON."""
    form_fields = {"batch": json.dumps(ops, sort_keys=True, separators=(",", ":")), **(extra or {})}
    return await graph("POST", f"/{BATCH_VERSION}/", token=token, data=form_fields)
