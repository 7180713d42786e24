"""Who may do what (S3, S4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

LINK_PERMISSIONS = {"edit_project", "associate_project"}


@dataclass(frozen=True)
class Actor:
    crm_user_id: str
    active: bool
    is_admin: bool
    permissions: frozenset[str]
    portal_user_id: str | None
    email: str | None = None
    name: str | None = None
    locale: str | None = None
    time_zone: str | None = None


def may_change_settings(actor: Actor | None) -> tuple[bool, str, str]:
    if actor is None:
        return False, "unknown_user", "the hub does not know this CRM user yet"
    if not actor.active:
        return False, "not_admin", "the user is inactive; only active CRM admins may change the integration"
    if not actor.is_admin:
        return False, "not_admin", "only CRM admins may change the integration's settings"
    return True, "", ""


def may_link_at_all(actor: Actor | None) -> tuple[bool, str, str]:
    """S4: a user with neither edit nor associate permission gets a clear refusal."""
    if actor is None:
        return False, "unknown_user", "the hub does not know this CRM user yet"
    if not actor.active:
        return False, "permission_denied", "the user is inactive"
    if actor.is_admin or actor.permissions & LINK_PERMISSIONS:
        return True, "", ""
    return False, "permission_denied", "you need the 'edit project' or 'associate project' permission in the PM tool"


class ProjectMembers(Protocol):
    """What the rule reads of a project (hub_linking.rows.Project has it)."""

    @property
    def owner_id(self) -> str: ...

    @property
    def user_ids(self) -> list[str]: ...


def may_link_project(actor: Actor, project: ProjectMembers) -> bool:
    """Admins may associate any project; others only projects they are a member or owner of."""
    if not may_link_at_all(actor)[0]:
        return False
    if actor.is_admin:
        return True
    pu = actor.portal_user_id
    return pu is not None and (pu == project.owner_id or pu in (project.user_ids or []))


