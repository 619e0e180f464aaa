"""gateway.core.classify: which requests create entities, in both SDKs' captured shapes.

Request shapes follow graph-api-notes Part B §2: the Python SDK (facebook-business 26.0.3)
sends form bodies with JSON-string nested params and a form `batch=<JSON string>` whose op
bodies are percent-encoded; the Node SDK (facebook-nodejs-business-sdk 24.0.1) sends JSON
bodies with native nesting plus `"id": "act_…"`, and a JSON `batch` array whose op bodies are
not url-encoded at all and carry `name` and `attachedFiles`. Both put the token in the query.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.classify import (
    DEFAULT_RULES,
    Batch,
    Classification,
    Create,
    CreateOp,
    CreateRules,
    Invalid,
    Passthrough,
    RawRequest,
    classify,
    find_token,
    needs_body,
)

TOKEN = "TESTTOKEN123"
ACCOUNT = "act_1234567890"
CAMPAIGN_ID = "120210000000000001"
ADSET_ID = "120210000000000002"
CREATIVE_ID = "120210000000000003"
AD_ID = "120210000000000004"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MULTIPART = "multipart/form-data"
TARGETING = {
    "geo_locations": {"countries": ["US", "CA"]},
    "age_min": 18,
    "age_max": 65,
    "publisher_platforms": ["facebook"],
}
ADSET_PARAMS = {
    "campaign_id": CAMPAIGN_ID,
    "daily_budget": 1000,
    "billing_event": "IMPRESSIONS",
    "optimization_goal": "LINK_CLICKS",
    "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
    "status": "PAUSED",
    "targeting": TARGETING,
}


# --------------------------------------------------------------------------- SDK encoders


def _python_value(value: Any) -> str:
    """facebook-business `_top_level_param_json_encode`: nested values and bools as JSON."""
    if isinstance(value, dict | list | tuple | bool):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def python_form(params: dict[str, Any]) -> bytes:
    return urlencode({k: _python_value(v) for k, v in params.items()}).encode()


def python_request(
    method: str, path: str, params: dict[str, Any] | None = None, **query: str
) -> RawRequest:
    """Python SDK: token in the query; a form body on POST, no body or type otherwise."""
    return RawRequest(
        method=method,
        path=path,
        query={"access_token": TOKEN, **query},
        content_type=FORM if params is not None else "",
        authorization=None,
        body=python_form(params) if params is not None else None,
    )


def python_batch_op(method: str, relative_url: str, params: dict[str, Any] | None = None) -> Any:
    op: dict[str, Any] = {"method": method, "relative_url": relative_url}
    if params is not None:
        op["body"] = "&".join(f"{k}={quote(_python_value(v))}" for k, v in params.items())
    return op


def python_batch(ops: list[Any]) -> RawRequest:
    """`POST /v26.0/?access_token=…` with the single form field `batch=<JSON string>`."""
    return python_request("POST", "/v26.0/", {"batch": json.dumps(ops, sort_keys=True)})


def node_request(
    method: str, path: str, body: Any = None, *, id_: str | None = None, **query: str
) -> RawRequest:
    """Node SDK: JSON body on every request (`{}` at least), `"id"` merged into creates."""
    doc = dict(body or {})
    if id_ is not None:
        doc["id"] = id_
    return RawRequest(
        method=method,
        path=path,
        query={**query, "access_token": TOKEN},
        content_type=JSON,
        authorization=None,
        body=json.dumps(doc, separators=(",", ":")).encode(),
    )


def _node_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def node_batch_op(method: str, relative_url: str, params: dict[str, Any] | None = None) -> Any:
    """`k=${v}` joined by `&`, no url-encoding; `name` is the object's name; `attachedFiles`."""
    params = params or {}
    body = "&".join(f"{k}={_node_value(v)}" for k, v in {**params, "fields": ""}.items())
    return {
        "method": method,
        "relative_url": relative_url,
        "body": body,
        "name": params.get("name", ""),
        "attachedFiles": "",
    }


def node_batch(ops: list[Any], path: str = "/v24.0") -> RawRequest:
    return node_request("POST", path, {"batch": ops})


def raw(
    method: str = "POST",
    path: str = "/",
    query: dict[str, str] | None = None,
    content_type: str = "",
    body: bytes | None = None,
    authorization: str | None = None,
) -> RawRequest:
    return RawRequest(method, path, query or {}, content_type, authorization, body)


def multipart(*parts: tuple[str, str | bytes, str | None], boundary: str = "xYzZy") -> bytes:
    """A multipart/form-data body; each part is (name, value, filename or None)."""
    chunks = []
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        content = value.encode() if isinstance(value, str) else value
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def op(
    entity_type: str,
    *,
    index: int = 0,
    account_id: str | None = ACCOUNT,
    parent_id: str | None = None,
    name: str | None = None,
    reparent_id: str | None = None,
    deep_copy: bool = False,
) -> CreateOp:
    return CreateOp(index, account_id, entity_type, parent_id, name, reparent_id, deep_copy)


def copy_op(source: str, **kwargs: Any) -> CreateOp:
    return op("copy", account_id=None, parent_id=source, **kwargs)


# --------------------------------------------------------------------------- single creates

