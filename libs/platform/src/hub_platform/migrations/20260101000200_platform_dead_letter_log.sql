-- migrate:up
-- One row per message this service dead-lettered, keyed by where it was read: a batch replayed
-- after a crash (database committed, offsets not yet) finds its row and does not dead-letter twice.
CREATE TABLE dead_letter_log (
    consumer         text        NOT NULL,
    topic            text        NOT NULL,
    "partition"      integer     NOT NULL,
    "offset"         bigint      NOT NULL,
    code             text        NOT NULL,
    reason           text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, "partition", "offset")
);

-- migrate:down
DROP TABLE dead_letter_log;
