-- 0001_entities (SQLite): the entity ledger and the caller-HMAC key.
--
-- The runner (gateway/stores/migrate.py) runs this file in one transaction together with its
-- schema_migrations row, so it must not contain BEGIN/COMMIT or PRAGMAs.
--
-- Timestamps are UTC instants stored as ISO-8601 text with microseconds and a `Z`, always 27
-- characters ('2026-11-29T10:00:00.123456Z'): one fixed width makes text order time order, so
-- `created_at >= ?` uses the index and a dump is readable by eye. The CHECKs enforce the shape.
-- Tables are STRICT (SQLite >= 3.37) so a value of the wrong type is refused, as in PostgreSQL.


-- entities: one row per entity the gateway asked Graph to create (DESIGN.md §2, invariants 3
-- and 7). A row is written in state `sending` and committed *before* the create is forwarded
-- (write-ahead intent), then settled with what Graph answered. Rows are never deleted.
CREATE TABLE entities (
    -- Keyset-paging cursor and the id the shell passes to `settle`. AUTOINCREMENT: an id is
    -- never reused, even after the newest row is gone, so an id in a log names one row forever.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The gateway request that carried the create (X-Gateway-Request-Id).
    request_id TEXT NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    -- Which create of that request: the op's index in a batch, 0 for a single create; the
    -- entities a copy answer names get indexes of their own (see gateway/model.py Intent).
    op_index INTEGER NOT NULL CHECK (op_index >= 0),
    -- HMAC of the caller's access token, hex (gateway_keys holds the key); never the token.
    caller TEXT NOT NULL CHECK (length(caller) BETWEEN 1 AND 128),
    -- "act_<n>"; NULL only for a copy whose source account is not known yet.
    account_id TEXT CHECK (length(account_id) BETWEEN 1 AND 64),
    -- campaign | adset | ad | adcreative | adimage | advideo | copy (a copy's type is learned
    -- from Graph's answer and replaces `copy` on settle).
    entity_type TEXT NOT NULL CHECK (length(entity_type) BETWEEN 1 AND 32),
    -- How it was asked for: a single create, one op of a batch, or a /copies call.
    source TEXT NOT NULL CHECK (source IN ('single', 'batch', 'copy')),
    -- sending: intent committed, Graph may or may not have it; created: Graph gave an id;
    -- failed: Graph refused, or the request never left; unknown: sent, no answer (look on Graph).
    state TEXT NOT NULL CHECK (state IN ('sending', 'created', 'failed', 'unknown')),
    -- campaign_id of an ad set, adset_id of an ad, the source of a copy.
    parent_id TEXT CHECK (length(parent_id) BETWEEN 1 AND 128),
    -- The name sent to Graph; reconciliation looks children up by it (names may repeat).
    name TEXT CHECK (length(name) <= 4096),
    -- The X-Gateway-Job the create counted against, if any.
    job_id TEXT CHECK (length(job_id) BETWEEN 1 AND 128),
    -- Graph's id for the entity, once known.
    graph_id TEXT CHECK (length(graph_id) BETWEEN 1 AND 128),
    -- Graph's error as a JSON object (status, code, subcode, message) for failed/unknown rows.
    error TEXT CHECK (
        error IS NULL OR (json_valid(error) AND json_type(error) = 'object' AND length(error) <= 65536)
    ),
    created_at TEXT NOT NULL CHECK (
        created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    ),
    -- Moves whenever settle changes the row (a repeated identical settle leaves it alone).
    updated_at TEXT NOT NULL CHECK (
        updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    ),
    -- A created entity without its Graph id could never be verified or rolled back.
    CONSTRAINT entities_created_has_graph_id CHECK (state <> 'created' OR graph_id IS NOT NULL),
    -- One row per create of a request: writing an intent twice is refused (StoreConflict), and
    -- add_entities is idempotent on it.
    CONSTRAINT entities_request_op_key UNIQUE (request_id, op_index)
) STRICT;

-- Admin listing by account / job, newest first (keyset on id).
CREATE INDEX entities_account_id_idx ON entities (account_id, id);
CREATE INDEX entities_job_id_idx ON entities (job_id, id);
-- find_by_graph_id (verification, a copy source's account, rollback).
CREATE INDEX entities_graph_id_idx ON entities (graph_id);
-- Rows in a given state (the completer looks for `sending` and `unknown`), newest first.
CREATE INDEX entities_state_idx ON entities (state, id);
-- `since` filters.
CREATE INDEX entities_created_at_idx ON entities (created_at);


-- gateway_keys: secrets the gateway makes for itself, one row per purpose. `caller_hmac` is the
-- key of the HMAC that turns an access token into the `caller` column; it is created once per
-- database (INSERT ... ON CONFLICT DO NOTHING) so every replica derives the same caller ids.
CREATE TABLE gateway_keys (
    name TEXT NOT NULL PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    -- Raw key bytes (32 random bytes for caller_hmac).
    value BLOB NOT NULL CHECK (length(value) BETWEEN 16 AND 1024),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
) STRICT;
