"""Checked by mypy only (pytest collects nothing here): each adapter satisfies its Protocol.

An implementation whose methods drift from gateway/ports.py fails `scripts/check` here, before
any test runs (structlog's tests/typing idea). One ledger object implements every store port.
"""

from __future__ import annotations

from gateway.ports import AuditStore, IdempotencyStore, JobStore, Ledger
from gateway.stores.postgres import PostgresLedger
from gateway.stores.sqlite import SqliteLedger


def sqlite_ledger_is_a_ledger(ledger: SqliteLedger) -> Ledger:
    return ledger


def sqlite_ledger_is_a_job_store(ledger: SqliteLedger) -> JobStore:
    return ledger


def sqlite_ledger_is_an_idempotency_store(ledger: SqliteLedger) -> IdempotencyStore:
    return ledger


def postgres_ledger_is_a_ledger(ledger: PostgresLedger) -> Ledger:
    return ledger


def postgres_ledger_is_a_job_store(ledger: PostgresLedger) -> JobStore:
    return ledger


def postgres_ledger_is_an_idempotency_store(ledger: PostgresLedger) -> IdempotencyStore:
    return ledger


def sqlite_ledger_is_an_audit_store(ledger: SqliteLedger) -> AuditStore:
    return ledger


def postgres_ledger_is_an_audit_store(ledger: PostgresLedger) -> AuditStore:
    return ledger
