"""One valid, deterministic sample payload for every registered event type and version.

Used by the schema's own tests, contract / JSON Schema export and property
tests elsewhere. `tests/test_payloads.py` fails when an event type has no
sample here, so whoever registers an event type adds its sample here too.
The samples tell one small story: org `org-1` (CRM) integrated with portal
`portal-1` (PM), account Acme with contact Hanako, deal "Acme rollout", project
`proj-1`, a mirrored task with hub id TASK.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from hub_schema.events import commands as cmd
from hub_schema.events import crm, diagnostics, identity, linking, notifications, pm, requests
from hub_schema.events.common import PermissionProfile, RecordRef
from hub_schema.registry import Payload, all_events

JST = timezone(timedelta(hours=9))
T0 = datetime(2024, 4, 1, 9, 0, tzinfo=JST)
DAY = date(2024, 4, 30)


def _id(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


COMMAND = _id(0xC0)
REQUEST = _id(0xA0)
TASK = _id(0x7A)
V = {"modified_at": T0, "version": 3}
PROFILE = PermissionProfile(role="employee", permissions=["add_task", "associate_project"])

_SAMPLES: list[Payload] = [
    # --- diagnostics
    diagnostics.DiagPing(seq=1, note="hello"),
    diagnostics.DiagPong(seq=1, ping_event_id=str(_id(1))),
    # --- CRM ingest
    crm.CrmOrgUpserted(id="org-1", name="Acme Trading", edition="free", **V),
    crm.CrmUserUpserted(id="u-1", email="Taro.Yamada@example.co.jp", name="山田 太郎", active=True, is_admin=True,
                        locale="ja", **V),
    crm.CrmUserDeactivated(id="u-2", acting_user_id="u-1", **V),
    crm.CrmAccountUpserted(id="acc-1", name="Acme", owner_id="u-1", custom_fields={"Region": "Kanto", "Seats": 40,
                           "Budget": 1.5e6, "Strategic": True, "Notes": None}, acting_user_id="u-1", **V),
    crm.CrmAccountDeleted(id="acc-9", **V),
    crm.CrmContactUpserted(id="con-1", account_id="acc-1", first_name="Hanako", last_name="Sato",
                           email="hanako@acme.example", **V),
    crm.CrmContactDeleted(id="con-9", **V),
    crm.CrmDealUpserted(id="deal-1", name="Acme rollout", account_id="acc-1", contact_ids=["con-1"],
                        stage="Closed Won", amount=Decimal("1200000.00"), closing_date=DAY, won=True,
                        custom_fields={"Project_Type": "Rollout"}, acting_user_id="u-1", **V),
    crm.CrmDealDeleted(id="deal-9", **V),
    crm.CrmLeadUpserted(id="lead-1", first_name="Ken", last_name="Ito", company="Ito Shoji",
                        email="ken@ito.example", **V),
    crm.CrmLeadDeleted(id="lead-9", **V),
    crm.CrmTaskUpserted(id="ct-1", record_type="deal", record_id="deal-1", subject="Kick-off call",
                        description="Agree the plan", due_date=DAY, priority="high", status="open", owner_id="u-1",
                        created_by="u-1", add_to_pm=True, pm_project_id="proj-1", acting_user_id="u-1", **V),
    crm.CrmTaskDeleted(id="ct-9", **V),
    crm.CrmNoteCreated(id="note-1", record_type="contact", record_id="con-1", body="Prefers e-mail",
                       author_id="u-int", command_id=COMMAND, **V),
    crm.CrmCommandRejected(command_id=COMMAND, command_type="crm.task.update", reason_code="version_conflict",
                           reason="task ct-1 is at version 5, the command was based on 3",
                           details={"current_version": 5}),
    # --- PM ingest
    pm.PmPortalUpserted(id="portal-1", name="acme-projects", plan="paid", active=True, **V),
    pm.PmPortalUserUpserted(portal_id="portal-1", id="pu-1", email="taro.yamada@example.co.jp", name="Taro Yamada",
                            role="manager", active=True, **V),
    pm.PmPortalUserRemoved(portal_id="portal-1", id="pu-9", **V),
    pm.PmClientCompanyUpserted(portal_id="portal-1", id="cc-1", name="Acme", **V),
    pm.PmClientCompanyDeleted(portal_id="portal-1", id="cc-9", **V),
    pm.PmClientUserUpserted(portal_id="portal-1", id="cu-1", email="hanako@acme.example", name="Hanako Sato",
                            client_company_id="cc-1", command_id=COMMAND, **V),
    pm.PmClientUserRemoved(portal_id="portal-1", id="cu-9", **V),
    pm.PmProjectUpserted(portal_id="portal-1", id="proj-1", name="Acme rollout", owner_id="pu-1", group_id="grp-1",
                         status="active", progress_percent=40, schedule_fixed=True, start_date=date(2024, 4, 1),
                         end_date=DAY, custom_fields={"budget": 1200000}, user_ids=["pu-1"],
                         client_company_ids=["cc-1"], client_user_ids=["cu-1"], acting_user_id="pu-1", **V),
    pm.PmProjectDeleted(portal_id="portal-1", id="proj-9", **V),
    pm.PmProjectGroupUpserted(portal_id="portal-1", id="grp-1", name="Rollouts 2024", **V),
    pm.PmProjectGroupDeleted(portal_id="portal-1", id="grp-9", **V),
    pm.PmTaskUpserted(portal_id="portal-1", project_id="proj-1", id="pt-1", title="Install", description=None,
                      due_date=DAY, priority="medium", status="open", owner_id="pu-1", parent_task_id="pt-0",
                      recurring=False, add_to_crm=True, acting_user_id="pu-1", **V),
    pm.PmTaskDeleted(portal_id="portal-1", project_id="proj-1", id="pt-9", **V),
    pm.PmCommentAdded(portal_id="portal-1", project_id="proj-1", task_id="pt-1", id="cm-1", body="Done on site",
                      author_id="pu-1", author_name="Taro Yamada", **V),
    pm.PmCommandRejected(command_id=COMMAND, command_type="pm.task.update", reason_code="parent_task_closed",
                         reason="the parent task pt-0 is closed", details={"parent_task_id": "pt-0"}),
    # --- commands to the CRM
    cmd.CrmTaskCreate(command_id=COMMAND, hub_task_id=TASK, record_type="deal", record_id="deal-1", subject="Install",
                      due_date=DAY, priority="medium", status="open", owner_id="u-1"),
    cmd.CrmTaskUpdate(command_id=COMMAND, hub_task_id=TASK, task_id="ct-1", base_version=3,
                      changes=[cmd.StatusChange(field="status", value="closed"),
                               cmd.DueDateChange(field="due_date", value=None)]),
    cmd.CrmTaskDelete(command_id=COMMAND, hub_task_id=TASK, task_id="ct-1"),
    cmd.CrmNoteAdd(command_id=COMMAND, hub_task_id=TASK, pm_comment_id="cm-1", record_type="contact",
                   record_id="con-1", title="Install", body="Done on site", author_name="Taro Yamada"),
    # --- commands to the PM tool
    cmd.PmProjectCreate(command_id=COMMAND, portal_id="portal-1", name="Acme rollout", custom_fields={"budget": 1200000},
                        owner_id="pu-1", new_group_name="Rollouts 2024",
                        linked_records=[RecordRef(record_type="deal", record_id="deal-1")],
                        users=[cmd.ProjectUserGrant(user_id="pu-1", role="manager", permissions=["add_task"])],
                        new_client_company=cmd.NewClientCompany(name="Acme", crm_account_id="acc-1"),
                        new_client_users=[cmd.NewClientUser(email="hanako@acme.example", name="Hanako Sato",
                                                            crm_contact_id="con-1")]),
    cmd.PmProjectUpdate(command_id=COMMAND, portal_id="portal-1", project_id="proj-1", owner_id="pu-2", group_id="grp-1"),
    cmd.PmProjectGroupCreate(command_id=COMMAND, portal_id="portal-1", name="Rollouts 2024"),
    cmd.PmProjectAddUsers(command_id=COMMAND, portal_id="portal-1", project_id="proj-1",
                          users=[cmd.ProjectUserGrant(user_id="pu-2", role="employee", permissions=["add_task"])]),
    cmd.PmProjectAddClientUsers(command_id=COMMAND, portal_id="portal-1", project_id="proj-1", client_user_ids=["cu-1"]),
    cmd.PmClientCompanyCreate(command_id=COMMAND, portal_id="portal-1", name="Acme", crm_account_id="acc-1"),
    cmd.PmClientCompanyUpdate(command_id=COMMAND, portal_id="portal-1", client_company_id="cc-1", name="Acme Holdings"),
    cmd.PmClientUserCreate(command_id=COMMAND, portal_id="portal-1", client_company_id="cc-1",
                           email="hanako@acme.example", name="Hanako Sato", crm_record_type="contact",
                           crm_record_id="con-1"),
    cmd.PmClientUserUpdate(command_id=COMMAND, portal_id="portal-1", client_user_id="cu-1",
                           email="hanako.sato@acme.example"),
    cmd.PmPortalUserInvite(command_id=COMMAND, portal_id="portal-1", crm_user_id="u-3", email="jiro@example.co.jp",
                           name="Jiro", role="employee", permissions=["add_task"]),
    cmd.PmPortalUserDeactivate(command_id=COMMAND, portal_id="portal-1", user_id="pu-2", crm_user_id="u-2"),
    cmd.PmTaskCreate(command_id=COMMAND, hub_task_id=TASK, portal_id="portal-1", project_id="proj-1",
                     title="Kick-off call", due_date=DAY, priority="high", status="open"),
    cmd.PmTaskUpdate(command_id=COMMAND, hub_task_id=TASK, portal_id="portal-1", project_id="proj-1", task_id="pt-1",
                     base_version=3, changes=[cmd.TitleChange(field="title", value="Install (phase 1)"),
                                              cmd.DescriptionChange(field="description", value="two sites"),
                                              cmd.PriorityChange(field="priority", value="low"),
                                              cmd.OwnerChange(field="owner_id", value="pu-2")]),
    cmd.PmTaskDelete(command_id=COMMAND, hub_task_id=TASK, portal_id="portal-1", project_id="proj-1", task_id="pt-1"),
    # --- requests from CRM users
    requests.IntegrationEnable(request_id=REQUEST, acting_user_id="u-1", portal_id="portal-1",
                               field_mapping=[requests.FieldMapping(pm_field="budget", crm_module="deals",
                                                                    crm_field="Amount", crm_field_type="currency"),
                                              requests.FieldMapping(pm_field="region", crm_module="accounts",
                                                                    crm_field="Region")],
                               permissions=PROFILE, deal_won_creates_project=True),
    requests.IntegrationDisable(request_id=REQUEST, acting_user_id="u-1", portal_id="portal-1"),
    requests.IntegrationResync(request_id=REQUEST, acting_user_id="u-1", portal_id="portal-1"),
    requests.IntegrationSwitchPortal(request_id=REQUEST, acting_user_id="u-1", current_portal_id="portal-1",
                                     new_portal_id="portal-2"),
    requests.ServiceKeyGenerate(request_id=REQUEST, acting_user_id="u-1", key_id=_id(0x4B),
                                key_sha256="0" * 63 + "1"),
    requests.PermissionsChange(request_id=REQUEST, acting_user_id="u-1", permissions=PROFILE, effective_from=T0),
    requests.UsersImport(request_id=REQUEST, acting_user_id="u-1", user_ids=["u-3", "u-4"], import_as="client_user",
                         client_company_id="cc-1"),
    requests.ProjectAssociate(request_id=REQUEST, acting_user_id="u-1", record_type="account", record_id="acc-1",
                              project_id="proj-1", owner_id="pu-1", new_group_name="Key accounts",
                              crm_users=[requests.CrmUserGrant(user_id="u-3", role="employee",
                                                               permissions=["add_task"])],
                              client_contact_ids=["con-1"]),
    requests.ProjectDissociate(request_id=REQUEST, acting_user_id="u-1", record_type="account", record_id="acc-1",
                               project_id="proj-1"),
    requests.ProjectCreateFromRecord(request_id=REQUEST, acting_user_id="u-1", record_type="account",
                                     record_id="acc-1", name="Acme support", group_id="grp-1",
                                     client_contact_ids=["con-1"]),
    requests.ProjectsListAssociable(request_id=REQUEST, acting_user_id="u-1", record_type="lead", record_id="lead-1"),
    # --- identity service
    identity.UserAccessChanged(crm_user_id="u-1", email="taro.yamada@example.co.jp", name="山田 太郎", locale="ja",
                               active=True, is_admin=True, portal_id="portal-1", portal_user_id="pu-1",
                               profile=PROFILE, effective_from=T0, revision=1),
    identity.PermissionProfileChanged(profile=PROFILE, changed_by="u-1", effective_from=T0, revision=2),
    identity.CustomerMappingChanged(portal_id="portal-1", kind="contact", crm_id="con-1", pm_id="cu-1",
                                    state="linked", revision=1),
    identity.ImportCompleted(request_id=REQUEST, imported_as="portal_user",
                             added=[identity.ImportedUser(crm_user_id="u-3", email="jiro@example.co.jp")],
                             skipped=[identity.SkippedUser(crm_user_id="u-4", reason_code="already_member",
                                                           reason="already a portal user")]),
    identity.IdentityRequestRefused(request_id=REQUEST, request_type="hub.users.import", acting_user_id="u-5",
                                    reason_code="not_admin", reason="only CRM admins may import users"),
    # --- linking service
    linking.IntegrationChanged(state="enabled", portal_id="portal-1", deal_won_creates_project=True, changed_by="u-1",
                               changed_at=T0, revision=1),
    linking.LinkChanged(portal_id="portal-1", project_id="proj-1",
                        record=RecordRef(record_type="account", record_id="acc-1"), linked=True, revision=1),
    linking.ResyncRequested(request_id=REQUEST, portal_id="portal-1", requested_by="u-1"),
    linking.LinkingRequestRefused(request_id=REQUEST, request_type="hub.integration.enable", acting_user_id="u-5",
                                  reason_code="plan_required", reason="portal portal-2 is on the free PM plan",
                                  details={"portal_id": "portal-2"}),
    linking.AssociableProjectsListed(request_id=REQUEST, acting_user_id="u-1",
                                     record=RecordRef(record_type="account", record_id="acc-1"), portal_id="portal-1",
                                     projects=[linking.AssociableProjectItem(project_id="proj-2", name="Acme support",
                                                                             status="active", progress_percent=10)]),
    linking.ServiceKeyRotated(key_id=_id(0x4B), key_sha256="0" * 63 + "1", rotated_by="u-1", rotated_at=T0),
    linking.SyncStopped(portal_id="portal-1", stopped_by="u-1", stopped_at=T0),
    linking.MatchingPage(
        report_id=_id(0x5A), portal_id="portal-1",
        rows=notifications.MatchingReportPage(
            page=1, pages=1,
            matched=[notifications.MatchedClient(client_company_id="cc-1", client_name="Acme", account_id="acc-1",
                                                 account_name="Acme")],
            unmatched=[notifications.UnmatchedClient(client_company_id="cc-2", client_name="Globex",
                                                     reason_code="no_match", reason="no account named Globex")])),
    linking.MatchingCompleted(
        report=notifications.MatchingReportSummary(report_id=_id(0x5A), portal_id="portal-1", finished_at=T0,
                                                   matched=1, unmatched=1, pages=1),
        requested_by="u-1", projects_linked=1),
    linking.ProjectAssociated(request_id=REQUEST, acting_user_id="u-1", portal_id="portal-1", project_id="proj-1",
                              record=RecordRef(record_type="account", record_id="acc-1"), project_user_ids=["pu-1"],
                              crm_user_ids=["u-3"], client_contact_ids=["con-1"], command_ids=[COMMAND]),
    linking.ProjectCreationRequested(command_id=COMMAND, portal_id="portal-1", trigger="deal_won",
                                     records=[RecordRef(record_type="deal", record_id="deal-1"),
                                              RecordRef(record_type="account", record_id="acc-1")]),
    # --- notifications
    notifications.NotificationRequested(
        request_id=REQUEST, kind="matching_report", optional=False,
        recipient=notifications.Recipient(user_id="u-1", email="taro.yamada@example.co.jp", name="山田 太郎",
                                          locale="ja"),
        data={"portal_name": "acme-projects", "counts": {"matched": 1, "unmatched": 1}},
        matching_report=notifications.MatchingReportSummary(report_id=_id(0x5A), portal_id="portal-1", finished_at=T0,
                                                            matched=1, unmatched=1, pages=1),
    ),
    notifications.NotificationReportPage(
        request_id=REQUEST,
        rows=notifications.MatchingReportPage(
            page=1, pages=1,
            matched=[notifications.MatchedClient(client_company_id="cc-1", client_name="Acme", account_id="acc-1",
                                                 account_name="Acme")],
            unmatched=[notifications.UnmatchedClient(client_company_id="cc-2", client_name="Globex",
                                                     reason_code="no_match", reason="no account named Globex")])),
    notifications.NotificationSent(request_id=REQUEST, kind="matching_report",
                                   recipient_email="taro.yamada@example.co.jp",
                                   message_id="<a0.1@hub.example>", attempts=1, sent_at=T0),
    notifications.NotificationFailed(request_id=REQUEST, kind="subtask_update_failed",
                                     recipient_email="taro.yamada@example.co.jp", attempts=5,
                                     error="550 5.1.1 mailbox unavailable"),
    notifications.NotificationSuppressed(request_id=REQUEST, kind="import_outcome",
                                         recipient_email="taro.yamada@example.co.jp", reason_code="opted_out",
                                         reason="the recipient turned off optional e-mails"),
    notifications.NotificationPreferencesChange(request_id=REQUEST, acting_user_id="u-1",
                                                email="taro.yamada@example.co.jp", kinds=["import_outcome"],
                                                opted_out=True, changed_at=T0),
]

# --- task-mirroring service
from hub_schema.events import tasks as _tasks  # noqa: E402

_SAMPLES += [
    _tasks.TaskMirrorDecided(hub_task_id=TASK, side="pm", pm_task_id="pt-1", crm_task_id="ct-1", decision="mirrored",
                             reason_code="changed", reason="title changed in the PM tool", fields=["title"]),
    _tasks.TaskRequestRefused(hub_task_id=TASK, crm_task_id="ct-1", pm_task_id="pt-1",
                              record=RecordRef(record_type="deal", record_id="deal-1"), acting_user_id="u-1",
                              reason_code="parent_task_closed", reason="the parent task pt-0 is closed in the PM tool",
                              fields=["status"]),
]

SAMPLES: dict[tuple[str, int], Payload] = {}
for _p in _SAMPLES:
    _key = type(_p).event_type_and_version()
    if _key in SAMPLES:
        raise ValueError(f"two samples for {_key}")
    SAMPLES[_key] = _p


def sample(event_type: str, version: int | None = None) -> Payload:
    """The sample payload of one event type and version (by default its newest version)."""
    if version is None:
        version = max(v for t, v in SAMPLES if t == event_type)
    return SAMPLES[(event_type, version)]


def missing() -> list[tuple[str, int]]:
    """Registered event types and versions that have no sample yet."""
    return [key for key in all_events() if key not in SAMPLES]
