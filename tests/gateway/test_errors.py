"""Every error the gateway answers with is in the one table, with a fixed code."""

from __future__ import annotations

from gateway.errors import (
    ERROR_TABLE,
    GatewayError,
    OutcomeUnknown,
    PayloadTooLarge,
    UpstreamTimeout,
)

DESIGN_REASONS = {
    "cap_exceeded": (409, False),
    "idempotency_mismatch": (422, False),
    "request_in_progress": (409, True),
    "bad_request": (400, False),
    "job_not_found": (404, False),
    "job_closed": (409, False),
    "verification_failed": (422, False),
    "ledger_unavailable": (503, True),
    "circuit_open": (503, True),
    "throttled": (429, True),
    "outcome_unknown": (504, True),
}


def _subclasses(cls: type[GatewayError]) -> set[type[GatewayError]]:
    out: set[type[GatewayError]] = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_error_class_has_a_reason_in_the_table() -> None:
    """No GatewayError subclass can answer without a status, code and transience."""
    for cls in _subclasses(GatewayError) | {GatewayError}:
        assert cls.reason in ERROR_TABLE, cls


def test_design_reasons_keep_their_status_and_transience() -> None:
    """DESIGN.md §3.2's table, exactly."""
    for reason, (status, transient) in DESIGN_REASONS.items():
        spec = ERROR_TABLE[reason]
        assert (spec.status, spec.transient) == (status, transient), reason


def test_codes_are_unique_and_in_the_gateway_range() -> None:
    """Integer codes are fixed per reason (README lists them) and never collide."""
    codes = [spec.code for spec in ERROR_TABLE.values()]
    assert len(codes) == len(set(codes))
    assert all(9000 <= c <= 9999 for c in codes)


def test_the_envelope_is_graph_shaped() -> None:
    """type GatewayException, the reason, transience and the request id as fbtrace_id."""
    body = OutcomeUnknown("no answer").envelope("rid123")
    assert body == {
        "error": {
            "message": "no answer",
            "type": "GatewayException",
            "code": 9011,
            "is_transient": True,
            "gateway_reason": "outcome_unknown",
            "fbtrace_id": "rid123",
        }
    }
    assert PayloadTooLarge(10).status == 413
    assert isinstance(UpstreamTimeout("x"), TimeoutError)
