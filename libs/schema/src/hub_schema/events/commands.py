"""Commands the hub sends to the CRM (crm.commands) and the PM tool (pm.commands).

Every command has a `command_id`: the upstream applies a command id at most
once, so redelivery is harmless. The change event that results carries the
same `command_id` (see `Versioned`): that is how the hub recognises its own
echo and learns the id of a record it asked to create. A refusal comes back
as `crm.command.rejected` / `pm.command.rejected` with that id; a command is
applied entirely or not at all.

Updates carry only the changed fields and the `base_version` (the upstream
record revision the hub last saw), so the upstream can refuse a stale change.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, model_validator

from hub_schema import topics
from hub_schema.events.common import (
    CrmRecordType,
    CustomFields,
    Email,
    IdList,
    Name,
    Part,
    Permission,
    PmRole,
    Priority,
    RecordId,
    RecordRef,
    TaskStatus,
    Text,
    unique_items,
    check_group_choice,
)
from hub_schema.registry import Payload, event


class Command(Payload):
    """Base of every command."""

    command_id: uuid.UUID


# --- task field changes (shared by both sides) -------------------------------


class TitleChange(Part):
    """The task's title (the CRM calls it the subject)."""

    field: Literal["title"]
    value: Name


class DescriptionChange(Part):
    field: Literal["description"]
    value: Text | None


class DueDateChange(Part):
    field: Literal["due_date"]
    value: date | None


class PriorityChange(Part):
    field: Literal["priority"]
    value: Priority


class StatusChange(Part):
    field: Literal["status"]
    value: TaskStatus


class OwnerChange(Part):
    field: Literal["owner_id"]
    value: RecordId | None


TaskChange = Annotated[
    Union[TitleChange, DescriptionChange, DueDateChange, PriorityChange, StatusChange, OwnerChange],
    Field(discriminator="field"),
]
"""One changed field; a list of these says exactly what changed, `None` values clear a field."""


def _one_change_per_field(changes: list[TaskChange]) -> list[TaskChange]:
    unique_items([c.field for c in changes])
    return changes


TaskChanges = Annotated[list[TaskChange], Field(min_length=1, max_length=6), AfterValidator(_one_change_per_field)]


# --- CRM commands ------------------------------------------------------------


@event("crm.task.create", topic=topics.CRM_COMMANDS)
class CrmTaskCreate(Command):
    """Mirror a PM task into the CRM as a task on a linked record (S5)."""

    hub_task_id: uuid.UUID
    record_type: CrmRecordType
    record_id: RecordId
    subject: Name
    description: Text | None = None
    due_date: date | None = None
    priority: Priority
    status: TaskStatus
    owner_id: RecordId | None = None
    parent_task_id: RecordId | None = None


@event("crm.task.update", topic=topics.CRM_COMMANDS)
class CrmTaskUpdate(Command):
    hub_task_id: uuid.UUID
    task_id: RecordId
    base_version: int = Field(ge=0)
    changes: TaskChanges


@event("crm.task.delete", topic=topics.CRM_COMMANDS)
class CrmTaskDelete(Command):
    hub_task_id: uuid.UUID
    task_id: RecordId


@event("crm.note.add", topic=topics.CRM_COMMANDS)
class CrmNoteAdd(Command):
    """Add a note for a comment on a mirrored PM task (S5); one command per linked record."""

    hub_task_id: uuid.UUID
    pm_comment_id: RecordId
    record_type: CrmRecordType
    record_id: RecordId
    title: Name | None = None
    body: Text
    author_name: Name


# --- PM commands -------------------------------------------------------------


class ProjectUserGrant(Part):
    """A portal user added to a project with a role and permissions (S4)."""

    user_id: RecordId
    role: PmRole
    permissions: Annotated[list[Permission], AfterValidator(unique_items)]


class NewClientCompany(Part):
    """A client company to create along with a project, for an account that has none yet (S13)."""

    name: Name
    crm_account_id: RecordId


class NewClientUser(Part):
    """A client user to create along with a project, for a contact (S13, S19).

    `client_company_id` None means the company this same command creates.
    """

    email: Email
    name: Name
    crm_contact_id: RecordId
    client_company_id: RecordId | None = None


