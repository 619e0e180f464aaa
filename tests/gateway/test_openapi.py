"""The admin API's OpenAPI document (DESIGN.md §3.3; issue 6 item 4).

It is valid OpenAPI 3.1; it names exactly the routes the admin app serves (so a new route
without docs fails here); and a running gateway's answers fit the schemas it gives.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import validate
from yarl import URL

from gateway import rollback
from gateway.admin import create_admin_app
from gateway.admin_resilience import MAX_REASON as MAX_BREAKER_REASON
from gateway.errors import ERROR_TABLE
from gateway.openapi import document
from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.test_jobs import (
    ALICE,
    adset_params,
    campaign_params,
    create,
    job,
)

ADMIN = "admin-secret-for-openapi"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
async def gw(graph_sim: SimHandle, sqlite_url: str) -> AsyncIterator[GatewayHandle]:
    """The gateway (SQLite) with an admin token."""
    env = {"GATEWAY_ADMIN_TOKEN": ADMIN, "GATEWAY_ROLLBACK_TOKEN": ALICE}
    async with running_gateway(graph_sim.url, sqlite_url, environ=env) as handle:
        yield handle


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The documented JSON schema of one answer (AssertionError: that status is not documented)."""
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (method, path, status, sorted(responses))
    answer = responses[str(status)]
    if "$ref" in answer:
        answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema: dict[str, Any] = answer["content"]["application/json"]["schema"]
    return schema


