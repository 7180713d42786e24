-- migrate:up
CREATE TABLE echo_pings (
    event_id   uuid PRIMARY KEY,
    seq        integer NOT NULL,
    entity_key text NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE echo_pings;
