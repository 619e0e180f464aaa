"""Errors the gateway itself produces, and the one table that turns them into HTTP answers.

    GatewayError(Exception)                       reason, status, code, transient
    ├── ConfigError(GatewayError, ValueError)     bad settings or policy; raised at start-up
    ├── RequestRejected                           the caller's request is refused
    │   ├── BadRequest                            400/413 bad_request
    │   │   └── PayloadTooLarge                   413 bad_request
    │   ├── CapExceeded                           409 cap_exceeded (nothing sent)
    │   ├── ParentMismatch                        409 parent_mismatch
    │   ├── JobNotFound / JobClosed               404 job_not_found / 409 job_closed
    │   ├── VerificationFailed                    422 verification_failed
    │   ├── IdempotencyMismatch                   422 idempotency_mismatch
    │   ├── RequestInProgress                     409 request_in_progress
    │   └── Throttled                             429 throttled (queue full / past deadline)
    ├── UpstreamError                             talking to Graph
    │   ├── UpstreamUnavailable                   502 upstream_unavailable (nothing was sent)
    │   ├── UpstreamTimeout(…, TimeoutError)      504 upstream_timeout (a read got no answer)
    │   ├── OutcomeUnknown                        504 outcome_unknown (a create got no answer)
    │   └── CircuitOpenError                      503 circuit_open (nothing was sent)
    └── StoreError                                persistence
        ├── StoreUnavailable                      503 ledger_unavailable
        └── StoreConflict                         a unique constraint refused a row

Bugs are not GatewayErrors: they become a 500 `internal_error`, a logged traceback and an
alert. `gateway.proxy` renders every GatewayError through `ERROR_TABLE`, in Graph's envelope
(DESIGN.md §2.2), so the backend's existing Graph error handling works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    code: int
    transient: bool


# gateway_reason -> (HTTP status, Graph-envelope `code`, is_transient). The codes are part of
# the contract (README, "Errors the gateway returns"); never renumber one.
ERROR_TABLE: dict[str, ErrorSpec] = {
    "cap_exceeded": ErrorSpec(409, 9001, False),
    "idempotency_mismatch": ErrorSpec(422, 9002, False),
    "request_in_progress": ErrorSpec(409, 9003, True),
    "bad_request": ErrorSpec(400, 9004, False),
    "job_not_found": ErrorSpec(404, 9005, False),
    "job_closed": ErrorSpec(409, 9006, False),
    "verification_failed": ErrorSpec(422, 9007, False),
    "ledger_unavailable": ErrorSpec(503, 9008, True),
    "circuit_open": ErrorSpec(503, 9009, True),
    "throttled": ErrorSpec(429, 9010, True),
    "outcome_unknown": ErrorSpec(504, 9011, True),
    "upstream_unavailable": ErrorSpec(502, 9012, True),
    "upstream_timeout": ErrorSpec(504, 9013, True),
    "parent_mismatch": ErrorSpec(409, 9014, False),
    "internal_error": ErrorSpec(500, 9099, True),
}


class GatewayError(Exception):
    """Base of every error the gateway answers with itself."""

    reason: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error_data: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self._status = status
        self.retry_after = retry_after
        self.error_data = error_data
        # Response headers that say what happened before the error (X-Gateway-Attempts, ...).
        self.headers: dict[str, str] = {}

    @property
    def spec(self) -> ErrorSpec:
        return ERROR_TABLE[self.reason]

    @property
    def status(self) -> int:
        return self._status or self.spec.status

    def envelope(self, request_id: str) -> dict[str, Any]:
        """Graph's error body with the gateway's fields (DESIGN.md §2.2)."""
        err: dict[str, Any] = {
            "message": self.message,
            "type": "GatewayException",
            "code": self.spec.code,
            "is_transient": self.spec.transient,
            "gateway_reason": self.reason,
            "fbtrace_id": request_id,
        }
        if self.error_data is not None:
            err["error_data"] = self.error_data
        return {"error": err}


class ConfigError(GatewayError, ValueError):
    """Settings or policy are invalid; lists every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class RequestRejected(GatewayError):
    pass


class BadRequest(RequestRejected):
    reason = "bad_request"


class PayloadTooLarge(BadRequest):
    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body is larger than {limit} bytes", status=413)


class CapExceeded(RequestRejected):
    reason = "cap_exceeded"


class ParentMismatch(RequestRejected):
    """A job's ad set must name the job's campaign, its ads the job's ad sets."""

    reason = "parent_mismatch"


class JobNotFound(RequestRejected):
    reason = "job_not_found"


class JobClosed(RequestRejected):
    reason = "job_closed"


class VerificationFailed(RequestRejected):
    reason = "verification_failed"


class IdempotencyMismatch(RequestRejected):
    reason = "idempotency_mismatch"


class RequestInProgress(RequestRejected):
    reason = "request_in_progress"


class Throttled(RequestRejected):
    """The ad account's throttle queue is full, or its wait would pass the call's deadline;
    `retry_after` is the wait still ahead."""

    reason = "throttled"


class UpstreamError(GatewayError):
    # The transport failure behind it, as gateway.core.retry.Transport names it (connect,
    # timeout, reset), when there was one; None when Graph's answer itself is the error.
    transport: str | None = None


class UpstreamUnavailable(UpstreamError):
    """Graph could not be reached; the request was not sent."""

    reason = "upstream_unavailable"


class UpstreamTimeout(UpstreamError, TimeoutError):
    """A request that changes nothing got no answer in time."""

    reason = "upstream_timeout"


class OutcomeUnknown(UpstreamError):
    """A create was sent and no answer came: it may or may not exist on Graph."""

    reason = "outcome_unknown"


class CircuitOpenError(UpstreamError):
    """A circuit breaker refused the call (Graph is failing); nothing was sent.

    `retry_after` says when the breaker may let calls through again.
    """

    reason = "circuit_open"


class GraphRefused(GatewayError):
    """Graph answered one of the gateway's own reads (a look-up, a verification) with an error
    or with something that is not the answer asked for. `graph_error` is Graph's error object,
    None when the answer carried none. Where it surfaces (the admin API) it says what Graph
    said; in a create's path it is one more reason a look-up could not decide."""

    def __init__(self, message: str, graph_error: Any = None) -> None:
        super().__init__(message)
        self.graph_error = graph_error if isinstance(graph_error, dict) else None

    @property
    def token_refused(self) -> bool:
        """Graph refused the token itself (190 and its subcodes, 102: session)."""
        return self.graph_error is not None and self.graph_error.get("code") in (190, 102)


class StoreError(GatewayError):
    pass


class StoreUnavailable(StoreError):
    reason = "ledger_unavailable"


class StoreConflict(StoreError):
    """A unique or serialization conflict; worth retrying, like an unavailable store."""

    reason = "ledger_unavailable"
