"""Zoho CRM records and the hub's events/commands, without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from hub_crm_connector import domain
from hub_schema.events import commands as cmd
from hub_schema.events.commands import DueDateChange, StatusChange, TitleChange

T = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_a_task_on_a_deal_becomes_crm_task_upserted() -> None:
    rec = {"id": "7", "Subject": "Call", "What_Id": {"id": "d1", "name": "Deal"}, "$se_module": "Deals", "Priority": "Highest",
           "Status": "Completed", "Due_Date": "2026-12-01", "Created_By": {"id": "u1"}, "Owner": {"id": "u2"},
           "Hub_Add_To_PM": True, "Hub_PM_Project_Id": "p9", "Modified_Time": "2026-11-30T09:00:00+09:00"}
    fields = domain.record_fields("Tasks", rec)
    p = domain.upsert_payload("Tasks", fields, modified_at=domain.zoho_time(rec["Modified_Time"]), version=3, acting_user_id="u2",
                              command_id=None)
    assert (p.record_type, p.record_id, p.priority, p.status, p.due_date, p.created_by, p.owner_id) == \
        ("deal", "d1", "high", "closed", date(2026, 12, 1), "u1", "u2")
    assert p.add_to_pm and p.pm_project_id == "p9"


def test_a_task_on_no_record_is_not_published() -> None:
    with pytest.raises(domain.NotPublished):
        domain.record_fields("Tasks", {"id": "7", "Subject": "Alone"})


def test_a_deal_won_custom_fields_and_amount() -> None:
    rec = {"id": "d1", "Deal_Name": "Big", "Stage": "Closed Won", "Amount": 1200.5, "Account_Name": {"id": "a1"},
           "Expected_Revenue": 900, "Modified_Time": "2026-11-30T09:00:00Z"}
    p = domain.upsert_payload("Deals", domain.record_fields("Deals", rec), modified_at=T, version=1, acting_user_id=None,
                              command_id=None)
    assert p.won and p.account_id == "a1" and str(p.amount) == "1200.5" and p.custom_fields == {"Expected_Revenue": 900}


def test_commands_become_zoho_fields() -> None:
    create = cmd.CrmTaskCreate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), record_type="contact", record_id="c1",
                               subject="S", priority="medium", status="open", due_date=date(2027, 1, 2))
    assert domain.task_create_fields(create) == {"Subject": "S", "Due_Date": "2027-01-02", "Priority": "Normal",
                                                 "Status": "Not Started", "Who_Id": {"id": "c1"},
                                                 "Hub_Command_Id": str(create.command_id)}
    update = cmd.CrmTaskUpdate(command_id=uuid.uuid4(), hub_task_id=uuid.uuid4(), task_id="t1", base_version=1,
                               changes=[TitleChange(field="title", value="New"), StatusChange(field="status", value="closed"),
                                        DueDateChange(field="due_date", value=None)])
    assert domain.task_update_fields(update) == {"id": "t1", "Subject": "New", "Status": "Completed", "Due_Date": None}
