-- migrate:up
-- Rows of a matching report (S21/S22), page by page (notification.report_page), kept until the
-- notification.requested with the same request_id renders its .xlsx; then they go.
CREATE TABLE report_pages (
    request_id  uuid NOT NULL,
    page        integer NOT NULL,
    pages       integer NOT NULL,
    matched     jsonb NOT NULL,
    unmatched   jsonb NOT NULL,
    PRIMARY KEY (request_id, page)
);

-- migrate:down
DROP TABLE report_pages;