@event("pm.project.create", topic=topics.PM_COMMANDS)
class PmProjectCreate(Command):
    """Create a project (S9, S14, S19) in one step, so nothing is half-created.

    Fields come from the field mapping (`custom_fields` by PM field name). The
    group is an existing one or a new one created with it (S9). Client company
    and client users that do not exist yet are created with the project; the
    upstream refuses the whole command if a client-user e-mail is taken.
    """

    portal_id: RecordId
    name: Name
    description: Text | None = None
    start_date: date | None = None
    end_date: date | None = None
    custom_fields: CustomFields = Field(default_factory=dict)
    owner_id: RecordId | None = None
    group_id: RecordId | None = None
    new_group_name: Name | None = None
    linked_records: Annotated[list[RecordRef], Field(max_length=100)] = Field(default_factory=list)
    users: Annotated[list[ProjectUserGrant], Field(max_length=1000)] = Field(default_factory=list)
    client_company_ids: IdList = Field(default_factory=list)
    client_user_ids: IdList = Field(default_factory=list)
    new_client_company: NewClientCompany | None = None
    new_client_users: Annotated[list[NewClientUser], Field(max_length=1000)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> PmProjectCreate:
        check_group_choice(self.group_id, self.new_group_name)
        if self.new_client_company is None and any(u.client_company_id is None for u in self.new_client_users):
            raise ValueError("a new client user without client_company_id needs new_client_company")
        unique_items([u.email for u in self.new_client_users])
        return self


@event("pm.project.update", topic=topics.PM_COMMANDS)
class PmProjectUpdate(Command):
    """Change a project's name, owner, group or mapped fields; None means unchanged (S4, S9)."""

    portal_id: RecordId
    project_id: RecordId
    name: Name | None = None
    owner_id: RecordId | None = None
    group_id: RecordId | None = None
    new_group_name: Name | None = None
    custom_fields: CustomFields | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PmProjectUpdate:
        check_group_choice(self.group_id, self.new_group_name)
        if all(v is None for v in (self.name, self.owner_id, self.group_id, self.new_group_name, self.custom_fields)):
            raise ValueError("a project update must change something")
        return self


@event("pm.project_group.create", topic=topics.PM_COMMANDS)
class PmProjectGroupCreate(Command):
    portal_id: RecordId
    name: Name


@event("pm.project.add_users", topic=topics.PM_COMMANDS)
class PmProjectAddUsers(Command):
    """Add portal users to a project with their role and permissions (S4)."""

    portal_id: RecordId
    project_id: RecordId
    users: Annotated[list[ProjectUserGrant], Field(min_length=1, max_length=1000)]

    @model_validator(mode="after")
    def _one_grant_per_user(self) -> PmProjectAddUsers:
        unique_items([u.user_id for u in self.users])
        return self


@event("pm.project.add_client_users", topic=topics.PM_COMMANDS)
class PmProjectAddClientUsers(Command):
    """Add existing client users to a project (S4); their companies come with them."""

    portal_id: RecordId
    project_id: RecordId
    client_user_ids: Annotated[IdList, Field(min_length=1)]


@event("pm.client_company.create", topic=topics.PM_COMMANDS)
class PmClientCompanyCreate(Command):
    """Create a client company for a CRM account (S13)."""

    portal_id: RecordId
    name: Name
    crm_account_id: RecordId


@event("pm.client_company.update", topic=topics.PM_COMMANDS)
class PmClientCompanyUpdate(Command):
    """Rename a client company after its CRM account was renamed (S13); added by identity."""

    portal_id: RecordId
    client_company_id: RecordId
    name: Name


@event("pm.client_user.create", topic=topics.PM_COMMANDS)
class PmClientUserCreate(Command):
    """Create a client user for a CRM contact (S13) or an imported CRM user (S18)."""

    portal_id: RecordId
    client_company_id: RecordId
    email: Email
    name: Name
    crm_record_type: Literal["contact", "user"]
    crm_record_id: RecordId


@event("pm.client_user.update", topic=topics.PM_COMMANDS)
class PmClientUserUpdate(Command):
    """Change a client user; None means unchanged. Moving company is refused upstream if not allowed."""

    portal_id: RecordId
    client_user_id: RecordId
    email: Email | None = None
    name: Name | None = None
    client_company_id: RecordId | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> PmClientUserUpdate:
        if self.email is None and self.name is None and self.client_company_id is None:
            raise ValueError("a client user update must change something")
        return self


@event("pm.portal_user.invite", topic=topics.PM_COMMANDS)
class PmPortalUserInvite(Command):
    """Create (invite) a portal user for a CRM user (S18 import) with the org's permission profile."""

    portal_id: RecordId
    crm_user_id: RecordId
    email: Email
    name: Name
    role: PmRole
    permissions: Annotated[list[Permission], AfterValidator(unique_items)]


@event("pm.portal_user.deactivate", topic=topics.PM_COMMANDS)
class PmPortalUserDeactivate(Command):
    """Deactivate the portal user of a CRM user who was deactivated."""

    portal_id: RecordId
    user_id: RecordId
    crm_user_id: RecordId


@event("pm.task.create", topic=topics.PM_COMMANDS)
class PmTaskCreate(Command):
    """Create a task in a linked project for a CRM task (S12)."""

    hub_task_id: uuid.UUID
    portal_id: RecordId
    project_id: RecordId
    title: Name
    description: Text | None = None
    due_date: date | None = None
    priority: Priority
    status: TaskStatus
    owner_id: RecordId | None = None
    parent_task_id: RecordId | None = None


@event("pm.task.update", topic=topics.PM_COMMANDS)
class PmTaskUpdate(Command):
    """Change a PM task; may be refused (S10 parent closed, S11 fixed schedule)."""

    hub_task_id: uuid.UUID
    portal_id: RecordId
    project_id: RecordId
    task_id: RecordId
    base_version: int = Field(ge=0)
    changes: TaskChanges


@event("pm.task.delete", topic=topics.PM_COMMANDS)
class PmTaskDelete(Command):
    hub_task_id: uuid.UUID
    portal_id: RecordId
    project_id: RecordId
    task_id: RecordId
