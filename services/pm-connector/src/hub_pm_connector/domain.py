"""Zoho Projects v3 records <-> the hub's pm.* events and commands: pure functions, no I/O.

`add_to_crm` on a task is the integration's "add to CRM" flag (S5); in Zoho Projects it is a task custom
field of that name (Setup > Task custom fields), which the portal needs before the connector is enabled,
like `hub_command_id` (the hub command that created the task: the poll that sees it first publishes it as
the hub's own echo, not as a person's task to mirror back).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from hub_schema import Payload
from hub_schema.events import commands as cmd
from hub_schema.events import pm
from hub_schema.events.common import Versioned

UPSERTED: dict[str, type[Versioned]] = {
    "portals": pm.PmPortalUpserted, "users": pm.PmPortalUserUpserted, "client_users": pm.PmClientUserUpserted,
    "clients": pm.PmClientCompanyUpserted, "projectgroups": pm.PmProjectGroupUpserted, "projects": pm.PmProjectUpserted,
    "tasks": pm.PmTaskUpserted, "comments": pm.PmCommentAdded,
}
DELETED: dict[str, type[Versioned]] = {"tasks": pm.PmTaskDeleted, "projects": pm.PmProjectDeleted,
                                       "clients": pm.PmClientCompanyDeleted, "users": pm.PmPortalUserRemoved,
                                       "client_users": pm.PmClientUserRemoved, "projectgroups": pm.PmProjectGroupDeleted}
ENTITY = {"portals": "portal", "users": "portal_user", "client_users": "client_user", "clients": "client_company",
          "projectgroups": "project_group", "projects": "project", "tasks": "task", "comments": "comment"}
ROLES = {"administrator": "admin", "admin": "admin", "manager": "manager", "employee": "employee", "contractor": "contractor"}
PROJECT_STATUS = {"active": "active", "completed": "completed", "on hold": "on_hold", "onhold": "on_hold", "archived": "archived"}
PRIORITY_OUT = {"none": "None", "low": "Low", "medium": "Medium", "high": "High"}


class NotPublished(Exception):
    pass


def _zpuid(value: Any) -> str | None:
    if isinstance(value, dict):
        v = value.get("zpuid") or value.get("id")
        return str(v) if v else None
    return str(value) if value else None


def _name(value: Any) -> str:
    return str(value.get("name", "")) if isinstance(value, dict) else str(value or "")


def zoho_time(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def kind_of(kind: str, rec: dict[str, Any] | None) -> str:
    """Projects lists portal and client users together (`user_type`); the hub has an event for each."""
    if kind == "users" and rec is not None and rec.get("user_type") == "client":
        return "client_users"
    return kind


def scope(portal_id: str, kind: str, project_id: str | None = None) -> str:
    """The `module` of a Projects record in the connector's record_state: a task's includes its project, so
    the deletion sweep can say which project a vanished task was in."""
    if kind == "tasks":
        return f"{portal_id}/{project_id}/tasks"
    return f"{portal_id}/{kind}"


def record_fields(kind: str, portal_id: str, rec: dict[str, Any]) -> dict[str, Any]:
    rid = str(rec["id"])
    if kind == "client_users":
        return {"portal_id": portal_id, "id": _zpuid(rec) or rid, "email": rec.get("email"), "name": rec.get("name"),
                "client_company_id": _zpuid(rec.get("client_company"))}
    if kind == "projectgroups":
        return {"portal_id": portal_id, "id": rid, "name": rec.get("name")}
    if kind == "portals":
        return {"id": rid, "name": rec.get("name") or rec.get("portal_name"),
                "plan": "free" if str(rec.get("plan", "")).lower() == "free" else "paid", "active": rec.get("active", True)}
    if kind == "users":
        return {"portal_id": portal_id, "id": _zpuid(rec) or rid, "email": rec.get("email"), "name": rec.get("name"),
                "role": ROLES.get(_name(rec.get("role")).lower(), "employee"), "active": rec.get("status", "active") == "active"}
    if kind == "clients":
        return {"portal_id": portal_id, "id": rid, "name": rec.get("name")}
    if kind == "projects":
        return {"portal_id": portal_id, "id": rid, "name": rec.get("name"), "description": rec.get("description"),
                "owner_id": _zpuid(rec.get("owner")) or "unknown", "group_id": _zpuid(rec.get("group")),
                "status": PROJECT_STATUS.get(_name(rec.get("status")).lower() or "active", "active"),
                "progress_percent": int(rec.get("percent_complete") or 0), "schedule_fixed": bool(rec.get("is_strict")),
                "start_date": rec.get("start_date"), "end_date": rec.get("end_date"),
                "custom_fields": rec.get("custom_fields") or {},
                "user_ids": [u for u in (_zpuid(x) for x in rec.get("users") or []) if u],
                "client_company_ids": [str(c.get("id")) for c in rec.get("client_companies") or []],
                "client_user_ids": [str(c.get("id")) for c in rec.get("client_users") or []]}
    if kind == "tasks":
        status = rec.get("status") or {}
        owners = (rec.get("owners_and_work") or {}).get("owners") or rec.get("owners") or []
        return {"portal_id": portal_id, "project_id": str(rec["project_id"]), "id": rid, "title": rec.get("name"),
                "description": rec.get("description"), "due_date": rec.get("end_date"),
                "priority": str(rec.get("priority") or "none").lower(),
                "status": "closed" if isinstance(status, dict) and status.get("is_closed_type") else "open",
                "owner_id": _zpuid(owners[0]) if owners else None, "parent_task_id": rec.get("parent_task_id"),
                "recurring": bool(rec.get("is_recurring")), "add_to_crm": bool(rec.get("add_to_crm"))}
    if kind == "comments":
        author = rec.get("created_by") or {}
        return {"portal_id": portal_id, "project_id": str(rec["project_id"]), "task_id": str(rec["task_id"]), "id": rid,
                "body": rec.get("comment") or "", "author_id": _zpuid(author) or "unknown", "author_name": _name(author) or "unknown"}
    raise NotPublished(kind)


def upsert_payload(kind: str, fields: dict[str, Any], *, modified_at: datetime, version: int, command_id: Any) -> Payload:
    try:
        return UPSERTED[kind].model_validate_json(json.dumps(
            {**fields, "modified_at": modified_at, "version": version, "command_id": command_id}, default=str))
    except ValidationError as exc:
        raise NotPublished(f"does not fit {UPSERTED[kind].__name__}: {exc.errors()[0]['msg']}") from None


def task_create_fields(c: cmd.PmTaskCreate) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": c.title, "description": c.description, "end_date": c.due_date.isoformat() if c.due_date else None,
                              "priority": PRIORITY_OUT[c.priority], "status": {"name": "Closed" if c.status == "closed" else "Open",
                                                                               "is_closed_type": c.status == "closed"},
                              "parent_task_id": c.parent_task_id, "add_to_crm": True, "hub_command_id": str(c.command_id)}
    if c.owner_id:
        fields["owners_and_work"] = {"owners": [{"zpuid": c.owner_id}]}
    return {k: v for k, v in fields.items() if v is not None}


def task_update_fields(c: cmd.PmTaskUpdate) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for change in c.changes:
        if change.field == "title":
            out["name"] = change.value
        elif change.field == "description":
            out["description"] = change.value
        elif change.field == "due_date":
            out["end_date"] = change.value.isoformat() if change.value else None
        elif change.field == "priority":
            out["priority"] = PRIORITY_OUT[change.value]
        elif change.field == "status":
            out["status"] = {"name": "Closed" if change.value == "closed" else "Open", "is_closed_type": change.value == "closed"}
        elif change.field == "owner_id":
            out["owners_and_work"] = {"owners": [{"zpuid": change.value}] if change.value else []}
    return out


def rejection_code(status: int, users: bool = False) -> str:
    """Projects' refusal as the hub's RejectionCode; a 409 on a user is its e-mail taken (S19)."""
    if status == 409 and users:
        return "duplicate_email"
    return {404: "not_found", 403: "permission_denied", 400: "invalid", 409: "version_conflict"}.get(status, "other")


# --- projects, groups, clients, users ---------------------------------------------------------------


def grant(g: cmd.ProjectUserGrant) -> dict[str, Any]:
    return {"zpuid": g.user_id, "role": g.role, "permissions": list(g.permissions)}


def project_create_fields(c: cmd.PmProjectCreate, *, group_id: str | None, client_company_ids: list[str],
                          client_user_ids: list[str]) -> dict[str, Any]:
    users = [grant(g) for g in c.users]
    if c.owner_id and c.owner_id not in {g.user_id for g in c.users}:
        users.append({"zpuid": c.owner_id, "role": "manager", "permissions": []})
    owner = c.owner_id or (c.users[0].user_id if c.users else None)
    fields: dict[str, Any] = {
        "name": c.name, "description": c.description, "start_date": c.start_date.isoformat() if c.start_date else None,
        "end_date": c.end_date.isoformat() if c.end_date else None, "custom_fields": dict(c.custom_fields),
        "owner": {"zpuid": owner} if owner else None, "group": {"id": group_id} if group_id else None, "status": "active",
        "users": users, "client_companies": [{"id": i} for i in dict.fromkeys(client_company_ids)],
        "client_users": [{"id": i} for i in dict.fromkeys(client_user_ids)],
    }
    return {k: v for k, v in fields.items() if v is not None}


def project_update_fields(c: cmd.PmProjectUpdate, project: dict[str, Any], group_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.name is not None:
        out["name"] = c.name
    if group_id is not None:
        out["group"] = {"id": group_id}
    if c.owner_id is not None:
        out["owner"] = {"zpuid": c.owner_id}
        members = list(project.get("users") or [])
        if c.owner_id not in {_zpuid(u) for u in members}:
            out["users"] = [*members, {"zpuid": c.owner_id, "role": "manager", "permissions": []}]
    if c.custom_fields is not None:
        out["custom_fields"] = {**(project.get("custom_fields") or {}), **c.custom_fields}
    return out


def client_user_fields(email: str, name: str, client_company_id: str) -> dict[str, Any]:
    return {"email": email, "name": name, "user_type": "client", "client_company": {"id": client_company_id}}


def portal_user_fields(c: cmd.PmPortalUserInvite) -> dict[str, Any]:
    return {"email": c.email, "name": c.name, "user_type": "portal", "role": {"name": c.role}, "permissions": list(c.permissions)}


def client_user_update_fields(c: cmd.PmClientUserUpdate) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.email is not None:
        out["email"] = c.email
    if c.name is not None:
        out["name"] = c.name
    if c.client_company_id is not None:
        out["client_company"] = {"id": c.client_company_id}
    return out