def assert_fits(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """*body* is valid against the document's schema for that answer (`$ref`s resolved in it,
    date-time formats checked)."""
    schema = {**response_schema(doc, path, method, status), "components": doc["components"]}
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


async def answer(
    http: aiohttp.ClientSession,
    gw: GatewayHandle,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with http.request(
        method, gw.admin_url + path, json=body, headers=AUTH if headers is None else headers
    ) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def test_the_document_is_valid_openapi_3_1() -> None:
    """openapi-spec-validator accepts it (schemas, refs, parameters, security)."""
    doc = document()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
    }


def test_every_operation_has_a_unique_operation_id() -> None:
    """Client generators name their methods after operationId."""
    doc = document()
    ids = [doc["paths"][path][method.lower()]["operationId"] for method, path in operations(doc)]
    assert len(ids) == len(set(ids)) == len(operations(doc))


def test_the_error_envelope_names_every_gateway_reason() -> None:
    """The Graph-shaped error schema lists the gateway's reasons (DESIGN.md §3.2's table)."""
    error = document()["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["properties"]["gateway_reason"]["enum"]) == set(ERROR_TABLE)
    assert error["required"] == ["message", "type"]


async def test_every_route_is_documented_and_every_documented_operation_is_a_route(
    gw: GatewayHandle,
) -> None:
    """Walks the admin app's router: a route without docs, or docs without a route, fails."""
    routes = {
        (route.method, route.resource.canonical)
        for route in create_admin_app(gw.gateway).router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = operations(document())
    assert routes - documented == set(), "routes the OpenAPI document does not describe"
    assert documented - routes == set(), "documented operations the admin app does not serve"


async def test_only_the_probes_and_metrics_are_public() -> None:
    """Everything under /admin/v1/ carries the bearer requirement and documents 401/403."""
    doc = document()
    assert doc["security"] == [{"adminToken": []}]
    for method, path in operations(doc):
        op = doc["paths"][path][method.lower()]
        if path.startswith("/admin/v1/"):
            assert "security" not in op, (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)
        else:
            assert op["security"] == [], (method, path)


async def test_every_documented_get_without_required_parameters_answers_as_documented(
    http: aiohttp.ClientSession, gw: GatewayHandle
) -> None:
    """Each such GET answers 200 (or a documented 4xx), never 404/405, and a JSON body fits
    its schema."""
    doc = document()
    for method, path in sorted(operations(doc)):
        params = doc["paths"][path][method.lower()].get("parameters", [])
        if method != "GET" or any(p["required"] for p in params):
            continue
        status, body = await answer(http, gw, method, path)
        assert status not in (404, 405), (path, status, body)
        assert status == 200, (path, status, body)
        if path == "/metrics":
            assert "gateway_requests_total" in body
            continue
        assert_fits(doc, path, method, status, body)
    status, body = await answer(http, gw, "GET", "/admin/v1/openapi.json")
    assert body == json.loads(json.dumps(doc))


async def test_the_document_needs_the_admin_token_and_errors_fit_the_envelope(
    http: aiohttp.ClientSession, gw: GatewayHandle
) -> None:
    """401 without the token, 403 with a wrong one, each in the documented error envelope."""
    doc = document()
    path = "/admin/v1/openapi.json"
    status, body = await answer(http, gw, "GET", path, headers={})
    assert status == 401
    assert_fits(doc, path, "GET", 401, body)
    status, body = await answer(http, gw, "GET", path, headers={"Authorization": "Bearer no"})
    assert status == 403
    assert_fits(doc, path, "GET", 403, body)
    status, body = await answer(http, gw, "GET", "/admin/v1/jobs?limit=0")
    assert status == 400
    assert_fits(doc, "/admin/v1/jobs", "GET", 400, body)
    assert body["error"]["gateway_reason"] == "bad_request"


async def test_the_job_routes_answers_fit_their_schemas(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """A job with a campaign and two ad sets: show, verify, repair, a rollback's plan and its
    report, the campaign rollback, a breaker reset and the 404s fit the documented shapes."""
    doc = document()
    job_id = await job(http, gw, {"campaign": 1, "adset": 2})
    made = await create(http, gw, "campaigns", campaign_params(), job_id=job_id)
    campaign = made.body["id"]
    for n in range(2):
        made = await create(http, gw, "adsets", adset_params(campaign, f"Set {n}"), job_id=job_id)
        assert made.status == 200, made.body
    calls: list[tuple[str, str, str, Any, int]] = [
        ("GET", "/admin/v1/jobs/{job_id}", f"/admin/v1/jobs/{job_id}", None, 200),
        ("GET", "/admin/v1/jobs/{job_id}", "/admin/v1/jobs/job_nope", None, 404),
        ("GET", "/admin/v1/entities", f"/admin/v1/entities?job={job_id}", None, 200),
        ("GET", "/admin/v1/audit", f"/admin/v1/audit?job={job_id}", None, 200),
        ("POST", "/admin/v1/jobs/{job_id}/verify", f"/admin/v1/jobs/{job_id}/verify", {}, 200),
        ("POST", "/admin/v1/jobs/{job_id}/repair", f"/admin/v1/jobs/{job_id}/repair", {}, 200),
        ("POST", "/admin/v1/jobs/{job_id}/verify", "/admin/v1/jobs/job_nope/verify", {}, 404),
        (
            "POST",
            "/admin/v1/campaigns/{campaign_id}/rollback",
            f"/admin/v1/campaigns/{campaign}/rollback",
            None,
            200,
        ),
        (
            "POST",
            "/admin/v1/jobs/{job_id}/rollback",
            f"/admin/v1/jobs/{job_id}/rollback",
            {"dry_run": False},
            400,
        ),
        (
            "POST",
            "/admin/v1/jobs/{job_id}/rollback",
            f"/admin/v1/jobs/{job_id}/rollback",
            {"dry_run": True},
            200,
        ),
        (
            "POST",
            "/admin/v1/jobs/{job_id}/rollback",
            f"/admin/v1/jobs/{job_id}/rollback",
            {"dry_run": False, "reason": "schema test"},
            200,
        ),
        ("GET", "/admin/v1/jobs", "/admin/v1/jobs?status=rolled_back&limit=1", None, 200),
        (
            "POST",
            "/admin/v1/breakers/{name}",
            "/admin/v1/breakers/graph",
            {"action": "reset"},
            200,
        ),
        ("POST", "/admin/v1/breakers/{name}", "/admin/v1/breakers/nope", {"action": "reset"}, 404),
    ]
    for method, template, path, body, expected in calls:
        status, got = await answer(http, gw, method, path, body)
        assert status == expected, (method, path, status, got)
        assert_fits(doc, template, method, status, got)
    _, listed = await answer(http, gw, "GET", "/admin/v1/jobs?status=rolled_back")
    assert [j["job_id"] for j in listed["data"]] == [job_id]
    assert await graph_sim.objects(type="adset", live=True) == []  # the rollback did run


# --- the document and the server agree on what input is valid (found by schemathesis) ------


def valid(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    """*value* fits *schema* ($refs into *doc*, formats checked), as a client would judge."""
    validator = jsonschema.Draft202012Validator(
        {**schema, "components": doc["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    return validator.is_valid(value)


def parameter(doc: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    [found] = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name]
    schema: dict[str, Any] = found["schema"]
    return schema


def query_value(schema: dict[str, Any], raw: str) -> Any:
    """How a client holding *schema* would have the raw query value (an integer parameter's
    digits as a number)."""
    if schema.get("type") == "integer" and re.fullmatch("-?[0-9]+", raw):
        return int(raw)
    return raw


QUERY_SAMPLES: list[tuple[str, str, list[str]]] = [
    (
        "/admin/v1/entities",
        "since",
        [
            "2026-11-29T10:00:00Z",
            "2026-11-29T10:00:00.5+05:30",
            "0001-01-01T00:00:00+14:00",
            "2026-11-29",
            "1764410400",
            "-1e20",
            "1e999",
            "",
            "inf",
            "nan",
            "1_000",
            "yesterday",
            "2026-02-30",
        ],
    ),
    ("/admin/v1/jobs", "since", ["9999-12-31T23:00:00-05:00", "1.5e9", "NaN", "tomorrow"]),
    (
        "/admin/v1/entities",
        "before",
        ["1", "9223372036854775807", "9223372036854775808", "0", "-3", "", "x", "1_0"],
    ),
    ("/admin/v1/audit", "before", ["42", "99999999999999999999", "1.0"]),
    (
        "/admin/v1/jobs",
        "before",
        [
            "2026-11-29T07:02:05.123456+00:00|job_0123456789abcdef0123",
            "2028-02-29T00:00:00Z|job_x",
            "2027-02-29T00:00:00Z|job_x",
            "2026-04-31T00:00:00+00:00|job_x",
            "2026-11-29T24:00:00+00:00|job_x",
            "2026-11-29T07:02:05+00:00|",
            "2026-11-29T07:02:05+00:00",
            "|job_x",
            "",
        ],
    ),
    ("/admin/v1/audit", "limit", ["1", "1000", "1001", "0", "-1", "10.0", "", "²"]),
]


@pytest.mark.parametrize(
    ("path", "name", "samples"), QUERY_SAMPLES, ids=[f"{p}?{n}" for p, n, _ in QUERY_SAMPLES]
)
async def test_the_server_accepts_exactly_the_query_values_the_document_calls_valid(
    http: aiohttp.ClientSession, gw: GatewayHandle, path: str, name: str, samples: list[str]
) -> None:
    """For `since`, `before` and `limit`: a value the documented schema takes is answered 200,
    one it refuses is a 400 naming the parameter. (The document said "string" for `since` and
    `before`, so fuzzers sent `since=` and were refused; the server crashed on `since=1e20`.)"""
    doc = document()
    schema = parameter(doc, path, name)
    for raw in samples:
        documented = valid(doc, schema, query_value(schema, raw))
        async with http.get(
            URL(gw.admin_url).with_path(path).with_query({name: raw}), headers=AUTH
        ) as resp:
            body = await resp.json()
        assert resp.status == (200 if documented else 400), (raw, documented, body)
        if not documented:
            assert [p for p in body["error"]["problems"] if p.startswith(f"{name}:")], body


ROLLBACK_BODIES: list[Any] = [
    {},
    {"dry_run": True},
    {"dry_run": True, "reason": ""},
    {"dry_run": False},
    {"dry_run": False, "reason": " \t"},
    {"dry_run": False, "reason": "r" * rollback.MAX_REASON},
    {"dry_run": False, "reason": "r" * (rollback.MAX_REASON + 1)},
    {"dry_run": False, "reason": "r", "actor": "a" * 128},
    {"dry_run": False, "reason": "r", "actor": "a" * 129},
    {"dry_run": False, "reason": "r", "actor": "   "},
    {"dry_run": False, "reason": "r", "actor": " ops "},
    {"dry_run": False, "reason": "r", "plan_id": ""},
    {"reason": None},
    {"dry_run": None},
    {"dry_run": True, "reason": "a\x00b"},
    {"dry_run": True, "extra": 1},
]


@pytest.mark.parametrize("body", ROLLBACK_BODIES, ids=[json.dumps(b)[:60] for b in ROLLBACK_BODIES])
async def test_the_server_accepts_exactly_the_rollback_bodies_the_document_calls_valid(
    http: aiohttp.ClientSession, gw: GatewayHandle, body: Any
) -> None:
    """RollbackRequest states what the handler checks: a reason to execute (not only spaces),
    its real limit (rollback.MAX_REASON, not the 500 it said), an actor of 1..128 characters
    not all spaces, no NUL, no null where a string goes. A valid body reaches the lookup of
    the (unknown) job: 404; an invalid one is 400."""
    doc = document()
    schema = doc["components"]["schemas"]["RollbackRequest"]
    documented = valid(doc, schema, body)

    status, answer = await _post(http, gw, "/admin/v1/jobs/job_nope/rollback", body)

    assert status == (404 if documented else 400), (body, documented, answer)


BREAKER_BODIES: list[Any] = [
    {"action": "reset"},
    {"action": "reset", "reason": "x" * MAX_BREAKER_REASON},
    {"action": "reset", "reason": "x" * (MAX_BREAKER_REASON + 1)},
    {"action": "reset", "resaon": "typo"},
    {"action": "reset", "reason": "a\x00"},
    {"action": "close"},
    {},
]


@pytest.mark.parametrize("body", BREAKER_BODIES, ids=[json.dumps(b)[:40] for b in BREAKER_BODIES])
async def test_the_server_accepts_exactly_the_breaker_bodies_the_document_calls_valid(
    http: aiohttp.ClientSession, gw: GatewayHandle, body: Any
) -> None:
    """ForceBreaker: an action, an optional short reason, nothing else (a misspelt `reason`
    was dropped without a word)."""
    doc = document()
    documented = valid(doc, doc["components"]["schemas"]["ForceBreaker"], body)

    status, answer = await _post(http, gw, "/admin/v1/breakers/graph", body)

    assert status == (200 if documented else 400), (body, documented, answer)


async def _post(
    http: aiohttp.ClientSession, gw: GatewayHandle, path: str, body: Any
) -> tuple[int, Any]:
    async with http.post(gw.admin_url + path, json=body, headers=AUTH) as resp:
        return resp.status, await resp.json()


async def test_every_admin_operation_documents_the_errors_any_request_can_get() -> None:
    """400 on every /admin/v1/ operation (a parameter given twice, a NUL in the path), 413 on
    those that take a body; verify and repair also the gateway's own refusals to read Graph
    (429 throttled, 503 circuit_open, 504), which they no longer turn into a 502."""
    doc = document()
    for method, path in operations(doc):
        op = doc["paths"][path][method.lower()]
        if not path.startswith("/admin/v1/"):
            continue
        assert "400" in op["responses"], (method, path)
        if "requestBody" in op:
            assert "413" in op["responses"], (method, path)
    for action in ("verify", "repair"):
        responses = doc["paths"][f"/admin/v1/jobs/{{job_id}}/{action}"]["post"]["responses"]
        assert {"429", "502", "503", "504"} <= set(responses)