SINGLE_CREATES = [
    pytest.param(
        python_request(
            "POST",
            f"/v26.0/{ACCOUNT}/campaigns",
            {
                "name": "example campaign",
                "objective": "OUTCOME_TRAFFIC",
                "status": "PAUSED",
                "special_ad_categories": [],
            },
        ),
        op("campaign", name="example campaign"),
        id="python-form-campaign",
    ),
    pytest.param(
        python_request(
            "POST", f"/v26.0/{ACCOUNT}/adsets", {"name": "example adset", **ADSET_PARAMS}
        ),
        op("adset", parent_id=CAMPAIGN_ID, name="example adset"),
        id="python-form-adset-with-json-string-targeting",
    ),
    pytest.param(
        python_request(
            "POST",
            f"/v26.0/{ACCOUNT}/ads",
            {
                "name": "example ad",
                "adset_id": ADSET_ID,
                "creative": {"creative_id": CREATIVE_ID},
                "status": "PAUSED",
            },
        ),
        op("ad", parent_id=ADSET_ID, name="example ad"),
        id="python-form-ad-with-json-string-creative",
    ),
    pytest.param(
        node_request(
            "POST",
            f"/v24.0/{ACCOUNT}/campaigns",
            {
                "name": "example campaign",
                "objective": "OUTCOME_TRAFFIC",
                "status": "PAUSED",
                "special_ad_categories": [],
            },
            id_=ACCOUNT,
        ),
        op("campaign", name="example campaign"),
        id="node-json-campaign-with-id",
    ),
    pytest.param(
        node_request(
            "POST",
            f"/v24.0/{ACCOUNT}/adsets",
            {"name": "example adset", **ADSET_PARAMS},
            id_=ACCOUNT,
        ),
        op("adset", parent_id=CAMPAIGN_ID, name="example adset"),
        id="node-json-adset-with-native-targeting",
    ),
    pytest.param(
        node_request(
            "POST",
            f"/v24.0/{ACCOUNT}/ads",
            {"name": "example ad", "adset_id": ADSET_ID, "creative": {"creative_id": CREATIVE_ID}},
            id_=ACCOUNT,
        ),
        op("ad", parent_id=ADSET_ID, name="example ad"),
        id="node-json-ad-with-native-creative",
    ),
    pytest.param(
        node_request(
            "POST",
            f"/v24.0/{ACCOUNT}/adsets",
            {"name": 2024, "campaign_id": int(CAMPAIGN_ID)},
            id_=ACCOUNT,
        ),
        op("adset", parent_id=CAMPAIGN_ID, name="2024"),
        id="node-json-numbers-for-name-and-parent-are-stringified",
    ),
    pytest.param(
        node_request("POST", f"/v24.0/{ACCOUNT}/adsets", {"campaign_id": ""}, id_=ACCOUNT),
        op("adset"),
        id="empty-parent-id-is-none",
    ),
    pytest.param(
        python_request("POST", f"/{ACCOUNT}/campaigns", {"name": "c"}),
        op("campaign", name="c"),
        id="unversioned-path",
    ),
    pytest.param(
        python_request("POST", f"/v26.0/{ACCOUNT}/campaigns/", {"name": "c"}),
        op("campaign", name="c"),
        id="trailing-slash",
    ),
    pytest.param(
        python_request("POST", f"//v26.0//{ACCOUNT}///adsets//", {"campaign_id": CAMPAIGN_ID}),
        op("adset", parent_id=CAMPAIGN_ID),
        id="empty-segments",
    ),
    pytest.param(
        python_request("POST", f"/v26.0/{ACCOUNT}%2Fcampaigns", {"name": "c"}),
        op("campaign", name="c"),
        id="percent-encoded-slash",
    ),
    pytest.param(
        python_request("POST", "/V26/ACT_1234567890/Campaigns", {"name": "c"}),
        op("campaign", name="c"),
        id="case-and-version-variants-lean-towards-create",
    ),
    pytest.param(
        python_request("POST", f"/v26.0/{ACCOUNT}/adcreatives", {"name": "cr"}),
        op("adcreative", name="cr"),
        id="adcreative",
    ),
    pytest.param(
        python_request("POST", f"/v26.0/{ACCOUNT}/adimages", {"bytes": "aGVsbG8="}),
        op("adimage"),
        id="adimage-base64-form",
    ),
    pytest.param(
        python_request("POST", f"/v26.0/{ACCOUNT}/campaigns"),
        op("campaign"),
        id="no-body-still-a-create-from-the-path",
    ),
    pytest.param(
        raw(path=f"/v26.0/{ACCOUNT}/campaigns", content_type="text/plain", body=b"name=x"),
        op("campaign"),
        id="unknown-content-type-gives-no-params",
    ),
    pytest.param(
        raw(path=f"/v26.0/{ACCOUNT}/campaigns", content_type=JSON, body=b"  \r\n"),
        op("campaign"),
        id="blank-json-body-is-empty",
    ),
    pytest.param(
        raw(path=f"/{ACCOUNT}/campaigns", content_type=FORM, body=b"name=&status=PAUSED"),
        op("campaign", name=""),
        id="blank-form-value-is-kept",
    ),
]

