"""Events the linking service publishes (linking.events): the integration's state and record links.

The task-mirroring and identity services keep their own copies of these;
`revision` is linking's per-subject counter, so stale copies are dropped.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import AwareDatetime, Field

from hub_schema import topics
from hub_schema.events.common import RecordId, RecordRef
from hub_schema.registry import Payload, event


@event("linking.integration.changed", topic=topics.LINKING_EVENTS)
class IntegrationChanged(Payload):
    """The org's integration was enabled, disabled, or switched to another portal (S3, S7, S20)."""

    state: Literal["enabled", "disabled"]
    portal_id: RecordId | None = Field(None, description="The portal in use; None when disabled.")
    previous_portal_id: RecordId | None = None
    deal_won_creates_project: bool = False
    changed_by: RecordId
    changed_at: AwareDatetime
    revision: int = Field(ge=1)


@event("linking.link.changed", topic=topics.LINKING_EVENTS)
class LinkChanged(Payload):
    """A PM project was linked to (or unlinked from) a CRM record (S4, S16, S20, S21/S22)."""

    portal_id: RecordId
    project_id: RecordId
    record: RecordRef
    linked: bool
    revision: int = Field(ge=1)


@event("linking.resync.requested", topic=topics.LINKING_EVENTS)
class ResyncRequested(Payload):
    """An admin asked for an explicit resync (S7): the task service reconciles both sides."""

    request_id: uuid.UUID
    portal_id: RecordId
    requested_by: RecordId
