"""Trust boundary of the tasks service: events only from their catalog topic, command ids only within their org."""

from __future__ import annotations

import pytest
from hub_devstack.harness.tasks import ORG, T0, World, at

from hub_schema import make_event, topics
from hub_schema.events import crm, linking

pytestmark = pytest.mark.integration


@pytest.mark.attack("a PM-side producer publishes linking.integration.changed onto pm.ingest for another org",
                    outcome="tasks dead-letters it with code wrong_topic; the org's integration is not enabled")
async def test_integration_changed_posing_on_pm_ingest_is_dead_lettered(world: World) -> None:
    dead = await world.probe.reader(topics.DEAD_LETTERS)
    forged = make_event(linking.IntegrationChanged(state="enabled", portal_id="portal-evil", changed_by="u-x",
                                                   changed_at=T0, revision=99),
                        org_id="org-victim", entity_key="project:p-1", producer="pm connector", origin="pm")
    await world.probe.send(forged, topics.PM_INGEST)
    await world.standard_setup()  # later records on the same topics are still handled
    records = await world.probe.collect(dead, lambda rs: len(rs) >= 1)
    headers = {k: v.decode() for k, v in records[0].headers}
    assert (headers["x-dlq-consumer"], headers["x-dlq-code"]) == ("tasks", "wrong_topic")
    assert await world.query("SELECT * FROM tasks.integrations WHERE org_id = 'org-victim'") == []
    assert [r["org_id"] for r in await world.query("SELECT org_id FROM tasks.integrations")] == [ORG]


@pytest.mark.attack("a CRM echo and a CRM refusal from another org carry org-1's command id",
                    outcome="nothing of org-1 changes: the mapping stays unbound, the command keeps no outcome")
async def test_command_echo_from_another_org_changes_nothing(world: World) -> None:
    await world.standard_setup()
    await world.pm_task("pt-a", 1, title="Install", add_to_crm=True)
    create = (await world.wait_count("crm.task.create"))[-1]
    command_id = create.payload.command_id
    other = "org-mallory"
    echo = crm.CrmTaskUpserted(id="ct-evil", record_type="deal", record_id="deal-1", subject="hijacked",
                               priority="medium", status="open", owner_id="u-1", created_by="u-1",
                               modified_at=at(2), version=1, command_id=command_id)
    refusal = crm.CrmCommandRejected(command_id=command_id, command_type="crm.task.create", reason_code="invalid",
                                     reason="refused by another org")
    for payload in (echo, refusal):
        await world.probe.send(make_event(payload, org_id=other, entity_key="task:ct-evil", producer="crm", origin="crm"))
        world.sent += 1
    await world.settled()
    mapping = (await world.query("SELECT * FROM tasks.task_mappings WHERE org_id = $1 AND pm_task_id = 'pt-a'", ORG))[0]
    assert mapping["crm_task_id"] is None
    command = (await world.query("SELECT * FROM tasks.task_commands WHERE command_id = $1", command_id))[0]
    assert command["outcome"] is None
    assert await world.query("SELECT * FROM tasks.task_mappings WHERE org_id = $1", other) == []
    # org-1's own echo still binds the mapping: the command id was untouched
    bound = await world.apply_crm(create, 3)
    await world.settled()
    mapping = (await world.query("SELECT * FROM tasks.task_mappings WHERE org_id = $1 AND pm_task_id = 'pt-a'", ORG))[0]
    assert mapping["crm_task_id"] == bound.id
