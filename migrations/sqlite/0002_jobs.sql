-- 0002_jobs (SQLite): declared jobs, their numbered slots, pre-creation verifications and
-- Idempotency-Key records; entities learn which slot they fill.
--
-- Same conventions as 0001: run in one transaction with its schema_migrations row (no
-- BEGIN/COMMIT, no PRAGMA), STRICT tables, timestamps as 27-character UTC text.


-- The job slot an entity fills (X-Gateway-Job), NULL for a create outside any job. Not a
-- foreign key: the entity row is the write-ahead record and must not wait on the slot's.
ALTER TABLE entities ADD COLUMN slot_no INTEGER CHECK (slot_no >= 1);


-- jobs: one row per job a backend declared (POST /_gateway/v1/jobs, DESIGN.md §3.1) after its
-- pre-creation verification passed. A job caps how many entities of each type go through.
CREATE TABLE jobs (
    job_id TEXT NOT NULL PRIMARY KEY CHECK (length(job_id) BETWEEN 1 AND 128),
    -- HMAC of the declaring token, hex: only that caller may see the job or use external_ref.
    caller TEXT NOT NULL CHECK (length(caller) BETWEEN 1 AND 128),
    account_id TEXT NOT NULL CHECK (length(account_id) BETWEEN 1 AND 64),
    campaign_name TEXT NOT NULL CHECK (length(campaign_name) BETWEEN 1 AND 4096),
    -- The caller's own id for the job: declaring it again returns the same job (idempotent).
    external_ref TEXT CHECK (length(external_ref) BETWEEN 1 AND 255),
    -- Entity type -> how many, as declared: {"campaign": 1, "adset": 50, "ad": 50}. The slots
    -- table holds one row per expected entity; this is the declaration as given.
    expect TEXT NOT NULL CHECK (
        json_valid(expect) AND json_type(expect) = 'object' AND length(expect) <= 4096
    ),
    -- pending: nothing reserved yet; in_progress: a slot was reserved; completed: every slot
    -- created; failed / rolled_back: closed, no more creates.
    status TEXT NOT NULL CHECK (
        status IN ('pending', 'in_progress', 'completed', 'failed', 'rolled_back')
    ),
    -- The pre-creation verification report as returned to the caller (JSON object).
    verification TEXT NOT NULL CHECK (
        json_valid(verification) AND json_type(verification) = 'object'
        AND length(verification) <= 65536
    ),
    created_at TEXT NOT NULL CHECK (
        created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    ),
    updated_at TEXT NOT NULL CHECK (
        updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    )
) STRICT;

-- external_ref makes a declaration idempotent per caller; another caller may use the same ref.
CREATE UNIQUE INDEX jobs_caller_external_ref_key ON jobs (caller, external_ref)
    WHERE external_ref IS NOT NULL;
-- Admin listing (`GET /admin/v1/jobs?status=&account=&since=`).
CREATE INDEX jobs_status_idx ON jobs (status, created_at);
CREATE INDEX jobs_account_id_idx ON jobs (account_id, created_at);


-- slots: one row per entity a job expects, numbered 1..expected per type (DESIGN.md §2,
-- invariant 4). Created + in-flight (reserved, unknown) slots are what the cap counts, so the
-- cap can never be passed: a create needs a slot, and a retry reuses the slot it holds.
CREATE TABLE slots (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    entity_type TEXT NOT NULL CHECK (length(entity_type) BETWEEN 1 AND 32),
    -- 1..expected (X-Gateway-Slot names one).
    slot_no INTEGER NOT NULL CHECK (slot_no >= 1),
    -- free: nobody holds it; reserved: a request is creating its entity; unknown: sent and no
    -- answer (still counted as in flight until reconciled); created: holds its Graph id.
    state TEXT NOT NULL CHECK (state IN ('free', 'reserved', 'unknown', 'created')),
    -- The request holding the slot (reserved / unknown) or the one that created it.
    request_id TEXT CHECK (length(request_id) BETWEEN 1 AND 128),
    graph_id TEXT CHECK (length(graph_id) BETWEEN 1 AND 128),
    updated_at TEXT NOT NULL CHECK (
        updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    ),
    PRIMARY KEY (job_id, entity_type, slot_no),
    -- A free slot belongs to nobody; a held one names its request; a created one its entity.
    CONSTRAINT slots_free_is_empty CHECK (
        state <> 'free' OR (request_id IS NULL AND graph_id IS NULL)
    ),
    CONSTRAINT slots_held_has_request CHECK (
        state NOT IN ('reserved', 'unknown') OR request_id IS NOT NULL
    ),
    CONSTRAINT slots_created_has_graph_id CHECK (state <> 'created' OR graph_id IS NOT NULL)
) STRICT;

