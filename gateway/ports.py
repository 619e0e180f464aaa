"""Protocols the shell talks to; adapters in gateway/stores implement them.

Protocols only: no implementation, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from gateway.model import Discovered, EntityPage, EntityQuery, EntityRecord, Intent, Outcome


class Ledger(Protocol):
    """The durable record of every entity created through the gateway.

    Every method is one transaction: it happens entirely or not at all. Any failure to reach
    or write the store raises `StoreUnavailable` (gateway.errors); callers fail creates closed.
    A closed ledger raises `StoreUnavailable` too. Every `now` must be timezone-aware (a naive
    one is a bug: ValueError); timestamps come back in UTC. A value the schema refuses (text
    over its length bound, see migrations/) raises ValueError, not a StoreError.
    """

    async def write_intents(self, intents: Sequence[Intent], *, now: datetime) -> list[int]:
        """Durably record *intents* in state `sending`; return their row ids in order.

        Returns only after the rows are committed (fsync'd as the backend promises), so a
        create may be forwarded once it returns. Writing the same (request_id, op_index)
        twice raises `StoreConflict`, and then none of the call's intents is written. Ids
        increase in the order given but may have gaps.
        """

    async def settle(self, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        """Move rows to `created` (with graph_id), `failed` (with error) or `unknown`.

        Settling a row again with the same outcome is a no-op; an unknown row id is ignored.
        "The same" means equal state, graph_id, entity_type and error; a no-op leaves
        updated_at alone, any change sets it to *now*. An outcome's graph_id or entity_type of
        None means "not said": a known value is kept (a Graph id is never erased). The error is
        replaced as given (None clears it). If one call names a row twice, the last one wins.
        """

    async def add_entities(self, found: Sequence[Discovered], *, now: datetime) -> list[int]:
        """Record entities Graph named without an intent row of their own (state `created`).

        Idempotent on (request_id, op_index): a second call returns the existing row ids, in
        the order given, and changes nothing (also when the existing row is an intent). New
        rows get source `copy`, as `Discovered` carries no source of its own.
        """

    async def entities(self, query: EntityQuery) -> EntityPage:
        """Rows matching *query*, newest first, one page of at most `query.limit`.

        All given filters must hold; `since` is compared with created_at, inclusive.
        `next_before_id` is None on the last page (also when it is exactly full). A limit below
        1 raises ValueError.
        """

    async def find_by_graph_id(self, graph_id: str) -> EntityRecord | None:
        """The newest row whose entity has *graph_id* (e.g. to learn a copy source's account)."""

    async def token_key(self) -> bytes:
        """The HMAC key for caller ids: created once per database, the same for every replica.

        32 random bytes, made by the first call on a database (racing first calls agree).
        """

    async def check(self) -> None:
        """Raise `StoreUnavailable` unless the store answers now (readiness)."""

    async def aclose(self) -> None:
        """Release connections; calling it twice is harmless."""
