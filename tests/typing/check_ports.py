"""Checked by mypy only (pytest collects nothing here): each adapter satisfies its Protocol.

An implementation whose methods drift from gateway/ports.py fails `scripts/check` here, before
any test runs (structlog's tests/typing idea).
"""

from __future__ import annotations

from gateway.ports import Ledger
from gateway.stores.postgres import PostgresLedger
from gateway.stores.sqlite import SqliteLedger


def sqlite_ledger_is_a_ledger(ledger: SqliteLedger) -> Ledger:
    return ledger


def postgres_ledger_is_a_ledger(ledger: PostgresLedger) -> Ledger:
    return ledger