METHOD_OVERRIDES = [
    pytest.param(
        raw("GET", f"/v26.0/{ACCOUNT}/campaigns", {"method": "post", "name": "c"}),
        Create(op("campaign", name="c"), None),
        id="get-with-query-method-post-creates",
    ),
    pytest.param(
        raw("GET", f"/{ACCOUNT}/campaigns", content_type=FORM, body=b"method=POST&name=c"),
        Create(op("campaign", name="c"), None),
        id="get-with-body-method-post-creates",
    ),
    pytest.param(
        raw("DELETE", f"/{ACCOUNT}/campaigns", {"method": " Post "}),
        Create(op("campaign"), None),
        id="override-is-case-and-space-insensitive",
    ),
    pytest.param(
        raw("POST", f"/{ACCOUNT}/campaigns", {"method": "get"}),
        Passthrough(),
        id="post-with-method-get-is-a-read",
    ),
    pytest.param(
        raw("POST", f"/{ACCOUNT}/campaigns", {"method": "get"}, FORM, b"method=post"),
        Create(op("campaign"), None),
        id="conflicting-overrides-resolve-to-post",
    ),
    pytest.param(
        raw("POST", f"/{ACCOUNT}/campaigns", {"method": ""}),
        Create(op("campaign"), None),
        id="empty-override-is-ignored",
    ),
    pytest.param(
        raw("post", f"/{ACCOUNT}/campaigns"),
        Create(op("campaign"), None),
        id="lower-case-http-method",
    ),
]

COPIES = [
    pytest.param(
        python_request(
            "POST",
            f"/v26.0/{ADSET_ID}/copies",
            {"deep_copy": True, "campaign_id": CAMPAIGN_ID, "status_option": "PAUSED"},
        ),
        copy_op(ADSET_ID, reparent_id=CAMPAIGN_ID, deep_copy=True),
        id="python-adset-deep-copy-reparented",
    ),
    pytest.param(
        node_request(
            "POST",
            f"/v24.0/{AD_ID}/copies",
            {"adset_id": int(ADSET_ID), "deep_copy": False},
            id_=AD_ID,
        ),
        copy_op(AD_ID, reparent_id=ADSET_ID),
        id="node-ad-copy-with-numeric-adset-id",
    ),
    pytest.param(
        node_request("POST", f"/v24.0/{CAMPAIGN_ID}/copies", {"deep_copy": True}),
        copy_op(CAMPAIGN_ID, deep_copy=True),
        id="node-campaign-deep-copy-json-true",
    ),
    pytest.param(
        node_request("POST", f"/{CAMPAIGN_ID}/copies/", {"deep_copy": 1}),
        copy_op(CAMPAIGN_ID, deep_copy=True),
        id="deep-copy-json-one",
    ),
    pytest.param(
        python_request("POST", f"/{CAMPAIGN_ID}/copies", {"deep_copy": "1"}),
        copy_op(CAMPAIGN_ID, deep_copy=True),
        id="deep-copy-string-one",
    ),
    pytest.param(
        python_request("POST", f"/{CAMPAIGN_ID}/copies", {"deep_copy": "yes"}),
        copy_op(CAMPAIGN_ID),
        id="deep-copy-other-text-is-false",
    ),
    pytest.param(
        node_request("POST", f"/{CAMPAIGN_ID}/copies", {"deep_copy": [True]}),
        copy_op(CAMPAIGN_ID),
        id="deep-copy-non-scalar-is-false",
    ),
    pytest.param(
        python_request("POST", f"/{ADSET_ID}/copies", {"campaign_id": "", "adset_id": ADSET_ID}),
        copy_op(ADSET_ID, reparent_id=ADSET_ID),
        id="adset-id-reparents-when-campaign-id-is-empty",
    ),
]

MULTIPART_CREATES = [
    pytest.param(
        raw(path=f"/v26.0/{ACCOUNT}/adimages", content_type=MULTIPART, body=None),
        op("adimage"),
        id="streamed-adimages-from-the-path",
    ),
    pytest.param(
        raw(path=f"/v26.0/{ACCOUNT}/advideos", content_type=MULTIPART, body=None),
        op("advideo"),
        id="streamed-advideos-from-the-path",
    ),
    pytest.param(
        raw(
            path=f"/v26.0/{ACCOUNT}/advideos",
            content_type=MULTIPART,
            body=multipart(("name", "clip", None), ("source", b"\x00\xff\xfe", "clip.mp4")),
        ),
        op("advideo", name="clip"),
        id="buffered-advideos-reads-the-name-field",
    ),
    pytest.param(
        raw(
            path=f"/{ACCOUNT}/adsets",
            content_type=MULTIPART,
            body=multipart(("campaign_id", CAMPAIGN_ID, None), ("name", "a", None)),
        ),
        op("adset", parent_id=CAMPAIGN_ID, name="a"),
        id="buffered-multipart-adset",
    ),
]


class TestSingleCreates:
    @pytest.mark.parametrize(("request_", "expected"), SINGLE_CREATES)
    def test_account_edge_posts_are_creates_with_name_and_parent(
        self, request_: RawRequest, expected: CreateOp
    ) -> None:
        token = TOKEN if "access_token" in request_.query else None
        assert classify(request_) == Create(expected, token)

    @pytest.mark.parametrize(("request_", "expected"), METHOD_OVERRIDES)
    def test_the_method_override_parameter_decides_the_effective_method(
        self, request_: RawRequest, expected: Classification
    ) -> None:
        assert classify(request_) == expected

    @pytest.mark.parametrize(("request_", "expected"), COPIES)
    def test_copies_carry_source_new_parent_and_deep_copy(
        self, request_: RawRequest, expected: CreateOp
    ) -> None:
        assert classify(request_) == Create(expected, TOKEN)

    def test_copies_are_not_creates_when_the_rules_say_so(self) -> None:
        rules = CreateRules(edges=DEFAULT_RULES.edges, copies=False)
        request_ = python_request("POST", f"/v26.0/{ADSET_ID}/copies", {"deep_copy": True})

        assert classify(request_, rules) == Passthrough()

    def test_edges_come_from_the_rules(self) -> None:
        rules = CreateRules(edges={"AdLabels": "adlabel"})
        request_ = python_request("POST", f"/v26.0/{ACCOUNT}/adlabels", {"name": "l"})

        assert classify(request_, rules) == Create(op("adlabel", name="l"), TOKEN)
        assert classify(python_request("POST", f"/{ACCOUNT}/campaigns"), rules) == Passthrough()

    @pytest.mark.parametrize(("request_", "expected"), MULTIPART_CREATES)
    def test_multipart_creates_use_the_path_and_any_buffered_fields(
        self, request_: RawRequest, expected: CreateOp
    ) -> None:
        assert classify(request_) == Create(expected, None)

    def test_query_and_body_params_merge_with_the_body_winning(self) -> None:
        request_ = raw(
            path=f"/{ACCOUNT}/ads",
            query={"adset_id": "1", "name": "q"},
            content_type=FORM,
            body=b"name=b",
        )

        assert classify(request_) == Create(op("ad", parent_id="1", name="b"), None)


