"""Value types shared by every layer: ledger intents, outcomes and records.

Pure data: frozen dataclasses and StrEnums, no behaviour beyond small derived properties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EntityState(StrEnum):
    """Where one create stands. `sending` is written before Graph sees anything."""

    SENDING = "sending"  # intent committed; the request may or may not have reached Graph
    CREATED = "created"  # Graph answered with the entity's id
    FAILED = "failed"  # Graph answered with an error, or the request never left
    UNKNOWN = "unknown"  # the request was sent and no answer came: look on Graph


class CreateSource(StrEnum):
    """How the entity was asked for."""

    SINGLE = "single"  # POST /act_{id}/{edge}
    BATCH = "batch"  # one op inside a batch call
    COPY = "copy"  # POST /{id}/copies (the copy itself and every child it names)


@dataclass(frozen=True)
class Intent:
    """A create about to be forwarded, recorded before it is (write-ahead).

    `op_index` tells apart the creates of one request: the op's index in a batch, 0 for a
    single create; the entities a copy answer names get their own rows (`add_entities`).
    """

    request_id: str
    op_index: int
    caller: str  # HMAC of the access token, hex; never the token
    account_id: str | None  # "act_<n>"; None only for a copy whose source is not known yet
    entity_type: str  # campaign | adset | ad | adcreative | adimage | advideo | copy
    source: CreateSource
    parent_id: str | None = None  # campaign_id of an ad set, adset_id of an ad, copied source
    name: str | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one intent (a ledger row id)."""

    entity_id: int
    state: EntityState
    graph_id: str | None = None
    entity_type: str | None = None  # set when the answer reveals it (copies)
    error: Mapping[str, Any] | None = None  # Graph's error: status, code, subcode, message


@dataclass(frozen=True)
class Discovered:
    """An entity Graph named in an answer without a row of its own yet (a copy's children)."""

    request_id: str
    op_index: int
    caller: str
    account_id: str | None
    entity_type: str
    graph_id: str
    parent_id: str | None = None  # the entity it was copied from
    job_id: str | None = None
    source: CreateSource = CreateSource.COPY  # SINGLE/BATCH for extra images of an upload


@dataclass(frozen=True)
class EntityRecord:
    """One row of the ledger as the admin API shows it."""

    id: int
    request_id: str
    op_index: int
    caller: str
    account_id: str | None
    entity_type: str
    source: CreateSource
    state: EntityState
    parent_id: str | None
    name: str | None
    job_id: str | None
    graph_id: str | None
    error: Mapping[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class EntityQuery:
    """Filters and keyset paging for `Ledger.entities` (ids descending: newest first)."""

    account_id: str | None = None
    job_id: str | None = None
    since: datetime | None = None
    state: EntityState | None = None
    before_id: int | None = None  # keyset cursor: rows with id < before_id
    limit: int = 100


@dataclass(frozen=True)
class EntityPage:
    items: tuple[EntityRecord, ...]
    next_before_id: int | None = None  # pass as before_id for the next page; None: last page
    extra: Mapping[str, Any] = field(default_factory=dict)
