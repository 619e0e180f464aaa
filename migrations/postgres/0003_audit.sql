-- 0003_audit (PostgreSQL): the audit trail of safety actions, and the job status
-- `partially_rolled_back`.
--
-- Same conventions as 0001: run in one transaction with its schema_migrations row under the
-- advisory lock, no BEGIN/COMMIT; purposes are in COMMENT ON (mirrored as -- in sqlite/).

-- jobs.status gains 'partially_rolled_back'. The CHECK of 0002 is the column's own, named
-- jobs_status_check by PostgreSQL; it is replaced under the same name.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (
    status IN (
        'pending', 'in_progress', 'completed', 'failed', 'rolled_back', 'partially_rolled_back'
    )
);

COMMENT ON COLUMN jobs.status IS
    'pending: nothing reserved yet; in_progress: a slot was reserved; completed: every slot '
    'created; failed / rolled_back / partially_rolled_back: closed, no more creates '
    '(partially_rolled_back: a rollback is running or ended with failed steps).';


CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text CHECK (char_length(job_id) BETWEEN 1 AND 128),
    campaign_id text CHECK (char_length(campaign_id) BETWEEN 1 AND 128),
    action text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 64),
    graph_id text CHECK (char_length(graph_id) BETWEEN 1 AND 128),
    outcome text NOT NULL CHECK (char_length(outcome) BETWEEN 1 AND 32),
    reason text NOT NULL CHECK (char_length(reason) <= 4096),
    detail jsonb NOT NULL CHECK (
        jsonb_typeof(detail) = 'object' AND octet_length(detail::text) <= 1048576
    ),
    actor text NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 128),
    created_at timestamptz NOT NULL
);

CREATE INDEX audit_job_id_idx ON audit (job_id, id);
CREATE INDEX audit_campaign_id_idx ON audit (campaign_id, id);
CREATE INDEX audit_action_idx ON audit (action, id);
CREATE INDEX audit_graph_id_idx ON audit (graph_id, id);

COMMENT ON TABLE audit IS
    'The trail of safety actions (DESIGN.md §2 invariant 8, §3.3): verifications, repairs, cap '
    'rejections and rollbacks (its plan, one row per entity step with the entity''s fields read '
    'just before its delete, a summary). Append-only: rows are never changed or deleted. Never '
    'holds an access token.';
COMMENT ON COLUMN audit.id IS 'Keyset-paging cursor. Identity: never reused.';
COMMENT ON COLUMN audit.job_id IS
    'The job the action was about, if any. Not a foreign key: a campaign rollback has no job, '
    'and the trail must outlive whatever it describes.';
COMMENT ON COLUMN audit.campaign_id IS
    'The campaign (Graph id) the action was about, if any (a campaign tree''s rollback).';
COMMENT ON COLUMN audit.action IS
    'verification | repair | cap_rejection | rollback_plan | rollback_step | rollback | ... '
    '(gateway/model.py AuditAction). Free text, bounded: a new action needs no migration.';
COMMENT ON COLUMN audit.graph_id IS
    'The Graph id of the entity the row is about (one rollback step), if any.';
COMMENT ON COLUMN audit.outcome IS
    'ok | failed | skipped | already_deleted | partial | ... (gateway/model.py AuditOutcome).';
COMMENT ON COLUMN audit.reason IS 'Why: the operator''s reason for a rollback, a check''s finding, ...';
COMMENT ON COLUMN audit.detail IS
    'What was seen and done, a JSON object; a rollback step keeps the entity''s fields as read '
    'before its delete (the backup a mistaken rollback is reconstructed from).';
COMMENT ON COLUMN audit.actor IS
    'Who: "admin" (the admin API), "gateway" (automatic), or what the operator named.';
COMMENT ON INDEX audit_job_id_idx IS
    'The listings (GET /admin/v1/audit?job=&campaign=&action=), newest first (keyset on id), '
    'and a rollback''s resume (the steps of a job or campaign already done).';