# --------------------------------------------------------------------------- tokens

TOKENS = [
    pytest.param({"access_token": "q"}, "Bearer h", {"access_token": "b"}, "q", id="query-first"),
    pytest.param({}, "Bearer h", {"access_token": "b"}, "b", id="then-body-field"),
    pytest.param({}, "Bearer h", None, "h", id="then-bearer-header"),
    pytest.param({}, "OAuth h", {}, "h", id="oauth-header"),
    pytest.param({}, "  bearer   h  ", None, "h", id="scheme-is-case-insensitive"),
    pytest.param({}, "Basic dXNlcjpwdw==", None, None, id="other-scheme-is-no-token"),
    pytest.param({}, "Bearer ", None, None, id="bearer-without-credentials"),
    pytest.param({"access_token": ""}, None, {"access_token": ""}, None, id="empty-is-absent"),
    pytest.param({}, None, {"access_token": 12345}, "12345", id="json-number-body-token"),
    pytest.param({}, None, None, None, id="nowhere"),
]


class TestFindToken:
    @pytest.mark.parametrize(("query", "authorization", "params", "expected"), TOKENS)
    def test_first_token_found_in_query_body_then_header(
        self,
        query: dict[str, str],
        authorization: str | None,
        params: dict[str, Any] | None,
        expected: str | None,
    ) -> None:
        assert find_token(query, authorization, params) == expected

    @pytest.mark.parametrize(
        ("request_", "expected"),
        [
            pytest.param(
                raw(path=f"/{ACCOUNT}/campaigns", authorization="Bearer tok"),
                "tok",
                id="bearer",
            ),
            pytest.param(
                raw(path=f"/{ACCOUNT}/campaigns", authorization="OAuth tok"),
                "tok",
                id="oauth",
            ),
            pytest.param(
                raw(path=f"/{ACCOUNT}/campaigns", content_type=FORM, body=b"access_token=tok"),
                "tok",
                id="form-body",
            ),
            pytest.param(
                raw(
                    path=f"/{ACCOUNT}/campaigns",
                    content_type=MULTIPART,
                    body=multipart(("access_token", "tok", None)),
                ),
                "tok",
                id="multipart-field",
            ),
        ],
    )
    def test_a_create_carries_the_token_from_wherever_graph_accepts_it(
        self, request_: RawRequest, expected: str
    ) -> None:
        result = classify(request_)

        assert isinstance(result, Create)
        assert result.token == expected


# --------------------------------------------------------------------------- batches

