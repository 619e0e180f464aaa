-- 0002_jobs (PostgreSQL): declared jobs, their numbered slots, pre-creation verifications and
-- Idempotency-Key records; entities learn which slot they fill.
--
-- Same conventions as 0001: run in one transaction with its schema_migrations row under the
-- advisory lock, no BEGIN/COMMIT; purposes are in COMMENT ON (mirrored as -- in sqlite/).

ALTER TABLE entities ADD COLUMN slot_no integer CHECK (slot_no >= 1);

COMMENT ON COLUMN entities.slot_no IS
    'The job slot the entity fills (X-Gateway-Job), NULL outside any job. Not a foreign key: '
    'the entity row is the write-ahead record and must not wait on the slot''s.';


CREATE TABLE jobs (
    job_id text PRIMARY KEY CHECK (char_length(job_id) BETWEEN 1 AND 128),
    caller text NOT NULL CHECK (char_length(caller) BETWEEN 1 AND 128),
    account_id text NOT NULL CHECK (char_length(account_id) BETWEEN 1 AND 64),
    campaign_name text NOT NULL CHECK (char_length(campaign_name) BETWEEN 1 AND 4096),
    external_ref text CHECK (char_length(external_ref) BETWEEN 1 AND 255),
    expect jsonb NOT NULL CHECK (
        jsonb_typeof(expect) = 'object' AND octet_length(expect::text) <= 4096
    ),
    status text NOT NULL CHECK (
        status IN ('pending', 'in_progress', 'completed', 'failed', 'rolled_back')
    ),
    verification jsonb NOT NULL CHECK (
        jsonb_typeof(verification) = 'object' AND octet_length(verification::text) <= 65536
    ),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE UNIQUE INDEX jobs_caller_external_ref_key ON jobs (caller, external_ref)
    WHERE external_ref IS NOT NULL;
CREATE INDEX jobs_status_idx ON jobs (status, created_at);
CREATE INDEX jobs_account_id_idx ON jobs (account_id, created_at);

COMMENT ON TABLE jobs IS
    'One row per job a backend declared (POST /_gateway/v1/jobs, DESIGN.md §3.1) after its '
    'pre-creation verification passed. A job caps how many entities of each type go through.';
COMMENT ON COLUMN jobs.caller IS
    'HMAC of the declaring token, hex: only that caller may see the job or use external_ref.';
COMMENT ON COLUMN jobs.external_ref IS
    'The caller''s own id for the job: declaring it again returns the same job (idempotent).';
COMMENT ON COLUMN jobs.expect IS
    'Entity type -> how many, as declared: {"campaign": 1, "adset": 50, "ad": 50}. The slots '
    'table holds one row per expected entity.';
COMMENT ON COLUMN jobs.status IS
    'pending: nothing reserved yet; in_progress: a slot was reserved; completed: every slot '
    'created; failed / rolled_back: closed, no more creates.';
COMMENT ON COLUMN jobs.verification IS
    'The pre-creation verification report as returned to the caller (JSON object).';
COMMENT ON INDEX jobs_caller_external_ref_key IS
    'external_ref makes a declaration idempotent per caller; another caller may use the same ref.';


CREATE TABLE slots (
    job_id text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    entity_type text NOT NULL CHECK (char_length(entity_type) BETWEEN 1 AND 32),
    slot_no integer NOT NULL CHECK (slot_no >= 1),
    state text NOT NULL CHECK (state IN ('free', 'reserved', 'unknown', 'created')),
    request_id text CHECK (char_length(request_id) BETWEEN 1 AND 128),
    graph_id text CHECK (char_length(graph_id) BETWEEN 1 AND 128),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, entity_type, slot_no),
    CONSTRAINT slots_free_is_empty CHECK (
        state <> 'free' OR (request_id IS NULL AND graph_id IS NULL)
    ),
    CONSTRAINT slots_held_has_request CHECK (
        state NOT IN ('reserved', 'unknown') OR request_id IS NOT NULL
    ),
    CONSTRAINT slots_created_has_graph_id CHECK (state <> 'created' OR graph_id IS NOT NULL)
);

CREATE INDEX slots_state_idx ON slots (job_id, entity_type, state, slot_no);

COMMENT ON TABLE slots IS
    'One row per entity a job expects, numbered 1..expected per type (DESIGN.md §2, invariant '
    '4). Created + in-flight (reserved, unknown) slots are what the cap counts, so the cap can '
    'never be passed: a create needs a slot, and a retry reuses the slot it holds.';
