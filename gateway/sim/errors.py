"""Graph's error envelope and the catalogue of errors the simulator produces.

Pure: no I/O. Codes, subcodes, types and HTTP statuses follow graph-api-notes Part A §1-§2;
where Graph's real value is unconfirmed (noted per entry), the choice is the simulator's and
is listed in README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OAUTH = "OAuthException"
METHOD = "GraphMethodException"
API = "FacebookApiException"
BATCH = "GraphBatchException"

DOCS = "Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"


@dataclass
class GraphError(Exception):
    """An error Graph answers with; the server renders it as Graph's envelope."""

    status: int
    code: int
    message: str
    type: str = OAUTH
    subcode: int | None = None
    is_transient: bool | None = None
    error_data: dict[str, Any] | None = None
    user_title: str | None = None
    user_msg: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def envelope(self, trace_id: str) -> dict[str, Any]:
        """The JSON body Graph sends: `{"error": {...}}`."""
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        if self.is_transient is not None:
            err["is_transient"] = self.is_transient
        if self.error_data is not None:
            err["error_data"] = self.error_data
        if self.user_title is not None:
            err["error_user_title"] = self.user_title
        if self.user_msg is not None:
            err["error_user_msg"] = self.user_msg
        err["fbtrace_id"] = trace_id
        return {"error": err}

    def to_dict(self) -> dict[str, Any]:
        """The fault-rule / control-API form (no trace id)."""
        return {
            "status": self.status,
            "code": self.code,
            "subcode": self.subcode,
            "type": self.type,
            "message": self.message,
            "is_transient": self.is_transient,
        }


def _www_authenticate(message: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'OAuth "Facebook Platform" "invalid_token" "{message}"'}


# --- tokens (§2.3) -------------------------------------------------------------------------


def token_required() -> GraphError:
    msg = "An access token is required to request this resource."
    return GraphError(400, 104, msg, headers=_www_authenticate(msg))


def token_expired(expired_at: str) -> GraphError:
    msg = f"Error validating access token: Session has expired on {expired_at}."
    return GraphError(400, 190, msg, subcode=463, headers=_www_authenticate(msg))


def token_invalid() -> GraphError:
    msg = "Error validating access token: The session is invalid or has been revoked."
    return GraphError(400, 190, msg, subcode=467, headers=_www_authenticate(msg))


def token_unparseable() -> GraphError:
    msg = "Invalid OAuth access token - Cannot parse access token"
    return GraphError(400, 190, msg, headers=_www_authenticate(msg))


# --- permissions and objects (§2.4) -----------------------------------------------------------


def permission_denied(permission: str, account: str) -> GraphError:
    msg = f"(#200) Ad account owner has NOT grant {permission} permission (account {account})"
    return GraphError(403, 200, msg, is_transient=False)


def object_missing(object_id: str, method: str) -> GraphError:
    msg = (
        f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
        f"cannot be loaded due to missing permissions, or does not support this operation. {DOCS}"
    )
    return GraphError(400, 100, msg, type=METHOD, subcode=33, is_transient=False)


def ids_missing(ids: list[str]) -> GraphError:
    msg = f"(#803) Some of the aliases you requested do not exist: {','.join(ids)}"
    return GraphError(404, 803, msg, is_transient=False)


def nonexisting_field(name: str, node_type: str) -> GraphError:
    msg = f"(#100) Tried accessing nonexisting field ({name}) on node type ({node_type})"
    return GraphError(400, 100, msg, is_transient=False)


def unknown_path(components: str) -> GraphError:
    return GraphError(400, 2500, f"Unknown path components: {components}")


def unsupported_method(method: str, path: str) -> GraphError:
    msg = f"Unsupported {method.lower()} request to {path}. {DOCS}"
    return GraphError(400, 100, msg, type=METHOD, subcode=33, is_transient=False)


# --- validation (§2.6) ------------------------------------------------------------------------