-- The lowest free slot of a type (reserve_slots), and counts by state (NoCapacity).
CREATE INDEX slots_state_idx ON slots (job_id, entity_type, state, slot_no);


-- pre_creation_verifications: every check run before a job was declared (token, account,
-- campaign_name, object_limits), kept for the admin API; job_id is NULL when the job was
-- refused. Not a foreign key: checks are recorded whether or not a job came of them.
CREATE TABLE pre_creation_verifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT CHECK (length(job_id) BETWEEN 1 AND 128),
    caller TEXT NOT NULL CHECK (length(caller) BETWEEN 1 AND 128),
    account_id TEXT NOT NULL CHECK (length(account_id) BETWEEN 1 AND 64),
    -- token | account | campaign_name | object_limits
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    -- error: the check could not run (Graph unreachable), which is not the same as failed.
    status TEXT NOT NULL CHECK (status IN ('passed', 'failed', 'warning', 'error')),
    detail TEXT NOT NULL CHECK (length(detail) <= 4096),
    duration_ms REAL NOT NULL CHECK (duration_ms >= 0),
    -- What the check saw (account_status, the duplicate campaign's id, ...), a JSON object.
    data TEXT NOT NULL CHECK (
        json_valid(data) AND json_type(data) = 'object' AND length(data) <= 65536
    ),
    created_at TEXT NOT NULL CHECK (
        created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    )
) STRICT;

CREATE INDEX pre_creation_verifications_job_id_idx ON pre_creation_verifications (job_id, id);
CREATE INDEX pre_creation_verifications_account_id_idx
    ON pre_creation_verifications (account_id, created_at);


-- idempotency_keys: one row per Idempotency-Key a caller sent (DESIGN.md §6, Stripe / IETF
-- draft semantics). in_progress rows are leases: the holder runs the request and stores the
-- response (done), which later requests with the same key replay; a holder that crashed is
-- taken over once locked_until has passed. Done rows are reaped after retain_until.
CREATE TABLE idempotency_keys (
    -- HMAC(token) + ad account: keys of different callers or accounts never meet.
    scope TEXT NOT NULL CHECK (length(scope) BETWEEN 1 AND 255),
    key TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- Hash of the request (method, path, body): the same key with another request is a
    -- mismatch (422), never a replay.
    fingerprint TEXT NOT NULL CHECK (length(fingerprint) BETWEEN 1 AND 128),
    -- The request that holds the lease (in_progress) or that produced the response (done).
    request_id TEXT NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    state TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    -- End of the holder's lease; past it the key may be taken over. NULL once done.
    locked_until TEXT CHECK (
        locked_until GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    ),
    -- The response to replay: status, headers (JSON object of name -> value), body bytes.
    response_status INTEGER CHECK (response_status BETWEEN 100 AND 599),
    response_headers TEXT CHECK (
        response_headers IS NULL OR (
            json_valid(response_headers) AND json_type(response_headers) = 'object'
            AND length(response_headers) <= 65536
        )
    ),
    response_body BLOB CHECK (length(response_body) <= 16777216),
    created_at TEXT NOT NULL CHECK (
        created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    ),
    -- Set when done (policy: 24 h after); the reaper deletes done rows past it.
    retain_until TEXT CHECK (
        retain_until GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    ),
    PRIMARY KEY (scope, key),
    CONSTRAINT idempotency_keys_in_progress_is_locked CHECK (
        state <> 'in_progress' OR locked_until IS NOT NULL
    ),
    CONSTRAINT idempotency_keys_done_has_response CHECK (
        state <> 'done' OR (
            response_status IS NOT NULL AND response_headers IS NOT NULL
            AND response_body IS NOT NULL AND retain_until IS NOT NULL
        )
    )
) STRICT;

-- The reaper's scan.
CREATE INDEX idempotency_keys_retain_until_idx ON idempotency_keys (retain_until);