BATCHES = [
    pytest.param(
        python_batch(
            [
                python_batch_op(
                    "POST",
                    f"{ACCOUNT}/adsets",
                    {"name": f"example batch adset {i}", **ADSET_PARAMS},
                )
                for i in range(3)
            ]
        ),
        Batch(
            tuple(
                op("adset", index=i, parent_id=CAMPAIGN_ID, name=f"example batch adset {i}")
                for i in range(3)
            ),
            3,
            TOKEN,
        ),
        id="python-form-batch-of-adsets",
    ),
    pytest.param(
        node_batch(
            [
                node_batch_op(
                    "POST",
                    f"{ACCOUNT}/adsets",
                    {"name": f"example batch adset {i}", **ADSET_PARAMS},
                )
                for i in range(3)
            ]
        ),
        Batch(
            tuple(
                op("adset", index=i, parent_id=CAMPAIGN_ID, name=f"example batch adset {i}")
                for i in range(3)
            ),
            3,
            TOKEN,
        ),
        id="node-json-batch-of-adsets",
    ),
    pytest.param(
        node_batch(
            [
                node_batch_op("POST", f"v24.0/{ACCOUNT}/campaigns", {"name": "c"}),
                node_batch_op("POST", f"/v24.0/{ACCOUNT}/ads/", {"name": "a", "adset_id": "9"}),
            ],
            path="/v24.0/",
        ),
        Batch(
            (op("campaign", name="c"), op("ad", index=1, parent_id="9", name="a")),
            2,
            TOKEN,
        ),
        id="version-in-relative-url",
    ),
    pytest.param(
        python_batch(
            [
                python_batch_op("GET", f"{CAMPAIGN_ID}?fields=name,status"),
                python_batch_op("POST", f"{ACCOUNT}/campaigns", {"name": "c"}),
                python_batch_op("DELETE", AD_ID),
                python_batch_op("POST", ADSET_ID, {"name": "renamed"}),
                python_batch_op("POST", f"{ADSET_ID}/copies", {"deep_copy": True}),
                python_batch_op("POST", f"{ACCOUNT}/insights", {"level": "ad"}),
                python_batch_op(
                    "POST", f"{AD_ID}/copies", {"adset_id": ADSET_ID, "deep_copy": False}
                ),
                python_batch_op("GET", f"{ACCOUNT}/campaigns"),
            ]
        ),
        Batch(
            (
                op("campaign", index=1, name="c"),
                copy_op(ADSET_ID, index=4, deep_copy=True),
                copy_op(AD_ID, index=6, reparent_id=ADSET_ID),
            ),
            8,
            TOKEN,
        ),
        id="mixed-gets-creates-copies-updates-deletes",
    ),
    pytest.param(
        node_batch(
            [
                {"relative_url": f"{ACCOUNT}/campaigns", "body": "name=x"},
                {"method": "post", "relative_url": f"{ACCOUNT}/campaigns", "body": "name=y"},
                {"method": None, "relative_url": f"{ACCOUNT}/campaigns"},
                {"method": 5, "relative_url": f"{ACCOUNT}/campaigns"},
            ]
        ),
        Batch((op("campaign", index=1, name="y"),), 4, TOKEN),
        id="op-method-defaults-to-get-and-is-case-insensitive",
    ),
    pytest.param(
        node_batch(
            [
                {
                    "method": "POST",
                    "relative_url": f"{ACCOUNT}/campaigns",
                    "name": "create_campaign",
                    "body": "name=the entity",
                },
                {"method": "POST", "relative_url": f"{ACCOUNT}/campaigns", "name": "label only"},
            ]
        ),
        Batch((op("campaign", name="the entity"), op("campaign", index=1)), 2, TOKEN),
        id="op-name-key-is-a-label-not-the-entity-name",
    ),
    pytest.param(
        node_batch(
            [
                node_batch_op(
                    "POST",
                    f"{ACCOUNT}/campaigns",
                    {"name": "… a&b=c 100%+1 #x é漢", "status": "PAUSED"},
                )
            ]
        ),
        Batch((op("campaign", name="… a"),), 1, TOKEN),
        id="node-unencoded-ampersand-splits-the-name-as-on-graph",
    ),
    pytest.param(
        node_batch(
            [
                {
                    "method": "POST",
                    "relative_url": f"{ACCOUNT}/adsets?name=from%20query&campaign_id=7",
                    "body": {"name": "from body", "targeting": TARGETING},
                }
            ]
        ),
        Batch((op("adset", parent_id="7", name="from body"),), 1, TOKEN),
        id="relative-url-query-and-object-body-merge",
    ),
    pytest.param(
        node_batch(
            [{"method": "POST", "relative_url": f"{ACCOUNT}/campaigns?name=q", "body": ["x"]}]
        ),
        Batch((op("campaign", name="q"),), 1, TOKEN),
        id="op-body-of-another-type-gives-no-params",
    ),
    pytest.param(
        node_batch(
            [
                {"method": "GET", "relative_url": f"{ACCOUNT}/campaigns?method=post&name=a"},
                {"method": "GET", "relative_url": f"{ACCOUNT}/ads", "body": "method=POST"},
                {"method": "POST", "relative_url": f"{ACCOUNT}/ads?method=get"},
            ]
        ),
        Batch((op("campaign", name="a"), op("ad", index=1)), 3, TOKEN),
        id="op-method-override-honoured",
    ),
    pytest.param(
        node_batch(
            [
                node_batch_op("POST", f"{ACCOUNT}/campaigns", {"name": "c"}),
                node_batch_op(
                    "POST",
                    f"{ACCOUNT}/adsets",
                    {"name": "s", "campaign_id": "{result=create_campaign:$.id}"},
                ),
                node_batch_op("POST", "{result=create_adset:$.id}/copies", {"deep_copy": True}),
            ]
        ),
        Batch(
            (
                op("campaign", name="c"),
                op("adset", index=1, parent_id="{result=create_campaign:$.id}", name="s"),
                copy_op("{result=create_adset:$.id}", index=2, deep_copy=True),
            ),
            3,
            TOKEN,
        ),
        id="jsonpath-references-as-parent-and-copy-source",
    ),
    pytest.param(
        python_batch(
            [
                python_batch_op(
                    "POST", f"{ACCOUNT}/campaigns", {"name": "c", "access_token": "per-op"}
                )
            ]
        ),
        Batch((op("campaign", name="c"),), 1, TOKEN),
        id="the-top-level-token-not-the-per-op-one",
    ),
    pytest.param(
        python_batch([python_batch_op("GET", "me"), python_batch_op("GET", f"{ACCOUNT}/ads")]),
        Batch((), 2, TOKEN),
        id="reads-only-batch-has-no-creates",
    ),
    pytest.param(python_batch([]), Batch((), 0, TOKEN), id="empty-batch-left-to-graph"),
    pytest.param(
        python_batch([python_batch_op("GET", "me")] * 49 + [{"relative_url": "me"}]),
        Batch((), 50, TOKEN),
        id="fifty-ops-allowed",
    ),
    pytest.param(
        node_request(
            "POST",
            "/v24.0/me",
            {"batch": json.dumps([{"method": "POST", "relative_url": f"{ACCOUNT}/ads"}])},
        ),
        Batch((op("ad"),), 1, TOKEN),
        id="json-body-batch-as-string-posted-to-a-node",
    ),
    pytest.param(
        raw(
            path=f"/v24.0/{ACCOUNT}/campaigns",
            query={"batch": json.dumps([{"method": "POST", "relative_url": f"{ACCOUNT}/ads"}])},
        ),
        Batch((op("ad"),), 1, None),
        id="batch-in-the-query-wins-over-the-path",
    ),
    pytest.param(
        raw(
            path="/v26.0/",
            query={"access_token": TOKEN},
            content_type=MULTIPART,
            body=multipart(
                (
                    "batch",
                    json.dumps(
                        [
                            {
                                "method": "POST",
                                "relative_url": f"{ACCOUNT}/adimages",
                                "attached_files": "file1",
                            }
                        ]
                    ),
                    None,
                ),
                ("file1", b"\x89PNG\r\n\x1a\n\x00\xff", "a.png"),
            ),
        ),
        Batch((op("adimage"),), 1, TOKEN),
        id="multipart-batch-with-attached-files",
    ),
]


