"""Zoho CRM records <-> the hub's crm.* events and commands: pure functions, no I/O.

Field names are Zoho's API names. Custom fields carry what Zoho's Tasks module has no place for:
`Hub_Add_To_PM` (checkbox: "save and add to the PM tool", S12), `Hub_PM_Project_Id`, `Hub_Parent_Task_Id`
and `Hub_Command_Id` (the hub command that created the task or note: its first sight by a notification is
then the hub's own echo, not a person's task to mirror back); create them in the org (Setup > Modules >
Tasks, Notes) before enabling the connector.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from hub_schema import Payload
from hub_schema.events import commands as cmd
from hub_schema.events import crm
from hub_schema.events.common import Versioned

RECORD_TYPE_OF_MODULE = {"Accounts": "account", "Contacts": "contact", "Deals": "deal", "Leads": "lead"}
MODULE_OF_RECORD_TYPE = {v: k for k, v in RECORD_TYPE_OF_MODULE.items()}

PRIORITY_IN = {"Highest": "high", "High": "high", "Normal": "medium", "Low": "low", "Lowest": "low"}
PRIORITY_OUT = {"high": "High", "medium": "Normal", "low": "Low", "none": None}
CLOSED = "Completed"

# Zoho's own fields and lookups: not custom fields of the record.
SYSTEM_FIELDS = frozenset({
    "id", "Owner", "Created_By", "Modified_By", "Created_Time", "Modified_Time", "Last_Activity_Time", "Tag", "$approved",
    "$approval", "$editable", "$review_process", "$currency_symbol", "$process_flow", "$state", "$se_module", "Layout",
    "Account_Name", "Deal_Name", "Stage", "Amount", "Closing_Date", "Contact_Name", "First_Name", "Last_Name", "Email",
    "Company", "Subject", "Description", "Due_Date", "Priority", "Status", "What_Id", "Who_Id", "Note_Title",
    "Note_Content", "Parent_Id", "Hub_Add_To_PM", "Hub_PM_Project_Id", "Hub_Parent_Task_Id", "Hub_Command_Id",
})


@dataclass(frozen=True)
class Kind:
    name: str
    upserted: type[Versioned]
    deleted: type[Versioned] | None

    def entity_key(self, record_id: str) -> str:
        return f"{self.name}:{record_id}"


KINDS = {
    "Accounts": Kind("account", crm.CrmAccountUpserted, crm.CrmAccountDeleted),
    "Contacts": Kind("contact", crm.CrmContactUpserted, crm.CrmContactDeleted),
    "Deals": Kind("deal", crm.CrmDealUpserted, crm.CrmDealDeleted),
    "Leads": Kind("lead", crm.CrmLeadUpserted, crm.CrmLeadDeleted),
    "Tasks": Kind("task", crm.CrmTaskUpserted, crm.CrmTaskDeleted),
    "Notes": Kind("note", crm.CrmNoteCreated, None),
    "Users": Kind("user", crm.CrmUserUpserted, crm.CrmUserDeactivated),
    "Org": Kind("org", crm.CrmOrgUpserted, None),
}
EDITIONS = ("free", "trial", "standard", "professional", "enterprise", "ultimate")


class NotPublished(Exception):
    """The record has nothing the hub uses (a task on no record) or does not fit the hub's schema."""


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value["id"]) if value.get("id") else None
    return str(value) if value else None


def _custom(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items()
            if k not in SYSTEM_FIELDS and not k.startswith("$") and (v is None or isinstance(v, str | int | float | bool))}


