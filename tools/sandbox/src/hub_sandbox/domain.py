"""The upstream tools' own rules, pure (no I/O), so they are unit-tested on their own.

These are the refusals a real CRM / PM tool gives, named by SPEC: a subtask of a
closed parent cannot be reopened (S10), a fixed-schedule project's due dates
cannot change (S11), client-user e-mails are unique per portal (S19), a contact
is a client user of one client company only (S4). A refusal is a `Rejected`
exception carrying the `RejectionCode` the hub receives in `*.command.rejected`.

Version policy (documented choice): a command's `base_version` older than the
record's current version is refused as `version_conflict` (the hub then sees the
newer record in the change event it already got); settings can switch this to
"apply" (last writer wins).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hub_schema.events.common import RejectionCode
from hub_schema.events.commands import TaskChange


class Rejected(Exception):
    """The upstream refuses the change; nothing of it is applied."""

    def __init__(self, code: RejectionCode, reason: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code: RejectionCode = code
        self.reason = reason
        self.details = dict(details or {})


def norm_email(email: str | None) -> str | None:
    """How the PM tool compares e-mails: trimmed, case-insensitive."""
    return email.strip().lower() if email else None


# --- tasks -------------------------------------------------------------------------


def check_base_version(kind: str, record_id: str, base_version: int, current_version: int, policy: str) -> None:
    if base_version < current_version and policy == "reject":
        raise Rejected(
            "version_conflict",
            f"{kind} {record_id} is at version {current_version}, the command was based on version {base_version}",
            {"current_version": current_version, "base_version": base_version},
        )


def check_not_locked(kind: str, record: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """A record locked in the tool (an approval in progress, a person's lock) refuses the integration's changes."""
    if extra.get("locked"):
        raise Rejected("locked", f"{kind} {record['id']!r} is locked and cannot be changed by the integration",
                       {"record_id": record["id"]})


def task_changes(changes: Sequence[TaskChange], *, title_field: str = "title") -> dict[str, Any]:
    """The command's field changes as a record update (the CRM calls the title `subject`)."""
    out: dict[str, Any] = {}
    for change in changes:
        name = title_field if change.field == "title" else change.field
        value = change.value
        out[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def check_pm_task_update(task: Mapping[str, Any], update: Mapping[str, Any], *,
                         parent: Mapping[str, Any] | None, project: Mapping[str, Any] | None) -> None:
    """S10 (reopening a subtask whose parent is closed) and S11 (due date in a fixed-schedule project)."""
    if update.get("status") == "open" and task.get("status") == "closed" and parent is not None and parent.get("status") == "closed":
        raise Rejected(
            "parent_task_closed",
            f"task {task['id']!r} cannot be reopened: its parent task {parent['id']!r} ({parent.get('title')!r}) is closed",
            {"task_id": task["id"], "parent_task_id": parent["id"], "task_title": task.get("title")},
        )
    if "due_date" in update and update["due_date"] != task.get("due_date") and project is not None and project.get("schedule_fixed"):
        raise Rejected(
            "schedule_fixed",
            f"the due date of task {task['id']!r} cannot change: project {project['id']!r} ({project.get('name')!r}) has a fixed schedule",
            {"task_id": task["id"], "project_id": project["id"], "task_title": task.get("title"),
             "due_date": task.get("due_date"), "requested_due_date": update["due_date"]},
        )


# --- client users ------------------------------------------------------------------


def check_client_user_email(email: str, portal_client_users: Iterable[Mapping[str, Any]], *, except_id: str | None = None,
                            crm_contact_id: str | None = None) -> None:
    """S19: a client user's e-mail is unique in its portal."""
    wanted = norm_email(email)
    for other in portal_client_users:
        if other["id"] != except_id and norm_email(other.get("email")) == wanted:
            raise Rejected(
                "duplicate_email",
                f"the e-mail address {email!r} is already used by client user {other['id']!r} ({other.get('name')!r}) in this portal",
                {"email": email, "existing_client_user_id": other["id"],
                 **({"contacts": [crm_contact_id]} if crm_contact_id else {})},
            )


def check_one_company(crm_contact_id: str | None, client_company_id: str, contact_client_users: Iterable[Mapping[str, Any]]) -> None:
    """S4: a contact is a client user of one client company only.

    `contact_client_users` are the portal's client users made for that contact
    (the record plus `client_company_id`).
    """
    if crm_contact_id is None:
        return
    for other in contact_client_users:
        if other["client_company_id"] != client_company_id:
            raise Rejected(
                "invalid",
                f"contact {crm_contact_id!r} is already client user {other['id']!r} of client company "
                f"{other['client_company_id']!r}; a contact belongs to one client company only",
                {"rule": "one_client_company", "crm_contact_id": crm_contact_id, "existing_client_user_id": other["id"],
                 "existing_client_company_id": other["client_company_id"]},
            )
        raise Rejected(
            "invalid",
            f"contact {crm_contact_id!r} is already client user {other['id']!r} of this client company",
            {"rule": "one_client_user_per_contact", "crm_contact_id": crm_contact_id, "existing_client_user_id": other["id"]},
        )


def check_new_client_users(new_users: Sequence[Mapping[str, Any]], portal_client_users: Sequence[Mapping[str, Any]]) -> None:
    """S19 for a project created with client users: every clash is named (contacts and address), nothing is created.

    `new_users` carry `email`, `name`, `crm_contact_id`.
    """
    by_email: dict[str, list[Mapping[str, Any]]] = {}
    for u in new_users:
        by_email.setdefault(norm_email(u["email"]) or "", []).append(u)
    existing = {norm_email(c.get("email")): c for c in portal_client_users}
    clashes = []
    for email, users in by_email.items():
        taken = existing.get(email)
        if len(users) > 1 or taken is not None:
            clashes.append({
                "email": users[0]["email"],
                "contacts": [u["crm_contact_id"] for u in users],
                "contact_names": [u["name"] for u in users],
                **({"existing_client_user_id": taken["id"]} if taken is not None else {}),
            })
    if clashes:
        described = "; ".join(
            f"{c['email']} is shared by contacts {', '.join(c['contacts'])}" if len(c["contacts"]) > 1
            else f"{c['email']} (contact {c['contacts'][0]}) is already used by client user {c['existing_client_user_id']}"
            for c in clashes
        )
        raise Rejected("duplicate_email", f"client-user e-mail addresses must be unique in the portal: {described}",
                       {"duplicates": clashes})