class TestBatches:
    @pytest.mark.parametrize(("request_", "expected"), BATCHES)
    def test_each_create_op_in_a_batch_is_found_at_its_index(
        self, request_: RawRequest, expected: Batch
    ) -> None:
        assert classify(request_) == expected

    def test_a_get_carrying_a_batch_is_not_a_batch(self) -> None:
        request_ = raw("GET", "/", {"batch": json.dumps([{"relative_url": "me"}])})

        assert classify(request_) == Passthrough()

    def test_the_op_limit_comes_from_the_rules(self) -> None:
        rules = CreateRules(edges=DEFAULT_RULES.edges, batch_max_ops=2)
        ops = [python_batch_op("GET", "me")] * 3

        assert classify(python_batch(ops), rules) == Invalid(
            "batch has 3 requests; at most 2 allowed"
        )
        assert classify(python_batch(ops[:2]), rules) == Batch((), 2, TOKEN)


# --------------------------------------------------------------------------- non-creates

PASSTHROUGHS = [
    pytest.param(
        python_request("GET", f"/v26.0/{CAMPAIGN_ID}/", fields="name,status"), id="py-get"
    ),
    pytest.param(node_request("GET", f"/v24.0/{CAMPAIGN_ID}", fields="name,status"), id="node-get"),
    pytest.param(python_request("GET", f"/v26.0/{ACCOUNT}/campaigns"), id="get-list-of-campaigns"),
    pytest.param(python_request("POST", f"/v26.0/{ADSET_ID}", {"name": "x"}), id="py-update"),
    pytest.param(
        node_request("POST", f"/v24.0/{ADSET_ID}", {"status": "PAUSED"}, id_=ADSET_ID),
        id="node-update",
    ),
    pytest.param(python_request("DELETE", f"/v26.0/{AD_ID}/"), id="python-delete"),
    pytest.param(node_request("DELETE", f"/v24.0/{AD_ID}", id=AD_ID), id="node-delete-with-id"),
    pytest.param(
        python_request("POST", f"/v26.0/{ACCOUNT}/insights", {"level": "ad"}), id="post-insights"
    ),
    pytest.param(python_request("POST", "/v26.0/me/feed", {"message": "hi"}), id="post-me-feed"),
    pytest.param(python_request("POST", f"/v26.0/{ACCOUNT}", {"name": "x"}), id="post-account"),
    pytest.param(
        python_request("POST", f"/v26.0/{ACCOUNT}/campaigns/extra", {"name": "x"}),
        id="three-segments",
    ),
    pytest.param(python_request("POST", "/v26.0/act_abc/campaigns"), id="non-numeric-account"),
    pytest.param(python_request("POST", "/v26.0/me/copies"), id="copies-of-a-non-numeric-node"),
    pytest.param(python_request("POST", "/v26.0/"), id="post-root-without-batch"),
    pytest.param(raw("HEAD", f"/{ACCOUNT}/campaigns"), id="head"),
    pytest.param(raw("PUT", f"/{ACCOUNT}/campaigns"), id="put"),
    pytest.param(
        raw("POST", "/", content_type="text/plain", body=b'batch=[{"relative_url":"me"}]'),
        id="batch-in-an-unknown-content-type-is-not-read",
    ),
    pytest.param(
        raw("POST", "/", content_type=MULTIPART, body=None), id="unbuffered-multipart-root"
    ),
    pytest.param(
        raw("GET", f"/{ACCOUNT}/campaigns", content_type=JSON, body=b"{not json"),
        id="unreadable-body-on-a-get-is-ignored",
    ),
    pytest.param(
        raw("DELETE", f"/{ACCOUNT}/campaigns", content_type=FORM, body=b"\xff\xfe"),
        id="undecodable-form-on-a-delete-is-ignored",
    ),
]


class TestNonCreates:
    @pytest.mark.parametrize("request_", PASSTHROUGHS)
    def test_reads_updates_deletes_and_other_edges_pass_through(self, request_: RawRequest) -> None:
        assert classify(request_) == Passthrough()


# --------------------------------------------------------------------------- invalid

