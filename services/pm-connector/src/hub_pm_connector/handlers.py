"""pm.commands -> Zoho Projects, and the outcome back on pm.ingest the way the sandbox reports it.

Same rules as the CRM connector: `command_id -> task id` is committed the moment Zoho accepted the call, so a
redelivered command creates nothing twice and publishes the same echo; a refusal is `pm.command.rejected`.
Commands the connector does not carry out yet are refused (`other`) rather than lost, so the hub can say so.
"""

from __future__ import annotations

import uuid
from typing import Any

from hub_platform.consumer import HandlerContext, Router
from hub_pm_connector import domain
from hub_pm_connector.ingress import Connector
from hub_schema import Event, Payload
from hub_schema.events import commands as cmd
from hub_schema.events.pm import PmCommandRejected
from hub_schema.registry import all_events
from hub_schema.topics import PM_COMMANDS
from hub_zoho import state
from hub_zoho.api import ZohoError

SUPPORTED = ("pm.task.create", "pm.task.update", "pm.task.delete")


def make_router(connector: Connector) -> Router:
    router = Router()

    async def handle(ctx: HandlerContext, event: Event[Any]) -> None:
        c: Any = event.payload
        env = event.envelope
        org_id, command_type = env.org_id, env.event_type

        async def emit(payload: Payload, entity_key: str, event_id: uuid.UUID) -> None:
            await ctx.emit(payload, entity_key=entity_key, origin="pm", event_id=event_id)

        async def reject(code: str, reason: str, details: dict[str, Any]) -> None:
            ctx.log.info("command refused", command_type=command_type, reason_code=code, reason=reason)
            await emit(PmCommandRejected(command_id=c.command_id, command_type=command_type, reason_code=code,  # type: ignore[arg-type]
                                         reason=reason[:2000], details=details),
                       env.entity_key, state.rejection_event_id(c.command_id))

        if command_type not in SUPPORTED:
            await reject("other", f"the Zoho Projects connector does not carry out {command_type} yet", {})
            return
        if org_id not in connector.projects:
            await reject("other", f"the PM connector has no Zoho credentials for org {org_id}", {})
            return
        client = connector.projects[org_id]

        async def echo(task: dict[str, Any] | None, task_id: str) -> None:
            deleted = {"portal_id": c.portal_id, "project_id": c.project_id}
            await connector.observe(ctx.conn, org_id, c.portal_id, "tasks", task_id, task, emit, command_id=c.command_id,
                                    deleted_fields=deleted)

        done = await state.applied_command(connector.pool, c.command_id)
        if done is not None:
            if done["outcome"] == "rejected":
                await reject(done["reason_code"], done["reason"], {})
            elif command_type == "pm.task.delete":
                await echo(None, done["record_id"])
            else:
                await echo(await client.get_task(c.portal_id, c.project_id, done["record_id"]), done["record_id"])
            return
        try:
            if isinstance(c, cmd.PmTaskCreate):
                task: dict[str, Any] | None = await client.create_task(c.portal_id, c.project_id, domain.task_create_fields(c))
                task_id = str(task["id"])  # type: ignore[index]
            elif isinstance(c, cmd.PmTaskUpdate):
                task = await client.update_task(c.portal_id, c.project_id, c.task_id, domain.task_update_fields(c))
                task_id = c.task_id
            else:
                await client.delete_task(c.portal_id, c.project_id, c.task_id)
                task, task_id = None, c.task_id
        except ZohoError as exc:
            code = domain.rejection_code(exc.status)
            await state.record_command(connector.pool, command_id=c.command_id, org_id=org_id, command_type=command_type,
                                       module="tasks", record_id=None, outcome="rejected", reason_code=code, reason=str(exc)[:2000])
            await reject(code, f"Zoho Projects refused it: {exc}", {"zoho_status": exc.status})
            return
        await state.record_command(connector.pool, command_id=c.command_id, org_id=org_id, command_type=command_type,
                                   module="tasks", record_id=task_id, outcome="applied")
        await echo(task, task_id)

    router.on(*sorted({m.EVENT_TYPE for m in all_events().values() if m.TOPIC == PM_COMMANDS}))(handle)
    return router