COMMENT ON COLUMN slots.slot_no IS '1..expected (X-Gateway-Slot names one).';
COMMENT ON COLUMN slots.state IS
    'free: nobody holds it; reserved: a request is creating its entity; unknown: sent and no '
    'answer (still counted as in flight until reconciled); created: holds its Graph id.';
COMMENT ON COLUMN slots.request_id IS
    'The request holding the slot (reserved / unknown) or the one that created it.';
COMMENT ON INDEX slots_state_idx IS
    'The lowest free slot of a type (reserve_slots: FOR UPDATE SKIP LOCKED), and counts by '
    'state (NoCapacity).';


CREATE TABLE pre_creation_verifications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text CHECK (char_length(job_id) BETWEEN 1 AND 128),
    caller text NOT NULL CHECK (char_length(caller) BETWEEN 1 AND 128),
    account_id text NOT NULL CHECK (char_length(account_id) BETWEEN 1 AND 64),
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    status text NOT NULL CHECK (status IN ('passed', 'failed', 'warning', 'error')),
    detail text NOT NULL CHECK (char_length(detail) <= 4096),
    duration_ms double precision NOT NULL CHECK (duration_ms >= 0),
    data jsonb NOT NULL CHECK (
        jsonb_typeof(data) = 'object' AND octet_length(data::text) <= 65536
    ),
    created_at timestamptz NOT NULL
);

CREATE INDEX pre_creation_verifications_job_id_idx ON pre_creation_verifications (job_id, id);
CREATE INDEX pre_creation_verifications_account_id_idx
    ON pre_creation_verifications (account_id, created_at);

COMMENT ON TABLE pre_creation_verifications IS
    'Every check run before a job was declared (token, account, campaign_name, object_limits), '
    'kept for the admin API. job_id is NULL when the job was refused; not a foreign key, as '
    'checks are recorded whether or not a job came of them.';
COMMENT ON COLUMN pre_creation_verifications.name IS 'token | account | campaign_name | object_limits';
COMMENT ON COLUMN pre_creation_verifications.status IS
    'error: the check could not run (Graph unreachable), which is not the same as failed.';
COMMENT ON COLUMN pre_creation_verifications.data IS
    'What the check saw (account_status, the duplicate campaign''s id, ...), a JSON object.';


CREATE TABLE idempotency_keys (
    scope text NOT NULL CHECK (char_length(scope) BETWEEN 1 AND 255),
    key text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint text NOT NULL CHECK (char_length(fingerprint) BETWEEN 1 AND 128),
    request_id text NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 128),
    state text NOT NULL CHECK (state IN ('in_progress', 'done')),
    locked_until timestamptz,
    response_status integer CHECK (response_status BETWEEN 100 AND 599),
    response_headers jsonb CHECK (
        response_headers IS NULL OR (
            jsonb_typeof(response_headers) = 'object'
            AND octet_length(response_headers::text) <= 65536
        )
    ),
    response_body bytea CHECK (octet_length(response_body) <= 16777216),
    created_at timestamptz NOT NULL,
    retain_until timestamptz,
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
);

CREATE INDEX idempotency_keys_retain_until_idx ON idempotency_keys (retain_until);

COMMENT ON TABLE idempotency_keys IS
    'One row per Idempotency-Key a caller sent (DESIGN.md §6, Stripe / IETF draft semantics). '
    'in_progress rows are leases: the holder runs the request and stores the response (done), '
    'which later requests with the same key replay; a holder that crashed is taken over once '
    'locked_until has passed. Done rows are reaped after retain_until.';
COMMENT ON COLUMN idempotency_keys.scope IS
    'HMAC(token) + ad account: keys of different callers or accounts never meet.';
COMMENT ON COLUMN idempotency_keys.fingerprint IS
    'Hash of the request (method, path, body): the same key with another request is a mismatch '
    '(422), never a replay.';
COMMENT ON COLUMN idempotency_keys.request_id IS
    'The request that holds the lease (in_progress) or that produced the response (done).';
COMMENT ON COLUMN idempotency_keys.locked_until IS
    'End of the holder''s lease; past it the key may be taken over. NULL once done.';
COMMENT ON COLUMN idempotency_keys.response_headers IS 'Headers to replay: JSON object of name -> value.';
COMMENT ON COLUMN idempotency_keys.retain_until IS
    'Set when done (policy: 24 h after); the reaper deletes done rows past it.';
COMMENT ON INDEX idempotency_keys_retain_until_idx IS 'The reaper''s scan.';
