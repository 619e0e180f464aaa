"""The admin API's OpenAPI document (DESIGN.md §3.3; issue 6 item 4).

It is valid OpenAPI 3.1; it names exactly the routes the admin app serves (so a new route
without docs fails here); and a running gateway's answers fit the schemas it gives.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import validate

from gateway.admin import create_admin_app
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
