"""crm.commands -> Zoho CRM, and the outcome back on crm.ingest the way the sandbox reports it.

Applied: the record as Zoho now has it, published with the command's `command_id` (the echo the hub
recognises). Refused by Zoho: `crm.command.rejected` with the command id and Zoho's reason.

A command is carried out at most once: the moment Zoho accepted it, `command_id -> record id` is committed
on a connection of its own, before the handler's transaction and the Kafka offset. A redelivered command,
or a batch the platform re-runs, finds that row, creates nothing and publishes the same echo again (same
event id). Zoho throttling is waited out inside the call (hub_zoho.api); nothing is dropped.
"""

from __future__ import annotations

import uuid
from typing import Any

from hub_crm_connector import domain, storage
from hub_crm_connector.ingress import Connector
from hub_platform.consumer import HandlerContext, Router
from hub_schema import Event, Payload
from hub_schema.events import commands as cmd
from hub_schema.events.crm import CrmCommandRejected
from hub_schema.registry import all_events
from hub_schema.topics import CRM_COMMANDS
from hub_zoho import state
from hub_zoho.api import ItemResult, ZohoError

MODULE_OF_COMMAND = {"crm.task.create": "Tasks", "crm.task.update": "Tasks", "crm.task.delete": "Tasks", "crm.note.add": "Notes"}


class Refused(Exception):
    def __init__(self, code: str, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.details = code, reason, details or {}


def _first(results: list[ItemResult]) -> ItemResult:
    r = results[0]
    if not r.ok:
        raise Refused(domain.rejection_code(r.code), f"Zoho CRM refused it: {r.code} {r.message}".strip(),
                      {"zoho_code": r.code, **{k: v for k, v in r.details.items() if isinstance(v, str | int | bool)}})
    return r


def make_router(connector: Connector) -> Router:
    router = Router()

    async def handle(ctx: HandlerContext, event: Event[Any]) -> None:
        c: cmd.Command = event.payload
        env = event.envelope
        org_id, command_type = env.org_id, env.event_type
        module = MODULE_OF_COMMAND[command_type]

        async def emit(payload: Payload, entity_key: str, event_id: uuid.UUID) -> None:
            await ctx.emit(payload, entity_key=entity_key, origin="crm", event_id=event_id)

        async def reject(code: str, reason: str, details: dict[str, Any]) -> None:
            ctx.log.info("command refused", command_type=command_type, reason_code=code, reason=reason)
            await emit(CrmCommandRejected(command_id=c.command_id, command_type=command_type, reason_code=code,  # type: ignore[arg-type]
                                          reason=reason[:2000], details=details),
                       env.entity_key, state.rejection_event_id(c.command_id))

        async def echo(record_id: str, deleted: bool = False) -> None:
            rec = None
            if not deleted:
                found = await connector.crm[org_id].get_records(module, [record_id])
                rec = found[0] if found else None
            await connector.observe(ctx.conn, org_id, module, record_id, rec, emit, command_id=c.command_id)

        if org_id not in connector.crm:
            await reject("other", f"the CRM connector has no Zoho credentials for org {org_id}", {})
            return
        done = await storage.applied_command(connector.pool, c.command_id)
        if done is not None:  # carried out before: publish the same outcome, change nothing
            if done["outcome"] == "applied" and done["record_id"]:
                await echo(done["record_id"], deleted=command_type == "crm.task.delete")
            elif done["outcome"] == "rejected":
                await reject(done["reason_code"], done["reason"], {})
            return
        crm = connector.crm[org_id]
        try:
            if isinstance(c, cmd.CrmTaskCreate):
                record_id = _first(await crm.insert("Tasks", [domain.task_create_fields(c)])).id
            elif isinstance(c, cmd.CrmTaskUpdate):
                record_id = _first(await crm.update("Tasks", [domain.task_update_fields(c)])).id or c.task_id
            elif isinstance(c, cmd.CrmTaskDelete):
                record_id = _first(await crm.delete("Tasks", [c.task_id])).id or c.task_id
            elif isinstance(c, cmd.CrmNoteAdd):
                record_id = _first(await crm.insert("Notes", [domain.note_fields(c)])).id
            else:  # pragma: no cover - the router lists exactly the types above
                raise AssertionError(command_type)
        except (Refused, ZohoError) as exc:
            refused = exc if isinstance(exc, Refused) else Refused(domain.rejection_code(exc.code), str(exc), {"zoho_code": exc.code})
            await storage.record_command(connector.pool, command_id=c.command_id, org_id=org_id, command_type=command_type,
                                         module=module, record_id=None, outcome="rejected",
                                         reason_code=refused.code, reason=refused.reason[:2000])
            await reject(refused.code, refused.reason, refused.details)
            return
        assert record_id is not None
        await storage.record_command(connector.pool, command_id=c.command_id, org_id=org_id, command_type=command_type,
                                     module=module, record_id=record_id, outcome="applied")
        await echo(record_id, deleted=command_type == "crm.task.delete")

    types = {m.EVENT_TYPE for m in all_events().values() if m.TOPIC == CRM_COMMANDS}
    assert types == set(MODULE_OF_COMMAND), f"crm.commands without a handler: {sorted(types - set(MODULE_OF_COMMAND))}"
    router.on(*MODULE_OF_COMMAND)(handle)
    return router