INVALIDS = [
    pytest.param(
        python_batch([python_batch_op("GET", "me")] * 51),
        "batch has 51 requests; at most 50 allowed",
        id="python-batch-of-51",
    ),
    pytest.param(
        node_batch([node_batch_op("POST", f"{ACCOUNT}/ads")] * 51),
        "batch has 51 requests; at most 50 allowed",
        id="node-batch-of-51",
    ),
    pytest.param(
        python_request("POST", "/v26.0/", {"batch": "{}"}),
        "batch must be a JSON array",
        id="batch-string-holding-an-object",
    ),
    pytest.param(
        node_request("POST", "/v24.0", {"batch": {"relative_url": "me"}}),
        "batch must be a JSON array",
        id="batch-json-object",
    ),
    pytest.param(
        node_request("POST", "/v24.0", {"batch": None}),
        "batch must be a JSON array",
        id="batch-null",
    ),
    pytest.param(
        node_request("POST", "/v24.0", {"batch": 3}),
        "batch must be a JSON array",
        id="batch-number",
    ),
    pytest.param(
        python_request("POST", "/v26.0/", {"batch": "[{"}),
        "batch is not valid JSON",
        id="batch-bad-json",
    ),
    pytest.param(
        python_request("POST", "/v26.0/", {"batch": ""}),
        "batch is not valid JSON",
        id="batch-empty-string",
    ),
    pytest.param(
        python_request("POST", "/v26.0/", {"batch": "[" * 100_000}),
        "batch is not valid JSON",
        id="batch-nested-too-deep",
    ),
    pytest.param(
        node_batch([{"relative_url": "me"}, "GET me"]),
        "batch request 1 must be a JSON object",
        id="op-not-an-object",
    ),
    pytest.param(
        node_batch([{"method": "GET"}]),
        "batch request 0 has no relative_url",
        id="op-without-relative-url",
    ),
    pytest.param(
        node_batch([{"method": "GET", "relative_url": 5}]),
        "batch request 0 has no relative_url",
        id="op-relative-url-not-a-string",
    ),
    pytest.param(
        raw(path=f"/{ACCOUNT}/campaigns", content_type=JSON, body=b'[{"name":"x"}]'),
        "a JSON request body must be an object",
        id="json-body-that-is-a-list",
    ),
    pytest.param(
        raw(path=f"/{ACCOUNT}/campaigns", content_type=JSON, body=b'{"name":'),
        "request body is not valid JSON",
        id="json-body-truncated",
    ),
    pytest.param(
        raw(path="/", content_type=JSON, body=b"[" * 100_000),
        "request body is not valid JSON",
        id="json-body-nested-too-deep",
    ),
    pytest.param(
        raw(path=f"/{ACCOUNT}/campaigns", content_type=JSON, body=b'{"name":"\xff"}'),
        "request body is not valid JSON",
        id="json-body-not-utf8",
    ),
    pytest.param(
        raw(path=f"/{ACCOUNT}/campaigns", content_type=FORM, body=b"name=caf\xe9"),
        "form body is not valid UTF-8",
        id="undecodable-form-body",
    ),
    pytest.param(
        raw(path="/", content_type=MULTIPART, body=b"preamble\r\n--b\r\n\r\nx\r\n--b--"),
        "multipart body does not start with a boundary line",
        id="multipart-with-a-preamble",
    ),
    pytest.param(
        raw(path="/", content_type=MULTIPART, body=b"--b\n\nx\n--b--"),
        "multipart body does not start with a boundary line",
        id="multipart-with-bare-newlines",
    ),
    pytest.param(
        raw(path="/", content_type=MULTIPART, body=b"--\r\n"),
        "multipart body does not start with a boundary line",
        id="multipart-with-an-empty-boundary",
    ),
    pytest.param(
        raw("GET", "/", {"method": "post"}, JSON, b"[1]"),
        "a JSON request body must be an object",
        id="unreadable-body-with-a-post-override",
    ),
]


class TestInvalid:
    @pytest.mark.parametrize(("request_", "message"), INVALIDS)
    def test_malformed_posts_and_batches_are_refused(
        self, request_: RawRequest, message: str
    ) -> None:
        assert classify(request_) == Invalid(message)


# --------------------------------------------------------------------------- multipart


class TestMultipartFields:
    """Multipart text fields reach classify; file parts and unnamed parts do not."""

    def _fields_of(self, body: bytes) -> Create:
        result = classify(raw(path=f"/{ACCOUNT}/ads", content_type=MULTIPART, body=body))
        assert isinstance(result, Create)
        return result

    def test_quoted_and_bare_field_names_are_read(self) -> None:
        body = (
            b"--b\r\n"
            b'Content-Disposition: form-data; name="name"\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            b"caf\xc3\xa9\r\n"
            b"--b\r\n"
            b"content-disposition: form-data; name=adset_id\r\n\r\n"
            b"42\r\n"
            b"--b--\r\n"
        )

        assert self._fields_of(body).op == op("ad", parent_id="42", name="café")

    def test_file_parts_and_parts_without_a_name_are_skipped(self) -> None:
        body = (
            multipart(("name", "not me", "name.txt"))[: -len(b"--xYzZy--\r\n")]
            + b"--xYzZy\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n"
            + b'--xYzZy\r\nContent-Disposition: form-data; filename="f"\r\n\r\nx\r\n'
            + b"--xYzZy\r\n\r\nno headers at all\r\n"
            + b"--xYzZy--\r\n"
        )

        assert self._fields_of(body).op == op("ad")

    def test_an_empty_quoted_name_is_a_field_named_empty(self) -> None:
        body = multipart(("", "x", None), ("name", "n", None))

        assert self._fields_of(body).op == op("ad", name="n")

    def test_parts_after_the_closing_delimiter_are_epilogue(self) -> None:
        body = multipart(("name", "kept", None)) + multipart(("name", "ignored", None))

        assert self._fields_of(body).op == op("ad", name="kept")

    def test_binary_text_parts_are_decoded_leniently(self) -> None:
        body = multipart(("name", b"\xff", None))

        assert self._fields_of(body).op == op("ad", name="\ufffd")

    def test_a_truncated_body_keeps_the_fields_it_has(self) -> None:
        body = b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\ncut'

        assert self._fields_of(body).op == op("ad", name="cut")