def invalid_parameter(message: str, *, blame: list[list[str]] | None = None) -> GraphError:
    return GraphError(
        400,
        100,
        f"(#100) {message}",
        type=API,
        is_transient=False,
        error_data={"blame_field_specs": blame} if blame else None,
        user_title="Invalid parameter" if blame else None,
        user_msg=message if blame else None,
    )


def missing_parameter(name: str) -> GraphError:
    return invalid_parameter(f"The parameter {name} is required", blame=[[name]])


def restricted_edit(kind: str, *, deleted: bool) -> GraphError:
    """Graph: only the name of a deleted ad set (1487056) or campaign (1487566) may change;
    an archived ad (1885088) or other archived object takes a name or status only."""
    if deleted:
        subcode = {"campaign": 1487566}.get(kind, 1487056)
        msg = "(#100) Cannot edit a deleted object: only the name can be changed"
    else:
        subcode = {"ad": 1885088}.get(kind, 1487056)
        msg = "(#100) Cannot edit an archived object: only the name and status can be changed"
    return GraphError(400, 100, msg, type=API, subcode=subcode, is_transient=False)


def object_limit(what: str, limit: int) -> GraphError:
    # Unconfirmed in Graph: the simulator uses code 100 with no subcode.
    msg = f"(#100) The limit of {limit} {what} has been reached"
    return GraphError(400, 100, msg, type=API, is_transient=False)


def deprecated_version(version: str) -> GraphError:
    msg = f"(#2635) You are calling a deprecated version of the Ads API ({version}). Please update."
    return GraphError(400, 2635, msg, is_transient=False)


def account_not_active(account: str, status: int) -> GraphError:
    # Unconfirmed in Graph (notes §9): the simulator answers writes to a non-active account
    # with a permission-family error, which every classification treats as permanent.
    msg = f"(#200) The ad account {account} is not active (account_status={status})"
    return GraphError(403, 200, msg, is_transient=False)


# --- batch (§4) -------------------------------------------------------------------------------


def batch_not_array() -> GraphError:
    return GraphError(400, 100, "(#100) The parameter batch must be a JSON array", type=BATCH)


def batch_too_large(limit: int) -> GraphError:
    msg = f"Too many requests in batch message. Maximum batch size is {limit}"
    return GraphError(400, 1, msg, type=BATCH)


def batch_bad_op(index: int, why: str) -> GraphError:
    return GraphError(400, 100, f"(#100) Batch request {index}: {why}", type=BATCH)


def batch_dependency_failed(name: str) -> GraphError:
    msg = f"(#100) Request depends on '{name}', which failed or does not exist"
    return GraphError(400, 100, msg, type=BATCH, is_transient=False)


# --- throttles (§2.2) ---------------------------------------------------------------------------

THROTTLES: dict[str, tuple[int, int | None, int, str]] = {
    # name: (code, subcode, HTTP status, message)
    "80004": (
        80004,
        2446079,
        400,
        "(#80004) There have been too many calls to this ad-account. Wait a bit and try again.",
    ),
    "17": (17, 2446079, 400, "(#17) User request limit reached"),
    "613": (
        613,
        1487742,
        400,
        "(#613) There have been too many calls from this ad-account. Please wait a bit and try "
        "again.",
    ),
}


def account_throttled(kind: str) -> GraphError:
    code, subcode, status, msg = THROTTLES[kind]
    return GraphError(status, code, msg, subcode=subcode)


def mutation_rate() -> GraphError:
    msg = "(#613) Calls to this api have exceeded the rate limit: ad account mutation QPS"
    return GraphError(400, 613, msg, subcode=5044001)


def app_throttled() -> GraphError:
    return GraphError(403, 4, "(#4) Application request limit reached", is_transient=True)


# --- transient server errors (§2.1) -------------------------------------------------------------


def unknown_error() -> GraphError:
    return GraphError(500, 1, "An unknown error occurred", is_transient=True)


def service_unavailable(status: int = 500) -> GraphError:
    return GraphError(status, 2, "Service temporarily unavailable", is_transient=True)
