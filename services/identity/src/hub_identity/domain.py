"""Identity's rules, with no I/O, so each one is unit-tested on its own.

- e-mails are matched as `hub_schema.names.normalise_email` reads them (the schema keeps them as sent);
- an upstream record is applied only if its `version` is newer than the one kept;
- a permission profile applies from its `effective_from` on and never earlier than
  the moment it was changed (no retroactive rewriting); "what applied at T" is the
  profile with the greatest effective_from <= T;
- S19: a request that would create several client users fails as a whole when two of
  them share an e-mail or an e-mail already belongs to a client user of the portal.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hub_schema.events.common import PermissionProfile
from hub_schema.names import normalise_email

DEFAULT_PROFILE = PermissionProfile(role="employee", permissions=[])
"""Until an admin chooses one (S3), CRM users get the least: employee, no extra permissions."""

NOTIFICATION_NAMESPACE = uuid.UUID("6d1c7a52-3c1f-4f7e-9a43-2b1c0e9d7f10")


def is_newer(incoming_version: int, stored_version: int | None) -> bool:
    """Apply an upstream event only if nothing at this version or later was applied already."""
    return stored_version is None or incoming_version > stored_version


def contact_name(first_name: str | None, last_name: str) -> str:
    return f"{first_name} {last_name}" if first_name else last_name


def profile_effective_from(requested: datetime | None, now: datetime) -> datetime:
    """A change applies from the requested moment, but never before it was made (S23)."""
    if requested is None or requested < now:
        return now
    return requested


@dataclass(frozen=True)
class ProfileVersion:
    revision: int
    profile: PermissionProfile
    effective_from: datetime


def profile_at(history: Iterable[ProfileVersion], at: datetime) -> PermissionProfile:
    """The profile that applied at `at`: greatest effective_from <= at (ties: latest revision)."""
    applicable = [p for p in history if p.effective_from <= at]
    if not applicable:
        return DEFAULT_PROFILE
    return max(applicable, key=lambda p: (p.effective_from, p.revision)).profile


def notification_request_id(request_id: uuid.UUID, kind: str) -> uuid.UUID:
    """Deterministic, so a redelivered request asks for the same e-mail (de-duplicated downstream)."""
    return uuid.uuid5(NOTIFICATION_NAMESPACE, f"{request_id}:{kind}")


# --- S19 duplicate e-mails -----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A record that would become a client user."""

    record_id: str
    name: str
    email: str


@dataclass(frozen=True)
class Duplicate:
    email: str
    record_ids: tuple[str, ...]
    names: tuple[str, ...]
    existing_client_user_id: str | None = None

    def describe(self) -> str:
        who = ", ".join(f"{n} ({i})" for i, n in zip(self.record_ids, self.names))
        if self.existing_client_user_id is not None:
            return f"{self.email} already belongs to client user {self.existing_client_user_id} (wanted for {who})"
        return f"{self.email} is shared by {who}"


def find_duplicate_emails(candidates: Sequence[Candidate], taken: dict[str, str]) -> list[Duplicate]:
    """E-mails shared by candidates, or already held by another client user (`taken`: e-mail -> client user id).

    Both are compared normalised; the result names the address as normalised.
    """
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        key = normalise_email(c.email)
        if key is not None:
            groups[key].append(c)
    found: list[Duplicate] = []
    for email, group in groups.items():
        ids = tuple(c.record_id for c in group)
        names = tuple(c.name for c in group)
        if len(group) > 1:
            found.append(Duplicate(email, ids, names))
        elif email in taken:
            found.append(Duplicate(email, ids, names, existing_client_user_id=taken[email]))
    return sorted(found, key=lambda d: d.email)


# --- S18 import -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserFacts:
    """What identity knows of a CRM user when planning an import."""

    crm_user_id: str
    email: str | None
    name: str | None
    active: bool
    known: bool = True
    already_member: bool = False
    pending: bool = False


@dataclass
class ImportPlan:
    add: list[UserFacts] = field(default_factory=list)
    skip: list[tuple[str, str, str]] = field(default_factory=list)  # (crm_user_id, reason_code, reason)


def plan_import(users: Sequence[UserFacts], import_as: str) -> ImportPlan:
    """Which users get a command and which are skipped, with the reason (S18)."""
    plan = ImportPlan()
    what = "a portal user" if import_as == "portal_user" else "a client user"
    for u in users:
        if not u.known:
            plan.skip.append((u.crm_user_id, "unknown_user", f"CRM user {u.crm_user_id} is not known to the hub"))
        elif not u.active:
            plan.skip.append((u.crm_user_id, "inactive_user", f"CRM user {u.crm_user_id} is deactivated"))
        elif u.already_member:
            plan.skip.append((u.crm_user_id, "already_member", f"{u.email} is already {what}"))
        elif u.pending:
            plan.skip.append((u.crm_user_id, "already_pending", f"{u.email} is already being added as {what}"))
        else:
            plan.add.append(u)
    return plan
