"""The upstream tools' rules on their own (no broker, no database)."""

from __future__ import annotations

import pytest

from hub_sandbox import domain
from hub_sandbox.domain import Rejected
from hub_sandbox.handlers import APPLY
from hub_schema import topics
from hub_schema.events.commands import DueDateChange, StatusChange, TitleChange
from hub_schema.registry import all_events

from datetime import date

PARENT_CLOSED = {"id": "p", "title": "Parent", "status": "closed"}
SUBTASK_CLOSED = {"id": "s", "title": "Sub", "status": "closed", "parent_task_id": "p", "due_date": "2026-01-10"}
FIXED = {"id": "proj", "name": "Fixed", "schedule_fixed": True}
FLEXIBLE = {"id": "proj", "name": "Flexible", "schedule_fixed": False}


def test_S10_reopening_subtask_of_closed_parent_is_refused() -> None:
    with pytest.raises(Rejected) as exc:
        domain.check_pm_task_update(SUBTASK_CLOSED, {"status": "open"}, parent=PARENT_CLOSED, project=FLEXIBLE)
    assert exc.value.code == "parent_task_closed"
    assert exc.value.details["parent_task_id"] == "p"


def test_S10_reopening_is_allowed_when_parent_open_and_closing_is_always_allowed() -> None:
    domain.check_pm_task_update(SUBTASK_CLOSED, {"status": "open"}, parent={**PARENT_CLOSED, "status": "open"}, project=FLEXIBLE)
    domain.check_pm_task_update({**SUBTASK_CLOSED, "status": "open"}, {"status": "closed"}, parent=PARENT_CLOSED, project=FLEXIBLE)
    domain.check_pm_task_update(SUBTASK_CLOSED, {"title": "x"}, parent=PARENT_CLOSED, project=FLEXIBLE)


def test_S11_due_date_change_in_fixed_schedule_project_is_refused() -> None:
    with pytest.raises(Rejected) as exc:
        domain.check_pm_task_update(SUBTASK_CLOSED, {"due_date": "2026-02-01"}, parent=None, project=FIXED)
    assert exc.value.code == "schedule_fixed"


def test_S11_same_due_date_or_flexible_project_is_allowed() -> None:
    domain.check_pm_task_update(SUBTASK_CLOSED, {"due_date": "2026-01-10"}, parent=None, project=FIXED)
    domain.check_pm_task_update(SUBTASK_CLOSED, {"due_date": "2026-02-01"}, parent=None, project=FLEXIBLE)


def test_task_changes_map_title_to_subject_and_dates_to_iso() -> None:
    changes = [TitleChange(field="title", value="New"), DueDateChange(field="due_date", value=date(2026, 3, 1)),
               StatusChange(field="status", value="closed")]
    assert domain.task_changes(changes, title_field="subject") == {"subject": "New", "due_date": "2026-03-01", "status": "closed"}


def test_base_version_behind_is_a_conflict_unless_policy_applies() -> None:
    with pytest.raises(Rejected) as exc:
        domain.check_base_version("task", "t", 2, 3, "reject")
    assert exc.value.code == "version_conflict"
    domain.check_base_version("task", "t", 2, 3, "apply")
    domain.check_base_version("task", "t", 3, 3, "reject")


def test_S19_client_user_email_unique_per_portal_case_insensitive() -> None:
    others = [{"id": "cu-1", "email": "Hanako@Acme.example", "name": "Hanako"}]
    with pytest.raises(Rejected) as exc:
        domain.check_client_user_email(" hanako@acme.example", others)
    assert exc.value.code == "duplicate_email"
    domain.check_client_user_email("hanako@acme.example", others, except_id="cu-1")


def test_S19_new_client_users_sharing_an_email_name_the_contacts_and_the_address() -> None:
    new = [{"email": "x@a.example", "name": "A", "crm_contact_id": "con-1"},
           {"email": "X@a.example", "name": "B", "crm_contact_id": "con-2"},
           {"email": "y@a.example", "name": "C", "crm_contact_id": "con-3"}]
    with pytest.raises(Rejected) as exc:
        domain.check_new_client_users(new, [])
    assert exc.value.code == "duplicate_email"
    assert "con-1" in exc.value.reason and "con-2" in exc.value.reason and "x@a.example" in exc.value.reason
    assert exc.value.details["duplicates"] == [{"email": "x@a.example", "contacts": ["con-1", "con-2"], "contact_names": ["A", "B"]}]
    domain.check_new_client_users(new[:1] + new[2:], [{"id": "cu-9", "email": "z@a.example"}])


def test_S4_contact_is_a_client_user_of_one_client_company_only() -> None:
    existing = [{"id": "cu-1", "client_company_id": "cc-1"}]
    with pytest.raises(Rejected) as exc:
        domain.check_one_company("con-1", "cc-2", existing)
    assert exc.value.details["rule"] == "one_client_company"
    domain.check_one_company("con-1", "cc-2", [])


def test_every_command_type_has_a_handler() -> None:
    commands = {t for (t, _), m in all_events().items() if m.TOPIC in (topics.CRM_COMMANDS, topics.PM_COMMANDS)}
    assert commands == set(APPLY)


def test_locked_record_refuses_the_integrations_changes() -> None:
    with pytest.raises(Rejected) as exc:
        domain.check_not_locked("task", {"id": "t-1"}, {"locked": True})
    assert exc.value.code == "locked" and exc.value.details == {"record_id": "t-1"}
    domain.check_not_locked("task", {"id": "t-1"}, {"locked": False})
    domain.check_not_locked("task", {"id": "t-1"}, {})
