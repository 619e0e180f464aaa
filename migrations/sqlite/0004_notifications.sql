-- 0004_notifications (SQLite): where to tell a backend that its job ended.
--
-- Same conventions as 0001 (one transaction with its schema_migrations row).

-- The notify_url a job was declared with: one POST per ending status (completed, failed,
-- rolled_back, partially_rolled_back), retried up to [notify] attempts times.
CREATE TABLE job_notifications (
    job_id TEXT NOT NULL PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
    url TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- The job status the last successful POST announced (NULL: none yet).
    sent_status TEXT CHECK (length(sent_status) BETWEEN 1 AND 32),
    -- The status the failed tries were for; tries counts them (a new status starts again).
    try_status TEXT CHECK (length(try_status) BETWEEN 1 AND 32),
    tries INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    last_error TEXT CHECK (length(last_error) <= 500),
    updated_at TEXT NOT NULL CHECK (length(updated_at) = 27)
) STRICT;