def zoho_time(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _parent_module(rec: dict[str, Any]) -> str | None:
    parent = rec.get("Parent_Id") or {}
    module = parent.get("module") if isinstance(parent, dict) else None
    if isinstance(module, dict):
        return module.get("api_name")
    return module or rec.get("$se_module")


def record_fields(module: str, rec: dict[str, Any]) -> dict[str, Any]:
    """The hub's fields of a Zoho record (without modified_at/version/command_id)."""
    owner = _id(rec.get("Owner"))
    if module == "Accounts":
        return {"id": rec["id"], "name": rec.get("Account_Name"), "owner_id": owner, "custom_fields": _custom(rec)}
    if module == "Contacts":
        return {"id": rec["id"], "account_id": _id(rec.get("Account_Name")), "first_name": rec.get("First_Name") or None,
                "last_name": rec.get("Last_Name"), "email": rec.get("Email") or None, "owner_id": owner}
    if module == "Deals":
        contact = _id(rec.get("Contact_Name"))
        return {"id": rec["id"], "name": rec.get("Deal_Name"), "account_id": _id(rec.get("Account_Name")),
                "contact_ids": [contact] if contact else [], "stage": rec.get("Stage"), "amount": rec.get("Amount"),
                "closing_date": rec.get("Closing_Date"), "won": rec.get("Stage") == "Closed Won", "owner_id": owner,
                "custom_fields": _custom(rec)}
    if module == "Leads":
        return {"id": rec["id"], "first_name": rec.get("First_Name") or None, "last_name": rec.get("Last_Name"),
                "company": rec.get("Company") or None, "email": rec.get("Email") or None, "owner_id": owner}
    if module == "Tasks":
        what, who = _id(rec.get("What_Id")), _id(rec.get("Who_Id"))
        record_type = RECORD_TYPE_OF_MODULE.get(rec.get("$se_module") or "") if what else None
        record_id = what if record_type else None
        if record_id is None and who:
            record_type, record_id = "contact", who
        if record_id is None:
            raise NotPublished("a task related to no account, contact, deal or lead")
        add_to_pm = bool(rec.get("Hub_Add_To_PM"))
        return {"id": rec["id"], "record_type": record_type, "record_id": record_id, "subject": rec.get("Subject"),
                "description": rec.get("Description"), "due_date": rec.get("Due_Date"),
                "priority": PRIORITY_IN.get(rec.get("Priority") or "", "none"),
                "status": "closed" if rec.get("Status") == CLOSED else "open", "owner_id": owner,
                "parent_task_id": rec.get("Hub_Parent_Task_Id") or None,
                "created_by": _id(rec.get("Created_By")) or owner or "unknown", "add_to_pm": add_to_pm,
                "pm_project_id": (rec.get("Hub_PM_Project_Id") or None) if add_to_pm else None}
    if module == "Notes":
        record_type = RECORD_TYPE_OF_MODULE.get(_parent_module(rec) or "")
        if record_type is None:
            raise NotPublished("a note on a module the hub does not link")
        return {"id": rec["id"], "record_type": record_type, "record_id": _id(rec.get("Parent_Id")),
                "title": rec.get("Note_Title") or None, "body": rec.get("Note_Content") or "",
                "author_id": _id(rec.get("Created_By")) or owner or "unknown"}
    if module == "Users":
        profile = rec.get("profile") or {}
        return {"id": rec["id"], "email": rec.get("email"), "name": rec.get("full_name") or rec.get("last_name") or rec.get("email"),
                "active": rec.get("status", "active") == "active", "is_admin": profile.get("name") == "Administrator",
                "locale": "ja" if str(rec.get("locale", "")).startswith("ja") else "en"}
    if module == "Org":
        paid_type = str((rec.get("license_details") or {}).get("paid_type") or "").lower()
        return {"id": rec["hub_org_id"], "name": rec.get("company_name"),
                "edition": paid_type if paid_type in EDITIONS else "enterprise"}
    raise NotPublished(f"module {module} is not published")


def upsert_payload(module: str, fields: dict[str, Any], *, modified_at: datetime, version: int,
                   acting_user_id: str | None, command_id: uuid.UUID | None) -> Payload:
    try:
        # as JSON: the payloads are strict, and JSON is where Zoho's ISO dates and decimal strings are valid
        return KINDS[module].upserted.model_validate_json(json.dumps(
            {**fields, "modified_at": modified_at, "version": version, "acting_user_id": acting_user_id, "command_id": command_id},
            default=str))
    except ValidationError as exc:
        raise NotPublished(f"does not fit {KINDS[module].upserted.__name__}: {exc.errors()[0]['msg']}") from None


def delete_payload(module: str, record_id: str, *, version: int, command_id: uuid.UUID | None) -> Payload | None:
    model = KINDS[module].deleted
    if model is None:
        return None
    return model(id=record_id, modified_at=datetime.now(UTC), version=version, command_id=command_id)


# --- commands -> Zoho fields ----------------------------------------------------------------------


def task_create_fields(c: cmd.CrmTaskCreate) -> dict[str, Any]:
    fields: dict[str, Any] = {"Subject": c.subject, "Description": c.description,
                              "Due_Date": c.due_date.isoformat() if c.due_date else None,
                              "Priority": PRIORITY_OUT[c.priority], "Status": CLOSED if c.status == "closed" else "Not Started",
                              "Hub_Parent_Task_Id": c.parent_task_id, "Hub_Command_Id": str(c.command_id)}
    if c.record_type == "contact":
        fields["Who_Id"] = {"id": c.record_id}
    else:
        fields["What_Id"] = {"id": c.record_id}
        fields["$se_module"] = MODULE_OF_RECORD_TYPE[c.record_type]
    if c.owner_id:
        fields["Owner"] = {"id": c.owner_id}
    return {k: v for k, v in fields.items() if v is not None}


def task_update_fields(c: cmd.CrmTaskUpdate) -> dict[str, Any]:
    out: dict[str, Any] = {"id": c.task_id}
    for change in c.changes:
        if change.field == "title":
            out["Subject"] = change.value
        elif change.field == "description":
            out["Description"] = change.value
        elif change.field == "due_date":
            out["Due_Date"] = change.value.isoformat() if change.value else None
        elif change.field == "priority":
            out["Priority"] = PRIORITY_OUT[change.value]
        elif change.field == "status":
            out["Status"] = CLOSED if change.value == "closed" else "Not Started"
        elif change.field == "owner_id":
            out["Owner"] = {"id": change.value} if change.value else None
    return out


def note_fields(c: cmd.CrmNoteAdd) -> dict[str, Any]:
    module = MODULE_OF_RECORD_TYPE[c.record_type]
    return {"Note_Title": c.title or f"{c.author_name} (PM comment)", "Note_Content": c.body,
            "Parent_Id": {"module": {"api_name": module}, "id": c.record_id}, "$se_module": module,
            "Hub_Command_Id": str(c.command_id)}


def rejection_code(zoho_code: str) -> str:
    """Zoho's error codes as the hub's RejectionCode."""
    if zoho_code in ("INVALID_DATA", "MANDATORY_NOT_FOUND", "LIMIT_EXCEEDED", "DUPLICATE_DATA"):
        return "not_found" if zoho_code == "INVALID_DATA" else "invalid"
    if zoho_code in ("NO_PERMISSION", "OAUTH_SCOPE_MISMATCH"):
        return "permission_denied"
    return "other"
