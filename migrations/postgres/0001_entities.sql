-- 0001_entities (PostgreSQL): the entity ledger and the caller-HMAC key.
--
-- The runner (gateway/stores/migrate.py) runs this file in one transaction together with its
-- schema_migrations row, under a transaction-level advisory lock; it must not contain
-- BEGIN/COMMIT. Objects are created in the first schema of the connection's search_path.

CREATE TABLE entities (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id text NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 128),
    op_index integer NOT NULL CHECK (op_index >= 0),
    caller text NOT NULL CHECK (char_length(caller) BETWEEN 1 AND 128),
    account_id text CHECK (char_length(account_id) BETWEEN 1 AND 64),
    entity_type text NOT NULL CHECK (char_length(entity_type) BETWEEN 1 AND 32),
    source text NOT NULL CHECK (source IN ('single', 'batch', 'copy')),
    state text NOT NULL CHECK (state IN ('sending', 'created', 'failed', 'unknown')),
    parent_id text CHECK (char_length(parent_id) BETWEEN 1 AND 128),
    name text CHECK (char_length(name) <= 4096),
    job_id text CHECK (char_length(job_id) BETWEEN 1 AND 128),
    graph_id text CHECK (char_length(graph_id) BETWEEN 1 AND 128),
    error jsonb CHECK (
        error IS NULL OR (jsonb_typeof(error) = 'object' AND octet_length(error::text) <= 65536)
    ),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT entities_created_has_graph_id CHECK (state <> 'created' OR graph_id IS NOT NULL),
    CONSTRAINT entities_request_op_key UNIQUE (request_id, op_index)
);

CREATE INDEX entities_account_id_idx ON entities (account_id, id);
CREATE INDEX entities_job_id_idx ON entities (job_id, id);
CREATE INDEX entities_graph_id_idx ON entities (graph_id);
CREATE INDEX entities_state_idx ON entities (state, id);
CREATE INDEX entities_created_at_idx ON entities (created_at);

COMMENT ON TABLE entities IS
    'One row per entity the gateway asked Graph to create (DESIGN.md §2, invariants 3 and 7). '
    'Written as `sending` and committed before the create is forwarded (write-ahead intent), '
    'then settled with what Graph answered. Rows are never deleted.';
COMMENT ON COLUMN entities.id IS
    'Keyset-paging cursor and the id the shell passes to settle. Identity: never reused.';
COMMENT ON COLUMN entities.request_id IS 'The gateway request that carried the create (X-Gateway-Request-Id).';
COMMENT ON COLUMN entities.op_index IS
    'Which create of that request: the op''s index in a batch, 0 for a single create; the '
    'entities a copy answer names get indexes of their own (gateway/model.py Intent).';
COMMENT ON COLUMN entities.caller IS
    'HMAC of the caller''s access token, hex (key in gateway_keys); never the token.';
COMMENT ON COLUMN entities.account_id IS '"act_<n>"; NULL only for a copy whose source account is not known yet.';
COMMENT ON COLUMN entities.entity_type IS
    'campaign | adset | ad | adcreative | adimage | advideo | copy (a copy''s type is learned '
    'from Graph''s answer and replaces `copy` on settle).';
COMMENT ON COLUMN entities.source IS 'How it was asked for: a single create, one op of a batch, or a /copies call.';
COMMENT ON COLUMN entities.state IS
    'sending: intent committed, Graph may or may not have it; created: Graph gave an id; '
    'failed: Graph refused, or the request never left; unknown: sent, no answer (look on Graph).';
COMMENT ON COLUMN entities.parent_id IS 'campaign_id of an ad set, adset_id of an ad, the source of a copy.';
COMMENT ON COLUMN entities.name IS 'The name sent to Graph; reconciliation looks children up by it (names may repeat).';
COMMENT ON COLUMN entities.job_id IS 'The X-Gateway-Job the create counted against, if any.';
COMMENT ON COLUMN entities.graph_id IS 'Graph''s id for the entity, once known.';
COMMENT ON COLUMN entities.error IS 'Graph''s error as a JSON object (status, code, subcode, message) for failed/unknown rows.';
COMMENT ON COLUMN entities.updated_at IS 'Moves whenever settle changes the row (a repeated identical settle leaves it alone).';
COMMENT ON CONSTRAINT entities_created_has_graph_id ON entities IS
    'A created entity without its Graph id could never be verified or rolled back.';
COMMENT ON CONSTRAINT entities_request_op_key ON entities IS
    'One row per create of a request: writing an intent twice is refused (StoreConflict), and '
    'add_entities is idempotent on it.';
COMMENT ON INDEX entities_state_idx IS 'Rows in a given state (the completer looks for sending and unknown), newest first.';

CREATE TABLE gateway_keys (
    name text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 64),
    value bytea NOT NULL CHECK (octet_length(value) BETWEEN 16 AND 1024),
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE gateway_keys IS
    'Secrets the gateway makes for itself, one row per purpose. caller_hmac keys the HMAC that '
    'turns an access token into entities.caller; it is created once per database (INSERT ... '
    'ON CONFLICT DO NOTHING) so every replica derives the same caller ids.';
COMMENT ON COLUMN gateway_keys.value IS 'Raw key bytes (32 random bytes for caller_hmac).';
