"""What each benchmarked service is fed: the projections to seed first, the event that drives it, what it emits.

A scenario names the service's real entry point (run as a process), its router (for the
direct-database baseline, which runs the very same handler code on one asyncpg
connection) and the output event that proves an ingest event went all the way through.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from hub_schema import Envelope, make_event

UTC = timezone.utc
T0 = datetime(2024, 4, 1, 9, 0, tzinfo=UTC)
ORG = "org-bench"
PORTAL = "portal-bench"
PAD = "benchmark payload " * 12  # brings the ingest messages to about 500-700 bytes


@dataclass
class Scenario:
    name: str
    service: str  # role, schema, consumer group
    run: str  # `python -m <run>` or "-c <code>"
    ingest_topics: list[str]  # logical topics the service reads (for the lag probe)
    output_topic: str
    output_type: str
    description: str
    seeds: Callable[[], list[Envelope | None]]  # None = wait until everything before is handled
    event: Callable[[int, str], Envelope]  # (i, run tag) -> an ingest event producing one `output_type`
    load: Callable[[], tuple[Any, Path | None]]  # -> (router, service migrations dir)
    extra_env: dict[str, str] = field(default_factory=dict)


# -- echo: the platform's minimal service (diag.ping -> row + diag.pong) -----------------------------


def _echo_event(i: int, tag: str) -> Envelope:
    from hub_schema.events.diagnostics import DiagPing

    return make_event(DiagPing(seq=i, note=PAD), org_id=ORG, entity_key=f"diag:{tag}:{i % 512}", producer="bench", origin="crm")


def _echo_load() -> tuple[Any, Path | None]:
    from hub_platform import echo

    return echo.router, Path(echo.__file__).parent / "echo_migrations"


ECHO = Scenario(
    name="echo", service="echo", run="hub_platform.echo",
    ingest_topics=["crm.ingest"], output_topic="tasks.events", output_type="diag.pong",
    description="diag.ping -> echo_pings row + diag.pong (the platform alone)",
    seeds=lambda: [], event=_echo_event, load=_echo_load,
)


# -- tasks: a flagged PM task on a linked project -> crm.task.create --------------------------------


def _tasks_seeds() -> list[Envelope]:
    from hub_schema.events import identity, linking, pm
    from hub_schema.events.common import PermissionProfile, RecordRef

    def ev(payload: Any, key: str, origin: str = "hub") -> Envelope:
        return make_event(payload, org_id=ORG, entity_key=key, producer="bench", origin=origin)  # type: ignore[arg-type]

    return [
        ev(linking.IntegrationChanged(state="enabled", portal_id=PORTAL, changed_by="u-admin", changed_at=T0, revision=1),
           f"{ORG}:integration"),
        ev(pm.PmProjectUpserted(portal_id=PORTAL, id="proj-1", name="proj-1", owner_id="pu-1", status="active",
                                progress_percent=0, schedule_fixed=False, modified_at=T0, version=1),
           "project:proj-1", "pm"),
        ev(linking.LinkChanged(portal_id=PORTAL, project_id="proj-1",
                               record=RecordRef(record_type="deal", record_id="deal-1"), linked=True, revision=2),  # type: ignore[arg-type]
           f"{ORG}:link"),
        ev(identity.UserAccessChanged(crm_user_id="u-1", email="u-1@example.com", name="User 1", locale="ja", active=True,
                                      is_admin=False, portal_id=PORTAL, portal_user_id="pu-1",
                                      profile=PermissionProfile(role="employee", permissions=["add_task"]),  # type: ignore[arg-type]
                                      effective_from=T0, revision=3),
           f"{ORG}:user:u-1"),
    ]


def _tasks_event(i: int, tag: str) -> Envelope:
    from hub_schema.events import pm

    task_id = f"bt-{tag}-{i}"
    p = pm.PmTaskUpserted(portal_id=PORTAL, project_id="proj-1", id=task_id, title=f"Bench task {i}",
                          description=PAD, due_date=date(2024, 5, 1), priority="medium", status="open",
                          owner_id="pu-1", recurring=False, add_to_crm=True, modified_at=datetime.now(UTC),
                          version=1, acting_user_id="pu-1")
    return make_event(p, org_id=ORG, entity_key=f"task:{task_id}", producer="bench", origin="pm")


def _tasks_load() -> tuple[Any, Path | None]:
    from hub_tasks import main
    from hub_tasks.handlers import router

    return router, main.MIGRATIONS


TASKS = Scenario(
    name="tasks", service="tasks", run="-c from hub_tasks.main import main; main()",
    ingest_topics=["pm.ingest", "crm.ingest", "linking.events", "identity.events"],
    output_topic="crm.commands", output_type="crm.task.create",
    description="pm.task.upserted (add_to_crm, linked project) -> mapping + command + decision rows, "
                "crm.task.create + tasks.mirror.decided",
    seeds=_tasks_seeds, event=_tasks_event, load=_tasks_load,
)


# -- linking: a won deal -> pm.project.create (S14) ----------------------------------------------------

MAPPING = [
    {"pm_field": "name", "crm_module": "deals", "crm_field": "Deal_Name"},
    {"pm_field": "budget", "crm_module": "deals", "crm_field": "Amount"},
    {"pm_field": "kind", "crm_module": "deals", "crm_field": "Project_Type"},
    {"pm_field": "region", "crm_module": "accounts", "crm_field": "Region"},
]


def _linking_seeds() -> list[Envelope | None]:
    from hub_schema.events import crm, identity, pm, requests
    from hub_schema.events.common import PermissionProfile

    perms = PermissionProfile(role="manager", permissions=["add_task", "edit_project", "associate_project", "add_users"])  # type: ignore[arg-type]

    def ev(payload: Any, key: str, origin: str) -> Envelope:
        return make_event(payload, org_id=ORG, entity_key=key, producer="bench", origin=origin)  # type: ignore[arg-type]

    return [
        ev(identity.UserAccessChanged(crm_user_id="u-admin", email="u-admin@example.com", name="Admin", locale="en",
                                      active=True, is_admin=True, portal_id=PORTAL, portal_user_id="pu-admin",
                                      profile=perms, effective_from=T0, revision=1), f"{ORG}:user:u-admin", "hub"),
        ev(pm.PmPortalUpserted(id=PORTAL, name="bench portal", plan="paid", active=True, modified_at=T0, version=1),  # type: ignore[arg-type]
           f"portal:{PORTAL}", "pm"),
        ev(crm.CrmAccountUpserted(id="acc-1", name="Acme", custom_fields={"Region": "Kanto"}, modified_at=T0, version=1),
           "account:acc-1", "crm"),
        ev(crm.CrmDealUpserted(id="deal-seed", name="Deal seed", account_id="acc-1", contact_ids=[], stage="Negotiation",
                               won=False, custom_fields={"Project_Type": "Rollout"}, modified_at=T0, version=1),
           "deal:deal-seed", "crm"),
        None,  # the enable request needs the admin and the portal
        ev(requests.IntegrationEnable(request_id=uuid.uuid4(), acting_user_id="u-admin", portal_id=PORTAL,
                                      field_mapping=[requests.FieldMapping(**m) for m in MAPPING],
                                      permissions=PermissionProfile(role="employee", permissions=["add_task"]),  # type: ignore[arg-type]
                                      deal_won_creates_project=True), f"org:{ORG}", "crm"),
        None,
    ]


def _linking_event(i: int, tag: str) -> Envelope:
    from decimal import Decimal

    from hub_schema.events import crm

    deal_id = f"bd-{tag}-{i}"
    p = crm.CrmDealUpserted(id=deal_id, name=f"Deal {deal_id}", account_id="acc-1", contact_ids=[], stage="Closed Won",
                            amount=Decimal("1200.50"), won=True, custom_fields={"Project_Type": "Rollout", "Note": PAD[:120]},
                            modified_at=datetime.now(UTC), version=1)
    return make_event(p, org_id=ORG, entity_key=f"deal:{deal_id}", producer="bench", origin="crm")


def _linking_load() -> tuple[Any, Path | None]:
    from hub_linking import handlers, main

    return handlers.router, main.MIGRATIONS


LINKING = Scenario(
    name="linking", service="linking", run="-c from hub_linking.main import main; main()",
    ingest_topics=["crm.ingest", "pm.ingest", "hub.requests", "identity.events"],
    output_topic="pm.commands", output_type="pm.project.create",
    description="crm.deal.upserted (won, mapping on) -> record + deal_projects + pending rows, "
                "pm.project.create + linking.project.creation_requested",
    seeds=_linking_seeds, event=_linking_event, load=_linking_load,
)


# -- identity: a new CRM account -> pm.client_company.create (S13) ---------------------------------------


def _identity_seeds() -> list[Envelope | None]:
    from hub_schema.events import linking

    return [make_event(linking.IntegrationChanged(state="enabled", portal_id=PORTAL, changed_by="u-admin", changed_at=T0,
                                                  revision=1), org_id=ORG, entity_key=f"{ORG}:integration",
                       producer="bench", origin="hub")]


def _identity_event(i: int, tag: str) -> Envelope:
    from hub_schema.events import crm

    account_id = f"ba-{tag}-{i}"
    p = crm.CrmAccountUpserted(id=account_id, name=f"Bench account {tag} {i}", custom_fields={"Note": PAD[:160]},
                               modified_at=datetime.now(UTC), version=1)
    return make_event(p, org_id=ORG, entity_key=f"account:{account_id}", producer="bench", origin="crm")


def _identity_load() -> tuple[Any, Path | None]:
    from hub_identity import handlers, main

    return handlers.router, main.MIGRATIONS


IDENTITY = Scenario(
    name="identity", service="identity", run="-c from hub_identity.main import main; main()",
    ingest_topics=["crm.ingest", "pm.ingest", "hub.requests", "linking.events"],
    output_topic="pm.commands", output_type="pm.client_company.create",
    description="crm.account.upserted (new account, integration enabled) -> account + mapping + pending rows, "
                "pm.client_company.create + identity.customer_mapping.changed",
    seeds=_identity_seeds, event=_identity_event, load=_identity_load,
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (ECHO, TASKS, LINKING, IDENTITY)}


def register(s: Scenario) -> None:
    SCENARIOS[s.name] = s


def new_tag() -> str:
    return uuid.uuid4().hex[:6]
