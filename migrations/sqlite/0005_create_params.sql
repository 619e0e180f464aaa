-- 0005_create_params (SQLite): what a job's create asked for, so that a repair can make an
-- entity Graph lost again through the normal create path.
--
-- Same conventions as 0001 (one transaction with its schema_migrations row).

-- {"path": "act_1/adsets" (unversioned), "params": {...}}: the create's parameters as the
-- caller sent them, without access_token or appsecret_proof. Only rows of a job have it.
ALTER TABLE entities ADD COLUMN params TEXT CHECK (
    params IS NULL OR (json_valid(params) AND length(params) <= 65536)
);
