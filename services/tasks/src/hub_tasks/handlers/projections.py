"""What the service keeps of other services' and upstreams' events: integration, links, users, projects, names.

Each is kept newest by its revision or upstream version (an old copy arriving late changes nothing).
"""

from __future__ import annotations

from typing import Any

from hub_platform.consumer import HandlerContext
from hub_schema import Event
from hub_schema.events import crm, identity, linking, pm
from hub_tasks.handlers.common import on, state
from hub_tasks.records import DisplayName, Integration, Link, Project, User


@on(linking.IntegrationChanged)
async def on_integration(ctx: HandlerContext, event: Event[linking.IntegrationChanged]) -> None:
    p = event.payload
    await state(ctx).put_integration(Integration(org_id=event.org_id, enabled=p.state == "enabled",
                                                 portal_id=p.portal_id, revision=p.revision))


@on(linking.LinkChanged)
async def on_link(ctx: HandlerContext, event: Event[linking.LinkChanged]) -> None:
    p = event.payload
    await state(ctx).put_link(Link(org_id=event.org_id, portal_id=p.portal_id, project_id=p.project_id,
                                   record_type=p.record.record_type, record_id=p.record.record_id, linked=p.linked,
                                   revision=p.revision))


@on(identity.UserAccessChanged)
async def on_user_access(ctx: HandlerContext, event: Event[identity.UserAccessChanged]) -> None:
    p = event.payload
    await state(ctx).put_user(User(org_id=event.org_id, crm_user_id=p.crm_user_id, email=p.email, name=p.name,
                                   locale=p.locale, active=p.active, portal_user_id=p.portal_user_id,
                                   permissions=list(p.profile.permissions), revision=p.revision, time_zone=p.time_zone))


@on(pm.PmProjectUpserted)
async def on_project(ctx: HandlerContext, event: Event[pm.PmProjectUpserted]) -> None:
    p = event.payload
    st = state(ctx)
    await st.put_project(Project(org_id=event.org_id, project_id=p.id, portal_id=p.portal_id,
                                 schedule_fixed=p.schedule_fixed, version=p.version))
    await st.put_name(DisplayName(org_id=event.org_id, kind="project", id=p.id, name=p.name, url=None, version=p.version))


@on(pm.PmProjectDeleted)
async def on_project_deleted(ctx: HandlerContext, event: Event[pm.PmProjectDeleted]) -> None:
    """A deleted project keeps the schedule rule it had."""
    p = event.payload
    st = state(ctx)
    known = await st.project(event.org_id, p.id)
    await st.put_project(Project(org_id=event.org_id, project_id=p.id, portal_id=p.portal_id,
                                 schedule_fixed=known.schedule_fixed if known else False, version=p.version, deleted=True))


@on(crm.CrmAccountUpserted, crm.CrmDealUpserted)
async def on_named_record(ctx: HandlerContext, event: Event[Any]) -> None:
    """Records by name (and link) in refusal e-mails, never by id."""
    p = event.payload
    await state(ctx).put_name(DisplayName(org_id=event.org_id, kind=event.event_type.split(".")[1], id=p.id,
                                          name=p.name, url=p.url, version=p.version))


@on(crm.CrmContactUpserted, crm.CrmLeadUpserted)
async def on_named_person(ctx: HandlerContext, event: Event[Any]) -> None:
    p = event.payload
    name = " ".join(n for n in (p.first_name, p.last_name) if n)
    await state(ctx).put_name(DisplayName(org_id=event.org_id, kind=event.event_type.split(".")[1], id=p.id,
                                          name=name, url=p.url, version=p.version))