# --------------------------------------------------------------------------- needs_body

NEEDS_BODY = [
    pytest.param("POST", f"/v26.0/{ACCOUNT}/campaigns", {}, FORM, True, id="form-create"),
    pytest.param("POST", "/v24.0", {}, JSON, True, id="json-batch-at-root"),
    pytest.param("POST", "/v26.0/me/feed", {}, FORM, True, id="form-post-anywhere"),
    pytest.param("GET", f"/v24.0/{CAMPAIGN_ID}", {}, JSON, True, id="node-json-get"),
    pytest.param("GET", f"/v26.0/{CAMPAIGN_ID}/", {}, "", False, id="python-get-no-body"),
    pytest.param("POST", "/v26.0/", {}, MULTIPART, True, id="multipart-root"),
    pytest.param("POST", "/", {}, MULTIPART, True, id="multipart-unversioned-root"),
    pytest.param("POST", "/me", {}, MULTIPART, True, id="multipart-to-a-node"),
    pytest.param("POST", f"/{ACCOUNT}/adimages", {}, MULTIPART, False, id="adimages-streamed"),
    pytest.param("POST", f"/{ACCOUNT}/AdVideos/", {}, MULTIPART, False, id="advideos-streamed"),
    pytest.param("POST", f"/{ACCOUNT}/adsets", {}, MULTIPART, True, id="multipart-adset"),
    pytest.param("POST", f"/{CAMPAIGN_ID}/copies", {}, MULTIPART, True, id="multipart-copy"),
    pytest.param("POST", "/me/photos", {}, MULTIPART, False, id="multipart-other-upload"),
    pytest.param("POST", "/1/2/3", {}, MULTIPART, False, id="multipart-deep-path"),
    pytest.param("GET", "/", {}, MULTIPART, False, id="multipart-get"),
    pytest.param("GET", "/", {"method": "post"}, MULTIPART, True, id="multipart-post-override"),
    pytest.param("POST", "/", {}, "text/plain", False, id="other-type"),
    pytest.param("POST", f"/{ACCOUNT}/campaigns", {}, "", False, id="no-type"),
]


class TestNeedsBody:
    @pytest.mark.parametrize(("method", "path", "query", "content_type", "expected"), NEEDS_BODY)
    def test_bodies_are_buffered_unless_they_are_uploads(
        self, method: str, path: str, query: dict[str, str], content_type: str, expected: bool
    ) -> None:
        assert needs_body(method, path, query, content_type, DEFAULT_RULES) is expected

    @pytest.mark.parametrize(("request_", "expected"), SINGLE_CREATES + COPIES + BATCHES)
    def test_a_buffered_body_is_one_classify_can_read(
        self, request_: RawRequest, expected: object
    ) -> None:
        """Every create shape whose body classify reads asks for that body to be buffered."""
        if request_.body is not None and request_.content_type in (FORM, JSON, MULTIPART):
            assert needs_body(
                request_.method, request_.path, request_.query, request_.content_type, DEFAULT_RULES
            )


# --------------------------------------------------------------------------- properties

_texts = st.text(max_size=40)
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _texts
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=4),
    max_leaves=12,
)
_segment = st.sampled_from(
    ["", "v24.0", "V3", "act_1", "ACT_22", "act_x", "123", "me", "campaigns", "adsets", "copies"]
) | st.text(max_size=8)
_paths = st.lists(_segment, max_size=5).map(lambda parts: "/" + "/".join(parts))
_ops = st.fixed_dictionaries(
    {},
    optional={
        "method": st.sampled_from(["GET", "post", "DELETE"]) | _json,
        "relative_url": _paths.map(lambda p: p.lstrip("/")) | _json,
        "body": _texts | _json,
        "name": _json,
    },
)
_batches = st.lists(_ops | _json, max_size=6)
_bodies = (
    st.none()
    | st.binary(max_size=200)
    | _json.map(lambda doc: json.dumps(doc).encode())
    | st.builds(lambda ops: json.dumps({"batch": ops}).encode(), _batches)
    | st.builds(lambda ops: urlencode({"batch": json.dumps(ops)}).encode(), _batches)
    | st.builds(lambda name: multipart((name, "[]", None)), st.sampled_from(["batch", "name"]))
)
_content_types = st.sampled_from(["", FORM, JSON, MULTIPART, "text/plain"]) | st.text(max_size=20)
_methods = st.sampled_from(["GET", "POST", "post", "DELETE", "HEAD"]) | st.text(max_size=8)
_queries = st.dictionaries(
    st.sampled_from(["method", "access_token", "batch", "name", "campaign_id"]) | _texts, _texts
)


@settings(deadline=None)
@given(
    method=_methods,
    path=_paths | st.text(),
    query=_queries,
    content_type=_content_types,
    body=_bodies,
    authorization=st.none() | st.text(max_size=20),
)
def test_classify_and_needs_body_never_raise(
    method: str,
    path: str,
    query: dict[str, str],
    content_type: str,
    body: bytes | None,
    authorization: str | None,
) -> None:
    """Arbitrary input gives a decision, never an exception."""
    request_ = RawRequest(method, path, query, content_type, authorization, body)

    result = classify(request_)
    assert isinstance(result, Passthrough | Create | Batch | Invalid)
    assert isinstance(needs_body(method, path, query, content_type, DEFAULT_RULES), bool)
