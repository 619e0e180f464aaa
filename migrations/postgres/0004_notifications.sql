-- 0004_notifications (PostgreSQL): where to tell a backend that its job ended.
--
-- Same conventions as 0001: run in one transaction with its schema_migrations row under the
-- advisory lock, no BEGIN/COMMIT; purposes are in COMMENT ON (mirrored as -- in sqlite/).

CREATE TABLE job_notifications (
    job_id text PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
    url text NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    sent_status text CHECK (char_length(sent_status) BETWEEN 1 AND 32),
    try_status text CHECK (char_length(try_status) BETWEEN 1 AND 32),
    tries integer NOT NULL DEFAULT 0 CHECK (tries >= 0),
    last_error text CHECK (char_length(last_error) <= 500),
    updated_at timestamptz NOT NULL
);
COMMENT ON TABLE job_notifications IS
    'The notify_url a job was declared with: one POST per ending status (completed, failed, '
    'rolled_back, partially_rolled_back), retried up to [notify] attempts times.';
COMMENT ON COLUMN job_notifications.sent_status IS
    'The job status the last successful POST announced (NULL: none yet).';
COMMENT ON COLUMN job_notifications.try_status IS
    'The status the failed tries were for; tries counts them (a new status starts again).';
