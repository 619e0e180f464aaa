-- 0005_create_params (PostgreSQL): what a job's create asked for, so that a repair can make
-- an entity Graph lost again through the normal create path.
--
-- Same conventions as 0001: run in one transaction with its schema_migrations row under the
-- advisory lock, no BEGIN/COMMIT; purposes are in COMMENT ON (mirrored as -- in sqlite/).

ALTER TABLE entities ADD COLUMN params jsonb CHECK (
    params IS NULL OR (jsonb_typeof(params) = 'object' AND octet_length(params::text) <= 65536)
);
COMMENT ON COLUMN entities.params IS
    '{"path": "act_1/adsets" (unversioned), "params": {...}}: the create''s parameters as the '
    'caller sent them, without access_token or appsecret_proof. Only rows of a job have it.';
