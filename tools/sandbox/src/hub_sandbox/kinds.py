"""The record kinds each sandbox tool keeps, and the change events that show them.

One table describes them so the store, the command handlers, the HTTP API and
the client all agree on what a CRM "deal" or a PM "task" is: its upsert event
(the record's fields are exactly that event's fields), its delete event, and
the defaults a person gets when they leave a field out in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hub_schema.events import crm, pm
from hub_schema.events.common import Versioned

Side = Literal["crm", "pm"]
SIDES: tuple[Side, ...] = ("crm", "pm")
VERSIONED_FIELDS = frozenset(Versioned.model_fields)


@dataclass(frozen=True)
class Kind:
    side: Side
    name: str
    upserted: type[Versioned]
    deleted: type[Versioned] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def record_fields(self) -> frozenset[str]:
        return frozenset(self.upserted.model_fields) - VERSIONED_FIELDS

    def entity_key(self, record_id: str) -> str:
        return f"{self.name}:{record_id}"


_ALL = (
    Kind("crm", "org", crm.CrmOrgUpserted, None, {"edition": "enterprise"}),
    Kind("crm", "user", crm.CrmUserUpserted, crm.CrmUserDeactivated, {"active": True, "is_admin": False, "locale": "en"}),
    Kind("crm", "account", crm.CrmAccountUpserted, crm.CrmAccountDeleted, {"custom_fields": {}}),
    Kind("crm", "contact", crm.CrmContactUpserted, crm.CrmContactDeleted, {"account_id": None, "email": None}),
    Kind("crm", "deal", crm.CrmDealUpserted, crm.CrmDealDeleted,
         {"account_id": None, "contact_ids": [], "stage": "Qualification", "won": False, "custom_fields": {}}),
    Kind("crm", "lead", crm.CrmLeadUpserted, crm.CrmLeadDeleted),
    Kind("crm", "task", crm.CrmTaskUpserted, crm.CrmTaskDeleted, {"priority": "none", "status": "open", "add_to_pm": False}),
    Kind("crm", "note", crm.CrmNoteCreated),
    Kind("pm", "portal", pm.PmPortalUpserted, None, {"plan": "paid", "active": True}),
    Kind("pm", "portal_user", pm.PmPortalUserUpserted, pm.PmPortalUserRemoved, {"role": "employee", "active": True}),
    Kind("pm", "client_company", pm.PmClientCompanyUpserted, pm.PmClientCompanyDeleted),
    Kind("pm", "client_user", pm.PmClientUserUpserted, pm.PmClientUserRemoved),
    Kind("pm", "project", pm.PmProjectUpserted, pm.PmProjectDeleted,
         {"status": "active", "progress_percent": 0, "schedule_fixed": False, "custom_fields": {},
          "user_ids": [], "client_company_ids": [], "client_user_ids": []}),
    Kind("pm", "project_group", pm.PmProjectGroupUpserted, pm.PmProjectGroupDeleted),
    Kind("pm", "task", pm.PmTaskUpserted, pm.PmTaskDeleted,
         {"priority": "none", "status": "open", "recurring": False, "add_to_crm": False}),
    Kind("pm", "comment", pm.PmCommentAdded),
)

KINDS: dict[tuple[str, str], Kind] = {(k.side, k.name): k for k in _ALL}


class UnknownKind(LookupError):
    pass


def kind_of(side: str, name: str) -> Kind:
    try:
        return KINDS[(side, name)]
    except KeyError:
        names = ", ".join(k.name for k in _ALL if k.side == side) or "(side must be crm or pm)"
        raise UnknownKind(f"no {side} record kind {name!r}; known: {names}") from None
