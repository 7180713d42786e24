"""Entry point of the task-mirroring service: what it reads, emits and serves."""

from __future__ import annotations

from hub_platform import db
from hub_platform.retention import RetentionRule
from hub_platform.service import HubService
from hub_platform.settings import ServiceSettings
from hub_schema import topics
from hub_schema.events import commands as cmd
from hub_schema.events.notifications import NotificationRequested
from hub_schema.events.tasks import TaskMirrorDecided, TaskRequestRefused
from hub_tasks import api, handlers
from hub_tasks.handlers import router
from hub_tasks.settings import TaskLimitsSettings, TasksSettings

MIGRATIONS = db.service_migrations(__file__, "hub_tasks")


def build(settings: ServiceSettings | None = None) -> HubService:
    settings = settings or TasksSettings()
    limits = getattr(settings, "tasks", TaskLimitsSettings())
    handlers.configure(limits.budget(), limits.max_mirrored_records)
    service = HubService(
        settings, router,
        subscribe=[topics.PM_INGEST, topics.CRM_INGEST, topics.LINKING_EVENTS, topics.IDENTITY_EVENTS],
        migrations=MIGRATIONS,
        emits=[cmd.CrmTaskCreate, cmd.CrmTaskUpdate, cmd.CrmNoteAdd, cmd.PmTaskCreate, cmd.PmTaskUpdate,
               TaskMirrorDecided, TaskRequestRefused, NotificationRequested],
        title="hub tasks (task mirroring)",
        retention=[RetentionRule("task_decisions", "at", "task_decisions_days")],
        api=api.build_api,
    )
    return service


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
