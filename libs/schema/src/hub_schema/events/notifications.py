"""Asking the notification service to e-mail a person, and what became of it.

Other services describe *what* to tell *whom* (`kind` + `data`); the
notification service owns templates (Japanese and English), delivery, retries
and de-duplication (one e-mail per `request_id`), and reports every outcome on
notifications.outcomes for any subscriber.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints, model_validator

from hub_schema import topics
from hub_schema.events.common import Email, JsonObject, Locale, Name, Part, Reason, RecordId, TimeZone
from hub_schema.events.requests import Request
from hub_schema.registry import Payload, event

NotificationKind = Literal[
    "subtask_update_failed",  # S10
    "due_date_change_failed",  # S11
    "task_update_failed",  # any other refused task change
    "task_create_refused",  # S12
    "duplicate_client_emails",  # S19
    "matching_report",  # S21/S22, with the .xlsx report
    "import_outcome",  # S18
    "sync_stopped",  # S7
]

OptionalNotificationKind = Literal["matching_report", "import_outcome", "sync_stopped"]
"""Kinds a recipient may opt out of; every failure kind (S10, S11, S12, S19, ...) is always sent."""

# What the notification service's templates read from `data`, per kind (keys marked * are required,
# a request without them is dead-lettered with the reason). People read names, not ids: producers send
# the names they know. Every refusal kind may also carry
#   reason_code, reason_params   the reason, rendered in the recipient's language from the code and its
#                                parameters (names such as parent_task_name, project_name, record_name,
#                                record_type, project_names, user_name, user_state, email);
#   reason                       the producer's English sentence (logs; English mail for an unknown code);
#   record_type, record_name, record_url   the CRM record, linked where the upstream gives a URL;
#   task_url, url                links to the task / the thing the mail is about;
#   occurred_at                  ISO timestamp of what happened, shown in the recipient's time zone.
#   subtask_update_failed   *task_name, parent_task_name, project_name
#   due_date_change_failed  *task_name, project_name, requested_due_date, current_due_date (ISO dates)
#   task_update_failed      *task_name, project_name
#   task_create_refused     *task_name, project_name
#   duplicate_client_emails *email, *contacts (list of names or {"id", "name"}), account_name, project_name,
#                           cause ("project_creation", the default, or "user_import": S18 import as client users)
#   matching_report         portal_name (the report itself is `matching_report`)
#   import_outcome          import_as, imported (int), failed (list of {"name", "email", "reason_code", "reason"})
#   sync_stopped            portal_name, stopped_at (ISO timestamp)


class Recipient(Part):
    """Who gets the e-mail; with no locale the service uses its default, with no time zone the locale's
    usual one (Asia/Tokyo for ja, UTC otherwise)."""

    user_id: RecordId | None = None
    email: Email
    name: Name | None = None
    locale: Locale | None = None
    time_zone: TimeZone | None = None


class MatchedClient(Part):
    client_company_id: RecordId
    client_name: Name
    account_id: RecordId
    account_name: Name


class UnmatchedClient(Part):
    client_company_id: RecordId
    client_name: Name
    reason_code: Literal["no_match", "ambiguous", "error"]
    reason: Reason
    account_names: Annotated[list[Name], Field(max_length=10)] = Field(default_factory=list)
    """For `ambiguous`: the accounts the client could be (the report names them in the reader's language)."""


class MatchingReport(Part):
    """The whole matching report, as the notification service assembles it from its pages to render the .xlsx (S22).

    Never sent in one event: a portal may have any number of client companies, and one Kafka message
    cannot hold them all (issue 15). Events carry a `MatchingReportSummary` and the rows in `MatchingReportPage`s.
    """

    portal_id: RecordId
    finished_at: AwareDatetime
    matched: list[MatchedClient]
    unmatched: list[UnmatchedClient]


class MatchingReportPage(Part):
    """One page of a matching report's rows, cut by encoded size so it fits one Kafka message whatever the names."""

    page: int = Field(ge=1)
    pages: int = Field(ge=1)
    matched: Annotated[list[MatchedClient], Field(max_length=1000)]
    unmatched: Annotated[list[UnmatchedClient], Field(max_length=1000)]

    @model_validator(mode="after")
    def _page_in_range(self) -> MatchingReportPage:
        if self.page > self.pages:
            raise ValueError(f"page {self.page} of {self.pages}")
        return self


class MatchingReportSummary(Part):
    """A matching report by reference: its counts and how many pages of rows were sent before it (S21/S22)."""

    report_id: uuid.UUID
    portal_id: RecordId
    finished_at: AwareDatetime
    matched: int = Field(ge=0)
    unmatched: int = Field(ge=0)
    pages: int = Field(ge=1)


@event("notification.report_page", topic=topics.NOTIFICATION_REQUESTS)
class NotificationReportPage(Payload):
    """Rows of the matching report a `notification.requested` with the same `request_id` attaches (S22).

    Sent before that request and on its key ("<org>:<request_id>"), so they reach the notification
    service first; the request carries the summary (counts, pages) and is rendered once all pages are there.
    """

    request_id: uuid.UUID
    rows: MatchingReportPage


@event("notification.requested", topic=topics.NOTIFICATION_REQUESTS, version=2)
class NotificationRequested(Payload):
    """E-mail a person. `optional` ones (reports, outcomes) may be suppressed by the recipient's
    preferences; non-optional ones are failures the person must hear about.

    v2: `matching_report` is a summary; its rows come first as `notification.report_page` events (v1 carried
    at most 1,000 + 1,000 rows inline and could exceed the message size limit).
    """

    request_id: uuid.UUID
    kind: NotificationKind
    optional: bool
    recipient: Recipient
    data: JsonObject = Field(default_factory=dict)
    matching_report: MatchingReportSummary | None = None

    @model_validator(mode="after")
    def _report_iff_matching(self) -> NotificationRequested:
        if (self.kind == "matching_report") != (self.matching_report is not None):
            raise ValueError("matching_report is required for kind matching_report and only for it")
        return self


MessageId = Annotated[str, StringConstraints(min_length=1, max_length=998)]


@event("notification.sent", topic=topics.NOTIFICATION_OUTCOMES)
class NotificationSent(Payload):
    """The SMTP server accepted the e-mail."""

    request_id: uuid.UUID
    kind: NotificationKind
    recipient_email: Email
    message_id: MessageId
    attempts: int = Field(ge=1)
    sent_at: AwareDatetime


@event("notification.failed", topic=topics.NOTIFICATION_OUTCOMES)
class NotificationFailed(Payload):
    """Delivery was given up: a permanent refusal or retries exhausted."""

    request_id: uuid.UUID
    kind: NotificationKind
    recipient_email: Email
    attempts: int = Field(ge=1)
    error: Reason


@event("notification.suppressed", topic=topics.NOTIFICATION_OUTCOMES)
class NotificationSuppressed(Payload):
    """Deliberately not sent."""

    request_id: uuid.UUID
    kind: NotificationKind
    recipient_email: Email
    reason_code: Literal["opted_out", "recipient_inactive", "duplicate"]
    reason: Reason


@event("hub.notification_preferences.change", topic=topics.HUB_REQUESTS)
class NotificationPreferencesChange(Request):
    """A person opts out of (or back into) optional kinds of e-mail; failure e-mails cannot be turned off.

    Applied per (email, kind) only if `changed_at` is newer than the stored change (out-of-order safe).
    """

    email: Email
    kinds: Annotated[list[OptionalNotificationKind], Field(min_length=1, max_length=10)]
    opted_out: bool
    changed_at: AwareDatetime
