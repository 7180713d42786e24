-- migrate:up
-- The current service key of each org, as its SHA-256 (from linking.service_key.rotated): the API's credential for an org.
CREATE TABLE service_keys (
    org_id     text PRIMARY KEY,
    key_id     uuid NOT NULL,
    key_sha256 text NOT NULL UNIQUE,
    rotated_at timestamptz NOT NULL
);

-- migrate:down
DROP TABLE service_keys;
