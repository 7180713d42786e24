-- migrate:up
-- True between linking.integration.changed(enabled, matching_pending) and the
-- linking.matching.completed that follows it: new accounts wait for the matching
-- result (adopted or created then), so no client company is created twice.
ALTER TABLE orgs ADD COLUMN matching_pending boolean NOT NULL DEFAULT false;

-- migrate:down
ALTER TABLE orgs DROP COLUMN matching_pending;
