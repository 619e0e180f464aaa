"""The admin port's OpenAPI 3.1 document, written by hand, served at GET /admin/v1/openapi.json.

tests/gateway/test_openapi.py checks it against the admin app's router both ways (a route
without an entry here fails CI) and the answers of a running gateway against its schemas.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__, rollback
from gateway.admin_http import (
    DEFAULT_PAGE,
    JOB_CURSOR,
    MAX_PAGE,
    MAX_ROW_ID,
    NO_NUL,
    NOT_BLANK,
    UNIX_SECONDS,
)
from gateway.admin_resilience import MAX_REASON as MAX_BREAKER_REASON
from gateway.admin_rollback import MAX_ACTOR
from gateway.core.breaker import BreakerState
from gateway.errors import ERROR_TABLE
from gateway.model import AuditAction, AuditOutcome, CreateSource, EntityState, JobStatus

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
OBJECT: Schema = {"type": "object"}
TIME: Schema = {"type": "string", "format": "date-time"}
# Any text a caller sends (query, path, body) except NUL, which the ledger cannot hold: the
# admin port answers 400 for one (gateway/admin_http.py).
TEXT: Schema = {"type": "string", "pattern": NO_NUL}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(type_: str) -> Schema:
    return {"type": [type_, "null"]}


def _obj(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _enum(values: list[str]) -> Schema:
    return {"type": "string", "enum": values}


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    """The error answers of an /admin/v1/ operation: *statuses*, and those every one has (401,
    403, and 400 for a repeated query parameter or a NUL in the query or path)."""
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "PlanChanged",
        413: "PayloadTooLarge",
        429: "Throttled",
        502: "BadGateway",
        503: "Unavailable",
        504: "GraphTimeout",
    }
    return {
        str(s): {"$ref": f"#/components/responses/{names[s]}"}
        for s in sorted({400, 401, 403, *statuses})
    }


def _query(name: str, description: str, schema: Schema = TEXT) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _path(name: str, description: str, **schema: Any) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {**TEXT, **schema},
    }


def _body(description: str, schema: Schema) -> Schema:
    """An optional JSON body (every POST here accepts none: a dry run, or no Graph token)."""
    return {
        "required": False,
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _paged(item: str) -> Schema:
    return _obj(["data", "paging"], data=_array(_ref(item)), paging=_ref("Paging"))


def _op(summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    return {"summary": summary, "responses": responses, **extra}


LIMIT = _query(
    "limit",
    f"page size (default {DEFAULT_PAGE})",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
)
# Entities and audit rows page by row id; jobs by `<created_at>|<job id>`.
BEFORE = _query(
    "before",
    "the cursor from `paging.next` (pass the URL as given)",
    {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID},
)
JOB_BEFORE = _query(
    "before",
    "the cursor from `paging.next` (pass the URL as given): `<created_at>|<job id>`",
    {"type": "string", "pattern": JOB_CURSOR},
)
SINCE = _query(
    "since",
    "created at or after: ISO 8601 (2026-11-29T10:00:00Z; without an offset: UTC) or unix "
    "seconds; a time before 1970 or after 9999 reads as that bound",
    {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "format": "date"},
            {"type": "string", "pattern": UNIX_SECONDS},
        ]
    },
)
JOB_ID = _path("job_id", "a job id (`job_…`)")
PUBLIC: list[Schema] = []  # no security: the probes and Prometheus need no token


def _schemas() -> dict[str, Schema]:
    finding = _obj(
        ["graph_id", "entity_type", "slot_no", "detail"],
        graph_id=STRING,
        entity_type=_nullable("string"),
        slot_no=_nullable("integer"),
        detail=STRING,
    )
    step = _obj(
        ["graph_id", "entity_type", "batch"], graph_id=STRING, entity_type=STRING, batch=INTEGER
    )
    kept = _obj(
        ["graph_id", "entity_type", "why"],
        graph_id=_nullable("string"),
        entity_type=STRING,
        why=STRING,
        ledger_id=_nullable("integer"),
    )
    target = {
        "job_id": _nullable("string"),
        "campaign_id": _nullable("string"),
        "account_id": _nullable("string"),
        "job_status": {"type": ["string", "null"], "enum": [*(s.value for s in JobStatus), None]},
    }
    slot_ref = _obj(
        ["graph_id", "entity_type"],
        graph_id=STRING,
        entity_type=STRING,
        slot_no=INTEGER,
        why=STRING,
    )
    return {
        "Error": _obj(
            ["error"],
            error={
                **_obj(
                    ["message", "type"],
                    message=STRING,
                    type=STRING,
                    status=INTEGER,
                    code=INTEGER,
                    is_transient=BOOLEAN,
                    gateway_reason=_enum(sorted(ERROR_TABLE)),
                    problems=_array(STRING),
                    fbtrace_id=STRING,
                    graph_error={
                        "type": "object",
                        "description": "Graph's own error object, when Graph answered one of "
                        "the gateway's reads (verify, repair) with an error",
                    },
                ),
                "description": "Graph's error envelope; the gateway's own errors add "
                "`gateway_reason`, `code` and `is_transient` (README, 'Errors the gateway "
                "returns')",
            },
        ),
        "Paging": {
            **_obj([], next=STRING),
            "description": "`next`: the path and query of the next page; absent on the last page",
        },
        "Job": _obj(
            [
                "job_id",
                "status",
                "ad_account_id",
                "campaign_name",
                "expect",
                "created_at",
                "updated_at",
            ],
            job_id=STRING,
            status=_enum([s.value for s in JobStatus]),
            ad_account_id=STRING,
            campaign_name=STRING,
            expect={"type": "object", "additionalProperties": INTEGER},
            external_ref=_nullable("string"),
            verification={
                **OBJECT,
                "description": "the pre-creation verification and the latest post-creation one",
            },
            created_at=TIME,
            updated_at=TIME,
        ),
        "JobDetail": {
            "allOf": [
                _ref("Job"),
                _obj(
                    ["slots", "campaign_id", "slot_list", "checks", "entities", "audit"],
                    slots={
                        "type": "object",
                        "additionalProperties": _obj(
                            ["expected", "created", "in_flight", "unknown", "free"],
                            **dict.fromkeys(
                                ("expected", "created", "in_flight", "unknown", "free"), INTEGER
                            ),
                        ),
                    },
                    campaign_id=_nullable("string"),
                    caller={
                        **STRING,
                        "description": "an HMAC of the declaring token, never the token",
                    },
                    rollback=_obj(
                        ["available", "entities"],
                        available=BOOLEAN,
                        entities=INTEGER,
                        dry_run=STRING,
                    ),
                    slot_list=_array(
                        _obj(
                            ["entity_type", "slot_no", "state", "graph_id"],
                            entity_type=STRING,
                            slot_no=INTEGER,
                            state=STRING,
                            graph_id=_nullable("string"),
                            request_id=_nullable("string"),
                            updated_at=TIME,
                        )
                    ),
                    checks=_array(
                        _obj(["name", "status"], name=STRING, status=STRING, detail=STRING)
                    ),
                    entities=_array(_ref("Entity")),
                    audit=_array(_ref("AuditRecord")),
                ),
            ]
        },
        "Entity": _obj(
            ["id", "request_id", "entity_type", "source", "state", "graph_id", "created_at"],
            id=INTEGER,
            request_id=STRING,
            op_index=INTEGER,
            caller=STRING,
            account_id=_nullable("string"),
            entity_type=STRING,
            source=_enum([s.value for s in CreateSource]),
            state=_enum([s.value for s in EntityState]),
            parent_id=_nullable("string"),
            name=_nullable("string"),
            job_id=_nullable("string"),
            graph_id=_nullable("string"),
            error=_nullable("object"),
            created_at=TIME,
            updated_at=TIME,
            slot_no=_nullable("integer"),
        ),
        "AuditRecord": _obj(
            ["id", "action", "outcome", "reason", "detail", "actor", "created_at"],
            id=INTEGER,
            action={**STRING, "examples": [a.value for a in AuditAction]},
            outcome={**STRING, "examples": [o.value for o in AuditOutcome]},
            job_id=_nullable("string"),
            campaign_id=_nullable("string"),
            graph_id=_nullable("string"),
            reason=STRING,
            detail=OBJECT,
            actor=STRING,
            created_at=TIME,
        ),
        "Verification": _obj(
            ["clean", "checked", "counts", "missing", "untracked", "mismatched"],
            clean=BOOLEAN,
            checked={**INTEGER, "description": "recorded entities read back from Graph"},
            counts=_obj(
                ["missing", "untracked", "mismatched"],
                **dict.fromkeys(("missing", "untracked", "mismatched"), INTEGER),
            ),
            missing=_array(finding),
            untracked=_array(finding),
            mismatched=_array(finding),
        ),
        "GraphToken": {
            **_obj([], access_token=TEXT),
            "additionalProperties": False,
            "description": "The Graph token for the reads (else the job's caller's, while this "
            "process holds it, else GATEWAY_ROLLBACK_TOKEN); never stored",
        },
        "RollbackRequest": {
            **_obj(
                [],
                dry_run={**BOOLEAN, "default": True},
                reason={
                    **TEXT,
                    "maxLength": rollback.MAX_REASON,
                    "description": "required when dry_run is false (and not only spaces)",
                },
                access_token={**TEXT, "description": "else GATEWAY_ROLLBACK_TOKEN; never stored"},
                actor={
                    "type": "string",
                    "pattern": NOT_BLANK,
                    "maxLength": MAX_ACTOR,
                    "default": rollback.DEFAULT_ACTOR,
                },
                plan_id={
                    **TEXT,
                    "description": "the dry run's plan_id: executing is refused (409, nothing "
                    "deleted) if the plan changed since",
                },
            ),
            "additionalProperties": False,
            # Executing needs a reason: it goes into every audit row.
            "if": {"required": ["dry_run"], "properties": {"dry_run": {"const": False}}},
            "then": {"required": ["reason"], "properties": {"reason": {"pattern": NOT_BLANK}}},
        },
        "ForceBreaker": {
            **_obj(
                ["action"],
                action=_enum(["open", "disable", "reset"]),
                reason={**TEXT, "maxLength": MAX_BREAKER_REASON},
            ),
            "additionalProperties": False,
        },
        "RollbackPlan": _obj(
            ["dry_run", "plan_id", "steps", "count", "batches", "done", "kept"],
            **target,
            dry_run={"const": True},
            plan_id=STRING,
            steps=_array(step),
            count=INTEGER,
            batches=INTEGER,
            done=_array(STRING),
            kept=_array(kept),
        ),
        "RollbackReport": _obj(
            [
                "dry_run",
                "run",
                "outcome",
                "counts",
                "steps",
                "count",
                "failures",
                "done_before",
                "kept",
            ],
            **target,
            dry_run={"const": False},
            run=STRING,
            outcome=_enum([AuditOutcome.OK.value, AuditOutcome.PARTIAL.value]),
            counts={"type": "object", "additionalProperties": INTEGER},
            steps=_array({"allOf": [step, _obj(["outcome"], outcome=STRING, error=OBJECT)]}),
            count=INTEGER,
            failures=_array(OBJECT),
            done_before=_array(STRING),
            kept=_array(kept),
        ),
        "Breaker": _obj(
            ["state", "since", "epoch", "calls", "failures"],
            state=_enum([s.value for s in BreakerState]),
            since=NUMBER,
            epoch=INTEGER,
            calls=INTEGER,
            failures=INTEGER,
            slow_calls=INTEGER,
            failure_rate=NUMBER,
            slow_call_rate=NUMBER,
            probes_in_flight=INTEGER,
            probe_successes=INTEGER,
            retry_after_seconds=_nullable("number"),
        ),
        "Lane": _obj(
            ["wait_seconds", "queue_depth", "in_flight", "gates"],
            wait_seconds=NUMBER,
            queue_depth=INTEGER,
            in_flight=INTEGER,
            gates={"type": "object", "additionalProperties": OBJECT},
        ),
        "VerifyResult": _obj(
            ["job_id", "verification"], job_id=STRING, verification=_ref("Verification")
        ),
        "RepairResult": _obj(
            ["job_id", "verification", "repair", "job_status"],
            job_id=STRING,
            verification=_ref("Verification"),
            repair=_obj(
                ["freed", "adopted", "not_adopted", "recreated", "not_recreated"],
                freed=_array(slot_ref),
                adopted=_array(slot_ref),
                not_adopted=_array(slot_ref),
                recreated=_array(slot_ref),
                not_recreated=_array(slot_ref),
            ),
            job_status=_enum([s.value for s in JobStatus]),
        ),
    }


def _error_responses() -> dict[str, Schema]:
    error = _ref("Error")
    return {
        "BadRequest": _json(
            "a bad query or body: every problem listed in `error.problems` (also a query "
            "parameter given twice, a NUL anywhere, a JSON key given twice)",
            error,
        ),
        "Unauthorized": {
            **_json("no `Authorization: Bearer` (only when GATEWAY_ADMIN_TOKEN is set)", error),
            "headers": {"WWW-Authenticate": {"schema": STRING}},
        },
        "PayloadTooLarge": _json("a body over the admin port's size limit (1 MiB)", error),
        "Forbidden": _json("a wrong admin token", error),
        "NotFound": _json("no such job, campaign or breaker", error),
        "PlanChanged": _json(
            "executing was pinned to a dry run's plan_id and the plan changed: nothing was "
            "deleted; `error.plan` is the plan now",
            error,
        ),
        "Throttled": {
            **_json(
                "Graph could not be read: the account is throttled past the wait allowed "
                "(`gateway_reason` throttled)",
                error,
            ),
            "headers": {"Retry-After": {"schema": STRING}},
        },
        "BadGateway": _json(
            "Graph could not be read: unreachable (`upstream_unavailable`), or its answer was "
            "not the reads asked for",
            error,
        ),
        "Unavailable": {
            **_json(
                "the ledger or the coordinator (Redis) does not answer, or (calls that read "
                "Graph) a circuit breaker is open: `gateway_reason` circuit_open, nothing sent",
                error,
            ),
            "headers": {"Retry-After": {"schema": STRING}},
        },
        "GraphTimeout": {
            **_json("Graph could not be read: no answer in time (`upstream_timeout`)", error),
            "headers": {"Retry-After": {"schema": STRING}},
        },
    }


def _paths() -> dict[str, Schema]:
    rollback_responses = {
        "200": _json(
            "the plan (dry run) or the report (executed)",
            {"oneOf": [_ref("RollbackPlan"), _ref("RollbackReport")]},
        ),
        **_errors(404, 409, 413, 503),
    }
    rollback_body = _body("no body: a dry run", _ref("RollbackRequest"))
    return {
        "/healthz": {
            "get": _op(
                "the process is alive",
                {"200": _json("alive", _obj(["status"], status={"const": "ok"}))},
                security=PUBLIC,
            )
        },
        "/readyz": {
            "get": _op(
                "ledger and coordinator answer; breakers reported (never unready for them)",
                {
                    code: _json(
                        what,
                        _obj(
                            ["ready", "checks", "breakers"],
                            ready=BOOLEAN,
                            checks={"type": "object", "additionalProperties": STRING},
                            breakers={"type": "object", "additionalProperties": STRING},
                        ),
                    )
                    for code, what in (("200", "ready"), ("503", "not ready"))
                },
                security=PUBLIC,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus text format",
                {"200": {"description": "metrics", "content": {"text/plain": {"schema": STRING}}}},
                security=PUBLIC,
            )
        },
        "/admin/v1/openapi.json": {
            "get": _op("this document", {"200": _json("OpenAPI 3.1", OBJECT), **_errors()})
        },
        "/admin/v1/entities": {
            "get": _op(
                "the ledger's entities, newest first, keyset-paged",
                {"200": _json("a page", _paged("Entity")), **_errors(400, 503)},
                parameters=[
                    _query("account", "ad account (`act_…`)"),
                    _query("job", "job id"),
                    SINCE,
                    _query("state", "create state", _enum([s.value for s in EntityState])),
                    LIMIT,
                    BEFORE,
                ],
            )
        },
        "/admin/v1/jobs": {
            "get": _op(
                "jobs, newest first, keyset-paged",
                {"200": _json("a page", _paged("Job")), **_errors(400, 503)},
                parameters=[
                    _query("status", "job status", _enum([s.value for s in JobStatus])),
                    _query("account", "ad account (`act_…`)"),
                    SINCE,
                    LIMIT,
                    JOB_BEFORE,
                ],
            )
        },
        "/admin/v1/jobs/{job_id}": {
            "get": _op(
                "a job: its slots, checks, entities and audit trail (newest first)",
                {"200": _json("the job", _ref("JobDetail")), **_errors(404, 503)},
                parameters=[JOB_ID],
            )
        },
        "/admin/v1/jobs/{job_id}/verify": {
            "post": _op(
                "post-creation verification: what Graph holds against the ledger (audited)",
                {
                    "200": _json("the report", _ref("VerifyResult")),
                    **_errors(404, 413, 429, 502, 503, 504),
                },
                parameters=[JOB_ID],
                requestBody=_body("optional Graph token", _ref("GraphToken")),
            )
        },
        "/admin/v1/jobs/{job_id}/repair": {
            "post": _op(
                "verify, then free missing slots and adopt untracked entities, never past the cap",
                {
                    "200": _json("the report and the repair", _ref("RepairResult")),
                    **_errors(404, 413, 429, 502, 503, 504),
                },
                parameters=[JOB_ID],
                requestBody=_body("optional Graph token", _ref("GraphToken")),
            )
        },
        "/admin/v1/jobs/{job_id}/rollback": {
            "post": _op(
                "dry run (the default) or execute the job's rollback",
                rollback_responses,
                parameters=[JOB_ID],
                requestBody=rollback_body,
            )
        },
        "/admin/v1/campaigns/{campaign_id}/rollback": {
            "post": _op(
                "the same for a campaign tree the ledger holds (job_id null)",
                rollback_responses,
                parameters=[_path("campaign_id", "a campaign's Graph id")],
                requestBody=rollback_body,
            )
        },
        "/admin/v1/audit": {
            "get": _op(
                "the audit trail of safety actions, newest first, keyset-paged",
                {"200": _json("a page", _paged("AuditRecord")), **_errors(400, 503)},
                parameters=[
                    _query("job", "job id"),
                    _query("campaign", "campaign id"),
                    _query("graph_id", "one entity"),
                    _query(
                        "action",
                        "e.g. rollback_step",
                        {**STRING, "examples": [a.value for a in AuditAction]},
                    ),
                    LIMIT,
                    BEFORE,
                ],
            )
        },
        "/admin/v1/breakers": {
            "get": _op(
                "every circuit breaker (`graph` always)",
                {
                    "200": _json(
                        "the breakers",
                        _obj(
                            ["breakers"],
                            breakers={"type": "object", "additionalProperties": _ref("Breaker")},
                        ),
                    ),
                    **_errors(503),
                },
            )
        },
        "/admin/v1/breakers/{name}": {
            "post": _op(
                "force a breaker open, disable it, or reset it",
                {
                    "200": _json(
                        "the breaker now",
                        _obj(
                            ["name", "action", "reason", "breaker"],
                            name=STRING,
                            action=STRING,
                            reason=STRING,
                            breaker=_ref("Breaker"),
                        ),
                    ),
                    **_errors(404, 413, 503),
                },
                parameters=[_path("name", "a breaker's name (`graph`)", examples=["graph"])],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ForceBreaker")}},
                },
            )
        },
        "/admin/v1/accounts": {
            "get": _op(
                "throttle state per ad account and the retry budget; with `serve --workers N` "
                "the queue depths and in-flight calls of every process that answered, and "
                "`processes` saying which did",
                {
                    "200": _json(
                        "the gates",
                        _obj(
                            ["now", "app", "accounts", "retry_budget"],
                            now=NUMBER,
                            app=_ref("Lane"),
                            accounts={"type": "object", "additionalProperties": _ref("Lane")},
                            retry_budget=_obj(
                                ["requests", "retries", "allowance"],
                                requests=INTEGER,
                                retries=INTEGER,
                                allowance=NUMBER,
                            ),
                            processes={
                                "type": "object",
                                "additionalProperties": _enum(["ok", "missing"]),
                                "description": "only with workers: process number (0: the "
                                "first) -> ok, or missing (its calls are not counted here)",
                            },
                        ),
                    ),
                    **_errors(503),
                },
            )
        },
    }


# operationId of each operation, for client generators (unique; tests check every one is set).
OPERATION_IDS = {
    ("get", "/healthz"): "healthz",
    ("get", "/readyz"): "readyz",
    ("get", "/metrics"): "metrics",
    ("get", "/admin/v1/openapi.json"): "getOpenAPI",
    ("get", "/admin/v1/entities"): "listEntities",
    ("get", "/admin/v1/jobs"): "listJobs",
    ("get", "/admin/v1/jobs/{job_id}"): "getJob",
    ("post", "/admin/v1/jobs/{job_id}/verify"): "verifyJob",
    ("post", "/admin/v1/jobs/{job_id}/repair"): "repairJob",
    ("post", "/admin/v1/jobs/{job_id}/rollback"): "rollbackJob",
    ("post", "/admin/v1/campaigns/{campaign_id}/rollback"): "rollbackCampaign",
    ("get", "/admin/v1/audit"): "listAudit",
    ("get", "/admin/v1/breakers"): "listBreakers",
    ("post", "/admin/v1/breakers/{name}"): "forceBreaker",
    ("get", "/admin/v1/accounts"): "listAccounts",
}


def _named(paths: dict[str, Schema]) -> dict[str, Schema]:
    for path, item in paths.items():
        for method, op in item.items():
            op["operationId"] = OPERATION_IDS[(method, path)]
    return paths


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `create_admin_app` serves."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Graph Safety Gateway admin API",
            "version": __version__,
            "description": "The admin port (default 127.0.0.1:9090). Everything under /admin/v1/ "
            "needs `Authorization: Bearer $GATEWAY_ADMIN_TOKEN` when that token is set (401 "
            "without, 403 wrong); without one the port binds to loopback only and asks for none.",
        },
        "security": [{"adminToken": []}],
        "paths": _named(_paths()),
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
            "responses": _error_responses(),
        },
    }


async def handle(request: web.Request) -> web.StreamResponse:
    """GET /admin/v1/openapi.json."""
    return web.json_response(document())
