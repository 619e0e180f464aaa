-- 0003_audit (SQLite): the audit trail of safety actions, and the job status
-- `partially_rolled_back`.
--
-- Same conventions as 0001: run in one transaction with its schema_migrations row (no
-- BEGIN/COMMIT, no PRAGMA), STRICT tables, timestamps as 27-character UTC text.


-- jobs.status gains 'partially_rolled_back' (a rollback is running, or ended with failed
-- steps). SQLite cannot change a CHECK in place, so jobs is rebuilt, and slots with it: slots
-- references jobs, and with foreign keys on, dropping the old jobs table would delete every
-- slot (ON DELETE CASCADE). So both new tables are built and filled first (slots_0003 refers
-- to jobs_0003), both old ones dropped (children first), then the new ones renamed; since
-- SQLite 3.26 a rename rewrites the REFERENCES of other tables, so slots ends up referring to
-- jobs again. This is correct whether or not the connection has foreign keys enabled.
CREATE TABLE jobs_0003 (
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
    -- created; failed / rolled_back / partially_rolled_back: closed, no more creates
    -- (partially_rolled_back: a rollback is running or ended with failed steps).
    status TEXT NOT NULL CHECK (
        status IN (
            'pending', 'in_progress', 'completed', 'failed', 'rolled_back',
            'partially_rolled_back'
        )
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

INSERT INTO jobs_0003 (job_id, caller, account_id, campaign_name, external_ref, expect, status,
                       verification, created_at, updated_at)
    SELECT job_id, caller, account_id, campaign_name, external_ref, expect, status,
           verification, created_at, updated_at
    FROM jobs;

-- slots as in 0002, referring to the new jobs table.
CREATE TABLE slots_0003 (
    job_id TEXT NOT NULL REFERENCES jobs_0003 (job_id) ON DELETE CASCADE,
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

INSERT INTO slots_0003 (job_id, entity_type, slot_no, state, request_id, graph_id, updated_at)
    SELECT job_id, entity_type, slot_no, state, request_id, graph_id, updated_at FROM slots;

DROP TABLE slots;
DROP TABLE jobs;
ALTER TABLE jobs_0003 RENAME TO jobs;
ALTER TABLE slots_0003 RENAME TO slots;

-- The indexes of 0002 went with the old tables; the same names again.
CREATE UNIQUE INDEX jobs_caller_external_ref_key ON jobs (caller, external_ref)
    WHERE external_ref IS NOT NULL;
CREATE INDEX jobs_status_idx ON jobs (status, created_at);
CREATE INDEX jobs_account_id_idx ON jobs (account_id, created_at);
CREATE INDEX slots_state_idx ON slots (job_id, entity_type, state, slot_no);


-- audit: the trail of safety actions (DESIGN.md §2 invariant 8, §3.3): verifications,
-- repairs, cap rejections and rollbacks (its plan, one row per entity step with the entity's
-- fields read just before its delete, a summary). Append-only: rows are never changed or
-- deleted. Never holds an access token.
CREATE TABLE audit (
    -- Keyset-paging cursor. AUTOINCREMENT: never reused, so an id names one row forever.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The job the action was about, if any. Not a foreign key: a campaign rollback has no job,
    -- and the trail must outlive whatever it describes.
    job_id TEXT CHECK (length(job_id) BETWEEN 1 AND 128),
    -- The campaign (Graph id) the action was about, if any (a campaign tree's rollback).
    campaign_id TEXT CHECK (length(campaign_id) BETWEEN 1 AND 128),
    -- verification | repair | cap_rejection | rollback_plan | rollback_step | rollback | ...
    -- (gateway/model.py AuditAction). Free text, bounded: a new action needs no migration.
    action TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 64),
    -- The Graph id of the entity the row is about (one rollback step), if any.
    graph_id TEXT CHECK (length(graph_id) BETWEEN 1 AND 128),
    -- ok | failed | skipped | already_deleted | partial | ... (gateway/model.py AuditOutcome).
    outcome TEXT NOT NULL CHECK (length(outcome) BETWEEN 1 AND 32),
    -- Why: the operator's reason for a rollback, a check's finding, ...
    reason TEXT NOT NULL CHECK (length(reason) <= 4096),
    -- What was seen and done, a JSON object; a rollback step keeps the entity's fields as read
    -- before its delete (the backup a mistaken rollback is reconstructed from).
    detail TEXT NOT NULL CHECK (
        json_valid(detail) AND json_type(detail) = 'object' AND length(detail) <= 1048576
    ),
    -- Who: "admin" (the admin API), "gateway" (automatic), or what the operator named.
    actor TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    created_at TEXT NOT NULL CHECK (
        created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    )
) STRICT;

-- The listings (`GET /admin/v1/audit?job=&campaign=&action=`), newest first (keyset on id),
-- and a rollback's resume (the steps of a job or campaign already done).
CREATE INDEX audit_job_id_idx ON audit (job_id, id);
CREATE INDEX audit_campaign_id_idx ON audit (campaign_id, id);
CREATE INDEX audit_action_idx ON audit (action, id);
CREATE INDEX audit_graph_id_idx ON audit (graph_id, id);
